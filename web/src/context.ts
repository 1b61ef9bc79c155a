// What every signed-in page knows: the user, the tenant being looked at,
// and what the user's role in it may do (the buttons follow it; the API
// enforces it).
import { createContext } from 'preact'
import { useContext } from 'preact/hooks'
import type { Me, Permission } from './api'

export interface Ctx {
  me: Me
  tenant: { id: string, name: string, role: string, permissions: Permission[] }
  can: (resource: string, action: string) => boolean
  reloadMe: () => void
}

export const SessionContext = createContext<Ctx | null>(null)

export function useCtx (): Ctx {
  const c = useContext(SessionContext)
  if (!c) throw new Error('useCtx outside the signed-in layout')
  return c
}

export const tpath = (ctx: Ctx, rest: string) => `/v1/tenants/${encodeURIComponent(ctx.tenant.id)}${rest}`
