// 12. The stock provider over wss:// against `--tls-cert/--tls-key`: two
// clients converge (a large update too), and a SIGHUP with a new pair in
// place is picked up by new connections while the open ones stay connected
// and keep syncing. The certificates come from a private CA made here with
// openssl; the clients trust it as a browser trusts its store.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import tls from 'node:tls'
import { startServer, waitFor, text } from './lib/harness.js'

const scratch = mkdtempSync(path.join(os.tmpdir(), 'wiresocket-interop-tls-'))

/** A CA and a server certificate it signed for localhost and 127.0.0.1. */
function makeCa (name) {
  const p = (f) => path.join(scratch, `${name}-${f}`)
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  const openssl = (...args) => execFileSync('openssl', args, { stdio: 'pipe' })
  openssl('req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '2',
    '-subj', `/CN=WireSocket interop ${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
  openssl('req', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=localhost')
  writeFileSync(p('server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n')
  openssl('x509', '-req', '-in', p('server.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'),
    '-CAcreateserial', '-days', '2', '-extfile', p('server.ext'), '-out', p('server.crt'))
  return { ca: p('ca.crt'), cert: p('server.crt'), key: p('server.key') }
}

/** The certificate the listener serves now (its fingerprint), trusting `ca`. */
function servedFingerprint (port, ca) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: readFileSync(ca), servername: 'localhost' }, () => {
      resolve(socket.getPeerCertificate().fingerprint256)
      socket.end()
    })
    socket.on('error', reject)
  })
}

const fingerprint = (certPath) => new X509Certificate(readFileSync(certPath)).fingerprint256

let server, app, first, second
const live = { cert: path.join(scratch, 'live.crt'), key: path.join(scratch, 'live.key') }
before(async () => {
  first = makeCa('first')
  second = makeCa('second')
  copyFileSync(first.cert, live.cert)
  copyFileSync(first.key, live.key)
  server = await startServer({ tls: { ...live, ca: first.ca } })
  app = await server.createApp()
})
after(async () => {
  await server?.stop()
  rmSync(scratch, { recursive: true, force: true })
})

test('discovery answers wss:// and two stock providers converge over TLS', async () => {
  const token = await app.clientToken({ docs: ['tls/*'] })
  const url = await server.discover('tls/a', token)
  assert.match(url, /^wss:\/\/127\.0\.0\.1:\d+\/v1\/sync$/)
  const a = await server.connect('tls/a', token)
  const b = await server.connect('tls/a', token)
  a.ydoc.getText('text').insert(0, 'hello over wss')
  await waitFor(() => text(b.ydoc) === 'hello over wss', { message: () => `b sees a's edit (has ${JSON.stringify(text(b.ydoc))})` })
  // 2 MB in one update: many TLS records, more than the server's session buffers at once.
  const big = 'y'.repeat(2_000_000)
  b.ydoc.getText('text').insert(0, big)
  await waitFor(() => text(a.ydoc) === big + 'hello over wss', { timeout: 30_000, message: 'a sees the large update' })
  const stored = await app.getYDoc('tls/a')
  assert.equal(text(stored), big + 'hello over wss')
})

test('SIGHUP serves a new pair to new connections; open ones stay and sync', async () => {
  const token = await app.clientToken({ docs: ['reload'] })
  const open = await server.connect('reload', token)
  open.ydoc.getText('text').insert(0, 'before')
  assert.equal(await servedFingerprint(server.port, first.ca), fingerprint(first.cert))

  copyFileSync(second.cert, live.cert)
  copyFileSync(second.key, live.key)
  server.child.kill('SIGHUP')
  await waitFor(async () => (await servedFingerprint(server.port, second.ca)) === fingerprint(second.cert),
    { message: 'the new certificate to be served' })
  await assert.rejects(servedFingerprint(server.port, first.ca), 'the old CA no longer verifies new handshakes')

  // A client that trusts the new CA joins; the one from before the reload is still on.
  server.ca = readFileSync(second.ca, 'utf8')
  const late = await server.connect('reload', token)
  assert.equal(text(late.ydoc), 'before')
  open.ydoc.getText('text').insert(6, ' and after')
  await waitFor(() => text(late.ydoc) === 'before and after', { message: 'the late client sees the open one' })
  late.ydoc.getText('text').insert(0, '> ')
  await waitFor(() => text(open.ydoc) === '> before and after', { message: 'the open client sees the late one' })
  assert.deepEqual(open.provider.closeEvents, [], 'the connection from before the reload never closed')
})
