// The whole app: which page a route shows, and the signed-in layout
// (navigation, tenant switcher, account menu) around the management pages.
import type { ComponentChildren } from 'preact'
import { useEffect, useMemo, useState } from 'preact/hooks'
import { api, clearSession, get, getSession, getTenantChoice, onSessionEnded, setTenantChoice, type Me } from './api'
import { AcceptInvite, ForgotPassword, Login, ResetPassword, Setup } from './auth'
import { SessionContext, type Ctx } from './context'
import { Account } from './pages/account'
import { Audit } from './pages/audit'
import { AppDetail, Apps } from './pages/apps'
import { Keys } from './pages/keys'
import { Members } from './pages/members'
import { Nodes } from './pages/nodes'
import { NewTenant } from './pages/tenant'
import { Redirect, navigate, useRoute } from './router'
import { ErrorState, Link, Spinner, useLoad } from './ui'

const PUBLIC = new Set(['login', 'setup', 'forgot-password', 'reset-password', 'accept-invite'])

export function App () {
  const route = useRoute()
  const [notice, setNotice] = useState<string | null>(null)
  useEffect(() => {
    onSessionEnded((m) => { setNotice(m); navigate('login', true) })
  }, [])
  const page = route.split('/')[0]
  if (PUBLIC.has(page)) {
    switch (page) {
      case 'setup': return <Setup />
      case 'forgot-password': return <ForgotPassword />
      case 'reset-password': return <ResetPassword />
      case 'accept-invite': return <AcceptInvite />
      default: return <Login notice={notice} />
    }
  }
  if (!getSession()) {
    // Not signed in: straight to sign-in (the session may have expired).
    return <Redirect to='login' />
  }
  return <SignedIn route={route} />
}

const NAV: [string, string, string][] = [
  // route, label, the permission that shows it
  ['apps', 'Apps', 'apps'],
  ['keys', 'Signing keys', 'keys'],
  ['members', 'Members & roles', 'members'],
  ['audit', 'Audit log', 'audit'],
  ['account', 'Account & security', '']
]

function SignedIn ({ route }: { route: string }) {
  const me = useLoad(() => get<Me>('/v1/me'), [])
  const [tenantId, setTenantId] = useState<string | null>(getTenantChoice())
  const tenant = me.data && (me.data.tenants.find((t) => t.id === tenantId) ?? me.data.tenants[0])
  const ctx = useMemo<Ctx | null>(() => {
    if (!me.data || !tenant) return null
    // What the role grants, as /v1/me says (custom roles included).
    const perms = new Set(tenant.permissions.map((p) => `${p.resource}:${p.action}`))
    return { me: me.data, tenant, can: (r, a) => perms.has(`${r}:${a}`), reloadMe: me.reload }
  }, [me.data, tenant])

  if (me.error) return <Frame><ErrorState error={me.error} retry={me.reload} /></Frame>
  if (!me.data) return <Frame><Spinner /></Frame>
  if (!tenant || !ctx) {
    return <Frame><div class='state empty'><strong>You are not a member of any tenant.</strong><p>Ask an admin for an invitation.</p><LogoutButton /></div></Frame>
  }
  const [page, ...rest] = route.split('/')
  let body: ComponentChildren
  switch (page) {
    case 'apps': body = rest[0] ? <AppDetail id={rest[0]} tab={rest[1] ?? ''} /> : <Apps />; break
    case 'keys': body = <Keys />; break
    case 'members': body = <Members />; break
    case 'account': body = <Account />; break
    case 'audit': body = <Audit />; break
    case 'new-tenant': body = <NewTenant onCreated={(id) => { setTenantChoice(id); setTenantId(id); me.reload(); navigate('apps') }} />; break
    case 'nodes': body = me.data.is_operator ? <Nodes /> : <ErrorState error={new Error('The node registry is for the platform operator only.')} />; break
    default:
      body = <Redirect to='apps' />
  }
  const switchTenant = (id: string) => {
    setTenantChoice(id)
    setTenantId(id)
    navigate('apps')
  }
  return (
    <SessionContext.Provider value={ctx}>
      <div class='layout'>
        <aside class='sidebar'>
          <div class='brand'><img src='/dashboard/favicon.svg' alt='' width='24' height='24' /> WireSocket</div>
          <label class='field tenant-switcher'>
            <span class='field-label'>Tenant</span>
            <select value={tenant.id} onChange={(e) => switchTenant(e.currentTarget.value)} aria-label='Tenant'>
              {me.data.tenants.map((t) => <option key={t.id} value={t.id}>{t.name}</option>)}
            </select>
            <span class='field-hint'>Your role: <strong data-testid='role'>{tenant.role}</strong></span>
          </label>
          <Link to='new-tenant' class='nav-link small'>+ New tenant</Link>
          <nav aria-label='Main'>
            {NAV.filter(([, , r]) => !r || ctx.can(r, 'read')).map(([to, label]) => (
              <Link key={to} to={to} class={page === to ? 'nav-link active' : 'nav-link'} aria-current={page === to ? 'page' : undefined}>{label}</Link>
            ))}
            {me.data.is_operator && <Link to='nodes' class={page === 'nodes' ? 'nav-link active' : 'nav-link'} aria-current={page === 'nodes' ? 'page' : undefined}>Nodes</Link>}
          </nav>
          <div class='sidebar-footer'>
            <div class='muted small' title={me.data.email}>{me.data.name ?? me.data.email}</div>
            <LogoutButton />
          </div>
        </aside>
        <main class='content' id='main'>{body}</main>
      </div>
    </SessionContext.Provider>
  )
}

function Frame ({ children }: { children: ComponentChildren }) {
  return <main class='content narrow'>{children}</main>
}

function LogoutButton () {
  const logout = async () => {
    try { await api('POST', '/v1/auth/logout') } catch { /* the session is forgotten here either way */ }
    clearSession()
    navigate('login', true)
  }
  return <button type='button' class='btn' onClick={logout}>Sign out</button>
}
