// 10. In-band token refresh keeps a connection past its token's expiry; without it, 4401.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, waitFor, waitClosed, sleep, text } from './lib/harness.js'

let server, app
before(async () => {
  server = await startServer()
  app = await server.createApp()
})
after(async () => { await server?.stop() })

test('a 2-second token refreshed in-band stays open past 3 s; an unrefreshed one closes with 4401', { timeout: 60_000 }, async () => {
  const doc = 'refresh'
  const watcher = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  const fresh = await app.clientToken({ docs: [doc], ttl_seconds: 60 })
  // Mint right after a second boundary so that a whole-second `exp` leaves
  // the full 2 s (the server may floor `iat`).
  await waitFor(() => Date.now() % 1000 < 100, { timeout: 2000, interval: 5, message: 'a second boundary' })
  const t0 = Date.now()
  const shortA = await app.clientTokenFull({ docs: [doc], ttl_seconds: 2 })
  const shortB = await app.clientTokenFull({ docs: [doc], ttl_seconds: 2 })
  assert.ok(shortA.expires_in <= 2, `expires_in ${shortA.expires_in}`)
  const refreshed = await server.connect(doc, shortA.token)
  refreshed.provider.ws.send(JSON.stringify({ type: 'refresh', token: fresh }))
  const sentAfter = Date.now() - t0
  assert.ok(sentAfter < 1800, `refresh sent ${sentAfter} ms after minting: too late to test anything`)
  const unrefreshed = await server.connect(doc, shortB.token)

  const closed = await waitClosed(unrefreshed.provider, { timeout: 5000 })
  assert.equal(closed.code, 4401, `unrefreshed close code (reason ${JSON.stringify(closed.reason)})`)
  assert.ok(Date.now() - t0 >= 900, `closed ${Date.now() - t0} ms after minting a 2 s token`)

  await waitFor(() => Date.now() - t0 > 3500, { timeout: 5000, message: 'time to pass' })
  assert.ok(refreshed.provider.wsconnected, 'refreshed connection is open after 3.5 s')
  assert.deepEqual(refreshed.provider.closeEvents, [], 'refreshed connection never closed')

  // Edits still flow both ways over the refreshed connection.
  refreshed.ydoc.getText('text').insert(0, 'after refresh;')
  await waitFor(() => text(watcher.ydoc) === 'after refresh;', { message: 'edit from the refreshed connection to arrive' })
  watcher.ydoc.getText('text').insert(text(watcher.ydoc).length, 'reply;')
  await waitFor(() => text(refreshed.ydoc) === 'after refresh;reply;', { message: 'edit to reach the refreshed connection' })
  assert.deepEqual(refreshed.provider.closeEvents, [])
})

test('a 1-second token without refresh is closed with 4401', { timeout: 60_000 }, async () => {
  const doc = 'refresh-none'
  // Mint right after a second boundary so that a whole-second `exp` leaves
  // time to connect.
  await waitFor(() => Date.now() % 1000 < 100, { timeout: 2000, interval: 5, message: 'a second boundary' })
  const { token, expires_in } = await app.clientTokenFull({ docs: [doc], ttl_seconds: 1 })
  assert.ok(expires_in <= 1, `expires_in ${expires_in}`)
  const c = await server.connect(doc, token)
  const closed = await waitClosed(c.provider, { timeout: 3000 })
  assert.equal(closed.code, 4401, `close code (reason ${JSON.stringify(closed.reason)})`)
  await sleep(500)
  assert.equal(c.provider.wsconnected, false, 'no reconnect after 4401')
})

test('an invalid refresh closes with 4401; a refresh for another doc closes with 4401', { timeout: 60_000 }, async () => {
  const doc = 'refresh-bad'
  const a = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  a.provider.ws.send(JSON.stringify({ type: 'refresh', token: 'garbage' }))
  assert.equal((await waitClosed(a.provider, { timeout: 3000 })).code, 4401)

  const b = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  b.provider.ws.send(JSON.stringify({ type: 'refresh', token: await app.clientToken({ docs: ['elsewhere'] }) }))
  assert.equal((await waitClosed(b.provider, { timeout: 3000 })).code, 4401)
})

test("refresh to an access 'r' token makes the next write close with 4403", { timeout: 60_000 }, async () => {
  const doc = 'refresh-downgrade'
  const a = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  const watcher = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  a.ydoc.getText('text').insert(0, 'rw;')
  await waitFor(() => text(watcher.ydoc) === 'rw;', { message: 'the rw edit' })
  a.provider.ws.send(JSON.stringify({ type: 'refresh', token: await app.clientToken({ docs: [doc], access: 'r' }) }))
  // The refresh is silent, so there is nothing to wait for: frames on one
  // socket are handled in order, so the edit right after it is a read-only write.
  assert.ok(a.provider.wsconnected)
  a.ydoc.getText('text').insert(0, 'ro;')
  assert.equal((await waitClosed(a.provider)).code, 4403)
  await sleep(300)
  assert.equal(text(watcher.ydoc), 'rw;')
})
