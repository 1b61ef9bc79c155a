// 3. Offline edits merge on reconnect.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, waitFor, waitSynced, text, content } from './lib/harness.js'

let server, app
before(async () => {
  server = await startServer()
  app = await server.createApp()
})
after(async () => { await server?.stop() })

test('edits made while disconnected merge after reconnect', { timeout: 60_000 }, async () => {
  const doc = 'offline'
  const token = await app.clientToken({ docs: [doc] })
  const a = await server.connect(doc, token)
  const b = await server.connect(doc, token)

  a.ydoc.getText('text').insert(0, 'base;')
  await waitFor(() => text(b.ydoc) === 'base;', { message: 'B to receive the base text' })

  b.provider.disconnect()
  await waitFor(() => !b.provider.wsconnected && b.provider.ws === null, { message: 'B to disconnect' })

  a.ydoc.getText('text').insert(text(a.ydoc).length, 'A-online;')
  a.ydoc.getMap('map').set('a', 1)
  b.ydoc.getText('text').insert(0, 'B-offline;')
  b.ydoc.getMap('map').set('b', 2)

  // While B is offline, B must not see A's edit (the server is the only path).
  await new Promise((resolve) => setTimeout(resolve, 300))
  assert.equal(text(b.ydoc), 'B-offline;base;')

  b.provider.connect()
  await waitSynced(b.provider)
  const both = (s) => s.includes('A-online;') && s.includes('B-offline;') && s.includes('base;')
  await waitFor(() => both(text(a.ydoc)) && text(a.ydoc) === text(b.ydoc), {
    message: () => `convergence after reconnect (A=${JSON.stringify(text(a.ydoc))}, B=${JSON.stringify(text(b.ydoc))})`
  })
  await waitFor(() => content(a.ydoc) === content(b.ydoc), {
    message: () => `maps to converge (A=${content(a.ydoc)}, B=${content(b.ydoc)})`
  })
  assert.equal(text(a.ydoc), 'B-offline;base;A-online;')
  assert.deepEqual(a.ydoc.getMap('map').toJSON(), { a: 1, b: 2 })
})
