import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { connect, REFUSALS } from '../src/index.js'
import { start, until, sleep } from './server.js'

let server
const conns = []
before(async () => { server = await start(['--max-message-size', '65536']) })
after(async () => {
  for (const c of conns) c.destroy()
  await server?.stop()
})

const text = (ydoc) => ydoc.getText('t').toString()

/** A connection as an app would open it, with the test's token function. */
async function open (app, doc, tokenBody = {}) {
  const ydoc = new Y.Doc()
  const calls = []
  const getToken = async (d) => {
    calls.push(Date.now())
    return app.mint({ docs: [d], ...tokenBody })
  }
  const conn = await connect({
    server: server.base,
    doc,
    ydoc,
    getToken,
    providerOptions: { WebSocketPolyfill: WebSocket, disableBc: true }
  })
  const events = []
  for (const name of ['refused', 'rediscovered', 'token', 'error']) conn.on(name, (e) => events.push({ name, e }))
  conns.push(conn)
  return { conn, ydoc, calls, events }
}

test('two connections sync through discovery', async () => {
  const app = await server.app()
  const a = await open(app, 'notes/one')
  const b = await open(app, 'notes/one')
  await Promise.all([a.conn.synced(), b.conn.synced()])
  a.ydoc.getText('t').insert(0, 'hello')
  await until(() => text(b.ydoc) === 'hello', 'the edit to arrive')
})

test('the token is refreshed in-band before it expires: the socket outlives it', async () => {
  const app = await server.app()
  const watcher = await open(app, 'refresh')
  const short = await open(app, 'refresh', { ttl_seconds: 3 })
  await short.conn.synced()
  const socket = short.conn.provider.ws
  await sleep(4500)
  assert.ok(short.calls.length >= 2, `getToken called ${short.calls.length} times`)
  assert.equal(short.conn.provider.ws, socket, 'the same socket, never closed')
  assert.equal(short.events.filter((e) => e.name === 'refused').length, 0)
  short.ydoc.getText('t').insert(0, 'still here')
  await until(() => text(watcher.ydoc) === 'still here', 'the edit after the first token expired')
})

test('4401 (the key that signed the token is revoked): a new token and a reconnect', async () => {
  const app = await server.app()
  const c = await open(app, 'revoked')
  await c.conn.synced()
  const keys = await server.call('GET', `/v1/tenants/${server.tenant}/keys`, { bearer: server.session })
  const active = keys.items.find((k) => k.status === 'active')
  const closed = new Promise((resolve) => c.conn.provider.on('connection-close', (e) => e && resolve(e.code)))
  await server.call('POST', `/v1/tenants/${server.tenant}/keys/${active.kid}/revoke`, { bearer: server.session })
  assert.equal(await closed, 4401)
  await until(() => c.conn.provider.wsconnected, 'the reconnect with a new token')
  assert.equal(c.calls.length, 2, 'one new token')
  const other = await open(app, 'revoked')
  c.ydoc.getText('t').insert(0, 'after revocation')
  await until(() => text(other.ydoc) === 'after revocation', 'edits to flow again')
})

test('4503 (node draining): discovery again, and back once a node is up', async () => {
  const app = await server.app()
  const c = await open(app, 'drain')
  await c.conn.synced()
  const nodes = await server.call('GET', '/v1/nodes', { bearer: server.session })
  const node = nodes.items[0].id
  const closed = new Promise((resolve) => c.conn.provider.on('connection-close', (e) => e && resolve(e.code)))
  await server.call('POST', `/v1/nodes/${node}/drain`, { bearer: server.session })
  assert.equal(await closed, 4503)
  // The only node is draining: discovery answers 503, retried with backoff.
  await until(() => c.events.some((e) => e.name === 'error' && e.e.status === 503), 'a failed discovery')
  await server.call('POST', `/v1/nodes/${node}/undrain`, { bearer: server.session })
  await until(() => c.events.some((e) => e.name === 'rediscovered'), 'discovery to succeed', 15_000)
  await until(() => c.conn.provider.wsconnected, 'the reconnect', 15_000)
})

test('4403 and 4413 are reported as typed refusals, with no reconnect loop', async () => {
  const app = await server.app()
  const reader = await open(app, 'refusals', { access: 'r' })
  await reader.conn.synced()
  reader.ydoc.getText('t').insert(0, 'not allowed')
  await until(() => reader.conn.refusal, 'the refusal')
  assert.deepEqual({ code: reader.conn.refusal.code, kind: reader.conn.refusal.kind }, { code: 4403, kind: 'forbidden' })
  const big = await open(app, 'refusals')
  await big.conn.synced()
  big.ydoc.getText('t').insert(0, 'x'.repeat(200_000))
  await until(() => big.conn.refusal, 'the refusal')
  assert.equal(big.conn.refusal.kind, REFUSALS[4413])
  await sleep(1500)
  assert.equal(reader.conn.provider.wsconnected, false, 'no reconnect after 4403')
  assert.equal(big.conn.provider.wsconnected, false, 'no reconnect after 4413')
  assert.equal(big.events.filter((e) => e.name === 'refused').length, 1)
})

test('bad arguments and a getToken without a token are clear errors', async () => {
  await assert.rejects(connect({ server: server.base, doc: 'x', ydoc: new Y.Doc() }), /needs all four/)
  await assert.rejects(
    connect({ server: server.base, doc: 'x', ydoc: new Y.Doc(), getToken: async () => ({}) }),
    /getToken answered no token/
  )
})
