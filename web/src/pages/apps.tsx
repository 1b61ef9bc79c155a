// Apps: the list, creating one (its client secret shown once), and one
// app's page: settings with the allowed-domains editor, secret rotation,
// deletion, the plan (with the prorated invoice previewed first) and its
// invoices.
import { useEffect, useState } from 'preact/hooks'
import { ApiError, del, get, message, patch, post, type App, type Invoice, type Paged, type Plan, type Region } from '../api'
import { tpath, useCtx } from '../context'
import { navigate } from '../router'
import { Documents } from './documents'
import { Webhooks } from './webhooks'
import { Alert, Confirm, Empty, ErrorState, Field, Link, PageHeader, SecretOnce, Spinner, inputValue, money, useLoad, when, type FormEvent } from '../ui'

const MAX_DOMAINS = 3

function useCatalog () {
  return useLoad(async () => {
    const [plans, regions] = await Promise.all([get<Plan[]>('/v1/plans'), get<Region[]>('/v1/regions')])
    return { plans, regions }
  }, [])
}

const planName = (plans: Plan[] | undefined, id: string) => plans?.find((p) => p.id === id)?.name ?? id
const limit = (n: number | null) => n === null ? 'unlimited' : n.toLocaleString()

/** Up to three `host` or `host:port` entries; the API has the last word on each. */
function DomainsEditor ({ value, onChange }: { value: string[], onChange: (v: string[]) => void }) {
  const rows = value.length ? value : ['']
  const set = (i: number, v: string) => onChange(rows.map((d, j) => j === i ? v : d))
  return (
    <fieldset class='domains'>
      <legend class='field-label'>Allowed domains</legend>
      <p class='field-hint'>Browsers may connect only from these origins: <code>host</code> or <code>host:port</code>, <code>*.example.com</code> for any subdomain. Leave empty to accept any origin. At most {MAX_DOMAINS}.</p>
      {rows.map((d, i) => (
        <div class='row' key={i}>
          <input aria-label={`Allowed domain ${i + 1}`} name={`domain-${i}`} placeholder='app.example.com' value={d} onInput={(e) => set(i, inputValue(e))} />
          <button type='button' class='btn' aria-label={`Remove domain ${i + 1}`} onClick={() => onChange(rows.filter((_, j) => j !== i))}>Remove</button>
        </div>
      ))}
      {rows.length < MAX_DOMAINS && <button type='button' class='btn-link' onClick={() => onChange([...rows, ''])}>+ Add a domain</button>}
    </fieldset>
  )
}

const cleanDomains = (d: string[]) => d.map((s) => s.trim()).filter(Boolean)

function TokenHint ({ app, secret }: { app: App, secret: string }) {
  const base = location.origin
  return (
    <details class='hint'>
      <summary>Get an access token with it</summary>
      <pre><code>{`curl -s -u '${app.client_id}:${secret}' \\\n  -d grant_type=client_credentials ${base}/oauth/token`}</code></pre>
    </details>
  )
}

