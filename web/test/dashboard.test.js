// The dashboard in a real browser against the real server: one story from
// the first-run setup to a second member joining, each step through the UI
// the way a person would do it, with the API checked where the UI claims
// something (a secret that really works, a session that is really gone).

import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import http from 'node:http'
import { after, before, test } from 'node:test'
import { launch, shot, startServer, totp, until, watchedContext } from './harness.js'

const OWNER = { email: 'owner@example.com', password: 'correct horse battery staple', tenant: 'Acme Robotics' }
const VIEWER = { email: 'viewer@example.com', password: 'viewer password 123' }

let server, browser, owner, page
// The invited member's browser, from joining until the two-factor reset.
let member, mp

before(async () => {
  server = await startServer()
  browser = await launch()
  owner = await watchedContext(browser, server.base, {
    // Provoked on purpose: sign-in without the MFA code (400 mfa: required)
    // and with a wrong one; an app with a malformed domain (400).
    allowed: [/^\/oauth\/token$/, /^\/v1\/tenants\/[^/]+\/apps$/]
  })
  page = await owner.page()
  page.setDefaultTimeout(10_000)
})

after(async () => {
  await browser?.close()
  await server?.stop()
})

const url = (p) => `${server.base}/dashboard/${p}`
const session = (p) => p.evaluate(() => localStorage.getItem('wiresocket.session'))
const bearer = async (p) => ({ authorization: `Bearer ${JSON.parse(await session(p)).token}` })
const tenantId = async (p) => (await (await fetch(`${server.base}/v1/me`, { headers: await bearer(p) })).json()).tenants.find((t) => t.name === OWNER.tenant).id
/** The dashboard's own password grant, without an MFA code. */
const passwordGrant = (email, password) => fetch(`${server.base}/oauth/token`, {
  method: 'POST',
  body: new URLSearchParams({ grant_type: 'password', client_id: 'dashboard', username: email, password })
})
const totpSecret = {}

test('first-run setup signs the operator in', async () => {
  await page.goto(url('setup'))
  await shot(page, '01-setup')
  await page.getByLabel('Email').fill(OWNER.email)
  await page.getByLabel('Password').fill(OWNER.password)
  await page.getByLabel('Organisation (tenant) name').fill(OWNER.tenant)
  await page.getByRole('button', { name: 'Create account' }).click()
  await page.waitForURL(url('account'))
  await page.getByRole('heading', { name: 'Account & security' }).waitFor()
  assert.ok(await session(page), 'the session is kept in localStorage')
  assert.equal(await page.getByTestId('role').textContent(), 'super_admin')
  // Setup is one-time: a second attempt says so.
  const again = await fetch(`${server.base}/v1/setup`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'x@example.com', password: OWNER.password, tenant_name: 'X' }) })
  assert.equal(again.status, 409)
})

test('MFA enrolment shows a QR code, then ten recovery codes once', async () => {
  await page.getByRole('button', { name: 'Turn on two-factor authentication' }).click()
  const qr = page.getByRole('img', { name: 'QR code for your authenticator app' })
  await qr.waitFor()
  assert.ok(await qr.evaluate((img) => img.complete && img.naturalWidth > 0), 'the QR code renders')
  totpSecret.value = (await page.getByTestId('totp-secret').textContent()).trim()
  await page.getByLabel('Code from the app').fill(totp(totpSecret.value))
  await page.getByRole('button', { name: 'Verify and turn on' }).click()
  const codes = page.getByTestId('recovery-codes').locator('li')
  await codes.first().waitFor()
  assert.equal(await codes.count(), 10)
  totpSecret.codes = (await codes.allTextContents()).map((c) => c.trim())
  await shot(page, '02-mfa-recovery-codes')
  await page.getByRole('button', { name: 'I have stored them' }).click()
  await page.getByText('Signing in needs a code from your authenticator app').waitFor()
})

test('logout ends the session on the server and forgets it', async () => {
  const before = JSON.parse(await session(page)).token
  await page.getByRole('button', { name: 'Sign out' }).click()
  await page.waitForURL(url('login'))
  assert.equal(await session(page), null)
  const me = await fetch(`${server.base}/v1/me`, { headers: { authorization: `Bearer ${before}` } })
  assert.equal(me.status, 401, 'the old session is dead server-side')
  // A signed-in page now sends to the sign-in page.
  await page.goto(url('apps'))
  await page.waitForURL(url('login'))
})

