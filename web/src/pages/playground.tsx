// The live playground: two editors side by side on one document, each its
// own Y.Doc and its own WebSocket to the real data plane (no shortcut
// between them: BroadcastChannel is off), each with a client token minted
// for it. Each shows the other's cursor and name through awareness.
// Loaded on demand (yjs and y-websocket stay out of the main bundle).
import type { ComponentChildren } from 'preact'
import { useEffect, useRef, useState } from 'preact/hooks'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { get, message, post } from '../api'
import { tpath, useCtx, type Ctx } from '../context'
import { Alert, Badge, Field, inputValue } from '../ui'

interface Minted { token: string, expires_in: number }
interface Discovery { url: string, node_id: string, region: string }

const PALETTE = 6
const TEXT = 'text'

async function connectionFor (ctx: Ctx, appId: string, doc: string): Promise<{ token: string, url: string }> {
  const { token } = await post<Minted>(tpath(ctx, `/apps/${appId}/client-tokens`), { docs: [doc] })
  // Discovery takes the app's tokens, not the session.
  const res = await fetch(`/v1/discovery/${encodeURIComponent(doc)}`, { headers: { authorization: `Bearer ${token}` } })
  const body = await res.json() as Discovery & { message?: string }
  if (!res.ok) throw new Error(body.message ?? `discovery answered ${res.status}`)
  return { token, url: body.url }
}

interface Peer { id: number, name: string, color: number, index: number | null }

/** Index in `text` of a stored relative position, if it still resolves. */
function absolute (ydoc: Y.Doc, rel: unknown): number | null {
  if (!rel) return null
  try {
    const pos = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(rel), ydoc)
    return pos ? pos.index : null
  } catch {
    return null
  }
}

