// 2. Awareness appears and disappears.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, waitFor } from './lib/harness.js'

let server, app
before(async () => {
  server = await startServer()
  app = await server.createApp()
})
after(async () => { await server?.stop() })

test('awareness of A appears at B and is removed within 3 s after A leaves', { timeout: 60_000 }, async () => {
  const doc = 'presence'
  const a = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  const b = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  const aId = a.ydoc.clientID

  a.provider.awareness.setLocalStateField('user', { name: 'ada' })
  await waitFor(() => b.provider.awareness.getStates().get(aId)?.user?.name === 'ada', {
    message: "B to see A's awareness state {user:{name:'ada'}}"
  })

  a.provider.destroy()
  const t0 = Date.now()
  await waitFor(() => !b.provider.awareness.getStates().has(aId), {
    timeout: 3000,
    message: "A's client id to disappear from B's awareness"
  })
  assert.ok(Date.now() - t0 <= 3000)
  assert.ok(b.provider.wsconnected, 'B stays connected')
})

test('an abruptly dropped connection has its awareness removed by the server within 3 s', { timeout: 60_000 }, async () => {
  // The stock client announces its own removal on destroy(); here the TCP
  // connection just dies, so only the server can tell B that A is gone.
  const doc = 'presence-abrupt'
  const a = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  const b = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  const aId = a.ydoc.clientID

  a.provider.awareness.setLocalStateField('user', { name: 'ada' })
  await waitFor(() => b.provider.awareness.getStates().get(aId)?.user?.name === 'ada', {
    message: "B to see A's awareness state"
  })

  a.provider.shouldConnect = false // no automatic reconnect after the drop
  a.provider.ws.terminate() // destroys the socket: no close frame, no awareness removal
  await waitFor(() => !b.provider.awareness.getStates().has(aId), {
    timeout: 3000,
    message: "the server to broadcast the removal of A's awareness"
  })
  assert.ok(b.provider.wsconnected, 'B stays connected')
})
