// The pages before a session: first-run setup, sign-in (with the MFA
// challenge), password reset and accepting an invitation (the mailed links).
import type { ComponentChildren } from 'preact'
import { useState } from 'preact/hooks'
import { ApiError, api, message, setSession } from './api'
import { hashParam, navigate } from './router'
import { Alert, Field, Link, inputValue, type FormEvent } from './ui'

function AuthCard ({ title, children, footer }: { title: string, children: ComponentChildren, footer?: ComponentChildren }) {
  return (
    <main class='auth'>
      <div class='auth-card card'>
        <div class='brand'><img src='/dashboard/favicon.svg' alt='' width='28' height='28' /> WireSocket</div>
        <h1>{title}</h1>
        {children}
        {footer && <div class='auth-footer'>{footer}</div>}
      </div>
    </main>
  )
}

function useSubmit (): [boolean, unknown, (fn: () => Promise<void>) => (e: FormEvent) => Promise<void>, (e: unknown) => void] {
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState<unknown>(null)
  const submit = (fn: () => Promise<void>) => async (e: FormEvent) => {
    e.preventDefault()
    setBusy(true)
    setError(null)
    try { await fn() } catch (err) { setError(err) } finally { setBusy(false) }
  }
  return [busy, error, submit, setError]
}

const expiresAt = (seconds: number) => new Date(Date.now() + seconds * 1000).toISOString()

export function Login ({ notice }: { notice?: string | null }) {
  const [email, setEmail] = useState('')
  const [password, setPassword] = useState('')
  const [mfa, setMfa] = useState<null | 'required' | 'invalid'>(null)
  const [code, setCode] = useState('')
  const [useRecovery, setUseRecovery] = useState(false)
  const [busy, error, submit, setError] = useSubmit()
  const onSubmit = submit(async () => {
    const form: Record<string, string> = { grant_type: 'password', client_id: 'dashboard', username: email, password }
    if (mfa && code) form[useRecovery ? 'recovery_code' : 'totp'] = code.trim()
    try {
      const t = await api<{ access_token: string, expires_in: number }>('POST', '/oauth/token', undefined, { auth: false, form })
      setSession({ token: t.access_token, expires_at: expiresAt(t.expires_in) })
      navigate('apps', true)
    } catch (e) {
      if (e instanceof ApiError && (e.body.mfa === 'required' || e.body.mfa === 'invalid')) {
        const first = mfa === null
        setMfa(e.body.mfa as 'required' | 'invalid')
        setCode('')
        if (first && e.body.mfa === 'required') { setError(null); return }
        throw new ApiError(400, 'invalid_totp', 'That code is wrong or was already used. Wait for the next code and try again.')
      }
      throw e
    }
  })
  return (
    <AuthCard title='Sign in' footer={<><Link to='forgot-password'>Forgot your password?</Link> · <Link to='setup'>First run? Set up WireSocket</Link></>}>
      {notice && <Alert kind='info'>{notice}</Alert>}
      <form onSubmit={onSubmit} class='stack'>
        <Field label='Email'><input type='email' name='email' autoComplete='username' required value={email} onInput={(e) => setEmail(inputValue(e))} disabled={mfa !== null} /></Field>
        <Field label='Password'><input type='password' name='password' autoComplete='current-password' required value={password} onInput={(e) => setPassword(inputValue(e))} disabled={mfa !== null} /></Field>
        {mfa && (
          <>
            <Alert kind='info'>Two-factor authentication is on for this account.</Alert>
            <Field label={useRecovery ? 'Recovery code' : 'Authentication code'} hint={useRecovery ? 'One of the codes you saved when you turned on two-factor authentication.' : 'The 6-digit code your authenticator app shows.'}>
              <input name='totp' inputMode={useRecovery ? 'text' : 'numeric'} autoComplete='one-time-code' required autoFocus value={code} onInput={(e) => setCode(inputValue(e))} />
            </Field>
            <div class='row spread'>
              <button type='button' class='btn-link' onClick={() => { setUseRecovery(!useRecovery); setCode('') }}>
                {useRecovery ? 'Use an authentication code instead' : 'Use a recovery code instead'}
              </button>
              <button type='button' class='btn-link' onClick={() => { setMfa(null); setCode(''); setError(null) }}>Use another account</button>
            </div>
          </>
        )}
        {error ? <Alert>{message(error)}</Alert> : null}
        <button type='submit' class='btn btn-primary' disabled={busy}>{busy ? 'Signing in…' : 'Sign in'}</button>
      </form>
    </AuthCard>
  )
}

export function Setup () {
  const [f, setF] = useState({ email: '', password: '', tenant_name: '' })
  const [done, setDone] = useState(false)
  const [busy, error, submit] = useSubmit()
  const onSubmit = submit(async () => {
    await api('POST', '/v1/setup', f, { auth: false })
    const t = await api<{ session_token: string, expires_at: string }>('POST', '/v1/auth/login', { email: f.email, password: f.password }, { auth: false })
    setSession({ token: t.session_token, expires_at: t.expires_at })
    setDone(true)
    navigate('account', true)
  })
  const disabled = error instanceof ApiError && error.code === 'setup_disabled'
  return (
    <AuthCard title='Set up WireSocket' footer={<Link to='login'>Already set up? Sign in</Link>}>
      <p class='muted'>Create the first account. It becomes the platform operator and the super admin of your first tenant.</p>
      <form onSubmit={onSubmit} class='stack'>
        <Field label='Email'><input type='email' name='email' autoComplete='username' required value={f.email} onInput={(e) => setF({ ...f, email: inputValue(e) })} /></Field>
        <Field label='Password' hint='10 characters or more.'><input type='password' name='password' autoComplete='new-password' required minLength={10} value={f.password} onInput={(e) => setF({ ...f, password: inputValue(e) })} /></Field>
        <Field label='Organisation (tenant) name'><input name='tenant_name' required value={f.tenant_name} onInput={(e) => setF({ ...f, tenant_name: inputValue(e) })} /></Field>
        {error ? <Alert>{message(error)}{disabled && <> <Link to='login'>Sign in instead.</Link></>}</Alert> : null}
        <button type='submit' class='btn btn-primary' disabled={busy || done}>{busy ? 'Creating…' : 'Create account'}</button>
      </form>
    </AuthCard>
  )
}