test('login asks for the MFA code, refuses a wrong one, accepts the right one', async () => {
  await page.getByLabel('Email').fill(OWNER.email)
  await page.getByLabel('Password').fill(OWNER.password)
  await page.getByRole('button', { name: 'Sign in' }).click()
  const code = page.getByLabel('Authentication code')
  await code.waitFor()
  await shot(page, '03-login-mfa')
  await code.fill('000000' === totp(totpSecret.value) ? '111111' : '000000')
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('alert').filter({ hasText: 'wrong or was already used' }).waitFor()
  // The enrolment used this step's code; the next step's is within ±1.
  await code.fill(totp(totpSecret.value, Date.now() + 30_000))
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.waitForURL(url('apps'))
  await page.getByText('No apps yet').waitFor()
  assert.ok(await session(page))
})

const app = {}

test('create an app: the secret is shown once, copied, and gets a token', async () => {
  await page.getByRole('button', { name: 'New app' }).click()
  const form = page.getByRole('form', { name: 'New app' })
  await form.getByLabel('Name', { exact: true }).fill('Notes')
  await form.getByLabel('Plan').selectOption('starter')
  // The API's validation message for a malformed domain is shown as it is.
  await form.getByLabel('Allowed domain 1').fill('not a domain!')
  await form.getByRole('button', { name: 'Create app' }).click()
  await form.getByRole('alert').waitFor()
  assert.match(await form.getByRole('alert').textContent(), /domain/i)
  await form.getByLabel('Allowed domain 1').fill('localhost:3000')
  await form.getByRole('button', { name: 'Create app' }).click()
  const secret = page.getByTestId('secret')
  await secret.waitFor()
  await page.getByText('This is the only time it is shown').waitFor()
  app.secret = (await secret.textContent()).trim()
  await page.getByRole('button', { name: 'Copy', exact: true }).click()
  await page.getByRole('button', { name: 'Copied' }).waitFor()
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), app.secret)
  await shot(page, '04-app-secret-once')
  await page.getByRole('button', { name: 'I have stored it' }).click()
  assert.equal(await page.getByTestId('secret').count(), 0, 'gone once acknowledged')
  const row = page.getByRole('table', { name: 'Apps' }).getByRole('row', { name: /Notes/ })
  app.clientId = (await row.locator('code').textContent()).trim()
  assert.match(await row.textContent(), /localhost:3000/)

  // What the user's backend does with the copied secret.
  const res = await fetch(`${server.base}/oauth/token`, {
    method: 'POST',
    headers: { authorization: 'Basic ' + Buffer.from(`${app.clientId}:${app.secret}`).toString('base64') },
    body: new URLSearchParams({ grant_type: 'client_credentials' })
  })
  assert.equal(res.status, 200)
  const token = await res.json()
  assert.equal(token.token_type, 'Bearer')
  assert.ok(token.access_token.split('.').length === 3)
  await shot(page, '05-apps')
})

test('change the plan seeing the prorated invoice first', async () => {
  await page.getByRole('link', { name: 'Notes' }).click()
  await page.getByRole('heading', { name: 'Notes', level: 1 }).waitFor()
  assert.equal(await page.getByTestId('plan').textContent(), 'Starter')
  await page.getByLabel('Change plan to').selectOption('pro')
  const preview = page.getByRole('region', { name: 'Prorated invoice' })
  await preview.waitFor()
  const lines = await preview.locator('tr').allTextContents()
  assert.ok(lines.some((l) => /credit|unused/i.test(l)), `a credit line: ${lines}`)
  const total = (await preview.getByTestId('invoice-total').textContent()).trim()
  assert.match(total, /^\$\d+\.\d\d$/)
  await preview.scrollIntoViewIfNeeded()
  await shot(page, '06-plan-proration')
  // Nothing changed yet.
  assert.equal(await page.getByTestId('plan').textContent(), 'Starter')
  await preview.getByRole('button', { name: /^Change to Pro for / }).click()
  await until(async () => (await page.getByTestId('plan').textContent()) === 'Pro', 'the plan to be Pro')
  const invoices = page.getByRole('table', { name: 'Invoices' })
  await invoices.waitFor()
  assert.match(await invoices.textContent(), /\$\d+\.\d\d/)
})

