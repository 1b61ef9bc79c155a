// 4. A late joiner gets the full state.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, waitFor, text, content } from './lib/harness.js'

let server, app
before(async () => {
  server = await startServer()
  app = await server.createApp()
})
after(async () => { await server?.stop() })

test('a late joiner receives the whole document', { timeout: 60_000 }, async () => {
  const doc = 'late'
  const token = await app.clientToken({ docs: [doc] })
  const a = await server.connect(doc, token)
  const b = await server.connect(doc, token)

  for (let i = 0; i < 50; i++) {
    const who = i % 2 === 0 ? a : b
    who.ydoc.getText('text').insert(text(who.ydoc).length, `${i},`)
    who.ydoc.getMap('map').set(`k${i}`, i)
  }
  a.ydoc.getArray('list').push(['x', 'y'])
  await waitFor(() => content(a.ydoc) === content(b.ydoc) && a.ydoc.getMap('map').size === 50, {
    message: () => `A and B to converge (A=${content(a.ydoc)}, B=${content(b.ydoc)})`
  })

  const late = await server.connect(doc, token)
  // `synced` is set by the server's sync step 2: everything must be there already.
  assert.equal(content(late.ydoc), content(a.ydoc))
  assert.deepEqual(late.ydoc.getArray('list').toJSON(), ['x', 'y'])
  assert.equal(late.ydoc.getMap('map').size, 50)
  assert.equal(text(late.ydoc).split(',').filter(Boolean).length, 50)

  // Everyone leaves; a joiner afterwards still gets everything.
  a.provider.destroy(); b.provider.destroy(); late.provider.destroy()
  const later = await server.connect(doc, token)
  assert.equal(content(later.ydoc), content(a.ydoc))
  assert.deepEqual(later.ydoc.getArray('list').toJSON(), ['x', 'y'])
})
