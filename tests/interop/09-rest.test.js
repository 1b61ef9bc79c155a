// 9. Documents REST round trip with live providers, including a name with a slash.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startServer, waitFor, text, Y } from './lib/harness.js'

let server, app
before(async () => {
  server = await startServer()
  app = await server.createApp()
})
after(async () => { await server?.stop() })

for (const doc of ['rest-doc', 'team/notes']) {
  test(`REST update reaches a provider and REST read returns the state (${doc})`, { timeout: 60_000 }, async () => {
    const live = await server.connect(doc, await app.clientToken({ docs: [doc] }))
    assert.equal(await app.getDoc(doc), null, 'a never-written doc is 404')

    const source = new Y.Doc()
    source.getText('text').insert(0, `hello from REST to ${doc}`)
    source.getMap('map').set('via', 'rest')
    const res = await app.postUpdate(doc, Y.encodeStateAsUpdate(source))
    assert.equal(res.status, 204, `POST update answered ${res.status} ${await res.text()}`)

    await waitFor(() => text(live.ydoc) === `hello from REST to ${doc}`, { message: 'the provider to see the REST update' })
    assert.equal(live.ydoc.getMap('map').get('via'), 'rest')

    // A socket edit, then the REST read has both.
    live.ydoc.getText('text').insert(0, '>> ')
    const expected = `>> hello from REST to ${doc}`
    await waitFor(async () => text(await app.getYDoc(doc)) === expected, { message: 'REST read to include the socket edit' })
    const bytes = await app.getDoc(doc)
    const fresh = new Y.Doc()
    Y.applyUpdate(fresh, bytes)
    assert.equal(text(fresh), expected)
    assert.equal(fresh.getMap('map').get('via'), 'rest')

    // A late provider joiner sees the same.
    const late = await server.connect(doc, await app.clientToken({ docs: [doc] }))
    assert.equal(text(late.ydoc), expected)

    // The doc is listed under its real (decoded) name.
    const list = await server.json('GET', '/v1/docs?limit=500', { bearer: app.m2m, expect: 200 })
    assert.ok(list.items.some((d) => d.name === doc), `GET /v1/docs lists ${doc}: ${JSON.stringify(list.items.map((d) => d.name))}`)
  })
}

test("'team/notes' via the provider (unencoded path) and REST (encoded) is one document, distinct from 'team'", { timeout: 60_000 }, async () => {
  const doc = 'team/notes'
  const p = await server.connect(doc, await app.clientToken({ docs: ['team/*'] }))
  assert.equal(p.provider.url.includes('/v1/sync/team/notes?'), true, `provider url ${p.provider.url}`)
  assert.equal(await app.getDoc('team'), null, "nothing was written to 'team'")
  assert.ok(text(p.ydoc).endsWith(`hello from REST to ${doc}`))
})

test('documents REST takes only the M2M token: a client token is 403, no token 401', { timeout: 60_000 }, async () => {
  const doc = 'rest-doc'
  const clientToken = await app.clientToken({ docs: [doc] })
  const source = new Y.Doc()
  source.getText('text').insert(0, 'not allowed')
  const post = await server.http('POST', `/v1/docs/${doc}/update`, {
    bearer: clientToken,
    headers: { 'content-type': 'application/octet-stream' },
    body: Y.encodeStateAsUpdate(source)
  })
  assert.equal(post.status, 403, `POST with a client token: ${post.status} ${await post.text()}`)
  const get = await server.http('GET', `/v1/docs/${doc}`, { bearer: clientToken })
  assert.equal(get.status, 403, `GET with a client token: ${get.status}`)
  await get.arrayBuffer()
  const anon = await server.http('GET', `/v1/docs/${doc}`)
  assert.equal(anon.status, 401)
  await anon.arrayBuffer()
  assert.ok(!text(await app.getYDoc(doc)).includes('not allowed'))
})
