// The one way the dashboard talks to the API: same origin, the human
// session as a bearer token, errors as `ApiError` with the API's own
// machine code and message (which the pages show as they are).

const SESSION_KEY = 'wiresocket.session'
const TENANT_KEY = 'wiresocket.tenant'

export interface Session {
  token: string
  expires_at: string
}

export class ApiError extends Error {
  constructor (
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: Record<string, unknown> = {}
  ) {
    super(message)
  }
}

export function getSession (): Session | null {
  try {
    const raw = localStorage.getItem(SESSION_KEY)
    if (!raw) return null
    const s = JSON.parse(raw) as Session
    if (!s.token || Date.parse(s.expires_at) <= Date.now()) {
      localStorage.removeItem(SESSION_KEY)
      return null
    }
    return s
  } catch {
    return null
  }
}

export function setSession (s: Session): void {
  localStorage.setItem(SESSION_KEY, JSON.stringify(s))
}

/** Forgets the session and the chosen tenant (logout, or a dead session). */
export function clearSession (): void {
  localStorage.removeItem(SESSION_KEY)
  localStorage.removeItem(TENANT_KEY)
}

export function getTenantChoice (): string | null {
  return localStorage.getItem(TENANT_KEY)
}

export function setTenantChoice (tid: string): void {
  localStorage.setItem(TENANT_KEY, tid)
}

type Listener = (message: string) => void
let sessionEnded: Listener = () => {}

/** Called when an authenticated request answers 401: the session is dead. */
export function onSessionEnded (l: Listener): void {
  sessionEnded = l
}

interface Options {
  /** Send the session (default: when there is one). */
  auth?: boolean
  /** Form-encoded body (the OAuth endpoints) instead of JSON. */
  form?: Record<string, string>
  /** HTTP Basic client authentication (the token endpoint). */
  basic?: [string, string]
}

async function parse (res: Response): Promise<unknown> {
  if (res.status === 204) return null
  const text = await res.text()
  if (!text) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

export async function api<T = unknown> (method: string, path: string, body?: unknown, opts: Options = {}): Promise<T> {
  const headers: Record<string, string> = {}
  const session = opts.auth === false ? null : getSession()
  if (session) headers.authorization = `Bearer ${session.token}`
  if (opts.basic) {
    const enc = (s: string) => encodeURIComponent(s)
    headers.authorization = 'Basic ' + btoa(`${enc(opts.basic[0])}:${enc(opts.basic[1])}`)
  }
  let payload: BodyInit | undefined
  if (opts.form) {
    payload = new URLSearchParams(opts.form)
  } else if (body !== undefined) {
    headers['content-type'] = 'application/json'
    payload = JSON.stringify(body)
  }
  let res: Response
  try {
    res = await fetch(path, { method, headers, body: payload })
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection and try again.')
  }
  const data = await parse(res)
  if (res.ok) return data as T
  const obj = (data && typeof data === 'object' ? data : {}) as Record<string, unknown>
  const code = String(obj.error ?? `http_${res.status}`)
  const message = String(obj.message ?? obj.error_description ?? `The server answered ${res.status}.`)
  if (res.status === 401 && session) {
    clearSession()
    sessionEnded('Your session has ended. Sign in again to continue.')
  }
  if (res.status === 403) {
    throw new ApiError(403, code, `You don't have permission to do this: ${message}`, obj)
  }
  throw new ApiError(res.status, code, message, obj)
}

export const get = <T>(path: string) => api<T>('GET', path)
export const post = <T>(path: string, body?: unknown) => api<T>('POST', path, body)
export const patch = <T>(path: string, body: unknown) => api<T>('PATCH', path, body)
export const put = <T>(path: string, body: unknown) => api<T>('PUT', path, body)
export const del = <T>(path: string) => api<T>('DELETE', path)

export interface Paged<T> {
  items: T[]
  next_cursor: string | null
}

export function message (e: unknown): string {
  if (e instanceof ApiError) return e.message
  if (e instanceof Error) return e.message
  return String(e)
}

// The API's shapes, as the dashboard uses them.
export interface Me {
  id: string
  email: string
  name: string | null
  mfa_enabled: boolean
  recovery_codes_remaining: number | null
  is_operator: boolean
  tenants: { id: string, name: string, role: string, permissions: Permission[] }[]
  session_expires_at: string
}

export interface App {
  id: string
  tenant_id: string
  name: string
  client_id: string
  client_secret?: string
  region: string
  plan: string
  allowed_domains: string[]
  environment: string
  created_at: string
  updated_at: string
  current_period_start: string
  current_period_end: string
}

export interface Plan {
  id: string
  name: string
  max_connections: number | null
  max_documents: number | null
  ops_per_minute: number | null
  price_cents_per_month: number
}

export interface Region { id: string, name: string }

export interface InvoiceLine {
  description: string
  plan: string
  period_start: string
  period_end: string
  amount_cents: number
}

export interface Invoice {
  id: string
  app_id: string
  lines: InvoiceLine[]
  total_cents: number
  created_at: string
}

export interface Key {
  kid: string
  alg: string
  status: 'active' | 'retiring' | 'retired' | 'revoked'
  created_at: string
  retires_at: string | null
  revoked_at: string | null
}

export interface Permission { resource: string, action: string }
export interface Role { name: string, builtin: boolean, permissions: Permission[] }

export interface Member {
  user_id: string
  email: string
  name: string | null
  role: string
  mfa_enabled: boolean
  joined_at: string
}

export interface Invite { id: string, email: string, role: string, expires_at: string }
