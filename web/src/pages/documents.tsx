// An app's documents: name, size, live connections, last update, delete.
import { useState } from 'preact/hooks'
import { del, get, type Paged } from '../api'
import { tpath, useCtx } from '../context'
import { Alert, Confirm, Empty, ErrorState, Spinner, useLoad, when } from '../ui'

interface Doc { name: string, size_bytes: number, created_at: string, updated_at: string, connections: number }

const size = (n: number) => n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`

export function Documents ({ appId }: { appId: string }) {
  const ctx = useCtx()
  const docs = useLoad(() => get<Paged<Doc>>(tpath(ctx, `/apps/${appId}/docs?limit=500`)), [appId])
  const [deleting, setDeleting] = useState<Doc | null>(null)
  const [notice, setNotice] = useState<string | null>(null)
  const canDelete = ctx.can('documents', 'delete')
  return (
    <section class='card'>
      <div class='row spread'>
        <h2>Documents</h2>
        <button type='button' class='btn' onClick={docs.reload}>Refresh</button>
      </div>
      {notice && <Alert kind='ok' onClose={() => setNotice(null)}>{notice}</Alert>}
      {docs.loading && !docs.data && <Spinner />}
      {docs.error ? <ErrorState error={docs.error} retry={docs.reload} /> : null}
      {docs.data && docs.data.items.length === 0 && <Empty title='No documents yet'>A document appears here after its first write: open the playground to make one.</Empty>}
      {docs.data && docs.data.items.length > 0 && (
        <table class='table' aria-label='Documents'>
          <thead><tr><th>Name</th><th class='num'>Size</th><th class='num'>Live connections</th><th>Last update</th>{canDelete && <th><span class='sr-only'>Actions</span></th>}</tr></thead>
          <tbody>{docs.data.items.map((d) => (
            <tr key={d.name}>
              <td><code>{d.name}</code></td>
              <td class='num'>{size(d.size_bytes)}</td>
              <td class='num'>{d.connections}</td>
              <td>{when(d.updated_at)}</td>
              {canDelete && <td class='num'><button type='button' class='btn btn-danger' onClick={() => setDeleting(d)}>Delete</button></td>}
            </tr>
          ))}</tbody>
        </table>
      )}
      <Confirm
        open={deleting !== null} title={`Delete ${deleting?.name ?? ''}?`} confirm='Delete document' danger
        onClose={() => setDeleting(null)}
        onConfirm={async () => {
          if (!deleting) return
          await del(tpath(ctx, `/apps/${appId}/docs/${encodeURIComponent(deleting.name)}`))
          setNotice(`${deleting.name} is deleted.`)
          docs.reload()
        }}
      >
        <p>Its content is gone for good and every client connected to it is disconnected (close code 4404).</p>
      </Confirm>
    </section>
  )
}