test('rotating the client secret shows the new one once; the old one stops working', async () => {
  await page.getByRole('button', { name: 'Rotate client secret' }).click()
  const dialog = page.getByRole('dialog', { name: 'Rotate the client secret?' })
  assert.match(await dialog.textContent(), /stops working at once/)
  await dialog.getByRole('button', { name: 'Rotate secret' }).click()
  const fresh = (await page.getByTestId('secret').textContent()).trim()
  assert.notEqual(fresh, app.secret)
  const token = (secret) => fetch(`${server.base}/oauth/token`, {
    method: 'POST',
    headers: { authorization: 'Basic ' + Buffer.from(`${app.clientId}:${secret}`).toString('base64') },
    body: new URLSearchParams({ grant_type: 'client_credentials' })
  })
  assert.equal((await token(app.secret)).status, 401)
  assert.equal((await token(fresh)).status, 200)
  app.secret = fresh
  await page.getByRole('button', { name: 'I have stored it' }).click()
})

test('rotate the signing key with a grace period', async () => {
  await page.getByRole('link', { name: 'Signing keys' }).click()
  const table = page.getByRole('table', { name: 'Signing keys' })
  await table.waitFor()
  assert.equal(await table.getByText('active').count(), 1)
  await page.getByRole('button', { name: 'Rotate key' }).click()
  const dialog = page.getByRole('dialog', { name: 'Rotate the signing key?' })
  // Escape closes a confirmation without doing anything.
  await dialog.waitFor()
  await page.keyboard.press('Escape')
  await dialog.waitFor({ state: 'hidden' })
  assert.equal(await table.getByText('retiring', { exact: true }).count(), 0)
  await page.getByRole('button', { name: 'Rotate key' }).click()
  await dialog.getByLabel('Grace period (seconds)').fill('600')
  await dialog.getByRole('button', { name: 'Rotate key' }).click()
  await page.getByText(/New active key .* keeps verifying for 600 s/).waitFor()
  await until(async () => (await table.getByText('retiring').count()) === 1, 'the old key to be retiring')
  assert.equal(await table.getByText('active').count(), 1)
  // Revoking names what it ends.
  await table.getByRole('button', { name: 'Revoke' }).first().click()
  const revoke = page.getByRole('dialog', { name: /^Revoke key/ })
  assert.match(await revoke.textContent(), /every live session of this tenant/)
  await shot(page, '07-keys-revoke')
  await revoke.getByRole('button', { name: 'Cancel' }).click()
  assert.equal(await table.getByText('revoked', { exact: true }).count(), 0, 'cancel revokes nothing')
  // Revoke the retiring key for real.
  const retiring = table.getByRole('row').filter({ hasText: 'retiring' })
  const kid = (await retiring.locator('code').textContent()).trim()
  await retiring.getByRole('button', { name: 'Revoke' }).click()
  await page.getByRole('dialog', { name: `Revoke key ${kid}?` }).getByRole('button', { name: 'Revoke key' }).click()
  await page.getByText(`Key ${kid} is revoked.`).waitFor()
  await table.getByRole('row').filter({ hasText: kid }).getByText('revoked', { exact: true }).waitFor()
  const me = await (await fetch(`${server.base}/v1/me`, { headers: { authorization: `Bearer ${JSON.parse(await session(page)).token}` } })).json()
  const tenant = me.tenants.find((t) => t.name === OWNER.tenant).id
  const jwks = await (await fetch(`${server.base}/${tenant}/.well-known/jwks.json`)).json()
  assert.ok(jwks.keys.length >= 1 && !jwks.keys.some((k) => k.kid === kid), 'the revoked key left the JWKS')
})

test('a new tenant from the sidebar; the switcher shows each tenant with its own apps', async () => {
  await page.getByRole('link', { name: '+ New tenant' }).click()
  await page.getByLabel('Tenant name').fill('Side Project')
  await page.getByRole('button', { name: 'Create tenant' }).click()
  // The new tenant is chosen, with its own (empty) apps and the creator as super_admin.
  await page.getByText('No apps yet').waitFor()
  await until(async () => (await page.getByLabel('Tenant').inputValue()) !== '' && (await page.getByLabel('Tenant').locator('option:checked').textContent()) === 'Side Project', 'the new tenant to be chosen')
  assert.equal(await page.getByTestId('role').textContent(), 'super_admin')
  await page.getByLabel('Tenant').selectOption({ label: OWNER.tenant })
  await page.getByRole('table', { name: 'Apps' }).getByText('Notes').waitFor()
})

