// Members and their roles, invitations, and the custom-role editor (the
// resource × action grid).
import { useState } from 'preact/hooks'
import { del, get, message, post, put, type Invite, type Member, type Paged, type Permission, type Role } from '../api'
import { tpath, useCtx } from '../context'
import { Alert, Confirm, Empty, ErrorState, Field, PageHeader, Spinner, inputValue, useLoad, when, type FormEvent } from '../ui'

export const RESOURCES = ['tenants', 'apps', 'keys', 'billing', 'members', 'roles', 'invites', 'webhooks', 'documents', 'nodes', 'audit']
export const ACTIONS = ['read', 'create', 'update', 'delete']

export function Members () {
  const ctx = useCtx()
  const members = useLoad(() => get<Paged<Member>>(tpath(ctx, '/members?limit=500')), [ctx.tenant.id])
  const roles = useLoad(() => get<Paged<Role>>(tpath(ctx, '/roles?limit=500')), [ctx.tenant.id])
  const invites = useLoad(() => ctx.can('invites', 'read') ? get<Paged<Invite>>(tpath(ctx, '/invites?limit=500')) : Promise.resolve(null), [ctx.tenant.id])
  const [notice, setNotice] = useState<string | null>(null)
  const [error, setError] = useState<unknown>(null)
  const [removing, setRemoving] = useState<Member | null>(null)
  const [resetting, setResetting] = useState<Member | null>(null)
  const roleNames = roles.data?.items.map((r) => r.name) ?? []
  const canUpdate = ctx.can('members', 'update')
  const setRole = async (m: Member, role: string) => {
    setError(null)
    try {
      await put(tpath(ctx, `/members/${m.user_id}`), { role })
      setNotice(`${m.email} is now ${role}.`)
    } catch (e) { setError(e) }
    members.reload()
  }
  return (
    <>
      <PageHeader title='Members & roles' />
      {notice && <Alert kind='ok' onClose={() => setNotice(null)}>{notice}</Alert>}
      {error ? <Alert onClose={() => setError(null)}>{message(error)}</Alert> : null}
      <section class='card'>
        <h2>Members</h2>
        {members.loading && !members.data && <Spinner />}
        {members.error ? <ErrorState error={members.error} retry={members.reload} /> : null}
        {members.data && (
          <table class='table' aria-label='Members'>
            <thead><tr><th>Member</th><th>Role</th><th>Two-factor</th><th>Joined</th>{ctx.can('members', 'delete') && <th><span class='sr-only'>Actions</span></th>}</tr></thead>
            <tbody>{members.data.items.map((m) => (
              <tr key={m.user_id}>
                <td>{m.name ? <>{m.name} <span class='muted'>{m.email}</span></> : m.email}</td>
                <td>
                  {canUpdate && m.user_id !== ctx.me.id
                    ? (
                      <select aria-label={`Role of ${m.email}`} value={m.role} onChange={(e) => setRole(m, inputValue(e))}>
                        {roleNames.map((r) => <option key={r} value={r}>{r}</option>)}
                      </select>
                      )
                    : m.role}
                </td>
                <td>
                  {m.mfa_enabled ? 'on' : 'off'}
                  {m.mfa_enabled && canUpdate && m.user_id !== ctx.me.id && <> <button type='button' class='btn-link' onClick={() => setResetting(m)}>Reset</button></>}
                </td>
                <td>{when(m.joined_at)}</td>
                {ctx.can('members', 'delete') && <td class='num'>{m.user_id !== ctx.me.id && <button type='button' class='btn btn-danger' onClick={() => setRemoving(m)}>Remove</button>}</td>}
              </tr>
            ))}</tbody>
          </table>
        )}
      </section>
      {ctx.can('invites', 'read') && <Invites roles={roleNames} invites={invites.data?.items ?? []} reload={invites.reload} />}
      <Roles roles={roles.data?.items} reload={roles.reload} error={roles.error} />
      <Confirm
        open={resetting !== null} title={`Reset two-factor authentication of ${resetting?.email ?? ''}?`} confirm='Reset two-factor' danger
        onClose={() => setResetting(null)}
        onConfirm={async () => {
          if (!resetting) return
          await del(tpath(ctx, `/members/${resetting.user_id}/mfa`))
          setNotice(`${resetting.email} signs in with the password alone until they turn two-factor authentication on again.`)
          members.reload()
        }}
      >
        <p>For a member who lost their authenticator and recovery codes: their authenticator and unused recovery codes stop working, and they sign in with their password alone until they enrol again.</p>
      </Confirm>
      <Confirm
        open={removing !== null} title={`Remove ${removing?.email ?? ''}?`} confirm='Remove member' danger
        onClose={() => setRemoving(null)}
        onConfirm={async () => {
          if (!removing) return
          await del(tpath(ctx, `/members/${removing.user_id}`))
          setNotice(`${removing.email} is no longer a member.`)
          members.reload()
        }}
      >
        <p>They lose access to this tenant at once. Their account and their other tenants stay.</p>
      </Confirm>
    </>
  )
}