function Editor ({ appId, doc, name, color, label }: { appId: string, doc: string, name: string, color: number, label: string }) {
  const ctx = useCtx()
  const area = useRef<HTMLTextAreaElement>(null)
  const mirror = useRef<HTMLDivElement>(null)
  const [status, setStatus] = useState('connecting')
  const [error, setError] = useState<unknown>(null)
  const [text, setText] = useState('')
  const [peers, setPeers] = useState<Peer[]>([])

  useEffect(() => {
    const ydoc = new Y.Doc()
    const ytext = ydoc.getText(TEXT)
    let provider: WebsocketProvider | null = null
    let live = true
    const ta = area.current
    if (!ta) return

    const publishCursor = () => {
      if (!provider) return
      const at = Y.createRelativePositionFromTypeIndex(ytext, ta.selectionStart)
      provider.awareness.setLocalStateField('cursor', { anchor: Y.relativePositionToJSON(at) })
    }
    const readPeers = () => {
      if (!provider) return
      const list: Peer[] = []
      provider.awareness.getStates().forEach((state, id) => {
        if (id === ydoc.clientID || !state.user) return
        list.push({ id, name: String(state.user.name), color: Number(state.user.color) % PALETTE, index: absolute(ydoc, state.cursor?.anchor) })
      })
      setPeers(list)
    }
    // Remote edits: the textarea follows, keeping the local caret where it was in the text.
    ytext.observe((event) => {
      if (event.transaction.local) return
      const before = ta.value
      const selStart = ta.selectionStart
      const selEnd = ta.selectionEnd
      let shift = 0
      let index = 0
      for (const d of event.delta) {
        if (d.retain) index += d.retain
        else if (typeof d.insert === 'string') { if (index <= selStart) shift += d.insert.length; index += d.insert.length }
        else if (d.delete) { if (index < selStart) shift -= Math.min(d.delete, selStart - index) }
      }
      const now = ytext.toString()
      if (now !== before) {
        ta.value = now
        const focused = document.activeElement === ta
        if (focused) ta.setSelectionRange(Math.max(0, selStart + shift), Math.max(0, selEnd + shift))
      }
      setText(now)
      readPeers()
    })
    // Local edits: the smallest replacement between the old and new value.
    const onInput = () => {
      const old = ytext.toString()
      const now = ta.value
      let start = 0
      while (start < old.length && start < now.length && old[start] === now[start]) start++
      let endOld = old.length
      let endNew = now.length
      while (endOld > start && endNew > start && old[endOld - 1] === now[endNew - 1]) { endOld--; endNew-- }
      ydoc.transact(() => {
        if (endOld > start) ytext.delete(start, endOld - start)
        if (endNew > start) ytext.insert(start, now.slice(start, endNew))
      })
      setText(now)
      publishCursor()
    }
    const onSelect = () => publishCursor()
    const onScroll = () => { if (mirror.current) mirror.current.scrollTop = ta.scrollTop }
    ta.addEventListener('input', onInput)
    ta.addEventListener('select', onSelect)
    ta.addEventListener('keyup', onSelect)
    ta.addEventListener('click', onSelect)
    ta.addEventListener('scroll', onScroll)

    const start = async () => {
      try {
        const { token, url } = await connectionFor(ctx, appId, doc)
        if (!live) return
        provider = new WebsocketProvider(url, doc, ydoc, { params: { token }, disableBc: true })
        provider.awareness.setLocalStateField('user', { name, color })
        provider.on('status', ({ status }: { status: string }) => setStatus(status))
        provider.on('sync', (synced: boolean) => { if (synced) { ta.value = ytext.toString(); setText(ta.value) } })
        provider.awareness.on('change', readPeers)
        // The token lives 15 minutes; an expired one closes with 4401
        // (final for the stock provider): mint a fresh one and go on.
        provider.on('closed', async ({ code }: { code: number }) => {
          if (!live || !provider) return
          if (code === 4401) {
            try {
              const fresh = await connectionFor(ctx, appId, doc)
              provider.params = { token: fresh.token }
              provider.connect()
            } catch (e) { setError(e) }
          } else {
            setError(new Error(`The server closed the connection (${code}). Reload the page to reconnect.`))
          }
        })
      } catch (e) {
        if (live) { setError(e); setStatus('failed') }
      }
    }
    void start()
    return () => {
      live = false
      ta.removeEventListener('input', onInput)
      ta.removeEventListener('select', onSelect)
      ta.removeEventListener('keyup', onSelect)
      ta.removeEventListener('click', onSelect)
      ta.removeEventListener('scroll', onScroll)
      provider?.destroy()
      ydoc.destroy()
    }
  }, [appId, doc])

  // The text again, invisible, with each peer's caret where it is.
  const carets = peers.filter((p) => p.index !== null).sort((a, b) => (a.index ?? 0) - (b.index ?? 0))
  const pieces: ComponentChildren[] = []
  let at = 0
  for (const p of carets) {
    const i = Math.min(p.index ?? 0, text.length)
    pieces.push(text.slice(at, i))
    pieces.push(<span key={p.id} class={`caret peer-${p.color}`}><span class='caret-label'>{p.name}</span></span>)
    at = i
  }
  pieces.push(text.slice(at) + '\n')

  return (
    <div class='editor-pane' data-testid={`editor-${label}`}>
      <div class='row spread'>
        <strong>{name}</strong>
        <Badge kind={status === 'connected' ? 'ok' : status === 'failed' ? 'danger' : 'warn'}>{status}</Badge>
      </div>
      <div class='editor'>
        <div class='mirror' ref={mirror} aria-hidden='true'>{pieces}</div>
        <textarea ref={area} class='editor-input' aria-label={`${name}: document text`} spellcheck={false} placeholder='Type here…' />
      </div>
      <div class='presence' aria-label='Also here' data-testid={`presence-${label}`}>
        {peers.length === 0 ? <span class='muted small'>Nobody else here yet.</span> : peers.map((p) => <span key={p.id} class={`peer peer-${p.color}`}>{p.name}</span>)}
      </div>
      {error ? <Alert>{message(error)}</Alert> : null}
    </div>
  )
}

export function Playground ({ appId }: { appId: string }) {
  const ctx = useCtx()
  const [doc, setDoc] = useState('playground')
  const [open, setOpen] = useState<string | null>(null)
  const [check, setCheck] = useState<unknown>(null)
  if (!ctx.can('documents', 'update')) {
    return <Alert kind='info'>Your role ({ctx.tenant.role}) may read documents but not edit them, so it cannot open the playground.</Alert>
  }
  const who = ctx.me.name ?? ctx.me.email
  return (
    <section class='card'>
      <h2>Playground</h2>
      <p class='muted'>Two editors, each connected to the data plane on its own with a client token minted for it, editing one document: what you type in one appears in the other, with its cursor.</p>
      <form class='row bottom' onSubmit={async (e) => {
        e.preventDefault()
        setCheck(null)
        try {
          await get(tpath(ctx, `/apps/${appId}`))
          setOpen(doc)
        } catch (err) { setCheck(err) }
      }}>
        <Field label='Document'><input name='doc' required value={doc} onInput={(e) => setDoc(inputValue(e))} /></Field>
        <button type='submit' class='btn btn-primary'>{open ? 'Switch document' : 'Open'}</button>
      </form>
      {check ? <Alert>{message(check)}</Alert> : null}
      {open && (
        <div class='editors' key={open}>
          <Editor appId={appId} doc={open} name={`${who} (left)`} color={0} label='left' />
          <Editor appId={appId} doc={open} name={`${who} (right)`} color={3} label='right' />
        </div>
      )}
    </section>
  )
}
