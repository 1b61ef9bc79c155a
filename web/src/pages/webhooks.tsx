// An app's webhooks: create (its signing secret shown once), the delivery
// log of each, "send test event", secret rotation and deletion.
import { useState } from 'preact/hooks'
import { del, get, message, post, type Paged } from '../api'
import { tpath, useCtx } from '../context'
import { Alert, Badge, Confirm, Empty, ErrorState, Field, SecretOnce, Spinner, inputValue, useLoad, when, type FormEvent } from '../ui'

interface Webhook { id: string, app_id: string, url: string, events: string[], secret?: string, created_at: string }
interface Delivery { event_id: string, type: string, attempt: number, at: string, status: number | null, latency_ms: number, error: string | null }

export const EVENTS = ['document.updated', 'document.deleted', 'app.created', 'app.updated', 'app.deleted', 'app.secret_rotated',
  'key.rotated', 'key.revoked', 'member.joined', 'member.removed', 'member.role_changed']

export function Webhooks ({ appId }: { appId: string }) {
  const ctx = useCtx()
  const hooks = useLoad(() => get<Paged<Webhook>>(tpath(ctx, `/apps/${appId}/webhooks?limit=500`)), [appId])
  const [secret, setSecret] = useState<{ label: string, value: string } | null>(null)
  const [open, setOpen] = useState<string | null>(null)
  const canCreate = ctx.can('webhooks', 'create')
  return (
    <>
      {secret && <SecretOnce label={secret.label} value={secret.value} onDone={() => setSecret(null)} />}
      {canCreate && <CreateWebhook appId={appId} onCreated={(w) => { setSecret({ label: `Signing secret of ${w.url}`, value: w.secret ?? '' }); setOpen(w.id); hooks.reload() }} />}
      <section class='card'>
        <h2>Webhooks</h2>
        {hooks.loading && !hooks.data && <Spinner />}
        {hooks.error ? <ErrorState error={hooks.error} retry={hooks.reload} /> : null}
        {hooks.data && hooks.data.items.length === 0 && <Empty title='No webhooks yet'>A webhook POSTs each event, signed with HMAC-SHA256, to your URL.</Empty>}
        {hooks.data && hooks.data.items.map((w) => (
          <WebhookRow key={w.id} appId={appId} hook={w} open={open === w.id} toggle={() => setOpen(open === w.id ? null : w.id)}
            onSecret={(value) => setSecret({ label: `New signing secret of ${w.url}`, value })} onDeleted={hooks.reload} />
        ))}
      </section>
    </>
  )
}

function CreateWebhook ({ appId, onCreated }: { appId: string, onCreated: (w: Webhook) => void }) {
  const ctx = useCtx()
  const [url, setUrl] = useState('')
  const [events, setEvents] = useState<Set<string>>(new Set(['*']))
  const [error, setError] = useState<unknown>(null)
  // `*` alone, or a list of event types; none left means `*` again.
  const toggle = (e: string) => {
    if (e === '*') { setEvents(new Set(['*'])); return }
    const next = new Set(events)
    next.delete('*')
    if (next.has(e)) next.delete(e)
    else next.add(e)
    setEvents(next.size ? next : new Set(['*']))
  }
  const submit = async (e: FormEvent) => {
    e.preventDefault()
    setError(null)
    try {
      onCreated(await post<Webhook>(tpath(ctx, `/apps/${appId}/webhooks`), { url, events: [...events] }))
      setUrl('')
    } catch (err) { setError(err) }
  }
  return (
    <form class='card stack' onSubmit={submit} aria-label='New webhook'>
      <h2>New webhook</h2>
      <Field label='URL' hint='http(s), on a public address (loopback and private ones only when the server allows them).'>
        <input name='webhook-url' type='url' required placeholder='https://api.example.com/hooks/wiresocket' value={url} onInput={(e) => setUrl(inputValue(e))} />
      </Field>
      <fieldset>
        <legend class='field-label'>Events</legend>
        <div class='checks'>
          <label><input type='checkbox' checked={events.has('*')} onChange={() => toggle('*')} /> every event (<code>*</code>)</label>
          {EVENTS.map((e) => <label key={e}><input type='checkbox' checked={events.has(e)} onChange={() => toggle(e)} /> <code>{e}</code></label>)}
        </div>
      </fieldset>
      {error ? <Alert>{message(error)}</Alert> : null}
      <div class='row end'><button type='submit' class='btn btn-primary'>Create webhook</button></div>
    </form>
  )
}

