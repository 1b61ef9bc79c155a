// Test harness: starts the real `wiresocket` binary on a free port with a fresh
// data dir, bootstraps a tenant and apps over the public HTTP API, and connects
// stock `y-websocket` providers (with the `ws` package as the WebSocket).
//
// Every provider created through a Server is destroyed by `server.stop()`, so
// a test file's event loop can drain and `node --test` can finish.

import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import https from 'node:https'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const here = path.dirname(fileURLToPath(import.meta.url))

export const BIN =
  process.env.WIRESOCKET_BIN ||
  path.resolve(here, '../../../target/debug/wiresocket')

export const DEFAULT_TIMEOUT = 10_000

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Poll `fn` until it returns a truthy value (which is returned) or throw after
 * `timeout` ms. `fn` may be async; exceptions inside `fn` count as "not yet"
 * and the last one is reported on timeout. `message` may be a function, called
 * on timeout (to show the state at that moment).
 */
export async function waitFor (fn, { timeout = DEFAULT_TIMEOUT, interval = 20, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  let lastError = null
  for (;;) {
    try {
      const value = await fn()
      if (value) return value
    } catch (err) {
      lastError = err
    }
    if (Date.now() > deadline) {
      const detail = lastError ? ` (last error: ${lastError.message})` : ''
      const what = typeof message === 'function' ? message() : message
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${detail}`)
    }
    await sleep(interval)
  }
}

/** A port that was free a moment ago (listen on 0, read it, close). */
export function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/**
 * A `ws` WebSocket class that sends the given Origin header (as a browser
 * would) and, for `wss://`, trusts the PEM CA `ca` (as a browser trusts its
 * store).
 */
export function webSocketWithOrigin (origin, ca) {
  const options = {}
  if (origin) options.origin = origin
  if (ca) options.ca = ca
  return class OriginWebSocket extends WebSocket {
    constructor (url, protocols) {
      super(url, protocols, options)
    }
  }
}

/** `fetch` for an https:// URL signed by the PEM CA `ca` (Node's fetch takes no CA). */
function fetchTrusting (ca, url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, headers, ca }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => {
        const empty = res.statusCode === 204 || res.statusCode === 304
        const h = new Headers()
        for (const [k, v] of Object.entries(res.headers)) h.set(k, Array.isArray(v) ? v.join(', ') : v)
        resolve(new Response(empty ? null : Buffer.concat(chunks), { status: res.statusCode, headers: h }))
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body === undefined ? undefined : Buffer.from(body))
  })
}

/** Text body of a response, for error messages. */
async function describe (res) {
  let body = ''
  try { body = await res.text() } catch {}
  return `${res.status} ${body.slice(0, 500)}`
}

/** Basic auth per RFC 6749 §2.3.1 (form-urlencode, then base64). */
export function basicAuth (clientId, clientSecret) {
  const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+')
  return 'Basic ' + Buffer.from(`${enc(clientId)}:${enc(clientSecret)}`).toString('base64')
}

export class Server {
  constructor ({ port, dataDir, child, ca }) {
    this.port = port
    /** With TLS: the PEM CA that signed the server's certificate. */
    this.ca = ca
    this.base = `${ca ? 'https' : 'http'}://127.0.0.1:${port}`
    this.dataDir = dataDir
    this.child = child
    this.log = []
    this.exited = null
    /** @type {Set<WebsocketProvider>} */
    this.providers = new Set()
    /** @type {Set<WebSocket>} */
    this.sockets = new Set()
    this.session = null
    this.tenantId = null
  }

  /** The last lines the server wrote (stdout + stderr). */
  logTail (n = 40) {
    return this.log.slice(-n).join('\n')
  }

  // ---------------------------------------------------------------- HTTP --

  async http (method, p, { bearer, json, body, headers = {}, expect } = {}) {
    const h = { ...headers }
    if (bearer) h.authorization = `Bearer ${bearer}`
    let payload = body
    if (json !== undefined) {
      h['content-type'] = 'application/json'
      payload = JSON.stringify(json)
    }
    const init = { method, headers: h, body: payload }
    const res = this.ca ? await fetchTrusting(this.ca, this.base + p, init) : await fetch(this.base + p, init)
    if (expect !== undefined && res.status !== expect) {
      throw new Error(`${method} ${p}: expected ${expect}, got ${await describe(res)}`)
    }
    return res
  }

  async json (method, p, opts = {}) {
    const res = await this.http(method, p, opts)
    return res.status === 204 ? null : res.json()
  }

  /** First user, tenant and a session. */
  async bootstrap () {
    const email = 'ops@interop.test'
    const password = 'correct horse battery staple'
    const setup = await this.json('POST', '/v1/setup', {
      json: { email, password, tenant_name: 'Interop' },
      expect: 201
    })
    this.tenantId = setup.tenant_id
    const login = await this.json('POST', '/v1/auth/login', {
      json: { email, password },
      expect: 200
    })
    this.session = login.session_token
    return this
  }

