// A new tenant: its own signing key, apps and members; the creator becomes
// its super_admin.
import { useState } from 'preact/hooks'
import { message, post } from '../api'
import { Alert, Field, PageHeader, inputValue, type FormEvent } from '../ui'

export function NewTenant ({ onCreated }: { onCreated: (id: string) => void }) {
  const [name, setName] = useState('')
  const [error, setError] = useState<unknown>(null)
  const [busy, setBusy] = useState(false)
  const submit = async (e: FormEvent) => {
    e.preventDefault()
    setBusy(true)
    setError(null)
    try {
      const t = await post<{ id: string }>('/v1/tenants', { name })
      onCreated(t.id)
    } catch (err) { setError(err) } finally { setBusy(false) }
  }
  return (
    <>
      <PageHeader title='New tenant' />
      <form class='card stack' onSubmit={submit} aria-label='New tenant'>
        <p class='muted'>A tenant has its own signing key, apps, members and audit trail. You become its super admin.</p>
        <Field label='Tenant name'><input name='tenant-name' required value={name} onInput={(e) => setName(inputValue(e))} /></Field>
        {error ? <Alert>{message(error)}</Alert> : null}
        <div class='row end'><button type='submit' class='btn btn-primary' disabled={busy}>Create tenant</button></div>
      </form>
    </>
  )
}