test('invite a viewer, who joins through the mailed link in another browser', async () => {
  await page.getByRole('link', { name: 'Members & roles' }).click()
  const form = page.getByRole('form', { name: 'Invite a member' })
  await form.getByLabel('Email').fill(VIEWER.email)
  await form.getByLabel('Role').selectOption('viewer')
  await form.getByRole('button', { name: 'Send invitation' }).click()
  await page.getByText(`Invitation sent to ${VIEWER.email}`).waitFor()
  await page.getByRole('table', { name: 'Pending invitations' }).getByText(VIEWER.email).waitFor()
  // A custom role from the resource × action grid.
  await page.getByRole('button', { name: 'New custom role' }).click()
  const editor = page.getByRole('form', { name: 'Role editor' })
  await editor.getByLabel('Name').fill('support')
  for (const p of ['apps read', 'documents read', 'documents update']) await editor.getByLabel(p, { exact: true }).check()
  await editor.getByRole('button', { name: 'Create role' }).click()
  await page.getByRole('table', { name: 'Roles' }).getByRole('row', { name: /support/ }).getByText('3 of 44').waitFor()
  await shot(page, '08-members')

  const link = await server.linkMailedTo(VIEWER.email, 'accept-invite')
  const viewer = await watchedContext(browser, server.base, {
    // Provoked on purpose below: the viewer forces a change it may not make.
    allowed: [/^\/v1\/tenants\/[^/]+\/apps\/[^/]+$/]
  })
  const vp = await viewer.page()
  vp.setDefaultTimeout(10_000)
  await vp.goto(link)
  await vp.getByLabel('Your name (optional)').fill('Vera Viewer')
  await vp.getByLabel('Password').fill(VIEWER.password)
  await vp.getByRole('button', { name: 'Accept the invitation' }).click()
  await vp.waitForURL(url('apps'))
  assert.equal(await vp.getByTestId('role').textContent(), 'viewer')

  // A viewer sees no edit buttons…
  await vp.getByRole('table', { name: 'Apps' }).waitFor()
  assert.equal(await vp.getByRole('button', { name: 'New app' }).count(), 0)
  await vp.getByRole('link', { name: 'Notes' }).click()
  await vp.getByRole('heading', { name: 'Notes', level: 1 }).waitFor()
  assert.equal(await vp.getByRole('button', { name: 'Save changes' }).count(), 0)
  assert.equal(await vp.getByRole('button', { name: 'Delete app' }).count(), 0)
  assert.equal(await vp.getByLabel('Change plan to').count(), 0)
  await vp.getByText('Your role can view this app but not change it.').waitFor()
  // …and forcing one (re-enabling the form by hand) gets a clear refusal.
  await vp.evaluate(() => {
    const form = document.querySelector('form[aria-label="Settings"]')
    form.querySelector('fieldset').disabled = false
    const b = document.createElement('button')
    b.type = 'submit'
    b.textContent = 'Forced save'
    form.append(b)
  })
  await vp.getByLabel('Name', { exact: true }).fill('Hacked')
  await vp.getByRole('button', { name: 'Forced save' }).click()
  await vp.getByRole('alert').filter({ hasText: "You don't have permission to do this" }).waitFor()
  await shot(vp, '09-viewer-forbidden')

  // The owner sees the new member and makes them an editor: the viewer's
  // dashboard follows once reloaded.
  await page.reload()
  const members = page.getByRole('table', { name: 'Members' })
  await members.getByText('Vera Viewer').waitFor()
  await members.getByLabel(`Role of ${VIEWER.email}`).selectOption('editor')
  await page.getByText(`${VIEWER.email} is now editor.`).waitFor()
  await vp.goto(url('apps'))
  await vp.getByRole('button', { name: 'New app' }).waitFor()
  assert.equal(await vp.getByTestId('role').textContent(), 'editor')
  member = viewer
  mp = vp
})

