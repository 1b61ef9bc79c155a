// The node registry (platform operator only): status, region, load, drain.
import { useState } from 'preact/hooks'
import { get, post, type Paged } from '../api'
import { Badge, Confirm, Empty, ErrorState, PageHeader, Spinner, useLoad, when } from '../ui'

interface Node { id: string, region: string, url: string, status: 'up' | 'draining' | 'down', last_heartbeat_at: string, connections: number, documents: number }
const KIND = { up: 'ok', draining: 'warn', down: 'danger' }

export function Nodes () {
  const nodes = useLoad(() => get<Paged<Node>>('/v1/nodes?limit=500'), [])
  const [draining, setDraining] = useState<Node | null>(null)
  return (
    <>
      <PageHeader title='Nodes'><button type='button' class='btn' onClick={nodes.reload}>Refresh</button></PageHeader>
      {nodes.loading && !nodes.data && <Spinner />}
      {nodes.error ? <ErrorState error={nodes.error} retry={nodes.reload} /> : null}
      {nodes.data && nodes.data.items.length === 0 && <Empty title='No nodes registered' />}
      {nodes.data && nodes.data.items.length > 0 && (
        <table class='table' aria-label='Nodes'>
          <thead><tr><th>Node</th><th>Status</th><th>Region</th><th class='num'>Connections</th><th class='num'>Documents</th><th>Last heartbeat</th><th><span class='sr-only'>Actions</span></th></tr></thead>
          <tbody>{nodes.data.items.map((n) => (
            <tr key={n.id}>
              <td><code>{n.id}</code><div class='small muted'>{n.url}</div></td>
              <td><Badge kind={KIND[n.status]}>{n.status}</Badge></td>
              <td>{n.region}</td><td class='num'>{n.connections}</td><td class='num'>{n.documents}</td><td>{when(n.last_heartbeat_at)}</td>
              <td class='num'>
                {n.status === 'draining'
                  ? <button type='button' class='btn' onClick={async () => { await post(`/v1/nodes/${encodeURIComponent(n.id)}/undrain`); nodes.reload() }}>Undrain</button>
                  : <button type='button' class='btn btn-danger' onClick={() => setDraining(n)} disabled={n.status === 'down'}>Drain</button>}
              </td>
            </tr>
          ))}</tbody>
        </table>
      )}
      <Confirm open={draining !== null} title={`Drain node ${draining?.id ?? ''}?`} confirm='Drain node' danger onClose={() => setDraining(null)}
        onConfirm={async () => { if (draining) { await post(`/v1/nodes/${encodeURIComponent(draining.id)}/drain`); nodes.reload() } }}>
        <p>It takes no new connections, and within 5 s closes its {draining?.connections ?? 0} clients with code 4503 so they reconnect to another node of its region through discovery. Nothing persisted is lost.</p>
      </Confirm>
    </>
  )
}
