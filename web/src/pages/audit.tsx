// The tenant's audit trail: filters, paging, and the hash chain's check.
import { useState } from 'preact/hooks'
import { get, message, type Paged } from '../api'
import { tpath, useCtx } from '../context'
import { Alert, Empty, ErrorState, Field, PageHeader, Spinner, inputValue, useLoad, when, type FormEvent } from '../ui'

interface Party { type: string, id: string }
interface Entry { id: string, at: string, actor: Party, action: string, target: Party | null, ip: string | null, chain_seq: number }
interface Report { ok: boolean, entries: number, head_hash: string | null, broken_at: number | null, reason: string | null }

const iso = (local: string) => local ? new Date(local).toISOString() : ''

export function Audit () {
  const ctx = useCtx()
  const [filters, setFilters] = useState({ action: '', actor: '', since: '', until: '' })
  const [applied, setApplied] = useState(filters)
  const [more, setMore] = useState<Entry[]>([])
  const [cursor, setCursor] = useState<string | null>(null)
  const [error, setError] = useState<unknown>(null)
  const query = (c: string | null) => {
    const q = new URLSearchParams({ limit: '50' })
    if (applied.action) q.set('action', applied.action)
    if (applied.actor) q.set('actor', applied.actor)
    if (applied.since) q.set('since', iso(applied.since))
    if (applied.until) q.set('until', iso(applied.until))
    if (c) q.set('cursor', c)
    return tpath(ctx, `/audit?${q}`)
  }
  const page = useLoad(async () => {
    const p = await get<Paged<Entry>>(query(null))
    setMore([])
    setCursor(p.next_cursor)
    return p
  }, [ctx.tenant.id, applied])
  const chain = useLoad(() => get<Report>(tpath(ctx, '/audit/verify')), [ctx.tenant.id])
  const apply = (e: FormEvent) => { e.preventDefault(); setApplied({ ...filters }) }
  const loadMore = async () => {
    if (!cursor) return
    try {
      const p = await get<Paged<Entry>>(query(cursor))
      setMore([...more, ...p.items])
      setCursor(p.next_cursor)
    } catch (e) { setError(e) }
  }
  const items = [...(page.data?.items ?? []), ...more]
  const set = (k: keyof typeof filters) => (e: Parameters<typeof inputValue>[0]) => setFilters({ ...filters, [k]: inputValue(e) })
  return (
    <>
      <PageHeader title='Audit log' />
      {chain.data && (chain.data.ok
        ? <Alert kind='ok'><span data-testid='chain'>Hash chain intact: {chain.data.entries} entries verified</span>{chain.data.head_hash && <> (head <code>{chain.data.head_hash.slice(0, 16)}…</code>)</>}.</Alert>
        : <Alert><span data-testid='chain'>Hash chain broken at entry {chain.data.broken_at}: {chain.data.reason}</span>. Entries were changed or removed outside WireSocket.</Alert>)}
      {chain.error ? <Alert>{message(chain.error)}</Alert> : null}
      <form class='card row bottom' onSubmit={apply} aria-label='Filters'>
        <Field label='Action'><input name='action' placeholder='app.created' value={filters.action} onInput={set('action')} /></Field>
        <Field label='Actor id'><input name='actor' value={filters.actor} onInput={set('actor')} /></Field>
        <Field label='Since'><input name='since' type='datetime-local' value={filters.since} onInput={set('since')} /></Field>
        <Field label='Until'><input name='until' type='datetime-local' value={filters.until} onInput={set('until')} /></Field>
        <button type='submit' class='btn btn-primary'>Apply</button>
        <button type='button' class='btn' onClick={() => { const none = { action: '', actor: '', since: '', until: '' }; setFilters(none); setApplied(none) }}>Clear</button>
      </form>
      {page.loading && !page.data && <Spinner />}
      {page.error ? <ErrorState error={page.error} retry={page.reload} /> : null}
      {error ? <Alert>{message(error)}</Alert> : null}
      {page.data && items.length === 0 && <Empty title='No entries match' />}
      {items.length > 0 && (
        <table class='table' aria-label='Audit entries'>
          <thead><tr><th>#</th><th>When</th><th>Action</th><th>Actor</th><th>Target</th><th>IP</th></tr></thead>
          <tbody>{items.map((e) => (
            <tr key={e.id}>
              <td>{e.chain_seq}</td><td>{when(e.at)}</td><td><code>{e.action}</code></td>
              <td class='small'>{e.actor.type}: {e.actor.id}</td>
              <td class='small'>{e.target ? `${e.target.type}: ${e.target.id}` : '—'}</td>
              <td class='small'>{e.ip ?? '—'}</td>
            </tr>
          ))}</tbody>
        </table>
      )}
      {cursor && <div class='row end'><button type='button' class='btn' onClick={loadMore}>Load more</button></div>}
    </>
  )
}