export function ForgotPassword () {
  const [email, setEmail] = useState('')
  const [sent, setSent] = useState(false)
  const [busy, error, submit] = useSubmit()
  const onSubmit = submit(async () => {
    await api('POST', '/v1/auth/password-reset', { email }, { auth: false })
    setSent(true)
  })
  return (
    <AuthCard title='Reset your password' footer={<Link to='login'>Back to sign in</Link>}>
      {sent
        ? <Alert kind='ok'>If an account exists for {email}, a link to reset its password is on its way. It works for 30 minutes.</Alert>
        : (
          <form onSubmit={onSubmit} class='stack'>
            <Field label='Email'><input type='email' name='email' required value={email} onInput={(e) => setEmail(inputValue(e))} /></Field>
            {error ? <Alert>{message(error)}</Alert> : null}
            <button type='submit' class='btn btn-primary' disabled={busy}>Send the link</button>
          </form>
          )}
    </AuthCard>
  )
}

export function ResetPassword () {
  const token = hashParam('token')
  const [password, setPassword] = useState('')
  const [done, setDone] = useState(false)
  const [busy, error, submit] = useSubmit()
  const onSubmit = submit(async () => {
    await api('POST', '/v1/auth/password-reset/confirm', { token, password }, { auth: false })
    history.replaceState(null, '', location.pathname)
    setDone(true)
  })
  return (
    <AuthCard title='Choose a new password' footer={<Link to='login'>Back to sign in</Link>}>
      {!token && <Alert>This link has no reset token. Open the link from the mail again, or <Link to='forgot-password'>ask for a new one</Link>.</Alert>}
      {done
        ? <Alert kind='ok'>Your password is changed and every session of your account has ended. <Link to='login'>Sign in</Link> with the new one.</Alert>
        : token && (
          <form onSubmit={onSubmit} class='stack'>
            <Field label='New password' hint='10 characters or more.'><input type='password' name='password' autoComplete='new-password' required minLength={10} value={password} onInput={(e) => setPassword(inputValue(e))} /></Field>
            {error ? <Alert>{message(error)}{error instanceof ApiError && error.code === 'invalid_token' && <> <Link to='forgot-password'>Ask for a new link.</Link></>}</Alert> : null}
            <button type='submit' class='btn btn-primary' disabled={busy}>Change password</button>
          </form>
          )}
    </AuthCard>
  )
}

export function AcceptInvite () {
  const token = hashParam('token')
  const [f, setF] = useState({ name: '', password: '', totp: '' })
  const [needsCode, setNeedsCode] = useState(false)
  const [busy, error, submit] = useSubmit()
  const onSubmit = submit(async () => {
    const body: Record<string, string> = { token: token ?? '', password: f.password }
    if (f.name) body.name = f.name
    if (f.totp) body.totp = f.totp.trim()
    try {
      const r = await api<{ session_token: string, expires_at: string, tenant_id: string }>('POST', '/v1/invites/accept', body, { auth: false })
      setSession({ token: r.session_token, expires_at: r.expires_at })
      localStorage.setItem('wiresocket.tenant', r.tenant_id)
      history.replaceState(null, '', location.pathname)
      navigate('apps', true)
    } catch (e) {
      if (e instanceof ApiError && (e.code === 'mfa_required' || e.code === 'invalid_totp')) setNeedsCode(true)
      throw e
    }
  })
  return (
    <AuthCard title='Join your team on WireSocket' footer={<Link to='login'>Already a member? Sign in</Link>}>
      {!token
        ? <Alert>This link has no invitation token. Open the link from the invitation mail again.</Alert>
        : (
          <form onSubmit={onSubmit} class='stack'>
            <p class='muted'>New here? Choose your name and a password. Already have an account with this email? Enter its password.</p>
            <Field label='Your name (optional)'><input name='name' autoComplete='name' value={f.name} onInput={(e) => setF({ ...f, name: inputValue(e) })} /></Field>
            <Field label='Password' hint='10 characters or more.'><input type='password' name='password' autoComplete='new-password' required minLength={10} value={f.password} onInput={(e) => setF({ ...f, password: inputValue(e) })} /></Field>
            {needsCode && <Field label='Authentication code'><input name='totp' inputMode='numeric' autoComplete='one-time-code' value={f.totp} onInput={(e) => setF({ ...f, totp: inputValue(e) })} /></Field>}
            {error ? <Alert>{message(error)}</Alert> : null}
            <button type='submit' class='btn btn-primary' disabled={busy}>Accept the invitation</button>
          </form>
          )}
    </AuthCard>
  )
}
