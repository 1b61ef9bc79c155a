// What the browser tests stand on: the real `wiresocket` binary on a free
// port with its own data dir, headless Chromium (Debian's), TOTP codes as an
// authenticator app computes them, the mail outbox, and a console watch
// that fails the test on any error the page logs.

import { spawn } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const here = path.dirname(fileURLToPath(import.meta.url))
export const ROOT = path.resolve(here, '../..')
const BIN = process.env.WIRESOCKET_BIN || path.join(ROOT, 'target/debug/wiresocket')
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium'
export const ARTIFACTS = path.join(ROOT, 'test-artifacts')

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export async function until (fn, what, timeout = 10_000) {
  const deadline = Date.now() + timeout
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

function freePort () {
  return new Promise((resolve, reject) => {
    const s = net.createServer().on('error', reject)
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
  })
}

/** The real server, empty: the browser does the first-run setup. */
export async function startServer () {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wiresocket-dashboard-'))
  const port = await freePort()
  const child = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dir], {
    env: { ...process.env, WIRESOCKET_LOG: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  const base = `http://127.0.0.1:${port}`
  await until(async () => (await fetch(`${base}/readyz`).catch(() => null))?.ok, 'the server to be ready')
  return {
    base,
    dir,
    /** Every mail in the outbox to `to`, bodies decoded (quoted-printable). */
    async mailsTo (to) {
      const out = path.join(dir, 'outbox')
      const names = await readdir(out).catch(() => [])
      const mails = []
      for (const n of names.filter((n) => n.endsWith('.eml'))) {
        const raw = await readFile(path.join(out, n), 'utf8')
        const [head, ...rest] = raw.split('\r\n\r\n')
        if (!head.split('\r\n').some((l) => l.toLowerCase() === `to: ${to}`.toLowerCase())) continue
        let body = rest.join('\r\n\r\n')
        if (/content-transfer-encoding: quoted-printable/i.test(head)) body = decodeQuotedPrintable(body)
        mails.push(body)
      }
      return mails
    },
    /** The first link to `<base>/dashboard/<page>#token=…` mailed to `to`. */
    async linkMailedTo (to, page) {
      const re = new RegExp(`${base.replace(/[.:/]/g, '\\$&')}/dashboard/${page}#token=[A-Za-z0-9_\\-]+`)
      return until(async () => (await this.mailsTo(to)).map((b) => b.match(re)?.[0]).find(Boolean), `a ${page} mail to ${to}`)
    },
    async stop () {
      child.kill('SIGKILL')
      await new Promise((resolve) => child.exitCode !== null ? resolve() : child.once('exit', resolve))
      await rm(dir, { recursive: true, force: true })
    }
  }
}

export function decodeQuotedPrintable (s) {
  const bytes = []
  const joined = s.replace(/=\r?\n/g, '')
  for (let i = 0; i < joined.length; i++) {
    const hex = joined.slice(i + 1, i + 3)
    if (joined[i] === '=' && /^[0-9A-Fa-f]{2}$/.test(hex)) { bytes.push(parseInt(hex, 16)); i += 2 } else bytes.push(...Buffer.from(joined[i]))
  }
  return Buffer.from(bytes).toString('utf8')
}

function base32Decode (s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
  let bits = 0
  let value = 0
  const out = []
  for (const c of s.replace(/=+$/, '').toUpperCase()) {
    const i = alphabet.indexOf(c)
    if (i < 0) throw new Error(`not base32: ${c}`)
    value = (value << 5) | i
    bits += 5
    if (bits >= 8) { out.push((value >>> (bits - 8)) & 0xff); bits -= 8 }
  }
  return Buffer.from(out)
}

/** RFC 6238 (SHA-1, 6 digits, 30 s) at `atMs`, as an authenticator app shows it. */
export function totp (secret, atMs = Date.now()) {
  const counter = Buffer.alloc(8)
  counter.writeBigUInt64BE(BigInt(Math.floor(atMs / 1000 / 30)))
  const mac = createHmac('sha1', base32Decode(secret)).update(counter).digest()
  const off = mac[mac.length - 1] & 0xf
  const n = ((mac[off] & 0x7f) << 24) | (mac[off + 1] << 16) | (mac[off + 2] << 8) | mac[off + 3]
  return String(n % 1_000_000).padStart(6, '0')
}

export async function launch () {
  await mkdir(ARTIFACTS, { recursive: true })
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] })
}

/**
 * A browser context whose pages fail the test on any console error or
 * uncaught exception. The one exception: Chromium logs every API answer
 * of 4xx as "Failed to load resource"; those the test provokes on purpose
 * (a sign-in that asks for the MFA code, a forced forbidden action) are
 * listed in `allowed` (regular expressions of the path), and any other
 * such message still fails.
 */
export async function watchedContext (browser, base, { allowed = [] } = {}) {
  const context = await browser.newContext({ viewport: { width: 1366, height: 860 } })
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base })
  const errors = []
  context.on('page', (page) => watchPage(page, errors, allowed))
  return {
    context,
    errors,
    async page () {
      const p = await context.newPage()
      return p
    }
  }
}

function watchPage (page, errors, allowed) {
  page.on('pageerror', (e) => errors.push(`uncaught: ${e.message}`))
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return
    const url = msg.location()?.url ?? ''
    const isApiAnswer = /Failed to load resource: the server responded with a status of 4\d\d/.test(msg.text())
    if (isApiAnswer && allowed.some((re) => re.test(new URL(url, 'http://x').pathname))) return
    errors.push(`console: ${msg.text()} (${url})`)
  })
}

export async function shot (page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: false })
}