export function Apps () {
  const ctx = useCtx()
  const apps = useLoad(() => get<Paged<App>>(tpath(ctx, '/apps?limit=500')), [ctx.tenant.id])
  const catalog = useCatalog()
  const [creating, setCreating] = useState(false)
  const [created, setCreated] = useState<App | null>(null)
  const canCreate = ctx.can('apps', 'create')
  return (
    <>
      <PageHeader title='Apps'>
        {canCreate && !creating && <button type='button' class='btn btn-primary' onClick={() => { setCreating(true); setCreated(null) }}>New app</button>}
      </PageHeader>
      {created?.client_secret && (
        <>
          <SecretOnce label={`Client secret of ${created.name}`} value={created.client_secret} onDone={() => setCreated(null)} />
          <TokenHint app={created} secret={created.client_secret} />
        </>
      )}
      {creating && catalog.data && (
        <CreateApp
          plans={catalog.data.plans}
          regions={catalog.data.regions}
          onCancel={() => setCreating(false)}
          onCreated={(a) => { setCreating(false); setCreated(a); apps.reload() }}
        />
      )}
      {apps.loading && !apps.data && <Spinner />}
      {apps.error ? <ErrorState error={apps.error} retry={apps.reload} /> : null}
      {apps.data && apps.data.items.length === 0 && (
        <Empty title='No apps yet'>{canCreate ? 'Create one to get a client id and secret for your backend.' : 'Nobody has created an app in this tenant yet.'}</Empty>
      )}
      {apps.data && apps.data.items.length > 0 && (
        <table class='table' aria-label='Apps'>
          <thead><tr><th>Name</th><th>Client id</th><th>Region</th><th>Plan</th><th>Allowed domains</th><th>Created</th></tr></thead>
          <tbody>
            {apps.data.items.map((a) => (
              <tr key={a.id}>
                <td><Link to={`apps/${a.id}`}>{a.name}</Link></td>
                <td><code>{a.client_id}</code></td>
                <td>{a.region}</td>
                <td>{planName(catalog.data?.plans, a.plan)}</td>
                <td>{a.allowed_domains.length ? a.allowed_domains.join(', ') : <span class='muted'>any</span>}</td>
                <td>{when(a.created_at)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  )
}

function CreateApp (props: { plans: Plan[], regions: Region[], onCancel: () => void, onCreated: (a: App) => void }) {
  const ctx = useCtx()
  const [f, setF] = useState({ name: '', region: props.regions[0]?.id ?? '', plan: 'free', environment: 'production' })
  const [domains, setDomains] = useState<string[]>([])
  const [error, setError] = useState<unknown>(null)
  const [busy, setBusy] = useState(false)
  const submit = async (e: FormEvent) => {
    e.preventDefault()
    setBusy(true)
    setError(null)
    try {
      props.onCreated(await post<App>(tpath(ctx, '/apps'), { ...f, allowed_domains: cleanDomains(domains) }))
    } catch (err) { setError(err) } finally { setBusy(false) }
  }
  return (
    <form class='card stack' onSubmit={submit} aria-label='New app'>
      <h2>New app</h2>
      <div class='grid2'>
        <Field label='Name'><input name='name' required value={f.name} onInput={(e) => setF({ ...f, name: inputValue(e) })} /></Field>
        <Field label='Environment'><input name='environment' value={f.environment} onInput={(e) => setF({ ...f, environment: inputValue(e) })} /></Field>
        <Field label='Region' hint='Where its documents are stored: fixed once created.'>
          <select name='region' value={f.region} onChange={(e) => setF({ ...f, region: inputValue(e) })}>
            {props.regions.map((r) => <option key={r.id} value={r.id}>{r.name} ({r.id})</option>)}
          </select>
        </Field>
        <Field label='Plan'>
          <select name='plan' value={f.plan} onChange={(e) => setF({ ...f, plan: inputValue(e) })}>
            {props.plans.map((p) => <option key={p.id} value={p.id}>{p.name} — {money(p.price_cents_per_month)}/month</option>)}
          </select>
        </Field>
      </div>
      <DomainsEditor value={domains} onChange={setDomains} />
      {error ? <Alert>{message(error)}</Alert> : null}
      <div class='row end'>
        <button type='button' class='btn' onClick={props.onCancel}>Cancel</button>
        <button type='submit' class='btn btn-primary' disabled={busy}>Create app</button>
      </div>
    </form>
  )
}

/** The playground's code (yjs, y-websocket) loads only when it is opened. */
function LazyPlayground ({ appId }: { appId: string }) {
  const [mod, setMod] = useState<typeof import('./playground') | null>(null)
  const [error, setError] = useState<unknown>(null)
  useEffect(() => { import('./playground').then(setMod, setError) }, [])
  if (error) return <ErrorState error={error} />
  return mod ? <mod.Playground appId={appId} /> : <Spinner label='Loading the playground…' />
}

const TABS: [string, string][] = [['', 'Overview'], ['documents', 'Documents'], ['playground', 'Playground'], ['webhooks', 'Webhooks']]

export function AppDetail ({ id, tab }: { id: string, tab: string }) {
  const ctx = useCtx()
  const app = useLoad(() => get<App>(tpath(ctx, `/apps/${encodeURIComponent(id)}`)), [ctx.tenant.id, id])
  const catalog = useCatalog()
  if (app.error) return <ErrorState error={app.error} retry={app.reload} />
  if (!app.data) return <Spinner />
  const a = app.data
  return (
    <>
      <p class='crumbs'><Link to='apps'>Apps</Link> / {a.name}</p>
      <PageHeader title={a.name} />
      <nav class='tabs' aria-label='App sections'>
        {TABS.map(([to, label]) => (
          <Link key={to} to={`apps/${a.id}${to ? `/${to}` : ''}`} class={tab === to ? 'tab active' : 'tab'} aria-current={tab === to ? 'page' : undefined}>{label}</Link>
        ))}
      </nav>
      {tab === 'documents' && <Documents appId={a.id} />}
      {tab === 'playground' && <LazyPlayground appId={a.id} />}
      {tab === 'webhooks' && <Webhooks appId={a.id} />}
      {tab === '' && <Overview app={a} plans={catalog.data?.plans} reload={app.reload} />}
    </>
  )
}

function Overview ({ app: a, plans, reload }: { app: App, plans: Plan[] | undefined, reload: () => void }) {
  const ctx = useCtx()
  return (
    <>
      <section class='card'>
        <dl class='props'>
          <dt>Client id</dt><dd><code>{a.client_id}</code></dd>
          <dt>Region</dt><dd>{a.region}</dd>
          <dt>Plan</dt><dd data-testid='plan'>{planName(plans, a.plan)}</dd>
          <dt>Environment</dt><dd>{a.environment}</dd>
          <dt>Billing period</dt><dd>{when(a.current_period_start)} – {when(a.current_period_end)}</dd>
          <dt>Created</dt><dd>{when(a.created_at)}</dd>
        </dl>
      </section>
      <Settings app={a} onSaved={reload} />
      {ctx.can('billing', 'read') && <Billing app={a} plans={plans} onChanged={reload} />}
      <Danger app={a} />
    </>
  )
}

function Settings ({ app, onSaved }: { app: App, onSaved: () => void }) {
  const ctx = useCtx()
  const [name, setName] = useState(app.name)
  const [domains, setDomains] = useState<string[]>(app.allowed_domains)
  const [state, setState] = useState<{ error?: unknown, saved?: boolean }>({})
  const canEdit = ctx.can('apps', 'update')
  const save = async (e: FormEvent) => {
    e.preventDefault()
    setState({})
    try {
      const r = await patch<App>(tpath(ctx, `/apps/${app.id}`), { name, allowed_domains: cleanDomains(domains) })
      setDomains(r.allowed_domains)
      setState({ saved: true })
      onSaved()
    } catch (err) { setState({ error: err }) }
  }
  return (
    <form class='card stack' onSubmit={save} aria-label='Settings'>
      <h2>Settings</h2>
      <fieldset disabled={!canEdit} class='stack'>
        <Field label='Name'><input name='name' required value={name} onInput={(e) => setName(inputValue(e))} /></Field>
        <DomainsEditor value={domains} onChange={setDomains} />
      </fieldset>
      {state.error ? <Alert>{message(state.error)}</Alert> : null}
      {state.saved && <Alert kind='ok'>Saved.</Alert>}
      {canEdit ? <div class='row end'><button type='submit' class='btn btn-primary'>Save changes</button></div> : <p class='muted'>Your role can view this app but not change it.</p>}
    </form>
  )
}

function Billing ({ app, plans, onChanged }: { app: App, plans: Plan[] | undefined, onChanged: () => void }) {
  const ctx = useCtx()
  const invoices = useLoad(() => get<Paged<Invoice>>(tpath(ctx, `/apps/${app.id}/invoices?limit=500`)), [app.id, app.plan])
  const [target, setTarget] = useState('')
  const [preview, setPreview] = useState<Preview | null>(null)
  const [error, setError] = useState<unknown>(null)
  const canChange = ctx.can('billing', 'update')
  const previewChange = async (plan: string) => {
    setTarget(plan)
    setPreview(null)
    setError(null)
    if (!plan) return
    try { setPreview(await post<Preview>(tpath(ctx, `/apps/${app.id}/plan/preview`), { plan })) } catch (e) { setError(e) }
  }
  return (
    <section class='card'>
      <h2>Plan & billing</h2>
      {plans && (
        <table class='table compact' aria-label='Plans'>
          <thead><tr><th>Plan</th><th>Connections</th><th>Documents</th><th>Operations / min</th><th>Price / month</th></tr></thead>
          <tbody>{plans.map((p) => (
            <tr key={p.id} class={p.id === app.plan ? 'current' : ''}>
              <td>{p.name}{p.id === app.plan && <span class='badge badge-ok'>current</span>}</td>
              <td>{limit(p.max_connections)}</td><td>{limit(p.max_documents)}</td><td>{limit(p.ops_per_minute)}</td><td>{money(p.price_cents_per_month)}</td>
            </tr>
          ))}</tbody>
        </table>
      )}
      {canChange && plans && (
        <div class='stack'>
          <Field label='Change plan to'>
            <select name='new-plan' value={target} onChange={(e) => previewChange(inputValue(e))}>
              <option value=''>Choose a plan…</option>
              {plans.filter((p) => p.id !== app.plan).map((p) => <option key={p.id} value={p.id}>{p.name}</option>)}
            </select>
          </Field>
          {preview && (
            <div class='preview' role='region' aria-label='Prorated invoice'>
              <h3>What this change costs now</h3>
              <InvoiceLines invoice={preview} />
              <p class='muted'>Prorated to the second: a credit for the unused part of the current plan, a charge for the rest of the period on the new one.</p>
              <Confirmed
                label={`Change to ${planName(plans, target)} for ${money(preview.total_cents)}`}
                onRun={async () => {
                  await post<Invoice>(tpath(ctx, `/apps/${app.id}/plan`), { plan: target })
                  setPreview(null)
                  setTarget('')
                  onChanged()
                }}
              />
            </div>
          )}
        </div>
      )}
      {error ? <Alert>{message(error)}</Alert> : null}
      <h3>Invoices</h3>
      {invoices.error ? <Alert>{message(invoices.error)}</Alert> : null}
      {invoices.data && invoices.data.items.length === 0 && <Empty title='No invoices yet'>A plan change produces one.</Empty>}
      {invoices.data && invoices.data.items.length > 0 && (
        <table class='table compact' aria-label='Invoices'>
          <thead><tr><th>Date</th><th>Lines</th><th class='num'>Total</th></tr></thead>
          <tbody>{invoices.data.items.map((i) => (
            <tr key={i.id}><td>{when(i.created_at)}</td><td>{i.lines.map((l) => <div key={l.description}>{l.description}: {money(l.amount_cents)}</div>)}</td><td class='num'>{money(i.total_cents)}</td></tr>
          ))}</tbody>
        </table>
      )}
    </section>
  )
}

function Confirmed ({ label, onRun }: { label: string, onRun: () => Promise<void> }) {
  const [error, setError] = useState<unknown>(null)
  const [busy, setBusy] = useState(false)
  const run = async () => {
    setBusy(true)
    setError(null)
    try { await onRun() } catch (e) { setError(e) } finally { setBusy(false) }
  }
  return <>{error ? <Alert>{message(error)}</Alert> : null}<button type='button' class='btn btn-primary' disabled={busy} onClick={run}>{label}</button></>
}

/** What a plan change would invoice now (`…/plan/preview`). */
type Preview = Pick<Invoice, 'lines' | 'total_cents'>

export function InvoiceLines ({ invoice }: { invoice: Preview }) {
  return (
    <table class='table compact'>
      <tbody>
        {invoice.lines.map((l) => <tr key={l.description}><td>{l.description}</td><td class='muted'>{when(l.period_start)} – {when(l.period_end)}</td><td class='num'>{money(l.amount_cents)}</td></tr>)}
        <tr class='total'><td colSpan={2}>Total</td><td class='num' data-testid='invoice-total'>{money(invoice.total_cents)}</td></tr>
      </tbody>
    </table>
  )
}

function Danger ({ app }: { app: App }) {
  const ctx = useCtx()
  const [dialog, setDialog] = useState<'rotate' | 'delete' | null>(null)
  const [secret, setSecret] = useState<string | null>(null)
  const [error, setError] = useState<unknown>(null)
  const canRotate = ctx.can('apps', 'update')
  const canDelete = ctx.can('apps', 'delete')
  if (!canRotate && !canDelete) return null
  return (
    <section class='card danger-zone'>
      <h2>Credentials and deletion</h2>
      {secret && <SecretOnce label='New client secret' value={secret} onDone={() => setSecret(null)} />}
      {error ? <Alert>{message(error)}</Alert> : null}
      <div class='row'>
        {canRotate && <button type='button' class='btn' onClick={() => setDialog('rotate')}>Rotate client secret</button>}
        {canDelete && <button type='button' class='btn btn-danger' onClick={() => setDialog('delete')}>Delete app</button>}
      </div>
      <Confirm
        open={dialog === 'rotate'} title='Rotate the client secret?' confirm='Rotate secret' danger
        onClose={() => setDialog(null)}
        onConfirm={async () => {
          setError(null)
          const r = await post<App>(tpath(ctx, `/apps/${app.id}/secret/rotate`))
          setSecret(r.client_secret ?? null)
        }}
      >
        <p>The current secret stops working at once: backends using it can no longer get tokens, and every live connection authorised through it is closed. The new secret is shown once.</p>
      </Confirm>
      <Confirm
        open={dialog === 'delete'} title={`Delete ${app.name}?`} confirm='Delete app' danger
        onClose={() => setDialog(null)}
        onConfirm={async () => {
          try {
            await del(tpath(ctx, `/apps/${app.id}`))
          } catch (e) {
            if (!(e instanceof ApiError && e.status === 404)) throw e
          }
          navigate('apps')
        }}
      >
        <p>Its documents, tokens and webhooks are deleted and every live connection to it is closed. This cannot be undone.</p>
      </Confirm>
    </section>
  )
}