  /** Creates an app (starter plan) and fetches an M2M token for it. */
  async createApp ({ name = `app-${Math.random().toString(36).slice(2, 8)}`, allowed_domains } = {}) {
    const json = { name, region: 'eu-central-1', plan: 'starter' }
    if (allowed_domains) json.allowed_domains = allowed_domains
    const created = await this.json('POST', `/v1/tenants/${this.tenantId}/apps`, {
      bearer: this.session,
      json,
      expect: 201
    })
    const app = new App(this, created)
    app.m2m = await app.fetchM2M()
    return app
  }

  async discover (doc, token) {
    const res = await this.http('GET', `/v1/discovery/${encodeURIComponent(doc)}`, { bearer: token, expect: 200 })
    const body = await res.json()
    if (typeof body.url !== 'string') throw new Error(`discovery answered no url: ${JSON.stringify(body)}`)
    return body.url
  }

  // ----------------------------------------------------------- providers --

  /**
   * A stock WebsocketProvider on `doc`, with the serverUrl from discovery.
   * Records every close event in `provider.closeEvents` (CloseEvent or null
   * for local closes). Resolves once connected and synced unless `wait` is false.
   */
  async connect (doc, token, { ydoc = new Y.Doc(), origin, wait = true, connect = true } = {}) {
    const url = await this.discover(doc, token)
    const provider = new WebsocketProvider(url, doc, ydoc, {
      params: { token },
      WebSocketPolyfill: webSocketWithOrigin(origin, this.ca),
      connect,
      // Node 20 has a global BroadcastChannel: without this, providers in one
      // process would sync with each other directly, bypassing the server.
      disableBc: true
    })
    provider.closeEvents = []
    provider.on('connection-close', (event) => {
      provider.closeEvents.push(event ? { code: event.code, reason: event.reason } : null)
    })
    this.providers.add(provider)
    if (wait && connect) await waitSynced(provider)
    return { ydoc, provider }
  }

  /**
   * Opens a raw `ws` socket to `<syncUrl>/<doc>?token=…` and reports either
   * `{ status }` (refused before the upgrade) or `{ open: true, ws }`.
   * `syncUrl` is what discovery answered.
   */
  rawOpen (syncUrl, doc, token, { origin, timeout = DEFAULT_TIMEOUT } = {}) {
    let target = `${syncUrl}/${doc}`
    if (token !== undefined) target += `?token=${encodeURIComponent(token)}`
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(target, origin ? { origin } : {})
      this.sockets.add(ws)
      const timer = setTimeout(() => {
        ws.terminate()
        reject(new Error(`raw socket to ${target}: neither opened nor refused within ${timeout} ms`))
      }, timeout)
      ws.on('unexpected-response', (_req, res) => {
        clearTimeout(timer)
        res.resume()
        ws.terminate() // aborts the request; the resulting 'error' is ignored below
        resolve({ status: res.statusCode })
      })
      ws.on('open', () => {
        clearTimeout(timer)
        resolve({ open: true, ws })
      })
      ws.on('error', (err) => {
        clearTimeout(timer)
        reject(err)
      })
    })
  }

  // ----------------------------------------------------------- lifecycle --

  async stop () {
    for (const p of this.providers) {
      try { p.destroy() } catch {}
      // The Awareness keeps an interval timer until its doc is destroyed.
      try { p.awareness.destroy() } catch {}
      try { p.doc.destroy() } catch {}
    }
    this.providers.clear()
    for (const ws of this.sockets) {
      try { ws.terminate() } catch {}
    }
    this.sockets.clear()
    if (this.exited === null) {
      this.child.kill('SIGTERM')
      const killer = setTimeout(() => this.child.kill('SIGKILL'), 5000)
      await this.exitPromise
      clearTimeout(killer)
    }
    await rm(this.dataDir, { recursive: true, force: true })
  }
}

export class App {
  constructor (server, created) {
    this.server = server
    this.id = created.id
    this.clientId = created.client_id
    this.clientSecret = created.client_secret
    this.created = created
    this.m2m = null
  }

  get basic () {
    return basicAuth(this.clientId, this.clientSecret)
  }

  async fetchM2M () {
    const res = await this.server.http('POST', '/oauth/token', {
      headers: { authorization: this.basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials',
      expect: 200
    })
    const body = await res.json()
    return body.access_token
  }

  /** `POST /v1/client-tokens` with the app's M2M token; answers `{token, expires_in}`. */
  async clientTokenFull ({ docs = ['*'], access, user, ttl_seconds } = {}) {
    const json = { docs }
    if (access) json.access = access
    if (user) json.user = user
    if (ttl_seconds !== undefined) json.ttl_seconds = ttl_seconds
    return this.server.json('POST', '/v1/client-tokens', { bearer: this.m2m, json, expect: 200 })
  }

  async clientToken (opts) {
    return (await this.clientTokenFull(opts)).token
  }

  /** `POST /oauth/revoke` (RFC 7009) for a token of this app. */
  async revoke (token) {
    return this.server.http('POST', '/oauth/revoke', {
      headers: { authorization: this.basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }).toString()
    })
  }