test('a withdrawn invitation leaves the list, and its mailed link no longer works', async () => {
  const GONE = 'withdrawn@example.com'
  const form = page.getByRole('form', { name: 'Invite a member' })
  await form.getByLabel('Email').fill(GONE)
  await form.getByLabel('Role').selectOption('viewer')
  await form.getByRole('button', { name: 'Send invitation' }).click()
  const pending = page.getByRole('table', { name: 'Pending invitations' })
  const row = pending.getByRole('row', { name: new RegExp(GONE) })
  await row.waitFor()
  const link = await server.linkMailedTo(GONE, 'accept-invite')
  await row.getByRole('button', { name: 'Withdraw' }).click()
  await page.getByText('No pending invitations').waitFor()
  const invites = await (await fetch(`${server.base}/v1/tenants/${await tenantId(page)}/invites?limit=500`, { headers: await bearer(page) })).json()
  assert.ok(!invites.items.some((i) => i.email === GONE), 'the API no longer lists it')
  // The link in the mail is refused: no account, no membership.
  const ctx = await watchedContext(browser, server.base, { allowed: [/^\/v1\/invites\/accept$/] })
  const p = await ctx.page()
  p.setDefaultTimeout(10_000)
  await p.goto(link)
  await p.getByLabel('Password').fill('a password for nothing')
  await p.getByRole('button', { name: 'Accept the invitation' }).click()
  await p.getByRole('alert').filter({ hasText: 'invalid, expired or already used' }).waitFor()
  assert.equal(await session(p), null)
  assert.equal(new URL(p.url()).pathname, '/dashboard/accept-invite')
  await shot(p, '09b-withdrawn-invite')
  assert.equal((await passwordGrant(GONE, 'a password for nothing')).status === 200, false)
  await page.reload()
  assert.equal(await page.getByRole('table', { name: 'Members' }).getByText(GONE).count(), 0)
  assert.deepEqual(ctx.errors, [])
  await ctx.context.close()
})

test('editing a custom role changes what a member with it may do', async () => {
  const members = page.getByRole('table', { name: 'Members' })
  await members.getByLabel(`Role of ${VIEWER.email}`).selectOption('support')
  await page.getByText(`${VIEWER.email} is now support.`).waitFor()
  const tenant = await tenantId(page)
  const audit = async () => (await fetch(`${server.base}/v1/tenants/${tenant}/audit?limit=1`, { headers: await bearer(mp) })).status
  await mp.goto(url('apps'))
  await mp.getByRole('table', { name: 'Apps' }).waitFor()
  assert.equal(await mp.getByTestId('role').textContent(), 'support')
  assert.equal(await mp.getByRole('link', { name: 'Audit log' }).count(), 0)
  assert.equal(await audit(), 403)

  const roles = page.getByRole('table', { name: 'Roles' })
  const editor = page.getByRole('form', { name: 'Role editor' })
  // A half-made new role, left for an edit of an existing one: the grid
  // shows the edited role's permissions, not the abandoned form's.
  await page.getByRole('button', { name: 'New custom role' }).click()
  await editor.getByLabel('nodes read', { exact: true }).check()
  await roles.getByRole('row', { name: /support/ }).getByRole('button', { name: 'Edit' }).click()
  await editor.getByRole('heading', { name: 'Editing support' }).waitFor()
  for (const p of ['apps read', 'documents read', 'documents update']) assert.ok(await editor.getByLabel(p, { exact: true }).isChecked(), `${p} is checked`)
  assert.equal(await editor.getByLabel('nodes read', { exact: true }).isChecked(), false)
  // Add audit read, take documents update away.
  await editor.getByLabel('audit read', { exact: true }).check()
  await editor.getByLabel('documents update', { exact: true }).uncheck()
  await shot(page, '09c-role-editor')
  await editor.getByRole('button', { name: 'Save role' }).click()
  await editor.waitFor({ state: 'hidden' })
  await roles.getByRole('row', { name: /support/ }).getByText('3 of 44').waitFor()
  const role = (await (await fetch(`${server.base}/v1/tenants/${tenant}/roles?limit=500`, { headers: await bearer(page) })).json()).items.find((r) => r.name === 'support')
  assert.deepEqual(role.permissions.map((p) => `${p.resource}:${p.action}`).sort(), ['apps:read', 'audit:read', 'documents:read'])

  // The member's dashboard and the API follow.
  await mp.reload()
  await mp.getByRole('link', { name: 'Audit log' }).click()
  await mp.getByTestId('chain').filter({ hasText: /^Hash chain intact/ }).waitFor()
  assert.equal(await audit(), 200)
  await mp.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Apps' }).click()
  await mp.getByRole('link', { name: 'Notes' }).click()
  await mp.getByRole('link', { name: 'Playground' }).click()
  await mp.getByText('Your role (support) may read documents but not edit them').waitFor()
})

