// The tenant's signing keys: status, rotation with a grace period, and
// revocation (which ends every live session of the tenant).
import { useState } from 'preact/hooks'
import { get, message, post, type Key, type Paged } from '../api'
import { tpath, useCtx } from '../context'
import { Alert, Badge, Confirm, Empty, ErrorState, Field, PageHeader, Spinner, inputValue, useLoad, when } from '../ui'

const STATUS: Record<Key['status'], string> = { active: 'ok', retiring: 'warn', retired: 'muted', revoked: 'danger' }

export function Keys () {
  const ctx = useCtx()
  const keys = useLoad(() => get<Paged<Key>>(tpath(ctx, '/keys?limit=500')), [ctx.tenant.id])
  const [grace, setGrace] = useState('1800')
  const [rotating, setRotating] = useState(false)
  const [revoking, setRevoking] = useState<Key | null>(null)
  const [done, setDone] = useState<string | null>(null)
  const [error, setError] = useState<unknown>(null)
  const canChange = ctx.can('keys', 'update')
  return (
    <>
      <PageHeader title='Signing keys'>
        {canChange && <button type='button' class='btn btn-primary' onClick={() => setRotating(true)}>Rotate key</button>}
      </PageHeader>
      <p class='muted'>Every access token of this tenant's apps is signed with its active key. Verifiers fetch the public keys from <code>/{ctx.tenant.id}/.well-known/jwks.json</code>.</p>
      {done && <Alert kind='ok' onClose={() => setDone(null)}>{done}</Alert>}
      {error ? <Alert onClose={() => setError(null)}>{message(error)}</Alert> : null}
      {keys.loading && !keys.data && <Spinner />}
      {keys.error ? <ErrorState error={keys.error} retry={keys.reload} /> : null}
      {keys.data && keys.data.items.length === 0 && <Empty title='No keys' />}
      {keys.data && keys.data.items.length > 0 && (
        <table class='table' aria-label='Signing keys'>
          <thead><tr><th>Key id</th><th>Status</th><th>Created</th><th>Retires</th><th>Revoked</th>{canChange && <th><span class='sr-only'>Actions</span></th>}</tr></thead>
          <tbody>{keys.data.items.map((k) => (
            <tr key={k.kid}>
              <td><code>{k.kid}</code></td>
              <td><Badge kind={STATUS[k.status]}>{k.status}</Badge></td>
              <td>{when(k.created_at)}</td><td>{when(k.retires_at)}</td><td>{when(k.revoked_at)}</td>
              {canChange && <td class='num'>{k.status !== 'revoked' && k.status !== 'retired' && <button type='button' class='btn btn-danger' onClick={() => setRevoking(k)}>Revoke</button>}</td>}
            </tr>
          ))}</tbody>
        </table>
      )}
      <Confirm
        open={rotating} title='Rotate the signing key?' confirm='Rotate key'
        onClose={() => setRotating(false)}
        onConfirm={async () => {
          const k = await post<Key>(tpath(ctx, '/keys/rotate'), { grace_seconds: Number(grace) })
          setDone(`New active key ${k.kid}. The previous key keeps verifying for ${grace} s.`)
          keys.reload()
        }}
      >
        <p>A new key signs every token from now on. The current key becomes <em>retiring</em>: tokens it signed keep working until the grace period ends, then it leaves the JWKS.</p>
        <Field label='Grace period (seconds)' hint='0 to 2,592,000. The default, 1800, outlives every access token.'>
          <input name='grace_seconds' type='number' min='0' max='2592000' value={grace} onInput={(e) => setGrace(inputValue(e))} />
        </Field>
      </Confirm>
      <Confirm
        open={revoking !== null} title={`Revoke key ${revoking?.kid ?? ''}?`} confirm='Revoke key' danger
        onClose={() => setRevoking(null)}
        onConfirm={async () => {
          if (!revoking) return
          setError(null)
          await post<Key>(tpath(ctx, `/keys/${encodeURIComponent(revoking.kid)}/revoke`))
          setDone(`Key ${revoking.kid} is revoked.`)
          keys.reload()
        }}
      >
        <p><strong>Every token it signed stops working at once, and every live session of this tenant that it authorised ends now</strong>: all connected editors are disconnected and must fetch new tokens. If it is the active key, a fresh key takes its place.</p>
      </Confirm>
    </>
  )
}
