// 7. Token, Origin and docs-claim checks before the upgrade (raw `ws` client).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, waitFor, sleep, text } from './lib/harness.js'

let server, open, domains, syncUrl
before(async () => {
  server = await startServer()
  open = await server.createApp({ name: 'no-domains' })
  domains = await server.createApp({ name: 'with-domains', allowed_domains: ['localhost:3000'] })
  syncUrl = await server.discover('board', open.m2m)
})
after(async () => { await server?.stop() })

const closeRaw = (res) => { if (res.ws) res.ws.close() }

test('no token and a garbage token are refused with 401', { timeout: 60_000 }, async () => {
  assert.deepEqual(await server.rawOpen(syncUrl, 'board', undefined), { status: 401 })
  assert.deepEqual(await server.rawOpen(syncUrl, 'board', ''), { status: 401 })
  assert.deepEqual(await server.rawOpen(syncUrl, 'board', 'garbage'), { status: 401 })
  assert.deepEqual(await server.rawOpen(syncUrl, 'board', 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl'), { status: 401 })
  // A valid token with a flipped signature byte.
  const good = await open.clientToken({ docs: ['board'] })
  const [h, p, s] = good.split('.')
  const badSig = `${h}.${p}.${s.slice(0, -2)}${s.endsWith('AA') ? 'BB' : 'AA'}`
  assert.deepEqual(await server.rawOpen(syncUrl, 'board', badSig), { status: 401 })
  // ...while the same token unmodified opens (the refusals above are not about something else).
  const ok = await server.rawOpen(syncUrl, 'board', good)
  assert.equal(ok.open, true)
  closeRaw(ok)
})

test('app without allowed domains: any Origin or none is accepted', { timeout: 60_000 }, async () => {
  const token = await open.clientToken({ docs: ['board'] })
  for (const origin of [undefined, 'http://evil.example', 'http://localhost:3000']) {
    const res = await server.rawOpen(syncUrl, 'board', token, { origin })
    assert.equal(res.open, true, `origin ${origin}: ${JSON.stringify(res)}`)
    closeRaw(res)
  }
})

test('app with allowed_domains [localhost:3000]: wrong or missing Origin 403, right Origin opens', { timeout: 60_000 }, async () => {
  const token = await domains.clientToken({ docs: ['board'] })
  assert.deepEqual(await server.rawOpen(syncUrl, 'board', token, { origin: 'http://evil.example' }), { status: 403 })
  assert.deepEqual(await server.rawOpen(syncUrl, 'board', token, {}), { status: 403 }, 'missing Origin')
  assert.deepEqual(await server.rawOpen(syncUrl, 'board', token, { origin: 'http://localhost:3001' }), { status: 403 }, 'wrong port')
  assert.deepEqual(await server.rawOpen(syncUrl, 'board', token, { origin: 'http://localhost' }), { status: 403 }, 'default port')
  assert.deepEqual(await server.rawOpen(syncUrl, 'board', token, { origin: 'http://evil.localhost:3000' }), { status: 403 }, 'subdomain')
  const ok = await server.rawOpen(syncUrl, 'board', token, { origin: 'http://localhost:3000' })
  assert.equal(ok.open, true, 'right Origin opens')
  closeRaw(ok)
  // The M2M token carries the same origins claim.
  assert.deepEqual(await server.rawOpen(syncUrl, 'board', domains.m2m, { origin: 'http://evil.example' }), { status: 403 })
})

test('the stock provider syncs through an app with allowed domains when it sends the right Origin', { timeout: 60_000 }, async () => {
  const token = await domains.clientToken({ docs: ['board'] })
  const a = await server.connect('board', token, { origin: 'http://localhost:3000' })
  const b = await server.connect('board', token, { origin: 'http://localhost:3000' })
  a.ydoc.getText('text').insert(0, 'through the right origin')
  await waitFor(() => text(b.ydoc) === 'through the right origin', { message: 'B to receive the edit' })
  // Documents are per app: the open app's 'board' does not see it.
  const other = await server.connect('board', await open.clientToken({ docs: ['board'] }))
  assert.equal(text(other.ydoc), '')

  // A stock provider without Origin never gets in (403 before the upgrade, so
  // no close code and the provider keeps retrying).
  const refused = await server.connect('board', token, { wait: false })
  await sleep(1500)
  assert.equal(refused.provider.synced, false)
  assert.equal(refused.provider.closeEvents.some((e) => e && e.code >= 4000), false)
  refused.provider.destroy()
})

test("a client token for docs ['notes/*'] is refused with 403 on 'board' and accepted on 'notes/1'", { timeout: 60_000 }, async () => {
  const token = await open.clientToken({ docs: ['notes/*'] })
  assert.deepEqual(await server.rawOpen(syncUrl, 'board', token), { status: 403 })
  assert.deepEqual(await server.rawOpen(syncUrl, 'notes', token), { status: 403 }, "'notes' is not under 'notes/'")
  assert.deepEqual(await server.rawOpen(syncUrl, 'notesX/1', token), { status: 403 })
  const ok = await server.rawOpen(syncUrl, 'notes/1', token)
  assert.equal(ok.open, true, "'notes/1' is covered")
  closeRaw(ok)
  const exact = await open.clientToken({ docs: ['board'] })
  assert.deepEqual(await server.rawOpen(syncUrl, 'board2', exact), { status: 403 })
})
