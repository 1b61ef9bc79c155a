// @wiresocket/client: one call from a Y.Doc to a live WireSocket connection.
//
//   const conn = await connect({ server, doc, ydoc, getToken })
//
// - `getToken(doc)` is yours: it asks YOUR backend for a client token (your
//   backend holds the app's credentials and calls POST /v1/client-tokens).
//   It answers `{ token, expires_in }` (what that endpoint answers) or the
//   token string.
// - Discovery (GET /v1/discovery/{doc}) picks the node; the stock
//   y-websocket provider does the syncing (`conn.provider`).
// - The token is refreshed in-band (a text frame, see the README) before it
//   expires, and the fresh one is used for any reconnect.
// - Close codes: 4401 (token expired or revoked) gets a new token and
//   reconnects; 4503 (node draining) discovers again and reconnects there;
//   4403, 4404, 4413 and 4429 are final and reported as a `refused` event
//   ({ code, kind, reason }) instead of a silent reconnect loop.
//
// Events (conn.on(name, fn)): 'refused', 'token' ({ expires_in }: a new token
// is in use), 'rediscovered' ({ url }), 'error' (Error: getToken or discovery
// failed; retried with backoff), and the provider's own 'status' and 'sync'.

import { WebsocketProvider } from 'y-websocket'

/** Close codes that end the connection for good, by the kind reported. */
export const REFUSALS = Object.freeze({
  4403: 'forbidden',
  4404: 'deleted',
  4413: 'too-large',
  4429: 'rate-limited'
})

const TOKEN = 4401
const DRAINING = 4503
/** Refresh this long before expiry (or at half the lifetime, if shorter). */
const REFRESH_MARGIN_S = 60
const MAX_RETRY_MS = 30_000

export class WireSocketError extends Error {
  constructor (message, { status, code } = {}) {
    super(message)
    this.name = 'WireSocketError'
    this.status = status
    this.code = code
  }
}

/**
 * @param {object} opts
 * @param {string} opts.server   the WireSocket base URL, e.g. https://rt.example.com
 * @param {string} opts.doc      the document name (may contain `/`)
 * @param {import('yjs').Doc} opts.ydoc
 * @param {(doc: string) => Promise<string | { token: string, expires_in?: number }>} opts.getToken
 * @param {object} [opts.providerOptions] passed to the WebsocketProvider (awareness, WebSocketPolyfill, disableBc, …)
 * @param {typeof fetch} [opts.fetch]
 * @returns {Promise<Connection>} once the provider is created (not yet synced: wait for `conn.synced()`)
 */
export async function connect (opts) {
  const conn = new Connection(opts)
  await conn.start()
  return conn
}

export class Connection {
  constructor ({ server, doc, ydoc, getToken, providerOptions = {}, fetch: fetchImpl = globalThis.fetch }) {
    if (!server || !doc || !ydoc || typeof getToken !== 'function') {
      throw new TypeError('connect({ server, doc, ydoc, getToken }) needs all four')
    }
    this.server = server.replace(/\/+$/, '')
    this.doc = doc
    this.ydoc = ydoc
    this.getToken = getToken
    this.providerOptions = providerOptions
    this.fetch = fetchImpl
    /** @type {WebsocketProvider | null} */
    this.provider = null
    this.token = null
    this.destroyed = false
    this.refusal = null
    this._listeners = new Map()
    this._refreshTimer = null
    this._retries = 0
  }

