// Small building blocks every page uses, so the pages look and behave alike:
// links that route in the page, buttons that show progress, the states of a
// load (loading, error, empty), a modal confirmation and a copy button.
import type { ComponentChildren, JSX } from 'preact'
import { useEffect, useId, useRef, useState } from 'preact/hooks'
import { message } from './api'
import { BASE, navigate } from './router'

export function Link (props: { to: string, class?: string, children: ComponentChildren, 'aria-current'?: 'page' | undefined }) {
  const href = `${BASE}/${props.to}`
  const onClick = (e: MouseEvent) => {
    if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return
    e.preventDefault()
    navigate(props.to)
  }
  return <a href={href} class={props.class} onClick={onClick} aria-current={props['aria-current']}>{props.children}</a>
}

export function Spinner ({ label = 'Loading…' }: { label?: string }) {
  return <div class='state loading' role='status'><span class='spinner' aria-hidden='true' />{label}</div>
}

export function Alert ({ kind = 'error', children, onClose }: { kind?: 'error' | 'ok' | 'warn' | 'info', children: ComponentChildren, onClose?: () => void }) {
  return (
    <div class={`alert alert-${kind}`} role={kind === 'error' ? 'alert' : 'status'}>
      <div class='alert-body'>{children}</div>
      {onClose && <button type='button' class='btn-link' onClick={onClose} aria-label='Dismiss'>×</button>}
    </div>
  )
}

/** An error of a load or action, with a way back. */
export function ErrorState ({ error, retry }: { error: unknown, retry?: () => void }) {
  return (
    <Alert>
      <p>{message(error)}</p>
      <p class='row'>
        {retry && <button type='button' class='btn' onClick={retry}>Try again</button>}
        <Link to='apps' class='btn'>Back to apps</Link>
      </p>
    </Alert>
  )
}

export function Empty ({ title, children }: { title: string, children?: ComponentChildren }) {
  return <div class='state empty'><strong>{title}</strong>{children && <div>{children}</div>}</div>
}

/** Loads `fn` on mount and whenever `deps` change. */
export function useLoad<T> (fn: () => Promise<T>, deps: unknown[]): { data: T | undefined, error: unknown, loading: boolean, reload: () => void } {
  const [state, setState] = useState<{ data: T | undefined, error: unknown, loading: boolean }>({ data: undefined, error: null, loading: true })
  const [tick, setTick] = useState(0)
  useEffect(() => {
    let live = true
    setState((s) => ({ ...s, loading: true, error: null }))
    fn().then(
      (data) => { if (live) setState({ data, error: null, loading: false }) },
      (error) => { if (live) setState({ data: undefined, error, loading: false }) }
    )
    return () => { live = false }
  }, [...deps, tick])
  return { ...state, reload: () => setTick((t) => t + 1) }
}

/** A button that runs an async action, disabled while it runs. */
export function Action (props: { onRun: () => Promise<unknown>, class?: string, children: ComponentChildren, disabled?: boolean, label?: string }) {
  const [busy, setBusy] = useState(false)
  const run = async () => {
    setBusy(true)
    try { await props.onRun() } finally { setBusy(false) }
  }
  return (
    <button type='button' class={props.class ?? 'btn'} disabled={busy || props.disabled} onClick={run} aria-busy={busy} aria-label={props.label}>
      {props.children}
    </button>
  )
}

/** A modal that names the consequence before a destructive action. */
export function Confirm (props: {
  open: boolean
  title: string
  children: ComponentChildren
  confirm: string
  danger?: boolean
  onConfirm: () => Promise<unknown>
  onClose: () => void
}) {
  const ref = useRef<HTMLDialogElement>(null)
  const titleId = useId()
  const [error, setError] = useState<unknown>(null)
  const [busy, setBusy] = useState(false)
  useEffect(() => {
    const d = ref.current
    if (!d) return
    if (props.open && !d.open) { setError(null); d.showModal() }
    if (!props.open && d.open) d.close()
  }, [props.open])
  const run = async () => {
    setBusy(true)
    setError(null)
    try {
      await props.onConfirm()
      props.onClose()
    } catch (e) {
      setError(e)
    } finally {
      setBusy(false)
    }
  }
  return (
    <dialog ref={ref} class='modal' onClose={props.onClose} aria-labelledby={titleId}>
      <h2 id={titleId}>{props.title}</h2>
      <div class='modal-body'>{props.children}</div>
      {error ? <Alert>{message(error)}</Alert> : null}
      <div class='row end'>
        <button type='button' class='btn' onClick={props.onClose}>Cancel</button>
        <button type='button' class={props.danger ? 'btn btn-danger' : 'btn btn-primary'} disabled={busy} onClick={run}>{props.confirm}</button>
      </div>
    </dialog>
  )
}

export function CopyButton ({ text, label = 'Copy' }: { text: string, label?: string }) {
  const [copied, setCopied] = useState<'no' | 'yes' | 'failed'>('no')
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text)
      setCopied('yes')
    } catch {
      setCopied('failed')
    }
  }
  return (
    <button type='button' class='btn' onClick={copy} aria-live='polite'>
      {copied === 'yes' ? 'Copied' : copied === 'failed' ? 'Copy failed: select and copy by hand' : label}
    </button>
  )
}

/** A secret shown once, with the warning that it will not be shown again. */
export function SecretOnce ({ label, value, onDone }: { label: string, value: string, onDone: () => void }) {
  return (
    <div class='card secret-once' role='region' aria-label={label}>
      <h3>{label}</h3>
      <Alert kind='warn'>This is the only time it is shown. Copy it now and keep it in your backend's secret store; if it is lost, rotate it.</Alert>
      <div class='row'>
        <code class='secret' data-testid='secret'>{value}</code>
        <CopyButton text={value} />
      </div>
      <div class='row end'><button type='button' class='btn btn-primary' onClick={onDone}>I have stored it</button></div>
    </div>
  )
}

export function Field (props: { label: string, hint?: ComponentChildren, children: ComponentChildren }) {
  return (
    <label class='field'>
      <span class='field-label'>{props.label}</span>
      {props.children}
      {props.hint && <span class='field-hint'>{props.hint}</span>}
    </label>
  )
}

export function PageHeader ({ title, children }: { title: string, children?: ComponentChildren }) {
  return (
    <header class='page-header'>
      <h1>{title}</h1>
      <div class='row'>{children}</div>
    </header>
  )
}

export const when = (iso: string | null | undefined): string => iso ? new Date(iso).toLocaleString() : '—'
export const money = (cents: number): string => `${cents < 0 ? '−' : ''}$${(Math.abs(cents) / 100).toFixed(2)}`

export function Badge ({ kind, children }: { kind: string, children: ComponentChildren }) {
  return <span class={`badge badge-${kind}`}>{children}</span>
}

export type FormEvent = JSX.TargetedEvent<HTMLFormElement, Event>
export const inputValue = (e: JSX.TargetedEvent<HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement, Event>): string => e.currentTarget.value