function Invites ({ roles, invites, reload }: { roles: string[], invites: Invite[], reload: () => void }) {
  const ctx = useCtx()
  const [email, setEmail] = useState('')
  const [role, setRole] = useState('viewer')
  const [sent, setSent] = useState<string | null>(null)
  const [error, setError] = useState<unknown>(null)
  const invite = async (e: FormEvent) => {
    e.preventDefault()
    setError(null)
    setSent(null)
    try {
      await post<Invite>(tpath(ctx, '/invites'), { email, role })
      setSent(`Invitation sent to ${email}. The link in the mail works for 7 days.`)
      setEmail('')
      reload()
    } catch (err) { setError(err) }
  }
  return (
    <section class='card'>
      <h2>Invitations</h2>
      {ctx.can('invites', 'create') && (
        <form class='row bottom' onSubmit={invite} aria-label='Invite a member'>
          <Field label='Email'><input type='email' name='invite-email' required value={email} onInput={(e) => setEmail(inputValue(e))} /></Field>
          <Field label='Role'>
            <select name='invite-role' value={role} onChange={(e) => setRole(inputValue(e))}>
              {roles.map((r) => <option key={r} value={r}>{r}</option>)}
            </select>
          </Field>
          <button type='submit' class='btn btn-primary'>Send invitation</button>
        </form>
      )}
      {sent && <Alert kind='ok'>{sent}</Alert>}
      {error ? <Alert>{message(error)}</Alert> : null}
      {invites.length === 0
        ? <Empty title='No pending invitations' />
        : (
          <table class='table compact' aria-label='Pending invitations'>
            <thead><tr><th>Email</th><th>Role</th><th>Expires</th>{ctx.can('invites', 'delete') && <th><span class='sr-only'>Actions</span></th>}</tr></thead>
            <tbody>{invites.map((i) => (
              <tr key={i.id}><td>{i.email}</td><td>{i.role}</td><td>{when(i.expires_at)}</td>
                {ctx.can('invites', 'delete') && <td class='num'><button type='button' class='btn' onClick={async () => { try { await del(tpath(ctx, `/invites/${i.id}`)) } catch (e) { setError(e) } reload() }}>Withdraw</button></td>}
              </tr>
            ))}</tbody>
          </table>
          )}
    </section>
  )
}

function Roles ({ roles, reload, error }: { roles: Role[] | undefined, reload: () => void, error: unknown }) {
  const ctx = useCtx()
  const [editing, setEditing] = useState<Role | null>(null)
  const canCreate = ctx.can('roles', 'create')
  return (
    <section class='card'>
      <div class='row spread'>
        <h2>Roles</h2>
        {canCreate && !editing && <button type='button' class='btn' onClick={() => setEditing({ name: '', builtin: false, permissions: [] })}>New custom role</button>}
      </div>
      {error ? <Alert>{message(error)}</Alert> : null}
      {/* Keyed by the role: its grid starts from that role's permissions, not the last one's. */}
      {editing && <RoleEditor key={editing.name || '(new)'} role={editing} onDone={() => { setEditing(null); reload() }} />}
      {roles && (
        <table class='table compact' aria-label='Roles'>
          <thead><tr><th>Role</th><th>Kind</th><th>Permissions</th><th><span class='sr-only'>Actions</span></th></tr></thead>
          <tbody>{roles.map((r) => (
            <tr key={r.name}>
              <td><strong>{r.name}</strong></td>
              <td>{r.builtin ? 'built-in' : 'custom'}</td>
              <td class='small'>{r.permissions.length} of {RESOURCES.length * ACTIONS.length}</td>
              <td class='num'>{!r.builtin && ctx.can('roles', 'update') && <button type='button' class='btn' onClick={() => setEditing(r)}>Edit</button>}</td>
            </tr>
          ))}</tbody>
        </table>
      )}
    </section>
  )
}

function RoleEditor ({ role, onDone }: { role: Role, onDone: () => void }) {
  const ctx = useCtx()
  const isNew = role.name === ''
  const [name, setName] = useState(role.name)
  const [perms, setPerms] = useState<Set<string>>(new Set(role.permissions.map((p) => `${p.resource}:${p.action}`)))
  const [error, setError] = useState<unknown>(null)
  const toggle = (k: string) => {
    const next = new Set(perms)
    if (next.has(k)) next.delete(k)
    else next.add(k)
    setPerms(next)
  }
  const save = async (e: FormEvent) => {
    e.preventDefault()
    setError(null)
    const permissions: Permission[] = [...perms].map((k) => { const [resource, action] = k.split(':'); return { resource, action } })
    try {
      if (isNew) await post(tpath(ctx, '/roles'), { name, permissions })
      else await put(tpath(ctx, `/roles/${encodeURIComponent(role.name)}`), { permissions })
      onDone()
    } catch (err) { setError(err) }
  }
  return (
    <form class='stack role-editor' onSubmit={save} aria-label='Role editor'>
      {isNew
        ? <Field label='Name' hint='a–z, 0–9, _ and -; up to 64.'><input name='role-name' required value={name} onInput={(e) => setName(inputValue(e))} /></Field>
        : <h3>Editing {role.name}</h3>}
      <table class='table grid' aria-label='Permissions'>
        <thead><tr><th>Resource</th>{ACTIONS.map((a) => <th key={a}>{a}</th>)}</tr></thead>
        <tbody>{RESOURCES.map((r) => (
          <tr key={r}><th scope='row'>{r}</th>{ACTIONS.map((a) => (
            <td key={a}><input type='checkbox' aria-label={`${r} ${a}`} checked={perms.has(`${r}:${a}`)} onChange={() => toggle(`${r}:${a}`)} /></td>
          ))}</tr>
        ))}</tbody>
      </table>
      {error ? <Alert>{message(error)}</Alert> : null}
      <div class='row end'>
        <button type='button' class='btn' onClick={onDone}>Cancel</button>
        <button type='submit' class='btn btn-primary'>{isNew ? 'Create role' : 'Save role'}</button>
      </div>
    </form>
  )
}