test('the owner resets a member\'s two-factor authentication: they sign in with the password alone', async () => {
  // The member turns two-factor on…
  await mp.getByRole('link', { name: 'Account & security' }).click()
  await mp.getByRole('button', { name: 'Turn on two-factor authentication' }).click()
  const secret = (await mp.getByTestId('totp-secret').textContent()).trim()
  await mp.getByLabel('Code from the app').fill(totp(secret))
  await mp.getByRole('button', { name: 'Verify and turn on' }).click()
  await mp.getByRole('button', { name: 'I have stored them' }).click()
  await mp.getByText('Signing in needs a code from your authenticator app').waitFor()
  await mp.getByRole('button', { name: 'Sign out' }).click()
  await mp.waitForURL(url('login'))
  assert.equal((await passwordGrant(VIEWER.email, VIEWER.password)).status === 200, false, 'the password alone is not enough')

  // …loses the authenticator; the owner resets it.
  await page.reload()
  const row = page.getByRole('table', { name: 'Members' }).getByRole('row', { name: new RegExp(VIEWER.email) })
  await row.getByRole('cell', { name: 'on Reset', exact: true }).waitFor()
  await row.getByRole('button', { name: 'Reset' }).click()
  const dialog = page.getByRole('dialog', { name: `Reset two-factor authentication of ${VIEWER.email}?` })
  assert.match(await dialog.textContent(), /recovery codes stop working/)
  await dialog.getByRole('button', { name: 'Reset two-factor' }).click()
  await page.getByText(`${VIEWER.email} signs in with the password alone`).waitFor()
  await row.getByRole('cell', { name: 'off', exact: true }).waitFor()
  assert.equal(await row.getByRole('button', { name: 'Reset' }).count(), 0)
  await shot(page, '09d-mfa-reset')

  // The member signs in without a code.
  assert.equal((await passwordGrant(VIEWER.email, VIEWER.password)).status, 200)
  await mp.getByLabel('Email').fill(VIEWER.email)
  await mp.getByLabel('Password').fill(VIEWER.password)
  await mp.getByRole('button', { name: 'Sign in' }).click()
  await mp.waitForURL(url('apps'))
  assert.equal(await mp.getByLabel('Authentication code').count(), 0)
  await mp.getByRole('link', { name: 'Account & security' }).click()
  await mp.getByRole('button', { name: 'Turn on two-factor authentication' }).waitFor()
  assert.deepEqual(member.errors, [])
  await member.context.close()
})

test('the playground syncs two editors through the data plane, with presence', async () => {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Apps' }).click()
  await page.getByRole('link', { name: 'Notes' }).click()
  await page.getByRole('link', { name: 'Playground' }).click()
  await page.getByRole('button', { name: 'Open' }).click()
  const left = page.getByTestId('editor-left')
  const right = page.getByTestId('editor-right')
  await left.getByText('connected', { exact: true }).waitFor()
  await right.getByText('connected', { exact: true }).waitFor()
  // Each sees the other one.
  await right.getByTestId('presence-right').getByText(/\(left\)$/).waitFor()
  await left.getByTestId('presence-left').getByText(/\(right\)$/).waitFor()
  const leftArea = left.getByRole('textbox')
  const rightArea = right.getByRole('textbox')
  await leftArea.click()
  await leftArea.pressSequentially('Hello from the left')
  await until(async () => (await rightArea.inputValue()) === 'Hello from the left', 'the text to reach the right editor')
  await rightArea.click()
  await rightArea.press('End')
  await rightArea.pressSequentially(', and the right')
  await until(async () => (await leftArea.inputValue()) === 'Hello from the left, and the right', 'the text to reach the left editor')
  // The left editor shows the right one's caret, at the end of the text.
  await left.locator('.caret .caret-label').filter({ hasText: '(right)' }).waitFor()
  await shot(page, '10-playground')

  // Another document: both editors move to it, and edits stay on it.
  const FIRST = 'Hello from the left, and the right'
  const docField = page.getByLabel('Document', { exact: true })
  await docField.fill('notes-draft')
  await page.getByRole('button', { name: 'Switch document' }).click()
  await until(async () => (await leftArea.inputValue()) === '' && (await rightArea.inputValue()) === '', 'fresh editors on the new document')
  await left.getByText('connected', { exact: true }).waitFor()
  await right.getByText('connected', { exact: true }).waitFor()
  await right.getByTestId('presence-right').getByText(/\(left\)$/).waitFor()
  await leftArea.click()
  await leftArea.pressSequentially('Draft only')
  await until(async () => (await rightArea.inputValue()) === 'Draft only', 'the text to reach the right editor on the new document')
  await shot(page, '10b-playground-switched')
  // Back on the first document: its text, without the draft's.
  await docField.fill('playground')
  await page.getByRole('button', { name: 'Switch document' }).click()
  await until(async () => (await leftArea.inputValue()) === FIRST && (await rightArea.inputValue()) === FIRST, 'the first document again, untouched')
  await left.getByText('connected', { exact: true }).waitFor()

  // The document is there, with its two live connections, and persisted.
  await page.getByRole('link', { name: 'Documents' }).click()
  const row = page.getByRole('table', { name: 'Documents' }).getByRole('row', { name: /playground/ })
  await row.waitFor()
  assert.match(await row.textContent(), /\d+ B/)
  await shot(page, '11-documents')
  await row.getByRole('button', { name: 'Delete' }).click()
  const dialog = page.getByRole('dialog', { name: 'Delete playground?' })
  assert.match(await dialog.textContent(), /4404/)
  await dialog.getByRole('button', { name: 'Delete document' }).click()
  await page.getByText('playground is deleted.').waitFor()
  const draft = page.getByRole('table', { name: 'Documents' }).getByRole('row', { name: /notes-draft/ })
  await draft.getByRole('button', { name: 'Delete' }).click()
  await page.getByRole('dialog', { name: 'Delete notes-draft?' }).getByRole('button', { name: 'Delete document' }).click()
  await page.getByText('No documents yet').waitFor()
})