  on (name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set())
    this._listeners.get(name).add(fn)
    return () => this._listeners.get(name)?.delete(fn)
  }

  _emit (name, value) {
    for (const fn of this._listeners.get(name) ?? []) {
      try { fn(value) } catch (err) { queueMicrotask(() => { throw err }) }
    }
  }

  /** Resolves when the document has synced with the server. */
  synced () {
    if (this.provider?.synced) return Promise.resolve()
    return new Promise((resolve) => {
      const off = this.on('sync', (s) => { if (s) { off(); resolve() } })
    })
  }

  async start () {
    await this._newToken()
    const url = await this._discover()
    this.provider = new WebsocketProvider(url, this.doc, this.ydoc, {
      ...this.providerOptions,
      params: { ...(this.providerOptions.params ?? {}), token: this.token },
      // Ours to decide: the 44xx codes and 4503 need more than a blind retry.
      shouldReconnect: (event) => !(event.code === DRAINING || (event.code >= 4400 && event.code < 4500))
    })
    this.provider.on('status', (e) => this._emit('status', e))
    this.provider.on('sync', (s) => this._emit('sync', s))
    this.provider.on('connection-close', (event) => {
      if (event && !this.destroyed) this._closed(event)
    })
  }

  /** Ends the connection and the refresh timer (the Y.Doc is yours and stays). */
  destroy () {
    this.destroyed = true
    clearTimeout(this._refreshTimer)
    this.provider?.destroy()
    // An Awareness the provider made keeps an interval timer until destroyed;
    // one given in `providerOptions` is the caller's.
    if (!this.providerOptions.awareness) this.provider?.awareness.destroy()
  }

  _closed ({ code, reason }) {
    if (code in REFUSALS) {
      this.refusal = { code, kind: REFUSALS[code], reason }
      clearTimeout(this._refreshTimer)
      this._emit('refused', this.refusal)
    } else if (code === TOKEN) {
      this._recover(async () => { await this._newToken() })
    } else if (code === DRAINING) {
      this._recover(async () => {
        const url = await this._discover()
        this.provider.serverUrl = url
        this._emit('rediscovered', { url })
      })
    }
  }

  /** Runs `step`, then reconnects; on failure retries with backoff. */
  _recover (step) {
    const attempt = async () => {
      if (this.destroyed) return
      try {
        await step()
        this._retries = 0
        this.provider.connect()
      } catch (err) {
        this._emit('error', err)
        this._retries += 1
        const delay = Math.min(MAX_RETRY_MS, 250 * 2 ** Math.min(this._retries, 7))
        setTimeout(attempt, delay)
      }
    }
    attempt()
  }

  async _newToken () {
    const answer = await this.getToken(this.doc)
    const token = typeof answer === 'string' ? answer : answer?.token
    if (typeof token !== 'string' || token === '') {
      throw new WireSocketError('getToken answered no token (want a string or { token, expires_in })')
    }
    const expiresIn = typeof answer === 'object' && Number.isFinite(answer.expires_in) ? answer.expires_in : null
    this.token = token
    if (this.provider) this.provider.params = { ...this.provider.params, token }
    this._emit('token', { expires_in: expiresIn })
    this._scheduleRefresh(expiresIn)
    return token
  }

  _scheduleRefresh (expiresIn) {
    clearTimeout(this._refreshTimer)
    if (expiresIn == null || this.destroyed) return
    // `exp` is in whole seconds and may be up to one second earlier than
    // `expires_in` counted from now: keep that second too.
    const lead = Math.min(REFRESH_MARGIN_S, expiresIn / 2)
    const inMs = Math.max(0, (expiresIn - lead - 1) * 1000)
    this._refreshTimer = setTimeout(() => this._refresh(), inMs)
    // Never keep a Node process alive just to refresh.
    this._refreshTimer.unref?.()
  }

  /** A fresh token, sent in-band on the open socket (and kept for reconnects). */
  async _refresh () {
    if (this.destroyed || this.refusal) return
    try {
      const token = await this._newToken()
      const ws = this.provider?.ws
      if (ws && ws.readyState === 1) ws.send(JSON.stringify({ type: 'refresh', token }))
    } catch (err) {
      this._emit('error', err)
      // Try again soon; a 4401 will follow if the old token runs out first.
      this._refreshTimer = setTimeout(() => this._refresh(), 5000)
      this._refreshTimer.unref?.()
    }
  }

  async _discover () {
    const res = await this.fetch(`${this.server}/v1/discovery/${encodeURIComponent(this.doc)}`, {
      headers: { authorization: `Bearer ${this.token}` }
    })
    let body = null
    try { body = await res.json() } catch {}
    if (!res.ok || typeof body?.url !== 'string') {
      throw new WireSocketError(`discovery failed: ${res.status} ${body?.error ?? ''}`.trim(), {
        status: res.status,
        code: body?.error
      })
    }
    return body.url
  }
}
