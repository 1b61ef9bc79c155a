// The real `wiresocket` binary for the client's tests: a fresh data dir, a
// free port, one tenant with an operator session, and app helpers.

import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const BIN = process.env.WIRESOCKET_BIN || path.resolve(here, '../../../target/debug/wiresocket')

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export async function until (fn, what, timeout = 10_000) {
  const deadline = Date.now() + timeout
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

function port () {
  return new Promise((resolve, reject) => {
    const s = net.createServer().on('error', reject)
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  })
}

export async function start (args = []) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wiresocket-client-'))
  const p = await port()
  const child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${p}`, '--data-dir', dir, ...args], {
    env: { ...process.env, WIRESOCKET_LOG: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  const base = `http://127.0.0.1:${p}`
  await until(async () => (await fetch(`${base}/readyz`).catch(() => null))?.ok, 'the server to be ready')
  const call = async (method, p, { bearer, json, form, basic } = {}) => {
    const headers = {}
    if (bearer) headers.authorization = `Bearer ${bearer}`
    if (basic) headers.authorization = 'Basic ' + Buffer.from(basic.join(':')).toString('base64')
    let body
    if (json) { headers['content-type'] = 'application/json'; body = JSON.stringify(json) }
    if (form) { body = new URLSearchParams(form) }
    const res = await fetch(base + p, { method, headers, body })
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`)
    return res.status === 204 ? null : res.json()
  }
  const password = 'correct horse battery staple'
  const { tenant_id: tenant } = await call('POST', '/v1/setup', { json: { email: 'c@example.com', password, tenant_name: 'C' } })
  const { session_token: session } = await call('POST', '/v1/auth/login', { json: { email: 'c@example.com', password } })
  return {
    base,
    call,
    session,
    tenant,
    async app () {
      const a = await call('POST', `/v1/tenants/${tenant}/apps`, { bearer: session, json: { name: 'c', region: 'eu-central-1', plan: 'starter' } })
      const m2m = async () => (await call('POST', '/oauth/token', { basic: [a.client_id, a.client_secret], form: { grant_type: 'client_credentials' } })).access_token
      let token = await m2m()
      // What the user's backend would do: mint a client token per request.
      const mint = async (body) => {
        try {
          return await call('POST', '/v1/client-tokens', { bearer: token, json: body })
        } catch {
          token = await m2m() // the M2M token expired or its key was revoked
          return call('POST', '/v1/client-tokens', { bearer: token, json: body })
        }
      }
      return { ...a, mint }
    },
    async stop () {
      child.kill('SIGKILL')
      await new Promise((resolve) => child.exitCode !== null ? resolve() : child.once('exit', resolve))
      await rm(dir, { recursive: true, force: true })
    }
  }
}
