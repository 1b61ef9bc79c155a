// 6. Read-only tokens: updates flow in, writes are refused with 4403 and never applied.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, waitFor, waitClosed, sleep, text } from './lib/harness.js'

let server, app
before(async () => {
  server = await startServer()
  app = await server.createApp()
})
after(async () => { await server?.stop() })

test("an access 'r' client receives updates; its write closes it with 4403 and is not applied", { timeout: 60_000 }, async () => {
  const doc = 'readonly'
  const writer = await server.connect(doc, await app.clientToken({ docs: [doc], access: 'rw' }))
  writer.ydoc.getText('text').insert(0, 'written by the writer;')
  writer.ydoc.getMap('map').set('owner', 'writer')

  const reader = await server.connect(doc, await app.clientToken({ docs: [doc], access: 'r' }))
  assert.equal(text(reader.ydoc), 'written by the writer;', 'reader gets the state on sync')

  // Presence of a read-only client is relayed.
  reader.provider.awareness.setLocalStateField('user', { name: 'reader' })
  await waitFor(() => writer.provider.awareness.getStates().get(reader.ydoc.clientID)?.user?.name === 'reader', {
    message: "the writer to see the reader's awareness"
  })

  writer.ydoc.getText('text').insert(text(writer.ydoc).length, 'more;')
  await waitFor(() => text(reader.ydoc) === 'written by the writer;more;', { message: 'the reader to receive live updates' })
  assert.ok(reader.provider.wsconnected, 'the reader is still connected after handshake and awareness')
  assert.deepEqual(reader.provider.closeEvents, [])

  // The read-only client edits.
  reader.ydoc.getText('text').insert(0, 'EVIL;')
  reader.ydoc.getMap('map').set('owner', 'reader')
  const closed = await waitClosed(reader.provider)
  assert.equal(closed.code, 4403, `close code (reason ${JSON.stringify(closed.reason)})`)

  // The writer keeps writing; its next edit arriving elsewhere proves the
  // server has processed everything sent before it.
  writer.ydoc.getText('text').insert(text(writer.ydoc).length, 'after;')
  const fresh = await server.connect(doc, await app.clientToken({ docs: [doc], access: 'r' }))
  await waitFor(() => text(fresh.ydoc).endsWith('after;'), { message: "a fresh joiner to see the writer's last edit" })
  await sleep(300)

  const expected = 'written by the writer;more;after;'
  assert.equal(text(writer.ydoc), expected, "the writer's doc never contains the reader's edit")
  assert.equal(writer.ydoc.getMap('map').get('owner'), 'writer')
  assert.equal(text(fresh.ydoc), expected, "a fresh joiner doesn't get the reader's edit")
  assert.equal(fresh.ydoc.getMap('map').get('owner'), 'writer')

  const rest = await app.getYDoc(doc)
  assert.equal(text(rest), expected, "REST state doesn't contain the reader's edit")
  assert.equal(rest.getMap('map').get('owner'), 'writer')

  // 4403 is final for the stock provider: no reconnect.
  await sleep(1000)
  assert.equal(reader.provider.wsconnected, false)
  assert.equal(reader.provider.closeEvents.filter((e) => e).length, 1, 'no reconnect after 4403')
})

test("a delete-only edit by an access 'r' client is a write too: 4403, nothing deleted", { timeout: 60_000 }, async () => {
  const doc = 'readonly-delete'
  const writer = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  writer.ydoc.getText('text').insert(0, 'keep all of this')
  const reader = await server.connect(doc, await app.clientToken({ docs: [doc], access: 'r' }))
  assert.equal(text(reader.ydoc), 'keep all of this')

  // An update with no new structs, only a delete set.
  reader.ydoc.getText('text').delete(0, 5)
  const closed = await waitClosed(reader.provider)
  assert.equal(closed.code, 4403, `close code (reason ${JSON.stringify(closed.reason)})`)

  writer.ydoc.getText('text').insert(text(writer.ydoc).length, '!')
  const fresh = await server.connect(doc, await app.clientToken({ docs: [doc] }))
  await waitFor(() => text(fresh.ydoc).endsWith('!'), { message: () => `a fresh joiner to see the last edit (${JSON.stringify(text(fresh.ydoc))})` })
  await sleep(300)
  assert.equal(text(writer.ydoc), 'keep all of this!')
  assert.equal(text(fresh.ydoc), 'keep all of this!')
  assert.equal(text(await app.getYDoc(doc)), 'keep all of this!')
})
