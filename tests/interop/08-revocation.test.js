// 8. Revocation closes open sockets with 4401: token revocation (RFC 7009) and key revocation.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, waitFor, waitClosed, sleep, text } from './lib/harness.js'

let server, app
before(async () => {
  server = await startServer()
  app = await server.createApp()
})
after(async () => { await server?.stop() })

test('POST /oauth/revoke of the M2M token closes its connection with 4401 within ~1 s', { timeout: 60_000 }, async () => {
  const doc = 'revoke-token'
  const victimToken = await app.fetchM2M()
  const victim = await server.connect(doc, victimToken)
  const bystander = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  victim.ydoc.getText('text').insert(0, 'before;')
  await waitFor(() => text(bystander.ydoc) === 'before;', { message: 'the edit to flow before revocation' })

  const t0 = Date.now()
  const res = await app.revoke(victimToken)
  assert.equal(res.status, 200, `revoke answered ${res.status}`)
  const closed = await waitClosed(victim.provider, { timeout: 1500 })
  const elapsed = Date.now() - t0
  assert.equal(closed.code, 4401, `close code (reason ${JSON.stringify(closed.reason)})`)
  assert.ok(elapsed <= 1500, `closed after ${elapsed} ms`)

  // Only that token's connection closed, and the token is dead for new sockets.
  await sleep(300)
  assert.ok(bystander.provider.wsconnected, 'the connection of another token stays open')
  assert.deepEqual(bystander.provider.closeEvents, [])
  const url = await server.discover(doc, app.m2m)
  assert.deepEqual(await server.rawOpen(url, doc, victimToken), { status: 401 })
  // Nothing the revoked client does afterwards reaches the doc (it is closed; no reconnect on 4401).
  victim.ydoc.getText('text').insert(0, 'after-revoke;')
  await sleep(500)
  assert.equal(text(bystander.ydoc), 'before;')
})

test('revoking the signing key closes connections it authorised with 4401', { timeout: 60_000 }, async () => {
  const doc = 'revoke-key'
  const token = await app.clientToken({ docs: [doc] })
  const a = await server.connect(doc, token)
  a.ydoc.getText('text').insert(0, 'signed;')

  const keys = await server.json('GET', `/v1/tenants/${server.tenantId}/keys`, { bearer: server.session, expect: 200 })
  assert.ok(Array.isArray(keys.items) && keys.items.length >= 1, `keys: ${JSON.stringify(keys)}`)
  const active = keys.items.find((k) => k.status === 'active') ?? keys.items[0]
  const kid = active.kid

  const t0 = Date.now()
  const revoked = await server.json('POST', `/v1/tenants/${server.tenantId}/keys/${encodeURIComponent(kid)}/revoke`, {
    bearer: server.session,
    expect: 200
  })
  assert.equal(revoked.kid, kid)
  assert.equal(revoked.status, 'revoked')
  const closed = await waitClosed(a.provider, { timeout: 1500 })
  assert.equal(closed.code, 4401, `close code (reason ${JSON.stringify(closed.reason)})`)
  assert.ok(Date.now() - t0 <= 1500)

  // Tokens it signed are refused before the upgrade; a fresh key issues working tokens.
  const fresh = await app.fetchM2M()
  app.m2m = fresh
  const url = await server.discover(doc, fresh)
  assert.deepEqual(await server.rawOpen(url, doc, token), { status: 401 })
  const b = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  assert.equal(text(b.ydoc), 'signed;', 'the document survives, reachable with a new token')
})
