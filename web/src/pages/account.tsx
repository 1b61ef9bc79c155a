// The signed-in user's own security: two-factor enrolment (QR code, then a
// code to prove it, then the recovery codes shown once).
import { useState } from 'preact/hooks'
import { api, message, post } from '../api'
import { useCtx } from '../context'
import { Alert, CopyButton, Field, PageHeader, inputValue, type FormEvent } from '../ui'

interface Setup { secret: string, otpauth_url: string, qr_svg: string }

/** The QR code as an image: the SVG never becomes markup of the page. */
const qrSrc = (svg: string) => `data:image/svg+xml;base64,${btoa(unescape(encodeURIComponent(svg)))}`

export function Account () {
  const ctx = useCtx()
  const [setup, setSetup] = useState<Setup | null>(null)
  const [code, setCode] = useState('')
  const [codes, setCodes] = useState<string[] | null>(null)
  const [error, setError] = useState<unknown>(null)
  const [busy, setBusy] = useState(false)

  const start = async () => {
    setError(null)
    setBusy(true)
    try { setSetup(await post<Setup>('/v1/me/mfa/setup')) } catch (e) { setError(e) } finally { setBusy(false) }
  }
  const [offCode, setOffCode] = useState('')
  const turnOff = async (e: FormEvent) => {
    e.preventDefault()
    setError(null)
    setBusy(true)
    try {
      await api('DELETE', '/v1/me/mfa', { code: offCode.trim() })
      setOffCode('')
      ctx.reloadMe()
    } catch (err) { setError(err) } finally { setBusy(false) }
  }
  const verify = async (e: FormEvent) => {
    e.preventDefault()
    setError(null)
    setBusy(true)
    try {
      const r = await post<{ recovery_codes: string[] }>('/v1/me/mfa/verify', { code: code.trim() })
      setCodes(r.recovery_codes)
      setSetup(null)
    } catch (err) { setError(err) } finally { setBusy(false) }
  }

  return (
    <>
      <PageHeader title='Account & security' />
      <section class='card'>
        <h2>Profile</h2>
        <dl class='props'>
          <dt>Email</dt><dd>{ctx.me.email}</dd>
          <dt>Name</dt><dd>{ctx.me.name ?? '—'}</dd>
          <dt>Session ends</dt><dd>{new Date(ctx.me.session_expires_at).toLocaleString()}</dd>
        </dl>
      </section>
      <section class='card'>
        <h2>Two-factor authentication</h2>
        {codes && (
          <div role='region' aria-label='Recovery codes'>
            <Alert kind='ok'>Two-factor authentication is on. From now on, signing in asks for a code from your authenticator app.</Alert>
            <Alert kind='warn'>These recovery codes are shown only now. Each one signs you in once if you lose your phone. Store them somewhere safe.</Alert>
            <ol class='codes' data-testid='recovery-codes'>{codes.map((c) => <li key={c}><code>{c}</code></li>)}</ol>
            <div class='row'>
              <CopyButton text={codes.join('\n')} label='Copy the codes' />
              <button type='button' class='btn btn-primary' onClick={() => { setCodes(null); ctx.reloadMe() }}>I have stored them</button>
            </div>
          </div>
        )}
        {!codes && ctx.me.mfa_enabled && (
          <>
            <p><span class='badge badge-ok'>On</span> Signing in needs a code from your authenticator app. {ctx.me.recovery_codes_remaining ?? 0} recovery codes left.</p>
            <form class='row bottom' onSubmit={turnOff} aria-label='Turn off two-factor authentication'>
              <Field label='Code, to turn it off' hint='A current code from the app, or a recovery code.'>
                <input name='off-code' autoComplete='one-time-code' required value={offCode} onInput={(e) => setOffCode(inputValue(e))} />
              </Field>
              <button type='submit' class='btn btn-danger' disabled={busy}>Turn off</button>
            </form>
          </>
        )}
        {!codes && !ctx.me.mfa_enabled && !setup && (
          <>
            <p><span class='badge badge-warn'>Off</span> Protect your account with a second step at sign-in: a code from an authenticator app.</p>
            <button type='button' class='btn btn-primary' onClick={start} disabled={busy}>Turn on two-factor authentication</button>
          </>
        )}
        {setup && (
          <div class='mfa-setup'>
            <ol class='steps'>
              <li>Scan this QR code with your authenticator app (or type the key by hand).</li>
              <li>Enter the 6-digit code it shows to finish.</li>
            </ol>
            <div class='row top'>
              <img class='qr' src={qrSrc(setup.qr_svg)} alt='QR code for your authenticator app' width='200' height='200' />
              <div class='stack'>
                <Field label='Key (if you cannot scan)'>
                  <div class='row'><code class='secret' data-testid='totp-secret'>{setup.secret}</code><CopyButton text={setup.secret} /></div>
                </Field>
                <form onSubmit={verify} class='stack'>
                  <Field label='Code from the app'><input name='code' inputMode='numeric' autoComplete='one-time-code' required value={code} onInput={(e) => setCode(inputValue(e))} /></Field>
                  <button type='submit' class='btn btn-primary' disabled={busy}>Verify and turn on</button>
                </form>
              </div>
            </div>
          </div>
        )}
        {error ? <Alert>{message(error)}</Alert> : null}
      </section>
    </>
  )
}