function WebhookRow (props: { appId: string, hook: Webhook, open: boolean, toggle: () => void, onSecret: (s: string) => void, onDeleted: () => void }) {
  const ctx = useCtx()
  const w = props.hook
  const base = tpath(ctx, `/apps/${props.appId}/webhooks/${w.id}`)
  const [dialog, setDialog] = useState<'delete' | 'rotate' | null>(null)
  const [notice, setNotice] = useState<string | null>(null)
  const [error, setError] = useState<unknown>(null)
  const deliveries = useLoad(() => props.open ? get<Paged<Delivery>>(`${base}/deliveries?limit=100`) : Promise.resolve(null), [props.open, w.id])
  const test = async () => {
    setError(null)
    try {
      const r = await post<{ event_id: string }>(`${base}/test`)
      setNotice(`Test event ${r.event_id} queued; its attempts appear below.`)
      if (!props.open) props.toggle()
      setTimeout(deliveries.reload, 1500)
    } catch (e) { setError(e) }
  }
  return (
    <div class='webhook'>
      <div class='row spread'>
        <div>
          <code>{w.url}</code>
          <div class='small muted'>{w.events.join(', ')} · created {when(w.created_at)}</div>
        </div>
        <div class='row'>
          <button type='button' class='btn' onClick={props.toggle} aria-expanded={props.open}>{props.open ? 'Hide deliveries' : 'Deliveries'}</button>
          {ctx.can('webhooks', 'update') && <button type='button' class='btn' onClick={test}>Send test event</button>}
          {ctx.can('webhooks', 'update') && <button type='button' class='btn' onClick={() => setDialog('rotate')}>Rotate secret</button>}
          {ctx.can('webhooks', 'delete') && <button type='button' class='btn btn-danger' onClick={() => setDialog('delete')}>Delete</button>}
        </div>
      </div>
      {notice && <Alert kind='ok' onClose={() => setNotice(null)}>{notice}</Alert>}
      {error ? <Alert onClose={() => setError(null)}>{message(error)}</Alert> : null}
      {props.open && (
        <div class='deliveries'>
          <div class='row spread'><h3>Delivery log</h3><button type='button' class='btn' onClick={deliveries.reload}>Refresh</button></div>
          {deliveries.error ? <Alert>{message(deliveries.error)}</Alert> : null}
          {deliveries.data && deliveries.data.items.length === 0 && <Empty title='No deliveries yet' />}
          {deliveries.data && deliveries.data.items.length > 0 && (
            <table class='table compact' aria-label={`Deliveries of ${w.url}`}>
              <thead><tr><th>When</th><th>Event</th><th>Attempt</th><th>Answer</th><th class='num'>Latency</th><th>Error</th></tr></thead>
              <tbody>{deliveries.data.items.map((d) => (
                <tr key={`${d.event_id}-${d.attempt}`}>
                  <td>{when(d.at)}</td><td><code>{d.type}</code></td><td>{d.attempt}</td>
                  <td><Badge kind={d.status !== null && d.status < 300 ? 'ok' : 'danger'}>{d.status ?? 'no answer'}</Badge></td>
                  <td class='num'>{d.latency_ms} ms</td><td class='small'>{d.error ?? ''}</td>
                </tr>
              ))}</tbody>
            </table>
          )}
        </div>
      )}
      <Confirm open={dialog === 'delete'} title='Delete this webhook?' confirm='Delete webhook' danger onClose={() => setDialog(null)}
        onConfirm={async () => { await del(base); props.onDeleted() }}>
        <p>No more events are sent to <code>{w.url}</code>, including retries still pending.</p>
      </Confirm>
      <Confirm open={dialog === 'rotate'} title='Rotate the signing secret?' confirm='Rotate secret' danger onClose={() => setDialog(null)}
        onConfirm={async () => { const r = await post<{ secret: string }>(`${base}/secret/rotate`); props.onSecret(r.secret) }}>
        <p>Deliveries from now on are signed with the new secret; a receiver still checking the old one rejects them until updated.</p>
      </Confirm>
    </div>
  )
}
