// 5. 20 clients making random concurrent edits converge, and a late joiner agrees.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, waitFor, content, rng, sleep, Y } from './lib/harness.js'

const CLIENTS = 20
const OPS = 30
const SEED = Number(process.env.INTEROP_SEED || Date.now() % 1_000_000)

let server, app
before(async () => {
  server = await startServer()
  app = await server.createApp()
})
after(async () => { await server?.stop() })

test(`${CLIENTS} clients with random concurrent edits converge (seed ${SEED})`, { timeout: 120_000 }, async () => {
  const doc = 'crowd'
  const token = await app.clientToken({ docs: [doc] })
  const clients = await Promise.all(
    Array.from({ length: CLIENTS }, () => server.connect(doc, token))
  )

  const edit = async (client, i) => {
    const random = rng(SEED * 1000 + i)
    const ytext = client.ydoc.getText('text')
    const ymap = client.ydoc.getMap('map')
    for (let op = 0; op < OPS; op++) {
      const r = random()
      if (r < 0.5 || ytext.length === 0) {
        const pos = Math.floor(random() * (ytext.length + 1))
        ytext.insert(pos, `${String.fromCharCode(97 + (i % 26))}${op}`)
      } else if (r < 0.75) {
        const pos = Math.floor(random() * ytext.length)
        const len = Math.min(1 + Math.floor(random() * 3), ytext.length - pos)
        ytext.delete(pos, len)
      } else {
        ymap.set(`k${Math.floor(random() * 10)}`, `c${i}-op${op}`)
      }
      await sleep(Math.floor(random() * 15))
    }
  }
  await Promise.all(clients.map(edit))

  const describeAll = () => clients.map((c, i) => `#${i}: ${content(c.ydoc).slice(0, 120)}`).join('\n')
  await waitFor(() => clients.every((c) => content(c.ydoc) === content(clients[0].ydoc)), {
    timeout: 30_000,
    interval: 50,
    message: () => `all ${CLIENTS} docs to converge\n${describeAll()}`
  })
  // Compare the decoded full states, not just the live types.
  const decoded = (ydoc) => {
    const copy = new Y.Doc()
    Y.applyUpdate(copy, Y.encodeStateAsUpdate(ydoc))
    return content(copy)
  }
  const expected = decoded(clients[0].ydoc)
  for (const [i, c] of clients.entries()) assert.equal(decoded(c.ydoc), expected, `client #${i}`)
  for (const c of clients) {
    assert.deepEqual(Y.decodeStateVector(Y.encodeStateVector(c.ydoc)), Y.decodeStateVector(Y.encodeStateVector(clients[0].ydoc)))
  }
  // Every client's writes are in every state vector.
  const sv = Y.decodeStateVector(Y.encodeStateVector(clients[0].ydoc))
  for (const c of clients) assert.ok(sv.get(c.ydoc.clientID) > 0, `writes of client ${c.ydoc.clientID} present`)
  assert.ok(clients[0].ydoc.getMap('map').size > 0, 'map has entries')

  const late = await server.connect(doc, token)
  assert.equal(content(late.ydoc), content(clients[0].ydoc), 'late joiner has the same content')

  const rest = await app.getYDoc(doc)
  assert.equal(content(rest), content(clients[0].ydoc), 'REST state has the same content')
})