test('a webhook: created, sent a test event, its delivery in the log', async () => {
  const received = []
  const receiver = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => { body += c })
    req.on('end', () => { received.push({ headers: req.headers, body }); res.end('ok') })
  })
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve))
  try {
    await page.getByRole('navigation', { name: 'App sections' }).getByRole('link', { name: 'Webhooks' }).click()
    const form = page.getByRole('form', { name: 'New webhook' })
    await form.getByLabel('URL').fill(`http://127.0.0.1:${receiver.address().port}/hook`)
    await form.getByRole('button', { name: 'Create webhook' }).click()
    const secret = (await page.getByTestId('secret').textContent()).trim()
    await page.getByRole('button', { name: 'I have stored it' }).click()
    await page.getByRole('button', { name: 'Send test event' }).click()
    await page.getByText(/Test event .* queued/).waitFor()
    const ping = await until(() => received.find((r) => JSON.parse(r.body).type === 'ping'), 'the test event to arrive', 20_000)
    // Signed with the secret the dashboard showed once.
    assert.equal(ping.headers['x-webhook-signature'], createHmac('sha256', secret).update(ping.body).digest('hex'))
    const log = page.locator('.deliveries')
    await until(async () => {
      await log.getByRole('button', { name: 'Refresh' }).click()
      return (await log.getByRole('table').getByText('200', { exact: true }).count()) > 0
    }, 'the delivery in the log', 15_000)
    await shot(page, '12-webhooks')

    // A new secret, shown once: the next delivery is signed with it, not the old one.
    await page.getByRole('button', { name: 'Rotate secret' }).click()
    await page.getByRole('dialog', { name: 'Rotate the signing secret?' }).getByRole('button', { name: 'Rotate secret' }).click()
    const fresh = (await page.getByTestId('secret').textContent()).trim()
    assert.notEqual(fresh, secret)
    await page.getByRole('button', { name: 'I have stored it' }).click()
    await page.getByRole('button', { name: 'Send test event' }).click()
    const pings = () => received.filter((r) => JSON.parse(r.body).type === 'ping')
    const second = await until(() => pings()[1], 'the second test event', 20_000)
    const sign = (key) => createHmac('sha256', key).update(second.body).digest('hex')
    assert.equal(second.headers['x-webhook-signature'], sign(fresh))
    assert.notEqual(second.headers['x-webhook-signature'], sign(secret))

    // Deleted: gone from the list and the API.
    await page.getByRole('button', { name: 'Delete', exact: true }).click()
    const dialog = page.getByRole('dialog', { name: 'Delete this webhook?' })
    assert.match(await dialog.textContent(), /No more events are sent/)
    await dialog.getByRole('button', { name: 'Delete webhook' }).click()
    await page.getByText('No webhooks yet').waitFor()
    const appId = new URL(page.url()).pathname.split('/')[3]
    const hooks = await (await fetch(`${server.base}/v1/tenants/${await tenantId(page)}/apps/${appId}/webhooks`, { headers: await bearer(page) })).json()
    assert.deepEqual(hooks.items, [])
  } finally {
    receiver.close()
  }
})