  /** REST: full state of a doc, or null on 404. */
  async getDoc (doc) {
    const res = await this.server.http('GET', `/v1/docs/${encodeURIComponent(doc)}`, { bearer: this.m2m })
    if (res.status === 404) return null
    if (res.status !== 200) throw new Error(`GET /v1/docs/${doc}: ${await describe(res)}`)
    return new Uint8Array(await res.arrayBuffer())
  }

  /** REST: full state decoded into a fresh Y.Doc (empty doc on 404). */
  async getYDoc (doc) {
    const ydoc = new Y.Doc()
    const bytes = await this.getDoc(doc)
    if (bytes) Y.applyUpdate(ydoc, bytes)
    return ydoc
  }

  async postUpdate (doc, update) {
    return this.server.http('POST', `/v1/docs/${encodeURIComponent(doc)}/update`, {
      bearer: this.m2m,
      headers: { 'content-type': 'application/octet-stream' },
      body: update
    })
  }
}

/**
 * Starts the binary on a free port with a fresh data dir; waits for /readyz.
 * With `tls: { cert, key, ca }` (file paths, PEM) it serves HTTPS and WSS
 * only, and the harness trusts `ca`.
 */
export async function startServer ({ extraArgs = [], bootstrap = true, tls, env = {} } = {}) {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'wiresocket-interop-'))
  const port = await freePort()
  const tlsArgs = tls ? ['--tls-cert', tls.cert, '--tls-key', tls.key] : []
  const args = ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...tlsArgs, ...extraArgs]
  const child = spawn(BIN, args, {
    env: { ...process.env, WIRESOCKET_LOG: process.env.WIRESOCKET_LOG || 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const ca = tls ? await readFile(tls.ca, 'utf8') : undefined
  const server = new Server({ port, dataDir, child, ca })
  server.exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      server.exited = { code, signal }
      resolve()
    })
    child.on('error', (err) => {
      server.exited = { error: err }
      server.log.push(`spawn error: ${err.message}`)
      resolve()
    })
  })
  const collect = (stream) => {
    stream.setEncoding('utf8')
    let partial = ''
    stream.on('data', (chunk) => {
      const lines = (partial + chunk).split('\n')
      partial = lines.pop()
      for (const line of lines) {
        server.log.push(line)
        if (process.env.INTEROP_SERVER_LOG) process.stderr.write(`[wiresocket] ${line}\n`)
      }
      if (server.log.length > 2000) server.log.splice(0, server.log.length - 1000)
    })
  }
  collect(child.stdout)
  collect(child.stderr)
  // Last resort: never leave a server behind when the test process exits.
  process.once('exit', () => { if (server.exited === null) child.kill('SIGKILL') })

  try {
    await waitFor(async () => {
      if (server.exited) throw new Error(`server exited early: ${JSON.stringify(server.exited)}`)
      const res = await server.http('GET', '/readyz')
      await res.arrayBuffer()
      return res.status === 200
    }, { timeout: 30_000, interval: 50, message: `${server.base}/readyz = 200` })
  } catch (err) {
    await server.stop()
    throw new Error(`${err.message}\n--- server output ---\n${server.logTail()}`)
  }
  if (bootstrap) await server.bootstrap()
  return server
}

// ------------------------------------------------------------- providers --

export function waitSynced (provider, timeout = DEFAULT_TIMEOUT) {
  return waitFor(() => provider.synced && provider.wsconnected, { timeout, message: `provider ${provider.roomname} to sync` })
}

/** Resolves with the first server close `{code, reason}` seen after this call (or already recorded). */
export async function waitClosed (provider, { timeout = DEFAULT_TIMEOUT, from = 0 } = {}) {
  return waitFor(() => provider.closeEvents.slice(from).find((e) => e !== null), {
    timeout,
    message: `server to close the socket of ${provider.roomname}`
  })
}

export const text = (ydoc, name = 'text') => ydoc.getText(name).toString()

/** JSON with object keys sorted, so that equal contents compare equal as strings. */
export function canonical (value) {
  return JSON.stringify(value, (_key, v) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v
  )
}

/** Everything a test compares: the text and map contents (Y.Map key order is not part of the state). */
export function content (ydoc) {
  return canonical({ text: ydoc.getText('text').toString(), map: ydoc.getMap('map').toJSON() })
}

/** A small deterministic PRNG (mulberry32) so a failing random run can be replayed. */
export function rng (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export { Y, WebSocket, WebsocketProvider }
