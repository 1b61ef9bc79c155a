// 1. Two stock clients converge: Y.Text inserts from both sides.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, waitFor, text } from './lib/harness.js'

let server, app
before(async () => {
  server = await startServer()
  app = await server.createApp()
})
after(async () => { await server?.stop() })

test('two clients converge on concurrent Y.Text inserts', { timeout: 60_000 }, async () => {
  const doc = 'converge'
  const a = await server.connect(doc, await app.clientToken({ docs: [doc], user: { id: 'a', name: 'A' } }))
  const b = await server.connect(doc, await app.clientToken({ docs: [doc], user: { id: 'b', name: 'B' } }))

  a.ydoc.getText('text').insert(0, 'hello from A. ')
  await waitFor(() => text(b.ydoc) === 'hello from A. ', { message: () => `B to receive A's insert (B=${JSON.stringify(text(b.ydoc))})` })

  b.ydoc.getText('text').insert(text(b.ydoc).length, 'hello from B.')
  await waitFor(() => text(a.ydoc) === 'hello from A. hello from B.', { message: () => `A to receive B's insert (A=${JSON.stringify(text(a.ydoc))})` })

  // Concurrent inserts at the same position: both must end up identical.
  a.ydoc.getText('text').insert(0, '[a]')
  b.ydoc.getText('text').insert(0, '[b]')
  await waitFor(() => text(a.ydoc) === text(b.ydoc) && text(a.ydoc).length === 33, {
    message: () => `convergence (A=${JSON.stringify(text(a.ydoc))}, B=${JSON.stringify(text(b.ydoc))})`
  })
  const final = text(a.ydoc)
  assert.equal(text(b.ydoc), final)
  assert.match(final, /^(\[a\]\[b\]|\[b\]\[a\])hello from A\. hello from B\.$/)
})