test('the audit log: entries, filters, and the verified chain', async () => {
  await page.getByRole('link', { name: 'Audit log' }).click()
  await page.getByTestId('chain').filter({ hasText: /^Hash chain intact: \d+ entries verified/ }).waitFor()
  const table = page.getByRole('table', { name: 'Audit entries' })
  await table.getByText('plan.changed').waitFor()
  assert.ok(await table.getByText('app.created').count() >= 1)
  await shot(page, '13-audit')
  await page.getByLabel('Action').fill('plan.changed')
  await page.getByRole('button', { name: 'Apply' }).click()
  await until(async () => (await table.getByText('app.created').count()) === 0, 'the filter to apply')
  assert.equal(await table.getByText('plan.changed').count(), 1)
})

test('nodes: status, drain and undrain', async () => {
  await page.getByRole('link', { name: 'Nodes' }).click()
  const table = page.getByRole('table', { name: 'Nodes' })
  await table.getByText('up', { exact: true }).waitFor()
  await table.getByRole('button', { name: 'Drain' }).click()
  const dialog = page.getByRole('dialog', { name: /^Drain node/ })
  assert.match(await dialog.textContent(), /4503/)
  await dialog.getByRole('button', { name: 'Drain node' }).click()
  await table.getByText('draining', { exact: true }).waitFor()
  await shot(page, '14-nodes')
  await table.getByRole('button', { name: 'Undrain' }).click()
  await table.getByText('up', { exact: true }).waitFor()
})

test('a session ended elsewhere sends back to sign-in with a message', async () => {
  const token = JSON.parse(await session(page)).token
  await fetch(`${server.base}/v1/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Apps' }).click()
  await page.waitForURL(url('login'))
  await page.getByText('Your session has ended. Sign in again to continue.').waitFor()
  assert.equal(await session(page), null)
})

test('a recovery code signs in once; another turns MFA off', async () => {
  await page.getByLabel('Email').fill(OWNER.email)
  await page.getByLabel('Password').fill(OWNER.password)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('button', { name: 'Use a recovery code instead' }).click()
  await page.getByLabel('Recovery code').fill(totpSecret.codes[0])
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.waitForURL(url('apps'))
  await page.getByRole('link', { name: 'Account & security' }).click()
  await page.getByText('9 recovery codes left').waitFor()
  await page.getByLabel('Code, to turn it off').fill(totpSecret.codes[1])
  await page.getByRole('button', { name: 'Turn off' }).click()
  await page.getByRole('button', { name: 'Turn on two-factor authentication' }).waitFor()
  const me = await (await fetch(`${server.base}/v1/me`, { headers: { authorization: `Bearer ${JSON.parse(await session(page)).token}` } })).json()
  assert.equal(me.mfa_enabled, false)
})

test('password reset through the mailed link', async () => {
  const ctx = await watchedContext(browser, server.base)
  const p = await ctx.page()
  p.setDefaultTimeout(10_000)
  await p.goto(url('login'))
  await p.getByRole('link', { name: 'Forgot your password?' }).click()
  await p.getByLabel('Email').fill(VIEWER.email)
  await p.getByRole('button', { name: 'Send the link' }).click()
  await p.getByText(`If an account exists for ${VIEWER.email}`).waitFor()
  const link = await server.linkMailedTo(VIEWER.email, 'reset-password')
  await p.goto(link)
  await p.getByLabel('New password').fill('a brand new password')
  await p.getByRole('button', { name: 'Change password' }).click()
  await p.getByText('Your password is changed').waitFor()
  await p.getByRole('link', { name: 'Sign in', exact: true }).click()
  // By keyboard alone: the fields in order, Enter submits.
  await p.getByLabel('Email').focus()
  await p.keyboard.type(VIEWER.email)
  await p.keyboard.press('Tab')
  await p.keyboard.type('a brand new password')
  await p.keyboard.press('Enter')
  await p.waitForURL(url('apps'))
  assert.deepEqual(ctx.errors, [])
  await ctx.context.close()
})

test('deleting an app, after a confirmation', async () => {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Apps' }).click()
  await page.getByRole('link', { name: 'Notes' }).click()
  await page.getByRole('button', { name: 'Delete app' }).click()
  const dialog = page.getByRole('dialog', { name: 'Delete Notes?' })
  assert.match(await dialog.textContent(), /cannot be undone/)
  await dialog.getByRole('button', { name: 'Delete app' }).click()
  await page.waitForURL(url('apps'))
  await page.getByText('No apps yet').waitFor()
})

test('no console errors in the owner browser', () => {
  assert.deepEqual(owner.errors, [])
})
