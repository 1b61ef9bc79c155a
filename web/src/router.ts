// Path routing under /dashboard with the History API; the server answers
// index.html for every such path, so a reload or a mailed link lands here.
import { useEffect, useState } from 'preact/hooks'

export const BASE = '/dashboard'

/** The path below /dashboard, without leading or trailing slashes. */
export function currentRoute (): string {
  const p = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : ''
  return p.replace(/^\/+|\/+$/g, '')
}

const EVENT = 'wiresocket:navigate'

export function navigate (route: string, replace = false): void {
  const url = `${BASE}/${route.replace(/^\/+/, '')}`
  if (replace) history.replaceState(null, '', url)
  else history.pushState(null, '', url)
  window.dispatchEvent(new Event(EVENT))
  window.scrollTo(0, 0)
}

export function useRoute (): string {
  const [route, setRoute] = useState(currentRoute())
  useEffect(() => {
    const update = () => setRoute(currentRoute())
    window.addEventListener('popstate', update)
    window.addEventListener(EVENT, update)
    // A navigation between the first render and this effect.
    update()
    return () => {
      window.removeEventListener('popstate', update)
      window.removeEventListener(EVENT, update)
    }
  }, [])
  return route
}

/** `#token=…` of the mailed links (never sent to the server). */
export function hashParam (name: string): string | null {
  return new URLSearchParams(location.hash.replace(/^#/, '')).get(name)
}

/** Replaces the current route once rendered (a redirect). */
export function Redirect ({ to }: { to: string }) {
  useEffect(() => { navigate(to, true) }, [to])
  return null
}
