//! The contract every [`Store`] must honour, as one engine-agnostic test
//! suite. Each test is a `pub async fn(&dyn Store)`; [`ALL`] lists them and
//! [`run_all`] runs them in order on one store.
//!
//! Tests create their own rows with fresh ids and emails, so they can share
//! a database and run concurrently — except the [`needs_empty_store`] ones,
//! which exercise the once-per-database setup and need a store of their own
//! (`run_all` runs them first, so it wants an empty store).
//!
//! Compiled under `cfg(test)` or the `contract` feature; `tests/contract.rs`
//! runs it against SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::{
    AppRecord, AuditFilter, AuditRecord, CustomRoleRecord, DeliveryRecord, DocKey, DocRecord, DocState, InviteAcceptor,
    InviteRecord, InvoiceRecord, JobNext, JobStatus, MemberRecord, MfaRecord, NodeHeartbeat, OutboxEvent,
    PasswordResetRecord, RefreshKind, RefreshTokenRecord, RotateOutcome, SessionRecord, SigningKeyRecord, Store,
    StoreError, TenantRecord, UserRecord, WebhookJobRecord, WebhookRecord,
};
use domain::audit::{ChainBreak, GENESIS_HASH};
use domain::ids::{AppId, FamilyId, InvoiceId, TenantId, UserId};
use domain::keys::KeyState;
use domain::plan::PlanId;
use domain::proration::InvoiceLine;
use domain::role::{Action, Resource};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use time::{Duration, OffsetDateTime};

/// A contract test, boxed so tests can be listed.
pub type ContractTest = for<'a> fn(&'a dyn Store) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        /// Every contract test, by name, in the order `run_all` runs them.
        pub const ALL: &[(&str, ContractTest)] = &[$((stringify!($name), |s| Box::pin($name(s)))),*];
    };
}

/// Hands every contract test's name, in `run_all` order, to the macro `$m`:
/// the per-engine test binary expands its tests from this one list, so a new
/// contract test cannot be left out of it.
#[macro_export]
macro_rules! for_each_contract_test {
    ($m:ident) => {
        $m![
            // These three need an empty store; keep them first.
            setup_runs_once,
            setup_refused_when_users_exist,
            setup_concurrent_exactly_one,
            ping,
            users_and_email_taken,
            sessions_expire_and_delete,
            sessions_by_refresh_family,
            tenants_and_memberships,
            create_tenant_is_atomic,
            signing_key_rotation,
            signing_key_revocation,
            signing_key_one_active_under_concurrency,
            signing_key_revoke_replaces_only_active,
            signing_key_rewrap_and_list_all,
            apps_crud_and_tenant_scoping,
            one_free_app_per_tenant,
            one_free_app_under_concurrency,
            create_app_with_initial_invoice,
            change_app_plan_stores_invoice,
            change_app_plan_compare_and_set,
            list_apps_pages,
            list_invoices_pages,
            refresh_rotation_and_reuse,
            refresh_expired_revoked_unknown_are_invalid,
            refresh_rotation_under_concurrency,
            deny_list_expires,
            purge_expired_removes_only_expired,
            purge_keeps_tables_bounded_over_two_months,
            events_commit_with_their_change_or_not_at_all,
            events_fan_out_once,
            audit_is_newest_first,
            delete_app_cascades,
            docs_append_and_load_in_order,
            docs_never_written_are_absent,
            docs_batch_is_atomic,
            docs_compact_keeps_later_entries,
            docs_compact_refusals,
            docs_size_and_times_are_maintained,
            docs_list_pages_by_name_bytes,
            docs_delete_and_count,
            docs_are_named_per_app,
            docs_deleted_with_their_app,
            docs_concurrent_appends_get_distinct_seqs,
            docs_load_is_consistent_under_compaction,
            docs_log_stats,
            docs_large_batch_across_docs,
            docs_many_concurrent_appends_are_gap_free,
            docs_unknown_app_fails_only_its_own_batch,
            docs_appends_race_compactions,
            audit_chain_links_verify,
            audit_appends_under_concurrency,
            audit_filters_and_pages,
            members_add_list_change_remove,
            members_last_super_admin_under_concurrency,
            custom_roles_crud_and_in_use,
            custom_role_delete_races_assignment,
            invites_create_list_accept,
            invite_accept_under_concurrency,
            password_reset_ends_everything,
            password_reset_under_concurrency,
            mfa_pending_enable_disable,
            mfa_totp_step_under_concurrency,
            mfa_recovery_code_under_concurrency,
            mfa_enable_under_concurrency,
            mfa_rewrap_and_list_all,
            webhooks_crud_and_scoping,
            webhook_outbox_lifecycle,
            webhook_enqueue_under_concurrency,
            webhook_claims_under_concurrency,
            nodes_register_heartbeat_and_drain,
        ];
    };
}

for_each_contract_test!(contract_tests);

/// Whether the named test needs a store of its own, empty at the start.
pub fn needs_empty_store(name: &str) -> bool {
    name.starts_with("setup_")
}

/// Runs the contract on one store, which must be empty: every test except
/// the setup tests that need an empty store after the first has run (see
/// [`needs_empty_store`]); give each of those a store of its own.
pub async fn run_all(store: &dyn Store) {
    for (i, (name, test)) in ALL.iter().enumerate() {
        if i > 0 && needs_empty_store(name) {
            continue;
        }
        tracing::info!(test = name, "contract");
        test(store).await;
    }
}

// ---- fixtures -------------------------------------------------------------

/// Now, at the whole-second precision the store keeps.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).unwrap()
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn user() -> UserRecord {
    UserRecord {
        id: UserId::new(),
        email: format!("user-{}@example.test", unique()),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        is_operator: false,
        created_at: now(),
        name: None,
    }
}

pub fn tenant() -> TenantRecord {
    TenantRecord { id: TenantId::new(), name: format!("tenant {}", unique()), created_at: now() }
}

pub fn key(tenant: TenantId, created_at: OffsetDateTime) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: format!("kid-{}", unique()),
        tenant_id: tenant,
        state: KeyState::Active,
        public_n: "n".repeat(342),
        public_e: "AQAB".to_owned(),
        private_key_enc: vec![1, 2, 3, 0, 255],
        master_key_version: 1,
        created_at,
        retires_at: None,
        revoked_at: None,
    }
}

pub fn app(tenant: TenantId, plan: PlanId) -> AppRecord {
    AppRecord {
        id: AppId::new(),
        tenant_id: tenant,
        name: "app".to_owned(),
        client_id: format!("ws_{}", unique()),
        client_secret_hash: "0".repeat(64),
        region: "eu-central-1".to_owned(),
        plan,
        allowed_domains: vec!["example.com".to_owned(), "*.example.org".to_owned()],
        environment: "production".to_owned(),
        created_at: now(),
        updated_at: now(),
        secret_rotated_at: None,
    }
}

pub fn invoice(app: &AppRecord, plan: PlanId) -> InvoiceRecord {
    let start = now();
    InvoiceRecord {
        id: InvoiceId::new(),
        app_id: app.id,
        tenant_id: app.tenant_id,
        lines: vec![
            InvoiceLine {
                description: "credit for unused time".to_owned(),
                plan: app.plan,
                period_start: start,
                period_end: start + Duration::days(30),
                amount_cents: -1_450,
            },
            InvoiceLine {
                description: "new plan".to_owned(),
                plan,
                period_start: start,
                period_end: start + Duration::days(30),
                amount_cents: 29_900,
            },
        ],
        total_cents: 28_450,
        created_at: start,
    }
}

pub fn refresh(kind: RefreshKind, subject: &str, family: FamilyId, expires_at: OffsetDateTime) -> RefreshTokenRecord {
    RefreshTokenRecord {
        token_hash: unique(),
        family_id: family,
        kind,
        subject: subject.to_owned(),
        client_id: "dashboard".to_owned(),
        scope: "dashboard".to_owned(),
        created_at: now(),
        expires_at,
        used_at: None,
        revoked_at: None,
    }
}

/// A user who owns a fresh tenant (as `super_admin`) with one active key.
async fn owner_with_tenant(store: &dyn Store) -> (UserRecord, TenantRecord, SigningKeyRecord) {
    let owner = user();
    store.create_user(&owner).await.unwrap();
    let t = tenant();
    let k = key(t.id, now());
    store.create_tenant(&t, owner.id, "super_admin", &k).await.unwrap();
    (owner, t, k)
}

/// A user token of a fresh user, so its subject is valid on any store.
async fn user_token(store: &dyn Store, family: FamilyId, expires_at: OffsetDateTime) -> RefreshTokenRecord {
    let u = user();
    store.create_user(&u).await.unwrap();
    let t = refresh(RefreshKind::User, &u.id.to_string(), family, expires_at);
    store.insert_refresh_token(&t).await.unwrap();
    t
}

/// A fresh app (of a fresh tenant) to hold documents.
pub async fn doc_app(store: &dyn Store) -> AppRecord {
    let (_, t, _) = owner_with_tenant(store).await;
    let a = app(t.id, PlanId::Pro);
    store.create_app(&a, None, &[]).await.unwrap();
    a
}

pub fn doc_key(app_id: AppId, name: &str) -> DocKey {
    DocKey { app_id, name: name.to_owned() }
}

/// A distinguishable fake update (the store never looks inside).
fn update(tag: &str, n: usize) -> Vec<u8> {
    format!("{tag}#{n}").into_bytes()
}

/// Appends one update on its own, answering its seq.
async fn append_one(store: &dyn Store, key: &DocKey, data: &[u8], at: OffsetDateTime) -> i64 {
    let seqs = store.append_doc_updates(&[(key.clone(), data.to_vec())], at).await.unwrap();
    assert_eq!(seqs.len(), 1);
    seqs[0]
}

/// A future to hand to [`join_all`].
type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Polls every future on this task until all are done, so they are in
/// flight at the database together (`&dyn Store` is not `'static`, so they
/// cannot be spawned).
pub async fn join_all<'a, T>(futures: Vec<Pin<Box<dyn Future<Output = T> + Send + 'a>>>) -> Vec<T> {
    let mut pending: Vec<_> = futures.into_iter().map(Some).collect();
    let mut done: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut busy = false;
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => busy = true,
                }
            }
        }
        if busy { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    done.into_iter().map(|v| v.unwrap()).collect()
}

fn assert_conflict<T: std::fmt::Debug>(result: crate::Result<T>, code: &str) {
    match result {
        Err(StoreError::Conflict(c)) => assert_eq!(c, code),
        other => panic!("expected Conflict({code:?}), got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: crate::Result<T>) {
    match result {
        Err(StoreError::NotFound) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// Whether `result` is `Ok`; anything but `Ok` or `Conflict(code)` fails the test.
fn ok_or_conflict(result: crate::Result<()>, code: &str) -> bool {
    match result {
        Ok(()) => true,
        other => {
            assert_conflict(other, code);
            false
        }
    }
}

/// The tenant's keys in state `active`, newest first.
async fn active_keys(store: &dyn Store, tenant: TenantId) -> Vec<SigningKeyRecord> {
    store.list_signing_keys(tenant).await.unwrap().into_iter().filter(|k| k.state == KeyState::Active).collect()
}

// ---- setup (each needs an empty store) ----------------------------------------

pub async fn setup_runs_once(store: &dyn Store) {
    assert_eq!(store.count_users().await.unwrap(), 0, "setup tests need an empty store");
    let u = UserRecord { is_operator: true, ..user() };
    let t = tenant();
    let k = key(t.id, now());
    store.setup_first_user(&u, &t, &k).await.unwrap();

    assert_eq!(store.get_user(u.id).await.unwrap(), Some(u.clone()));
    assert_eq!(store.get_tenant(t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(store.get_membership(t.id, u.id).await.unwrap().as_deref(), Some("super_admin"));
    assert_eq!(store.list_signing_keys(t.id).await.unwrap(), vec![k.clone()]);
    assert_eq!(store.count_users().await.unwrap(), 1);

    let (u2, t2) = (user(), tenant());
    assert_conflict(store.setup_first_user(&u2, &t2, &key(t2.id, now())).await, "setup_disabled");
    assert_eq!(store.get_user(u2.id).await.unwrap(), None);
    assert_eq!(store.get_tenant(t2.id).await.unwrap(), None);
    assert_eq!(store.count_users().await.unwrap(), 1);
}

pub async fn setup_refused_when_users_exist(store: &dyn Store) {
    assert_eq!(store.count_users().await.unwrap(), 0, "setup tests need an empty store");
    store.create_user(&user()).await.unwrap();
    let (u, t) = (user(), tenant());
    assert_conflict(store.setup_first_user(&u, &t, &key(t.id, now())).await, "setup_disabled");
    assert_eq!(store.get_user(u.id).await.unwrap(), None);
    assert_eq!(store.get_tenant(t.id).await.unwrap(), None);
    assert_eq!(store.count_users().await.unwrap(), 1);
}

pub async fn setup_concurrent_exactly_one(store: &dyn Store) {
    assert_eq!(store.count_users().await.unwrap(), 0, "setup tests need an empty store");
    let inputs: Vec<_> = (0..8)
        .map(|_| {
            let t = tenant();
            let k = key(t.id, now());
            (user(), t, k)
        })
        .collect();
    let results = join_all(inputs.iter().map(|(u, t, k)| store.setup_first_user(u, t, k)).collect()).await;
    let mut winners = 0;
    for r in results {
        match r {
            Ok(()) => winners += 1,
            other => assert_conflict(other, "setup_disabled"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(store.count_users().await.unwrap(), 1);
}

// ---- users and sessions ----------------------------------------------------------

pub async fn ping(store: &dyn Store) {
    store.ping().await.unwrap();
}

pub async fn users_and_email_taken(store: &dyn Store) {
    let u = user();
    store.create_user(&u).await.unwrap();
    assert_eq!(store.get_user(u.id).await.unwrap(), Some(u.clone()));
    assert_eq!(store.get_user_by_email(&u.email).await.unwrap(), Some(u.clone()));
    assert_eq!(store.get_user(UserId::new()).await.unwrap(), None);
    assert_eq!(store.get_user_by_email("nobody@example.test").await.unwrap(), None);
    assert!(store.count_users().await.unwrap() >= 1);

    let twin = UserRecord { id: UserId::new(), ..u.clone() };
    assert_conflict(store.create_user(&twin).await, "email_taken");
    assert_eq!(store.get_user(twin.id).await.unwrap(), None);
}

pub async fn sessions_expire_and_delete(store: &dyn Store) {
    let (alice, bob) = (user(), user());
    store.create_user(&alice).await.unwrap();
    store.create_user(&bob).await.unwrap();
    let t0 = now();
    let session = |user_id, expires_at| SessionRecord {
        token_hash: unique(),
        user_id,
        created_at: t0 - Duration::hours(2),
        expires_at,
        family_id: None,
    };
    let live = session(alice.id, t0 + Duration::hours(1));
    let expired = session(alice.id, t0 - Duration::seconds(1));
    let boundary = session(alice.id, t0);
    let other = session(bob.id, t0 + Duration::hours(1));
    for s in [&live, &expired, &boundary, &other] {
        store.create_session(s).await.unwrap();
    }

    // Expired sessions are still returned; the caller checks.
    assert_eq!(store.get_session(&expired.token_hash).await.unwrap(), Some(expired.clone()));
    assert_eq!(store.get_session("no-such-session").await.unwrap(), None);

    // `expires_at <= now` is expired.
    assert!(store.delete_expired_sessions(t0).await.unwrap() >= 2);
    assert_eq!(store.get_session(&expired.token_hash).await.unwrap(), None);
    assert_eq!(store.get_session(&boundary.token_hash).await.unwrap(), None);
    assert_eq!(store.get_session(&live.token_hash).await.unwrap(), Some(live.clone()));

    assert!(store.delete_session(&live.token_hash).await.unwrap());
    assert!(!store.delete_session(&live.token_hash).await.unwrap());

    let more = [session(alice.id, t0 + Duration::hours(1)), session(alice.id, t0 + Duration::hours(2))];
    for s in &more {
        store.create_session(s).await.unwrap();
    }
    assert_eq!(store.delete_user_sessions(alice.id).await.unwrap(), 2);
    assert_eq!(store.get_session(&more[0].token_hash).await.unwrap(), None);
    assert_eq!(store.get_session(&other.token_hash).await.unwrap(), Some(other.clone()));
    assert_eq!(store.delete_user_sessions(alice.id).await.unwrap(), 0);
}

pub async fn sessions_by_refresh_family(store: &dyn Store) {
    let (alice, bob) = (user(), user());
    store.create_user(&alice).await.unwrap();
    store.create_user(&bob).await.unwrap();
    let t0 = now();
    let (doomed, kept) = (FamilyId::new(), FamilyId::new());
    let session = |user_id, family_id| SessionRecord {
        token_hash: unique(),
        user_id,
        created_at: t0,
        expires_at: t0 + Duration::hours(1),
        family_id,
    };
    let doomed_sessions = [session(alice.id, Some(doomed)), session(alice.id, Some(doomed))];
    let kept_session = session(alice.id, Some(kept));
    let loose = session(alice.id, None);
    let bobs = session(bob.id, Some(kept));
    for s in doomed_sessions.iter().chain([&kept_session, &loose, &bobs]) {
        store.create_session(s).await.unwrap();
    }
    // The family is stored and read back, NULL included.
    assert_eq!(store.get_session(&doomed_sessions[0].token_hash).await.unwrap(), Some(doomed_sessions[0].clone()));
    assert_eq!(store.get_session(&loose.token_hash).await.unwrap(), Some(loose.clone()));

    assert_eq!(store.delete_family_sessions(doomed).await.unwrap(), 2);
    for s in &doomed_sessions {
        assert_eq!(store.get_session(&s.token_hash).await.unwrap(), None);
    }
    // Another family's sessions and family-less ones survive.
    assert_eq!(store.get_session(&kept_session.token_hash).await.unwrap(), Some(kept_session));
    assert_eq!(store.get_session(&bobs.token_hash).await.unwrap(), Some(bobs));
    assert_eq!(store.get_session(&loose.token_hash).await.unwrap(), Some(loose));
    assert_eq!(store.delete_family_sessions(doomed).await.unwrap(), 0);
    assert_eq!(store.delete_family_sessions(FamilyId::new()).await.unwrap(), 0);

    // Per-user deletion still covers sessions with a family.
    assert_eq!(store.delete_user_sessions(alice.id).await.unwrap(), 2);
    assert_eq!(store.delete_family_sessions(kept).await.unwrap(), 1);
}

// ---- tenants and memberships -------------------------------------------------

pub async fn tenants_and_memberships(store: &dyn Store) {
    let (owner, t1, k1) = owner_with_tenant(store).await;
    assert_eq!(store.get_tenant(t1.id).await.unwrap(), Some(t1.clone()));
    assert_eq!(store.get_tenant(TenantId::new()).await.unwrap(), None);
    assert_eq!(store.get_membership(t1.id, owner.id).await.unwrap().as_deref(), Some("super_admin"));
    assert_eq!(store.list_signing_keys(t1.id).await.unwrap(), vec![k1]);

    let t2 = tenant();
    store.create_tenant(&t2, owner.id, "admin", &key(t2.id, now())).await.unwrap();
    assert_eq!(store.get_membership(t2.id, owner.id).await.unwrap().as_deref(), Some("admin"));

    let stranger = user();
    store.create_user(&stranger).await.unwrap();
    assert_eq!(store.get_membership(t1.id, stranger.id).await.unwrap(), None);
    assert_eq!(store.list_user_tenants(stranger.id).await.unwrap(), vec![]);

    // Ordered by tenant id (= creation order).
    assert_eq!(
        store.list_user_tenants(owner.id).await.unwrap(),
        vec![(t1, "super_admin".to_owned()), (t2, "admin".to_owned())]
    );
}

pub async fn create_tenant_is_atomic(store: &dyn Store) {
    let (owner, _, k1) = owner_with_tenant(store).await;
    // A key id already in use: the whole tenant is refused.
    let t = tenant();
    let clash = SigningKeyRecord { tenant_id: t.id, ..k1.clone() };
    assert_conflict(store.create_tenant(&t, owner.id, "admin", &clash).await, "kid_taken");
    assert_eq!(store.get_tenant(t.id).await.unwrap(), None);
    assert_eq!(store.get_membership(t.id, owner.id).await.unwrap(), None);
    assert_eq!(store.list_user_tenants(owner.id).await.unwrap().len(), 1);
}

// ---- signing keys ----------------------------------------------------------------

pub async fn signing_key_rotation(store: &dyn Store) {
    let (_, t, k1) = owner_with_tenant(store).await;
    let grace_end = now() + Duration::minutes(30);
    // Same second as k1: insertion order still decides "newest".
    let k2 = key(t.id, k1.created_at);
    store.rotate_signing_key(t.id, &k2, grace_end, &[]).await.unwrap();

    let keys = store.list_signing_keys(t.id).await.unwrap();
    let retired_k1 = SigningKeyRecord { state: KeyState::Retiring, retires_at: Some(grace_end), ..k1.clone() };
    assert_eq!(keys, vec![k2.clone(), retired_k1.clone()]);
    assert_eq!(store.get_signing_key(&k1.kid).await.unwrap(), Some(retired_k1.clone()));
    assert_eq!(store.get_signing_key("no-such-kid").await.unwrap(), None);

    // Rotating again retires k2 only; k1 keeps its own grace end.
    let k3 = key(t.id, now() + Duration::seconds(1));
    let later = grace_end + Duration::minutes(5);
    store.rotate_signing_key(t.id, &k3, later, &[]).await.unwrap();
    let keys = store.list_signing_keys(t.id).await.unwrap();
    let states: Vec<_> = keys.iter().map(|k| (k.kid.as_str(), k.state, k.retires_at)).collect();
    assert_eq!(
        states,
        vec![
            (k3.kid.as_str(), KeyState::Active, None),
            (k2.kid.as_str(), KeyState::Retiring, Some(later)),
            (k1.kid.as_str(), KeyState::Retiring, Some(grace_end)),
        ]
    );

    // A kid in use refuses the rotation and changes nothing.
    assert_conflict(store.rotate_signing_key(t.id, &k3, later, &[]).await, "kid_taken");
    assert_eq!(store.get_signing_key(&k3.kid).await.unwrap().unwrap().state, KeyState::Active);
}

pub async fn signing_key_revocation(store: &dyn Store) {
    let (_, t, k1) = owner_with_tenant(store).await;
    let (_, other, _) = owner_with_tenant(store).await;
    let at = now();

    // Revoking the active key with a replacement.
    let k2 = key(t.id, at);
    store.revoke_signing_key(t.id, &k1.kid, at, Some(&k2), &[]).await.unwrap();
    let revoked = store.get_signing_key(&k1.kid).await.unwrap().unwrap();
    assert_eq!((revoked.state, revoked.revoked_at), (KeyState::Revoked, Some(at)));
    assert_eq!(store.get_signing_key(&k2.kid).await.unwrap(), Some(k2.clone()));

    // Again: a no-op, and the replacement is not stored.
    let k3 = key(t.id, at);
    store.revoke_signing_key(t.id, &k1.kid, at + Duration::hours(1), Some(&k3), &[]).await.unwrap();
    assert_eq!(store.get_signing_key(&k1.kid).await.unwrap(), Some(revoked));
    assert_eq!(store.get_signing_key(&k3.kid).await.unwrap(), None);

    // Unknown kid, or another tenant's key: NotFound, nothing changes.
    assert_not_found(store.revoke_signing_key(t.id, "no-such-kid", at, None, &[]).await);
    assert_not_found(store.revoke_signing_key(other.id, &k2.kid, at, None, &[]).await);
    assert_eq!(store.get_signing_key(&k2.kid).await.unwrap().unwrap().state, KeyState::Active);

    // A retiring key can be revoked without a replacement.
    let k4 = key(t.id, at);
    store.rotate_signing_key(t.id, &k4, at + Duration::minutes(30), &[]).await.unwrap();
    store.revoke_signing_key(t.id, &k2.kid, at, None, &[]).await.unwrap();
    let states: Vec<_> = store.list_signing_keys(t.id).await.unwrap().into_iter().map(|k| (k.kid, k.state)).collect();
    assert_eq!(states, vec![(k4.kid, KeyState::Active), (k2.kid, KeyState::Revoked), (k1.kid, KeyState::Revoked)]);
}

pub async fn signing_key_one_active_under_concurrency(store: &dyn Store) {
    let (_, t, k1) = owner_with_tenant(store).await;
    let at = now();
    let grace_end = at + Duration::minutes(30);

    // Eight rotations at once. On PostgreSQL a rotation whose retiring
    // UPDATE ran before another's key committed would insert a second
    // active key; the unique index refuses it instead (`key_conflict`, the
    // client retries). Each rotation either wins or changes nothing.
    let new_keys: Vec<_> = (0..8).map(|_| key(t.id, at)).collect();
    let results = join_all(new_keys.iter().map(|k| store.rotate_signing_key(t.id, k, grace_end, &[])).collect()).await;
    let won: Vec<&SigningKeyRecord> =
        new_keys.iter().zip(results).filter_map(|(k, r)| ok_or_conflict(r, "key_conflict").then_some(k)).collect();
    assert!(!won.is_empty());
    let active = active_keys(store, t.id).await;
    assert_eq!(active.len(), 1, "active: {:?}", active.iter().map(|k| &k.kid).collect::<Vec<_>>());
    assert!(won.iter().any(|k| k.kid == active[0].kid));
    for k in &new_keys {
        let stored = store.get_signing_key(&k.kid).await.unwrap();
        assert_eq!(stored.is_some(), won.iter().any(|w| w.kid == k.kid), "{k:?}");
    }
    assert_eq!(store.get_signing_key(&k1.kid).await.unwrap().unwrap().state, KeyState::Retiring);

    // Rotations racing revocations (with replacements) of the active key.
    // A revocation reads the key's state in its transaction, so it adds its
    // replacement only if it got to the key before any rotation did.
    let current = &active[0];
    let rotations: Vec<_> = (0..4).map(|_| key(t.id, at)).collect();
    let replacements: Vec<_> = (0..4).map(|_| key(t.id, at)).collect();
    let mut racing: Vec<Boxed<'_, (bool, crate::Result<()>)>> = Vec::new();
    for (rotation, replacement) in rotations.iter().zip(&replacements) {
        racing.push(Box::pin(async move { (true, store.rotate_signing_key(t.id, rotation, grace_end, &[]).await) }));
        racing.push(Box::pin(async move {
            (false, store.revoke_signing_key(t.id, &current.kid, at, Some(replacement), &[]).await)
        }));
    }
    for (is_rotation, result) in join_all(racing).await {
        if is_rotation {
            ok_or_conflict(result, "key_conflict");
        } else {
            // Revocations never lose: they wait for the key's row.
            result.unwrap();
        }
    }
    let revoked = store.get_signing_key(&current.kid).await.unwrap().unwrap();
    assert_eq!((revoked.state, revoked.revoked_at), (KeyState::Revoked, Some(at)));
    let active = active_keys(store, t.id).await;
    assert_eq!(active.len(), 1, "active: {:?}", active.iter().map(|k| &k.kid).collect::<Vec<_>>());
    let mut stored_replacements = 0;
    for r in &replacements {
        stored_replacements += usize::from(store.get_signing_key(&r.kid).await.unwrap().is_some());
    }
    assert!(stored_replacements <= 1, "{stored_replacements} replacements stored");
}

pub async fn signing_key_revoke_replaces_only_active(store: &dyn Store) {
    let (_, t, k1) = owner_with_tenant(store).await;
    let at = now();

    // The caller read k1 as active, but a rotation committed before its
    // revocation: k1 is revoked, the replacement ignored, and the
    // rotation's key stays the only active one.
    let k2 = key(t.id, at);
    store.rotate_signing_key(t.id, &k2, at + Duration::minutes(30), &[]).await.unwrap();
    let stale_replacement = key(t.id, at);
    store.revoke_signing_key(t.id, &k1.kid, at, Some(&stale_replacement), &[]).await.unwrap();
    let revoked_k1 = store.get_signing_key(&k1.kid).await.unwrap().unwrap();
    assert_eq!((revoked_k1.state, revoked_k1.revoked_at), (KeyState::Revoked, Some(at)));
    assert_eq!(store.get_signing_key(&stale_replacement.kid).await.unwrap(), None);
    assert_eq!(active_keys(store, t.id).await, vec![k2.clone()]);

    // Revoking the active key with a replacement: the replacement takes over.
    let k3 = key(t.id, at);
    store.revoke_signing_key(t.id, &k2.kid, at, Some(&k3), &[]).await.unwrap();
    assert_eq!(active_keys(store, t.id).await, vec![k3.clone()]);
    let states: Vec<_> = store.list_signing_keys(t.id).await.unwrap().into_iter().map(|k| (k.kid, k.state)).collect();
    assert_eq!(
        states,
        vec![(k3.kid.clone(), KeyState::Active), (k2.kid, KeyState::Revoked), (k1.kid, KeyState::Revoked)]
    );

    // Without a replacement the tenant is left with no active key, and the
    // next rotation has nothing to retire.
    store.revoke_signing_key(t.id, &k3.kid, at, None, &[]).await.unwrap();
    assert_eq!(active_keys(store, t.id).await, vec![]);
    let k4 = key(t.id, at);
    store.rotate_signing_key(t.id, &k4, at + Duration::minutes(30), &[]).await.unwrap();
    assert_eq!(active_keys(store, t.id).await, vec![k4]);
}

pub async fn signing_key_rewrap_and_list_all(store: &dyn Store) {
    let (_, t1, k1) = owner_with_tenant(store).await;
    let (_, _, k2) = owner_with_tenant(store).await;
    store.rewrap_signing_key(&k1.kid, &[9, 9, 9], 2).await.unwrap();
    let rewrapped = SigningKeyRecord { private_key_enc: vec![9, 9, 9], master_key_version: 2, ..k1.clone() };
    assert_eq!(store.get_signing_key(&k1.kid).await.unwrap(), Some(rewrapped.clone()));
    assert_eq!(store.list_signing_keys(t1.id).await.unwrap(), vec![rewrapped.clone()]);
    assert_not_found(store.rewrap_signing_key("no-such-kid", &[1], 2).await);

    let all = store.list_all_signing_keys().await.unwrap();
    assert!(all.contains(&rewrapped));
    assert!(all.contains(&k2));
}

// ---- apps, plans, invoices ---------------------------------------------------

pub async fn apps_crud_and_tenant_scoping(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let (_, other, _) = owner_with_tenant(store).await;
    let a = app(t.id, PlanId::Starter);
    store.create_app(&a, None, &[]).await.unwrap();

    assert_eq!(store.get_app(t.id, a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_app(other.id, a.id).await.unwrap(), None);
    assert_eq!(store.get_app(t.id, AppId::new()).await.unwrap(), None);
    assert_eq!(store.get_app_by_id(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_app_by_client_id(&a.client_id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_app_by_client_id("ws_nope").await.unwrap(), None);

    let same_client = AppRecord { id: AppId::new(), ..a.clone() };
    assert_conflict(store.create_app(&same_client, None, &[]).await, "client_id_taken");

    // update_app stores name, domains, environment, updated_at — nothing else.
    let edited = AppRecord {
        name: "renamed".to_owned(),
        allowed_domains: vec!["new.example".to_owned()],
        environment: "staging".to_owned(),
        updated_at: a.updated_at + Duration::seconds(10),
        plan: PlanId::Enterprise,
        client_secret_hash: "f".repeat(64),
        region: "aws-us-east-1".to_owned(),
        ..a.clone()
    };
    store.update_app(&edited, &[]).await.unwrap();
    let stored = store.get_app_by_id(a.id).await.unwrap().unwrap();
    assert_eq!(
        stored,
        AppRecord {
            name: edited.name.clone(),
            allowed_domains: edited.allowed_domains.clone(),
            environment: edited.environment.clone(),
            updated_at: edited.updated_at,
            ..a.clone()
        }
    );
    let wrong_tenant = AppRecord { tenant_id: other.id, ..edited.clone() };
    assert_not_found(store.update_app(&wrong_tenant, &[]).await);
    assert_not_found(store.update_app(&app(t.id, PlanId::Pro), &[]).await);

    let rotated_at = stored.updated_at + Duration::seconds(5);
    store.set_app_secret(a.id, &"a".repeat(64), rotated_at, &[]).await.unwrap();
    let stored = store.get_app_by_id(a.id).await.unwrap().unwrap();
    assert_eq!(stored.client_secret_hash, "a".repeat(64));
    assert_eq!(stored.secret_rotated_at, Some(rotated_at));
    assert_not_found(store.set_app_secret(AppId::new(), "x", rotated_at, &[]).await);
}

pub async fn one_free_app_per_tenant(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let (_, other, _) = owner_with_tenant(store).await;
    let free = app(t.id, PlanId::Free);
    store.create_app(&free, None, &[]).await.unwrap();
    let second = app(t.id, PlanId::Free);
    assert_conflict(store.create_app(&second, None, &[]).await, "free_plan_limit");
    assert_eq!(store.get_app_by_id(second.id).await.unwrap(), None);
    // Paid apps and other tenants are unaffected.
    let paid = app(t.id, PlanId::Starter);
    store.create_app(&paid, None, &[]).await.unwrap();
    store.create_app(&app(other.id, PlanId::Free), None, &[]).await.unwrap();

    // Downgrading to free while a free app exists: refused, nothing stored.
    let inv = invoice(&paid, PlanId::Free);
    assert_conflict(store.change_app_plan(paid.id, PlanId::Starter, PlanId::Free, &inv).await, "free_plan_limit");
    assert_eq!(store.get_app_by_id(paid.id).await.unwrap().unwrap().plan, PlanId::Starter);
    assert_eq!(store.list_invoices(paid.id, None, 10).await.unwrap().items, vec![]);

    // Free → free is not a second free app.
    store.change_app_plan(free.id, PlanId::Free, PlanId::Free, &invoice(&free, PlanId::Free)).await.unwrap();

    // Once the free app is gone, another may take the slot.
    store.delete_app(t.id, free.id, &[]).await.unwrap();
    store.change_app_plan(paid.id, PlanId::Starter, PlanId::Free, &inv).await.unwrap();
    assert_eq!(store.get_app_by_id(paid.id).await.unwrap().unwrap().plan, PlanId::Free);
}

pub async fn one_free_app_under_concurrency(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let apps: Vec<_> = (0..8).map(|_| app(t.id, PlanId::Free)).collect();
    let results = join_all(apps.iter().map(|a| store.create_app(a, None, &[])).collect()).await;
    let mut winners = 0;
    for r in results {
        match r {
            Ok(()) => winners += 1,
            other => assert_conflict(other, "free_plan_limit"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(store.list_apps(t.id, None, 100).await.unwrap().items.len(), 1);

    // The same race through change_app_plan.
    let (_, t, _) = owner_with_tenant(store).await;
    let apps: Vec<_> = (0..8).map(|_| app(t.id, PlanId::Pro)).collect();
    for a in &apps {
        store.create_app(a, None, &[]).await.unwrap();
    }
    let invoices: Vec<_> = apps.iter().map(|a| invoice(a, PlanId::Free)).collect();
    let results = join_all(
        apps.iter().zip(&invoices).map(|(a, i)| store.change_app_plan(a.id, PlanId::Pro, PlanId::Free, i)).collect(),
    )
    .await;
    let mut winners = 0;
    for r in results {
        match r {
            Ok(()) => winners += 1,
            other => assert_conflict(other, "free_plan_limit"),
        }
    }
    assert_eq!(winners, 1);
    let page = store.list_apps(t.id, None, 100).await.unwrap();
    assert_eq!(page.items.iter().filter(|a| a.plan == PlanId::Free).count(), 1);
}

pub async fn create_app_with_initial_invoice(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let (_, other, _) = owner_with_tenant(store).await;
    let a = app(t.id, PlanId::Pro);
    // Stored for the app, whatever the record says.
    let first = InvoiceRecord { app_id: AppId::new(), tenant_id: other.id, ..invoice(&a, PlanId::Pro) };
    store.create_app(&a, Some(&first), &[]).await.unwrap();
    assert_eq!(store.get_app_by_id(a.id).await.unwrap(), Some(a.clone()));
    let stored = InvoiceRecord { app_id: a.id, tenant_id: t.id, ..first.clone() };
    assert_eq!(store.list_invoices(a.id, None, 10).await.unwrap().items, vec![stored.clone()]);

    // Refused for the free-plan limit: neither the app nor its invoice.
    let free = app(t.id, PlanId::Free);
    store.create_app(&free, Some(&invoice(&free, PlanId::Free)), &[]).await.unwrap();
    assert_eq!(store.list_invoices(free.id, None, 10).await.unwrap().items.len(), 1);
    let second = app(t.id, PlanId::Free);
    assert_conflict(store.create_app(&second, Some(&invoice(&second, PlanId::Free)), &[]).await, "free_plan_limit");
    assert_eq!(store.get_app_by_id(second.id).await.unwrap(), None);
    assert_eq!(store.list_invoices(second.id, None, 10).await.unwrap().items, vec![]);

    // An invoice refused after the app went in takes the app with it.
    let third = app(t.id, PlanId::Starter);
    let clash = InvoiceRecord { id: first.id, ..invoice(&third, PlanId::Starter) };
    assert_conflict(store.create_app(&third, Some(&clash), &[]).await, "conflict");
    assert_eq!(store.get_app_by_id(third.id).await.unwrap(), None);
    assert_eq!(store.get_app_by_client_id(&third.client_id).await.unwrap(), None);
    assert_eq!(store.list_invoices(a.id, None, 10).await.unwrap().items, vec![stored]);
    store.create_app(&third, None, &[]).await.unwrap();
    assert_eq!(store.list_invoices(third.id, None, 10).await.unwrap().items, vec![]);
}

pub async fn change_app_plan_stores_invoice(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let a = app(t.id, PlanId::Starter);
    store.create_app(&a, None, &[]).await.unwrap();
    let inv = invoice(&a, PlanId::Pro);
    store.change_app_plan(a.id, PlanId::Starter, PlanId::Pro, &inv).await.unwrap();
    let changed = store.get_app_by_id(a.id).await.unwrap().unwrap();
    assert_eq!((changed.plan, changed.updated_at), (PlanId::Pro, inv.created_at));
    let page = store.list_invoices(a.id, None, 10).await.unwrap();
    assert_eq!(page.items, vec![inv.clone()]);
    assert_eq!(page.next_after, None);

    // Priced from a plan the app no longer has: refused, nothing stored.
    let stale = invoice(&a, PlanId::Enterprise);
    assert_conflict(store.change_app_plan(a.id, PlanId::Starter, PlanId::Enterprise, &stale).await, "plan_changed");
    assert_eq!(store.get_app_by_id(a.id).await.unwrap().unwrap(), changed);
    assert_eq!(store.list_invoices(a.id, None, 10).await.unwrap().items, vec![inv]);

    let ghost = app(t.id, PlanId::Starter);
    assert_not_found(
        store.change_app_plan(ghost.id, PlanId::Starter, PlanId::Pro, &invoice(&ghost, PlanId::Pro)).await,
    );
    assert_eq!(store.list_invoices(ghost.id, None, 10).await.unwrap().items, vec![]);
}

pub async fn change_app_plan_compare_and_set(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    // A few rounds, each two changes priced from the app's current plan, at
    // once: exactly one applies and stores its invoice.
    let a = app(t.id, PlanId::Starter);
    store.create_app(&a, None, &[]).await.unwrap();
    let mut from = a.plan;
    let mut expected_invoices = Vec::new();
    for targets in [[PlanId::Pro, PlanId::Enterprise], [PlanId::Starter, PlanId::Free], [PlanId::Pro, PlanId::Pro]] {
        let current = store.get_app_by_id(a.id).await.unwrap().unwrap();
        let invoices: Vec<_> = targets.iter().map(|&to| invoice(&current, to)).collect();
        let results = join_all(
            targets.iter().zip(&invoices).map(|(&to, inv)| store.change_app_plan(a.id, from, to, inv)).collect(),
        )
        .await;
        let winners: Vec<usize> = results
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| ok_or_conflict(r, "plan_changed").then_some(i))
            .collect();
        assert_eq!(winners.len(), 1, "{targets:?}");
        let w = winners[0];
        assert_eq!(store.get_app_by_id(a.id).await.unwrap().unwrap().plan, targets[w]);
        expected_invoices.push(invoices[w].clone());
        assert_eq!(store.list_invoices(a.id, None, 100).await.unwrap().items, expected_invoices);
        from = targets[w];
    }
}

pub async fn list_apps_pages(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let (_, other, _) = owner_with_tenant(store).await;
    store.create_app(&app(other.id, PlanId::Pro), None, &[]).await.unwrap();
    let mut created = Vec::new();
    for _ in 0..7 {
        let a = app(t.id, PlanId::Pro);
        store.create_app(&a, None, &[]).await.unwrap();
        created.push(a);
    }

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let page = store.list_apps(t.id, after.as_deref(), 3).await.unwrap();
        sizes.push(page.items.len());
        if let Some(next) = &page.next_after {
            assert_eq!(Some(next), page.items.last().map(|a| a.id.to_string()).as_ref());
        }
        seen.extend(page.items);
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(seen, created);

    // A full last page is followed by an empty one.
    let first = store.list_apps(t.id, None, 7).await.unwrap();
    assert_eq!(first.items.len(), 7);
    let rest = store.list_apps(t.id, first.next_after.as_deref(), 7).await.unwrap();
    assert_eq!((rest.items.len(), rest.next_after), (0, None));

    // Limits are clamped to 1..=500.
    assert_eq!(store.list_apps(t.id, None, 0).await.unwrap().items, created[..1].to_vec());
    assert_eq!(store.list_apps(t.id, None, u32::MAX).await.unwrap().items.len(), 7);
}

pub async fn list_invoices_pages(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let a = app(t.id, PlanId::Starter);
    store.create_app(&a, None, &[]).await.unwrap();
    let other = app(t.id, PlanId::Starter);
    store.create_app(&other, None, &[]).await.unwrap();
    store.change_app_plan(other.id, PlanId::Starter, PlanId::Pro, &invoice(&other, PlanId::Pro)).await.unwrap();

    let mut created = Vec::new();
    let mut from = a.plan;
    for plan in [PlanId::Pro, PlanId::Enterprise, PlanId::Starter, PlanId::Pro, PlanId::Enterprise] {
        let inv = invoice(&a, plan);
        store.change_app_plan(a.id, from, plan, &inv).await.unwrap();
        created.push(inv);
        from = plan;
    }
    let p1 = store.list_invoices(a.id, None, 2).await.unwrap();
    let p2 = store.list_invoices(a.id, p1.next_after.as_deref(), 2).await.unwrap();
    let p3 = store.list_invoices(a.id, p2.next_after.as_deref(), 2).await.unwrap();
    assert_eq!(p3.next_after, None);
    let seen: Vec<_> = [p1.items, p2.items, p3.items].concat();
    assert_eq!(seen, created);
}

// ---- refresh tokens and the deny-list ----------------------------------------------

pub async fn refresh_rotation_and_reuse(store: &dyn Store) {
    let t0 = now();
    let family = FamilyId::new();
    let first = user_token(store, family, t0 + Duration::days(30)).await;

    // Rotation: the old token is used, the new one stored in the same family.
    let second = refresh(first.kind, &first.subject, FamilyId::new(), t0 + Duration::days(30));
    let used_first = RefreshTokenRecord { used_at: Some(t0), ..first.clone() };
    assert_eq!(
        store.rotate_refresh_token(&first.token_hash, &second, t0).await.unwrap(),
        RotateOutcome::Rotated(used_first.clone())
    );
    assert_eq!(store.get_refresh_token(&first.token_hash).await.unwrap(), Some(used_first));
    let stored_second = store.get_refresh_token(&second.token_hash).await.unwrap().unwrap();
    assert_eq!(stored_second, RefreshTokenRecord { family_id: family, ..second.clone() });

    // Reuse of the old token: the whole family dies, the new token included.
    let third = refresh(first.kind, &first.subject, family, t0 + Duration::days(30));
    let later = t0 + Duration::seconds(5);
    match store.rotate_refresh_token(&first.token_hash, &third, later).await.unwrap() {
        RotateOutcome::Reused(r) => {
            assert_eq!(r.token_hash, first.token_hash);
            assert_eq!(r.family_id, family);
        }
        other => panic!("expected Reused, got {other:?}"),
    }
    assert_eq!(store.get_refresh_token(&third.token_hash).await.unwrap(), None);
    let second_now = store.get_refresh_token(&second.token_hash).await.unwrap().unwrap();
    assert_eq!(second_now.revoked_at, Some(later));
    assert_eq!(store.get_refresh_token(&first.token_hash).await.unwrap().unwrap().revoked_at, Some(later));

    // The revoked successor no longer rotates.
    let fourth = refresh(first.kind, &first.subject, family, t0 + Duration::days(30));
    assert_eq!(store.rotate_refresh_token(&second.token_hash, &fourth, later).await.unwrap(), RotateOutcome::Invalid);
    assert_eq!(store.get_refresh_token(&fourth.token_hash).await.unwrap(), None);
}

pub async fn refresh_expired_revoked_unknown_are_invalid(store: &dyn Store) {
    let t0 = now();
    let next = |family| refresh(RefreshKind::User, &UserId::new().to_string(), family, t0 + Duration::days(1));

    // Expired (`expires_at <= now`): invalid, and nothing changes.
    let expired = user_token(store, FamilyId::new(), t0).await;
    let n = next(expired.family_id);
    assert_eq!(store.rotate_refresh_token(&expired.token_hash, &n, t0).await.unwrap(), RotateOutcome::Invalid);
    assert_eq!(store.get_refresh_token(&expired.token_hash).await.unwrap(), Some(expired.clone()));
    assert_eq!(store.get_refresh_token(&n.token_hash).await.unwrap(), None);

    // Unknown.
    let n = next(FamilyId::new());
    assert_eq!(store.rotate_refresh_token("no-such-token", &n, t0).await.unwrap(), RotateOutcome::Invalid);

    // Revoked by family.
    let family = FamilyId::new();
    let a = user_token(store, family, t0 + Duration::days(1)).await;
    let b = user_token(store, family, t0 + Duration::days(1)).await;
    let unrelated = user_token(store, FamilyId::new(), t0 + Duration::days(1)).await;
    assert_eq!(store.revoke_refresh_family(family, t0).await.unwrap(), 2);
    assert_eq!(store.revoke_refresh_family(family, t0).await.unwrap(), 0);
    assert_eq!(store.get_refresh_token(&b.token_hash).await.unwrap().unwrap().revoked_at, Some(t0));
    assert_eq!(store.get_refresh_token(&unrelated.token_hash).await.unwrap().unwrap().revoked_at, None);
    let n = next(family);
    assert_eq!(store.rotate_refresh_token(&a.token_hash, &n, t0).await.unwrap(), RotateOutcome::Invalid);
    assert_eq!(store.get_refresh_token(&a.token_hash).await.unwrap().unwrap().used_at, None);
}

pub async fn refresh_rotation_under_concurrency(store: &dyn Store) {
    let t0 = now();
    let family = FamilyId::new();
    let token = user_token(store, family, t0 + Duration::days(1)).await;
    let successors: Vec<_> =
        (0..8).map(|_| refresh(token.kind, &token.subject, family, t0 + Duration::days(1))).collect();
    let results =
        join_all(successors.iter().map(|s| store.rotate_refresh_token(&token.token_hash, s, t0)).collect()).await;
    // One winner; the first loser to look sees reuse and revokes the
    // family, so later losers may find the token revoked (Invalid).
    let (mut rotated, mut reused) = (Vec::new(), 0);
    for (r, s) in results.into_iter().zip(&successors) {
        match r.unwrap() {
            RotateOutcome::Rotated(_) => rotated.push(s),
            RotateOutcome::Reused(_) => reused += 1,
            RotateOutcome::Invalid => {}
        }
    }
    assert_eq!(rotated.len(), 1);
    assert!(reused >= 1);
    // The losers were reuse: the winner's successor is revoked as well.
    let winner = store.get_refresh_token(&rotated[0].token_hash).await.unwrap().unwrap();
    assert_eq!(winner.revoked_at, Some(t0));
    for s in &successors {
        if s.token_hash != winner.token_hash {
            assert_eq!(store.get_refresh_token(&s.token_hash).await.unwrap(), None);
        }
    }
}

pub async fn deny_list_expires(store: &dyn Store) {
    let t0 = now();
    let jti = unique();
    assert!(!store.is_jti_denied(&jti, t0).await.unwrap());
    store.deny_jti(&jti, t0 + Duration::minutes(15)).await.unwrap();
    assert!(store.is_jti_denied(&jti, t0).await.unwrap());
    assert!(store.is_jti_denied(&jti, t0 + Duration::minutes(15) - Duration::seconds(1)).await.unwrap());
    assert!(!store.is_jti_denied(&jti, t0 + Duration::minutes(15)).await.unwrap());

    // Denying again never shortens the denial; it may extend it.
    store.deny_jti(&jti, t0 + Duration::minutes(1)).await.unwrap();
    assert!(store.is_jti_denied(&jti, t0 + Duration::minutes(10)).await.unwrap());
    store.deny_jti(&jti, t0 + Duration::minutes(30)).await.unwrap();
    assert!(store.is_jti_denied(&jti, t0 + Duration::minutes(20)).await.unwrap());
    assert!(!store.is_jti_denied(&unique(), t0).await.unwrap());

    // The mirror list holds exactly the entries still in force.
    let listed = store.list_denied_jtis(t0 + Duration::minutes(20)).await.unwrap();
    assert!(listed.iter().any(|(j, exp)| j == &jti && *exp == t0 + Duration::minutes(30)));
    let listed = store.list_denied_jtis(t0 + Duration::minutes(30)).await.unwrap();
    assert!(!listed.iter().any(|(j, _)| j == &jti));
}

pub async fn purge_expired_removes_only_expired(store: &dyn Store) {
    let t0 = now();
    let (dead_jti, live_jti) = (unique(), unique());
    store.deny_jti(&dead_jti, t0).await.unwrap();
    store.deny_jti(&live_jti, t0 + Duration::minutes(5)).await.unwrap();

    let u = user();
    store.create_user(&u).await.unwrap();
    let session = |expires_at| SessionRecord {
        token_hash: unique(),
        user_id: u.id,
        created_at: t0 - Duration::days(1),
        expires_at,
        family_id: None,
    };
    let (dead_session, live_session) = (session(t0 - Duration::seconds(1)), session(t0 + Duration::hours(1)));
    store.create_session(&dead_session).await.unwrap();
    store.create_session(&live_session).await.unwrap();

    let dead_token = user_token(store, FamilyId::new(), t0).await;
    let live_token = user_token(store, FamilyId::new(), t0 + Duration::days(1)).await;

    let report = store.purge_expired(t0, Duration::days(30)).await.unwrap();
    assert!(report.denied_jtis >= 1 && report.sessions >= 1 && report.refresh_tokens >= 1, "{report:?}");
    // Expired jtis are gone from the table, not just filtered: a later
    // `now` in the past would otherwise still see them.
    assert!(!store.is_jti_denied(&dead_jti, t0 - Duration::hours(1)).await.unwrap());
    assert!(store.is_jti_denied(&live_jti, t0).await.unwrap());
    assert_eq!(store.get_session(&dead_session.token_hash).await.unwrap(), None);
    assert_eq!(store.get_session(&live_session.token_hash).await.unwrap(), Some(live_session));
    assert_eq!(store.get_refresh_token(&dead_token.token_hash).await.unwrap(), None);
    assert_eq!(store.get_refresh_token(&live_token.token_hash).await.unwrap(), Some(live_token));
}

// ---- audit ----------------------------------------------------------------------

pub async fn audit_is_newest_first(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let marker = unique();
    let event = |tenant_id, n: i64| AuditRecord {
        seq: 0,
        tenant_id,
        at: now(),
        actor_type: "user".to_owned(),
        actor_id: Some(marker.clone()),
        action: format!("test.event_{n}"),
        target_type: Some("app".to_owned()),
        target_id: Some(AppId::new().to_string()),
        ip: Some("192.0.2.1".to_owned()),
        details: serde_json::json!({"n": n, "nested": {"ok": true}}),
        chain_seq: 0,
        prev_hash: String::new(),
        hash: String::new(),
    };
    let tenant_events: Vec<_> = (0..3).map(|n| event(Some(t.id), n)).collect();
    let platform_events: Vec<_> = (0..2)
        .map(|n| AuditRecord {
            actor_id: None,
            target_type: None,
            target_id: Some(marker.clone()),
            ip: None,
            ..event(None, n)
        })
        .collect();
    for (a, b) in tenant_events.iter().zip(&platform_events) {
        store.append_audit(a).await.unwrap();
        store.append_audit(b).await.unwrap();
    }
    store.append_audit(&tenant_events[2]).await.unwrap();

    let listed = store.list_audit(Some(t.id), 10).await.unwrap();
    let actions: Vec<_> = listed.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["test.event_2", "test.event_1", "test.event_0"]);
    assert!(listed.windows(2).all(|w| w[0].seq > w[1].seq));
    for (got, want) in listed.iter().rev().zip(&tenant_events) {
        let stored = AuditRecord {
            seq: got.seq,
            chain_seq: got.chain_seq,
            prev_hash: got.prev_hash.clone(),
            hash: got.hash.clone(),
            ..want.clone()
        };
        assert_eq!(got, &stored);
    }
    assert_eq!(store.list_audit(Some(t.id), 1).await.unwrap(), listed[..1].to_vec());

    // Platform-level events are those without a tenant.
    let platform: Vec<_> = store
        .list_audit(None, 500)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.target_id.as_deref() == Some(marker.as_str()))
        .collect();
    let actions: Vec<_> = platform.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["test.event_1", "test.event_0"]);
    assert!(platform.iter().all(|e| e.tenant_id.is_none() && e.actor_id.is_none()));
    assert_eq!(store.list_audit(Some(TenantId::new()), 10).await.unwrap(), vec![]);
}

pub async fn delete_app_cascades(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let (_, other, _) = owner_with_tenant(store).await;
    let doomed = app(t.id, PlanId::Starter);
    let kept = app(t.id, PlanId::Starter);
    store.create_app(&doomed, None, &[]).await.unwrap();
    store.create_app(&kept, None, &[]).await.unwrap();

    let app_token = |a: &AppRecord| RefreshTokenRecord {
        client_id: a.client_id.clone(),
        scope: "WireSocket.API".to_owned(),
        ..refresh(RefreshKind::App, &a.id.to_string(), FamilyId::new(), now() + Duration::days(1))
    };
    let (doomed_token, kept_token) = (app_token(&doomed), app_token(&kept));
    store.insert_refresh_token(&doomed_token).await.unwrap();
    store.insert_refresh_token(&kept_token).await.unwrap();
    let human_token = user_token(store, FamilyId::new(), now() + Duration::days(1)).await;
    store.change_app_plan(doomed.id, PlanId::Starter, PlanId::Pro, &invoice(&doomed, PlanId::Pro)).await.unwrap();
    let kept_invoice = invoice(&kept, PlanId::Pro);
    store.change_app_plan(kept.id, PlanId::Starter, PlanId::Pro, &kept_invoice).await.unwrap();

    assert_not_found(store.delete_app(other.id, doomed.id, &[]).await);
    assert!(store.get_app_by_id(doomed.id).await.unwrap().is_some());

    store.delete_app(t.id, doomed.id, &[]).await.unwrap();
    assert_eq!(store.get_app_by_id(doomed.id).await.unwrap(), None);
    assert_eq!(store.get_app_by_client_id(&doomed.client_id).await.unwrap(), None);
    assert_eq!(store.get_refresh_token(&doomed_token.token_hash).await.unwrap(), None);
    assert_eq!(store.list_invoices(doomed.id, None, 10).await.unwrap().items, vec![]);
    assert_not_found(store.delete_app(t.id, doomed.id, &[]).await);

    // Everything else stays.
    assert_eq!(store.get_refresh_token(&kept_token.token_hash).await.unwrap(), Some(kept_token));
    assert_eq!(store.get_refresh_token(&human_token.token_hash).await.unwrap(), Some(human_token));
    assert_eq!(store.list_invoices(kept.id, None, 10).await.unwrap().items, vec![kept_invoice]);
    assert!(store.get_tenant(t.id).await.unwrap().is_some());
}

// ---- documents ------------------------------------------------------------------

pub async fn docs_append_and_load_in_order(store: &dyn Store) {
    let a = doc_app(store).await;
    let key = doc_key(a.id, "notes");
    let t0 = now();

    let first: Vec<_> = (0..3).map(|n| (key.clone(), update("a", n))).collect();
    assert_eq!(store.append_doc_updates(&first, t0).await.unwrap(), vec![1, 2, 3]);
    let second: Vec<_> = (3..5).map(|n| (key.clone(), update("a", n))).collect();
    assert_eq!(store.append_doc_updates(&second, t0).await.unwrap(), vec![4, 5]);

    let want = DocState { snapshot: None, updates: (0..5).map(|n| update("a", n)).collect(), last_seq: 5 };
    assert_eq!(store.load_doc(&key).await.unwrap(), Some(want));

    // Bytes come back exactly, empty and binary ones included.
    let raw = doc_key(a.id, "raw");
    let odd = vec![vec![], vec![0, 255, 0, 1], (0..=255).collect::<Vec<u8>>()];
    let batch: Vec<_> = odd.iter().map(|d| (raw.clone(), d.clone())).collect();
    assert_eq!(store.append_doc_updates(&batch, t0).await.unwrap(), vec![1, 2, 3]);
    assert_eq!(store.load_doc(&raw).await.unwrap().unwrap().updates, odd);

    // An empty batch is a no-op.
    assert_eq!(store.append_doc_updates(&[], t0).await.unwrap(), Vec::<i64>::new());
    assert_eq!(store.count_docs(a.id).await.unwrap(), 2);
}

pub async fn docs_never_written_are_absent(store: &dyn Store) {
    let a = doc_app(store).await;
    let key = doc_key(a.id, "never");
    assert_eq!(store.load_doc(&key).await.unwrap(), None);
    assert_eq!(store.get_doc(&key).await.unwrap(), None);
    assert_eq!(store.doc_log_stats(&key).await.unwrap(), (0, 0));
    assert!(!store.delete_doc(&key, &[]).await.unwrap());
    assert_eq!(store.count_docs(a.id).await.unwrap(), 0);
    assert_eq!(store.list_docs(a.id, None, 10).await.unwrap().items, vec![]);
    // Of an app that does not exist either.
    let ghost = doc_key(AppId::new(), "never");
    assert_eq!(store.load_doc(&ghost).await.unwrap(), None);
    assert_eq!(store.get_doc(&ghost).await.unwrap(), None);
}

pub async fn docs_batch_is_atomic(store: &dyn Store) {
    let (a, b) = (doc_app(store).await, doc_app(store).await);
    let t0 = now();
    let existing = doc_key(a.id, "existing");
    append_one(store, &existing, b"before", t0).await;
    let before = store.get_doc(&existing).await.unwrap();

    // Entries for docs of two apps, a new doc, an existing one, and one for
    // an app that does not exist: nothing of it is stored.
    let (fresh, other, ghost) = (doc_key(a.id, "fresh"), doc_key(b.id, "other"), doc_key(AppId::new(), "ghost"));
    let batch = vec![
        (fresh.clone(), update("f", 0)),
        (existing.clone(), update("e", 0)),
        (ghost.clone(), update("g", 0)),
        (other.clone(), update("o", 0)),
        (existing.clone(), update("e", 1)),
    ];
    assert_not_found(store.append_doc_updates(&batch, t0 + Duration::seconds(5)).await);
    for key in [&fresh, &other, &ghost] {
        assert_eq!(store.load_doc(key).await.unwrap(), None, "{key:?}");
        assert_eq!(store.get_doc(key).await.unwrap(), None, "{key:?}");
    }
    let stored = store.load_doc(&existing).await.unwrap().unwrap();
    assert_eq!((stored.updates, stored.last_seq), (vec![b"before".to_vec()], 1));
    assert_eq!(store.get_doc(&existing).await.unwrap(), before);
    assert_eq!(store.count_docs(a.id).await.unwrap(), 1);
    assert_eq!(store.count_docs(b.id).await.unwrap(), 0);

    // The failed batch used up no seqs; the same batch without the ghost
    // goes through whole, each doc numbering its own entries.
    let good: Vec<_> = batch.into_iter().filter(|(k, _)| k != &ghost).collect();
    assert_eq!(store.append_doc_updates(&good, t0).await.unwrap(), vec![1, 2, 1, 3]);
    assert_eq!(
        store.load_doc(&existing).await.unwrap().unwrap().updates,
        vec![b"before".to_vec(), update("e", 0), update("e", 1)]
    );
    assert_eq!(store.load_doc(&other).await.unwrap().unwrap().updates, vec![update("o", 0)]);
}

pub async fn docs_compact_keeps_later_entries(store: &dyn Store) {
    let a = doc_app(store).await;
    let key = doc_key(a.id, "compacted");
    let t0 = now();
    let batch: Vec<_> = (0..5).map(|n| (key.clone(), update("u", n))).collect();
    assert_eq!(store.append_doc_updates(&batch, t0).await.unwrap(), vec![1, 2, 3, 4, 5]);

    store.compact_doc(&key, b"snapshot 1..=3", 3, t0).await.unwrap();
    let want = DocState {
        snapshot: Some(b"snapshot 1..=3".to_vec()),
        updates: vec![update("u", 3), update("u", 4)],
        last_seq: 5,
    };
    assert_eq!(store.load_doc(&key).await.unwrap(), Some(want));

    // Appending after a compaction continues the seqs.
    assert_eq!(append_one(store, &key, &update("u", 5), t0).await, 6);
    let state = store.load_doc(&key).await.unwrap().unwrap();
    assert_eq!((state.updates.len(), state.last_seq), (3, 6));

    // Compacting everything leaves only the snapshot; compacting again up to
    // the same seq is allowed.
    store.compact_doc(&key, b"snapshot 1..=6", 6, t0).await.unwrap();
    store.compact_doc(&key, b"snapshot 1..=6 again", 6, t0).await.unwrap();
    let want = DocState { snapshot: Some(b"snapshot 1..=6 again".to_vec()), updates: vec![], last_seq: 6 };
    assert_eq!(store.load_doc(&key).await.unwrap(), Some(want));
    assert_eq!(append_one(store, &key, &update("u", 6), t0).await, 7);
    let state = store.load_doc(&key).await.unwrap().unwrap();
    assert_eq!((state.updates, state.last_seq), (vec![update("u", 6)], 7));
}

pub async fn docs_compact_refusals(store: &dyn Store) {
    let a = doc_app(store).await;
    let key = doc_key(a.id, "refusals");
    let t0 = now();
    assert_not_found(store.compact_doc(&key, b"snap", 0, t0).await);
    assert_not_found(store.compact_doc(&doc_key(AppId::new(), "refusals"), b"snap", 0, t0).await);

    let batch: Vec<_> = (0..4).map(|n| (key.clone(), update("u", n))).collect();
    store.append_doc_updates(&batch, t0).await.unwrap();
    store.compact_doc(&key, b"snapshot 1..=3", 3, t0).await.unwrap();
    let before = (store.load_doc(&key).await.unwrap(), store.get_doc(&key).await.unwrap());

    // An older snapshot never replaces a newer one (a concurrent compaction
    // won), and a snapshot cannot cover seqs never assigned.
    assert_conflict(store.compact_doc(&key, b"snapshot 1..=2", 2, t0).await, "stale_compaction");
    assert_conflict(store.compact_doc(&key, b"snapshot 1..=9", 9, t0).await, "seq_out_of_range");
    assert_eq!((store.load_doc(&key).await.unwrap(), store.get_doc(&key).await.unwrap()), before);
}

pub async fn docs_size_and_times_are_maintained(store: &dyn Store) {
    let a = doc_app(store).await;
    let key = doc_key(a.id, "sized");
    let t0 = now() - Duration::hours(1);
    let t1 = t0 + Duration::minutes(10);

    let batch = vec![(key.clone(), vec![1; 3]), (key.clone(), vec![2; 5])];
    store.append_doc_updates(&batch, t0).await.unwrap();
    let want = DocRecord { app_id: a.id, name: "sized".to_owned(), size_bytes: 8, created_at: t0, updated_at: t0 };
    assert_eq!(store.get_doc(&key).await.unwrap(), Some(want.clone()));

    append_one(store, &key, &[3; 7], t1).await;
    let want = DocRecord { size_bytes: 15, updated_at: t1, ..want };
    assert_eq!(store.get_doc(&key).await.unwrap(), Some(want.clone()));

    // Compaction recomputes the size: a 10-byte snapshot for seqs 1..=2
    // plus the 7-byte entry 3. The content is unchanged, so is updated_at.
    store.compact_doc(&key, &[9; 10], 2, t1 + Duration::minutes(5)).await.unwrap();
    let want = DocRecord { size_bytes: 17, ..want };
    assert_eq!(store.get_doc(&key).await.unwrap(), Some(want.clone()));
    assert_eq!(store.list_docs(a.id, None, 10).await.unwrap().items, vec![want.clone()]);

    let t2 = t1 + Duration::minutes(20);
    append_one(store, &key, &[4; 2], t2).await;
    store.compact_doc(&key, &[8; 4], 4, t2).await.unwrap();
    assert_eq!(store.get_doc(&key).await.unwrap(), Some(DocRecord { size_bytes: 4, updated_at: t2, ..want }));
}

pub async fn docs_list_pages_by_name_bytes(store: &dyn Store) {
    let a = doc_app(store).await;
    let other = doc_app(store).await;
    // Byte order differs from most locales' order: upper case before lower,
    // ' ' < '%' < '/' < letters, multi-byte characters last.
    let mut names =
        vec!["zeta", "Zeta", "a/b", "a b", "a%2Fb", "a", "ab", "émoji 🎉", "🎉/🎊", "日本語", "ß", "a/b/c", "a~", "A"];
    let t0 = now();
    let batch: Vec<_> = names.iter().map(|n| (doc_key(a.id, n), n.as_bytes().to_vec())).collect();
    store.append_doc_updates(&batch, t0).await.unwrap();
    store.append_doc_updates(&[(doc_key(other.id, "a/b"), vec![1])], t0).await.unwrap();
    names.sort_unstable();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let page = store.list_docs(a.id, after.as_deref(), 4).await.unwrap();
        sizes.push(page.items.len());
        if let Some(next) = &page.next_after {
            assert_eq!(Some(next), page.items.last().map(|d| &d.name));
        }
        seen.extend(page.items);
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(sizes, vec![4, 4, 4, 2]);
    let seen_names: Vec<_> = seen.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(seen_names, names);
    for d in &seen {
        assert_eq!(d.app_id, a.id);
        assert_eq!(d.size_bytes, i64::try_from(d.name.len()).unwrap());
    }

    // `after` is exclusive and need not be a stored name.
    let page = store.list_docs(a.id, Some("a/b"), 2).await.unwrap();
    assert_eq!(page.items.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), vec!["a/b/c", "ab"]);
    let page = store.list_docs(a.id, Some("a/"), 1).await.unwrap();
    assert_eq!(page.items[0].name, "a/b");
    assert_eq!(page.next_after.as_deref(), Some("a/b"));

    // A full last page is followed by an empty one; limits are clamped.
    let all = store.list_docs(a.id, None, 14).await.unwrap();
    assert_eq!(all.items, seen);
    let rest = store.list_docs(a.id, all.next_after.as_deref(), 14).await.unwrap();
    assert_eq!((rest.items.len(), rest.next_after), (0, None));
    assert_eq!(store.list_docs(a.id, None, 0).await.unwrap().items, seen[..1].to_vec());
    assert_eq!(store.list_docs(a.id, None, u32::MAX).await.unwrap().items.len(), 14);
    assert_eq!(store.list_docs(AppId::new(), None, 10).await.unwrap().items, vec![]);
}

pub async fn docs_delete_and_count(store: &dyn Store) {
    let a = doc_app(store).await;
    let t0 = now();
    let keys: Vec<_> = ["one", "two", "three"].iter().map(|n| doc_key(a.id, n)).collect();
    let batch: Vec<_> = keys.iter().flat_map(|k| (0..3).map(|n| (k.clone(), update(&k.name, n)))).collect();
    store.append_doc_updates(&batch, t0).await.unwrap();
    store.compact_doc(&keys[0], b"snap", 2, t0).await.unwrap();
    assert_eq!(store.count_docs(a.id).await.unwrap(), 3);

    assert!(store.delete_doc(&keys[0], &[]).await.unwrap());
    assert_eq!(store.load_doc(&keys[0]).await.unwrap(), None);
    assert_eq!(store.get_doc(&keys[0]).await.unwrap(), None);
    assert_eq!(store.doc_log_stats(&keys[0]).await.unwrap(), (0, 0));
    assert_eq!(store.count_docs(a.id).await.unwrap(), 2);
    assert!(!store.delete_doc(&keys[0], &[]).await.unwrap());
    assert_eq!(store.count_docs(a.id).await.unwrap(), 2);
    assert_not_found(store.compact_doc(&keys[0], b"snap", 3, t0).await);
    assert_eq!(store.load_doc(&keys[1]).await.unwrap().unwrap().updates.len(), 3);

    // Written again, it starts afresh: nothing of the deleted doc comes back.
    let seq = append_one(store, &keys[0], b"reborn", t0).await;
    let want = DocState { snapshot: None, updates: vec![b"reborn".to_vec()], last_seq: seq };
    assert_eq!(store.load_doc(&keys[0]).await.unwrap(), Some(want));
    assert_eq!(store.get_doc(&keys[0]).await.unwrap().unwrap().size_bytes, 6);
    assert_eq!(store.count_docs(a.id).await.unwrap(), 3);
}

pub async fn docs_are_named_per_app(store: &dyn Store) {
    let (a, b) = (doc_app(store).await, doc_app(store).await);
    let (ka, kb) = (doc_key(a.id, "notes"), doc_key(b.id, "notes"));
    let t0 = now();
    store.append_doc_updates(&[(ka.clone(), b"from a".to_vec()), (kb.clone(), b"from b".to_vec())], t0).await.unwrap();
    append_one(store, &doc_key(a.id, "more"), b"x", t0).await;

    assert_eq!(store.count_docs(a.id).await.unwrap(), 2);
    assert_eq!(store.count_docs(b.id).await.unwrap(), 1);
    assert_eq!(store.load_doc(&ka).await.unwrap().unwrap().updates, vec![b"from a".to_vec()]);
    assert_eq!(store.load_doc(&kb).await.unwrap().unwrap().updates, vec![b"from b".to_vec()]);

    // Compacting or deleting one app's doc leaves the other's alone.
    store.compact_doc(&ka, b"snap a", 1, t0).await.unwrap();
    assert_eq!(store.load_doc(&kb).await.unwrap().unwrap().snapshot, None);
    assert!(store.delete_doc(&ka, &[]).await.unwrap());
    assert_eq!(store.count_docs(a.id).await.unwrap(), 1);
    assert_eq!(store.count_docs(b.id).await.unwrap(), 1);
    assert_eq!(store.load_doc(&kb).await.unwrap().unwrap().updates, vec![b"from b".to_vec()]);
    assert_eq!(store.list_docs(b.id, None, 10).await.unwrap().items.len(), 1);
}

pub async fn docs_deleted_with_their_app(store: &dyn Store) {
    let (doomed, kept) = (doc_app(store).await, doc_app(store).await);
    let t0 = now();
    let keys: Vec<_> = ["x", "y/z"].iter().map(|n| doc_key(doomed.id, n)).collect();
    let kept_key = doc_key(kept.id, "x");
    let batch: Vec<_> =
        keys.iter().chain([&kept_key]).flat_map(|k| (0..3).map(|n| (k.clone(), update(&k.name, n)))).collect();
    store.append_doc_updates(&batch, t0).await.unwrap();
    store.compact_doc(&keys[0], b"snap", 1, t0).await.unwrap();

    store.delete_app(doomed.tenant_id, doomed.id, &[]).await.unwrap();
    assert_eq!(store.count_docs(doomed.id).await.unwrap(), 0);
    assert_eq!(store.list_docs(doomed.id, None, 10).await.unwrap().items, vec![]);
    for key in &keys {
        assert_eq!(store.load_doc(key).await.unwrap(), None);
        assert_eq!(store.get_doc(key).await.unwrap(), None);
    }
    assert_eq!(store.load_doc(&kept_key).await.unwrap().unwrap().updates.len(), 3);
    // The app is gone, so its docs cannot come back.
    assert_not_found(store.append_doc_updates(&[(keys[0].clone(), vec![1])], t0).await);
}

pub async fn docs_concurrent_appends_get_distinct_seqs(store: &dyn Store) {
    let a = doc_app(store).await;
    let (x, y) = (doc_key(a.id, "shared"), doc_key(a.id, "also shared"));
    let t0 = now();
    // Eight writers, each with a batch touching both docs — in opposite
    // orders for odd and even writers, which must not deadlock.
    let batches: Vec<Vec<(DocKey, Vec<u8>)>> = (0..8)
        .map(|w| {
            let tag = format!("w{w}");
            let (first, second) = if w % 2 == 0 { (&x, &y) } else { (&y, &x) };
            (0..5)
                .map(|n| (first.clone(), update(&tag, n)))
                .chain((5..8).map(|n| (second.clone(), update(&tag, n))))
                .collect()
        })
        .collect();
    let results = join_all(batches.iter().map(|b| store.append_doc_updates(b, t0)).collect()).await;

    let mut seqs_by_doc: std::collections::HashMap<&DocKey, Vec<(i64, &[u8])>> = Default::default();
    for (batch, result) in batches.iter().zip(results) {
        let seqs = result.unwrap();
        assert_eq!(seqs.len(), batch.len());
        for ((key, data), seq) in batch.iter().zip(seqs) {
            seqs_by_doc.entry(key).or_default().push((seq, data.as_slice()));
        }
    }
    for key in [&x, &y] {
        let mut entries = seqs_by_doc.remove(key).unwrap();
        entries.sort_unstable();
        let seqs: Vec<i64> = entries.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=i64::try_from(entries.len()).unwrap()).collect::<Vec<_>>(), "{key:?}");
        // The log is in seq order, so each writer's entries keep their order.
        let state = store.load_doc(key).await.unwrap().unwrap();
        let stored: Vec<&[u8]> = state.updates.iter().map(Vec::as_slice).collect();
        assert_eq!(stored, entries.iter().map(|(_, d)| *d).collect::<Vec<_>>());
        assert_eq!(state.last_seq, i64::try_from(entries.len()).unwrap());
    }
    assert_eq!(store.load_doc(&x).await.unwrap().unwrap().updates.len(), 8 * 4);
}

pub async fn docs_load_is_consistent_under_compaction(store: &dyn Store) {
    let a = doc_app(store).await;
    let key = doc_key(a.id, "busy");
    let t0 = now();
    // Update k holds "k"; a snapshot up to n holds "upto n". A load must be
    // one instant's state: the snapshot's entries gone from the log, every
    // later one present.
    let check = |state: &DocState| {
        let upto = match &state.snapshot {
            None => 0,
            Some(s) => String::from_utf8_lossy(s).strip_prefix("upto ").unwrap().parse::<i64>().unwrap(),
        };
        let want: Vec<Vec<u8>> = (upto + 1..=state.last_seq).map(|k| k.to_string().into_bytes()).collect();
        assert_eq!(state.updates, want, "snapshot up to {upto}, last_seq {}", state.last_seq);
    };
    let writer = async {
        for k in 1..=40_i64 {
            assert_eq!(append_one(store, &key, k.to_string().as_bytes(), t0).await, k);
        }
    };
    let compactor = async {
        for _ in 0..15 {
            if let Some(state) = store.load_doc(&key).await.unwrap() {
                check(&state);
                let n = state.last_seq;
                store.compact_doc(&key, format!("upto {n}").as_bytes(), n, t0).await.unwrap();
            }
        }
    };
    let reader = async {
        for _ in 0..60 {
            if let Some(state) = store.load_doc(&key).await.unwrap() {
                check(&state);
            }
        }
    };
    join_all(vec![Box::pin(writer), Box::pin(compactor), Box::pin(reader)]).await;
    let state = store.load_doc(&key).await.unwrap().unwrap();
    check(&state);
    assert_eq!(state.last_seq, 40);
}

pub async fn docs_log_stats(store: &dyn Store) {
    let a = doc_app(store).await;
    let key = doc_key(a.id, "stats");
    let t0 = now();
    let batch: Vec<_> = [4, 6, 10].iter().map(|&n| (key.clone(), vec![7; n])).collect();
    store.append_doc_updates(&batch, t0).await.unwrap();
    assert_eq!(store.doc_log_stats(&key).await.unwrap(), (3, 20));

    store.compact_doc(&key, &[0; 100], 2, t0).await.unwrap();
    assert_eq!(store.doc_log_stats(&key).await.unwrap(), (1, 10));
    append_one(store, &key, &[1; 5], t0).await;
    assert_eq!(store.doc_log_stats(&key).await.unwrap(), (2, 15));
    store.compact_doc(&key, &[0; 120], 4, t0).await.unwrap();
    assert_eq!(store.doc_log_stats(&key).await.unwrap(), (0, 0));
    assert_eq!(store.get_doc(&key).await.unwrap().unwrap().size_bytes, 120);
}

pub async fn docs_large_batch_across_docs(store: &dyn Store) {
    let a = doc_app(store).await;
    let keys: Vec<_> = (0..5).map(|d| doc_key(a.id, &format!("bulk/{d}"))).collect();
    let t0 = now();
    // 500 updates, interleaved across 5 docs, of varied lengths.
    let batch: Vec<_> = (0..500)
        .map(|i| {
            let mut data = update(&format!("doc{}", i % 5), i);
            data.resize(data.len() + i % 37, b'.');
            (keys[i % 5].clone(), data)
        })
        .collect();
    let seqs = store.append_doc_updates(&batch, t0).await.unwrap();
    let want_seqs: Vec<i64> = (0..500).map(|i| i / 5 + 1).collect();
    assert_eq!(seqs, want_seqs);

    for (d, key) in keys.iter().enumerate() {
        let want: Vec<_> = batch.iter().skip(d).step_by(5).map(|(_, data)| data.clone()).collect();
        let bytes: usize = want.iter().map(Vec::len).sum();
        assert_eq!(store.load_doc(key).await.unwrap(), Some(DocState { snapshot: None, updates: want, last_seq: 100 }));
        assert_eq!(store.get_doc(key).await.unwrap().unwrap().size_bytes, i64::try_from(bytes).unwrap());
        assert_eq!(store.doc_log_stats(key).await.unwrap(), (100, i64::try_from(bytes).unwrap()));
    }
    // The next batch continues every doc's seqs.
    let next: Vec<_> = keys.iter().rev().map(|k| (k.clone(), vec![1])).collect();
    assert_eq!(store.append_doc_updates(&next, t0).await.unwrap(), vec![101; 5]);
    assert_eq!(store.count_docs(a.id).await.unwrap(), 5);
}

/// One entry of an append batch.
type DocEntry = (DocKey, Vec<u8>);

/// Checks the seqs answered for appended batches against the stored logs:
/// each doc numbered `1..=n` without gap or duplicate, and its log holding
/// every entry at the seq its append answered. For docs never compacted.
async fn assert_logs_match(store: &dyn Store, answered: &[(&[DocEntry], Vec<i64>)]) {
    let mut by_doc: std::collections::HashMap<&DocKey, std::collections::BTreeMap<i64, &[u8]>> = Default::default();
    for (batch, seqs) in answered {
        assert_eq!(seqs.len(), batch.len());
        for ((key, data), &seq) in batch.iter().zip(seqs) {
            assert!(by_doc.entry(key).or_default().insert(seq, data).is_none(), "seq {seq} of {key:?} given twice");
        }
    }
    for (key, entries) in by_doc {
        let n = i64::try_from(entries.len()).unwrap();
        assert_eq!(entries.keys().copied().collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>(), "{key:?}");
        let state = store.load_doc(key).await.unwrap().unwrap();
        assert_eq!(state.last_seq, n, "{key:?}");
        assert_eq!(state.updates, entries.values().map(|d| d.to_vec()).collect::<Vec<_>>(), "{key:?}");
    }
}

pub async fn docs_many_concurrent_appends_are_gap_free(store: &dyn Store) {
    let a = doc_app(store).await;
    let keys: Vec<_> = (0..3).map(|d| doc_key(a.id, &format!("many/{d}"))).collect();
    let t0 = now();
    // 120 appends in flight together, single entries and small batches
    // across the docs: an engine that merges queued appends into one
    // transaction merges many of these.
    let batches: Vec<Vec<(DocKey, Vec<u8>)>> = (0..120)
        .map(|w| (0..1 + w % 3).map(|n| (keys[(w + n) % 3].clone(), update(&format!("w{w}"), n))).collect())
        .collect();
    let results = join_all(batches.iter().map(|b| store.append_doc_updates(b, t0)).collect()).await;
    let answered: Vec<_> = batches.iter().map(Vec::as_slice).zip(results.into_iter().map(Result::unwrap)).collect();
    assert_logs_match(store, &answered).await;
    assert_eq!(store.count_docs(a.id).await.unwrap(), 3);
}

pub async fn docs_unknown_app_fails_only_its_own_batch(store: &dyn Store) {
    let a = doc_app(store).await;
    let (key, ghost) = (doc_key(a.id, "among"), doc_key(AppId::new(), "ghost"));
    let t0 = now();
    // Good batches and bad ones (an entry for an app that does not exist,
    // with or without good entries) in flight together: each bad batch
    // fails whole, and alone.
    let batches: Vec<Vec<(DocKey, Vec<u8>)>> = (0..24)
        .map(|w| {
            let good = |n| (key.clone(), update(&format!("w{w}"), n));
            let bad = (ghost.clone(), update("ghost", w));
            match w % 4 {
                1 => vec![good(0), bad, good(1)],
                3 => vec![bad],
                _ => vec![good(0), good(1)],
            }
        })
        .collect();
    let results = join_all(batches.iter().map(|b| store.append_doc_updates(b, t0)).collect()).await;
    let mut answered = Vec::new();
    for (batch, result) in batches.iter().zip(results) {
        if batch.iter().any(|(k, _)| k == &ghost) {
            assert_not_found(result);
        } else {
            answered.push((batch.as_slice(), result.unwrap()));
        }
    }
    assert_eq!(answered.len(), 12);
    // Only the good batches' entries are stored, numbered without gaps.
    assert_logs_match(store, &answered).await;
    assert_eq!(store.load_doc(&ghost).await.unwrap(), None);
    assert_eq!(store.count_docs(a.id).await.unwrap(), 1);
}

pub async fn docs_appends_race_compactions(store: &dyn Store) {
    let a = doc_app(store).await;
    let key = doc_key(a.id, "raced");
    let t0 = now();
    // Four writers append 20 entries each, one at a time, while a compactor
    // keeps folding what is stored into a snapshot "upto n".
    let key = &key;
    let writer = |w: usize| -> Boxed<'_, Vec<(i64, Vec<u8>)>> {
        Box::pin(async move {
            let mut mine = Vec::new();
            for n in 0..20 {
                let data = update(&format!("w{w}"), n);
                mine.push((append_one(store, key, &data, t0).await, data));
            }
            mine
        })
    };
    let compactor: Boxed<'_, Vec<(i64, Vec<u8>)>> = Box::pin(async move {
        for _ in 0..20 {
            if let Some(state) = store.load_doc(key).await.unwrap() {
                let n = state.last_seq;
                store.compact_doc(key, format!("upto {n}").as_bytes(), n, t0).await.unwrap();
            }
        }
        Vec::new()
    });
    let results = join_all((0..4).map(writer).chain([compactor]).collect()).await;

    let mut by_seq = std::collections::BTreeMap::new();
    for mine in results {
        assert!(mine.windows(2).all(|p| p[0].0 < p[1].0), "one writer's seqs go up");
        for (seq, data) in mine {
            assert!(by_seq.insert(seq, data).is_none(), "seq {seq} given twice");
        }
    }
    assert_eq!(by_seq.keys().copied().collect::<Vec<_>>(), (1..=80).collect::<Vec<_>>());
    // The stored state is the last snapshot plus exactly the entries after it.
    let state = store.load_doc(key).await.unwrap().unwrap();
    let upto = match &state.snapshot {
        None => 0,
        Some(s) => String::from_utf8_lossy(s).strip_prefix("upto ").unwrap().parse::<i64>().unwrap(),
    };
    let after: Vec<Vec<u8>> = by_seq.range(upto + 1..).map(|(_, d)| d.clone()).collect();
    assert_eq!((state.last_seq, &state.updates), (80, &after));
    let bytes: usize = after.iter().map(Vec::len).sum();
    assert_eq!(store.doc_log_stats(key).await.unwrap(), (80 - upto, i64::try_from(bytes).unwrap()));
    store.compact_doc(key, b"upto 80", 80, t0).await.unwrap();
    assert_eq!(store.doc_log_stats(key).await.unwrap(), (0, 0));
    assert_eq!(store.get_doc(key).await.unwrap().unwrap().size_bytes, 7);
}

// ---- audit hash chain ----------------------------------------------------------

pub fn audit_event(tenant_id: Option<TenantId>, action: &str) -> AuditRecord {
    AuditRecord {
        seq: 0,
        tenant_id,
        at: now(),
        actor_type: "user".to_owned(),
        actor_id: Some(UserId::new().to_string()),
        action: action.to_owned(),
        target_type: Some("app".to_owned()),
        target_id: Some(AppId::new().to_string()),
        ip: Some("198.51.100.7".to_owned()),
        details: serde_json::json!({"z": 1, "a": [true, null, 2.5], "s": "ü"}),
        chain_seq: 0,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// Verifies one chain with [`crate::verify_audit_chain`], reading `page`
/// rows at a time.
pub async fn verify_chain(store: &dyn Store, tenant: Option<TenantId>, page: u32) -> Result<u64, ChainBreak> {
    crate::verify_audit_chain(store, tenant, page).await.unwrap()
}

pub async fn audit_chain_links_verify(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let (_, other, _) = owner_with_tenant(store).await;
    assert_eq!(store.audit_head(Some(t.id)).await.unwrap(), None);
    assert_eq!(verify_chain(store, Some(t.id), 10).await, Ok(0));

    store.append_audit(&audit_event(Some(t.id), "test.first")).await.unwrap();
    // One batch over three chains, interleaved: each keeps its own order.
    let batch = vec![
        audit_event(Some(other.id), "test.other_1"),
        audit_event(Some(t.id), "test.second"),
        audit_event(None, "test.platform"),
        audit_event(Some(other.id), "test.other_2"),
        audit_event(Some(t.id), "test.third"),
    ];
    store.append_audit_many(&batch).await.unwrap();
    store.append_audit_many(&[]).await.unwrap();
    store.append_audit(&audit_event(Some(t.id), "test.fourth")).await.unwrap();

    let rows = store.audit_chain_rows(Some(t.id), 0, 100).await.unwrap();
    let actions: Vec<_> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, vec!["test.first", "test.second", "test.third", "test.fourth"]);
    let mut prev = GENESIS_HASH.to_owned();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.chain_seq, i64::try_from(i).unwrap() + 1);
        assert_eq!(row.prev_hash, prev);
        assert_eq!(row.hash, row.chain_hash(row.chain_seq, &row.prev_hash));
        assert_eq!(row.hash.len(), 64);
        prev = row.hash.clone();
    }
    assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.audit_head(Some(t.id)).await.unwrap(), Some((4, prev)));
    // The stored fields are the ones hashed: the record reads back as given.
    let want = AuditRecord {
        seq: rows[1].seq,
        chain_seq: 2,
        prev_hash: rows[0].hash.clone(),
        hash: rows[1].hash.clone(),
        ..batch[1].clone()
    };
    assert_eq!(rows[1], want);

    // Pages of any size verify; so do the other chains.
    for page in [1, 3, 100] {
        assert_eq!(verify_chain(store, Some(t.id), page).await, Ok(4));
    }
    assert_eq!(verify_chain(store, Some(other.id), 1).await, Ok(2));
    assert!(verify_chain(store, None, 50).await.unwrap() >= 1);
    assert_eq!(store.audit_chain_rows(Some(t.id), 2, 1).await.unwrap(), rows[2..3].to_vec());
    assert_eq!(store.audit_chain_rows(Some(t.id), 4, 10).await.unwrap(), vec![]);

    let chains = store.audit_chains().await.unwrap();
    assert!(chains.contains(&Some(t.id)) && chains.contains(&Some(other.id)) && chains.contains(&None));
    assert_eq!(chains[0], None, "the platform chain comes first");
    assert!(!chains.contains(&Some(TenantId::new())));
    // Nothing to chain: every row got its links on append.
    assert_eq!(store.backfill_audit_chain().await.unwrap(), 0);
}

pub async fn audit_appends_under_concurrency(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let (_, u, _) = owner_with_tenant(store).await;
    let events: Vec<_> = (0..16).map(|n| audit_event(Some(t.id), &format!("test.concurrent_{n}"))).collect();
    let results = join_all(events.iter().map(|e| store.append_audit(e)).collect()).await;
    assert!(results.into_iter().all(|r| r.is_ok()));
    let rows = store.audit_chain_rows(Some(t.id), 0, 100).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.chain_seq).collect::<Vec<_>>(), (1..=16).collect::<Vec<_>>());
    let mut actions: Vec<_> = rows.iter().map(|r| r.action.clone()).collect();
    actions.sort_unstable();
    let mut want: Vec<_> = events.iter().map(|e| e.action.clone()).collect();
    want.sort_unstable();
    assert_eq!(actions, want);
    assert_eq!(verify_chain(store, Some(t.id), 5).await, Ok(16));

    // Batches over two chains, in opposite orders, neither deadlock nor fork.
    let batches: Vec<Vec<AuditRecord>> = (0..8)
        .map(|n| {
            let (a, b) = if n % 2 == 0 { (t.id, u.id) } else { (u.id, t.id) };
            vec![audit_event(Some(a), "test.batch"), audit_event(Some(b), "test.batch")]
        })
        .collect();
    let results = join_all(batches.iter().map(|b| store.append_audit_many(b)).collect()).await;
    assert!(results.into_iter().all(|r| r.is_ok()));
    assert_eq!(verify_chain(store, Some(t.id), 7).await, Ok(24));
    assert_eq!(verify_chain(store, Some(u.id), 7).await, Ok(8));
}

pub async fn audit_filters_and_pages(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let t0 = now() - Duration::hours(1);
    let alice = UserId::new().to_string();
    let mut events = Vec::new();
    for n in 0..10_i64 {
        let action = if n % 2 == 0 { "app.created" } else { "app.deleted" };
        let actor = if n < 5 { alice.clone() } else { UserId::new().to_string() };
        events.push(AuditRecord {
            at: t0 + Duration::minutes(n),
            actor_id: Some(actor),
            ..audit_event(Some(t.id), action)
        });
    }
    store.append_audit_many(&events).await.unwrap();
    // Another tenant's and platform entries never show.
    store.append_audit(&audit_event(None, "app.created")).await.unwrap();
    let (_, other, _) = owner_with_tenant(store).await;
    store.append_audit(&audit_event(Some(other.id), "app.created")).await.unwrap();

    let all = AuditFilter { tenant: Some(t.id), ..AuditFilter::default() };
    let list = |filter: AuditFilter, before, limit| async move {
        store.list_audit_page(&filter, before, limit).await.unwrap()
    };
    let page = list(all.clone(), None, 100).await;
    assert_eq!(page.next_after, None);
    let ats: Vec<_> = page.items.iter().map(|e| e.at).collect();
    assert_eq!(ats, events.iter().rev().map(|e| e.at).collect::<Vec<_>>());
    assert!(page.items.windows(2).all(|w| w[0].seq > w[1].seq));

    // Pages of 4: 4, 4, 2, each starting below the last one's seq.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let p = list(all.clone(), before, 4).await;
        seen.extend(p.items.iter().map(|e| e.seq));
        match p.next_after {
            Some(next) => before = Some(next.parse::<i64>().unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, page.items.iter().map(|e| e.seq).collect::<Vec<_>>());

    let count = |p: crate::Page<AuditRecord>| p.items.len();
    let by_action = AuditFilter { action: Some("app.deleted".to_owned()), ..all.clone() };
    let deleted = list(by_action.clone(), None, 100).await;
    assert_eq!(deleted.items.len(), 5);
    assert!(deleted.items.iter().all(|e| e.action == "app.deleted"));
    let by_actor = AuditFilter { actor_id: Some(alice.clone()), ..all.clone() };
    assert_eq!(count(list(by_actor.clone(), None, 100).await), 5);
    let both = AuditFilter { action: Some("app.created".to_owned()), ..by_actor };
    assert_eq!(count(list(both, None, 100).await), 3);
    // `since` and `until` both include their instant.
    let window =
        AuditFilter { since: Some(t0 + Duration::minutes(2)), until: Some(t0 + Duration::minutes(6)), ..all.clone() };
    let w = list(window, None, 100).await;
    assert_eq!(
        w.items.iter().map(|e| e.at).collect::<Vec<_>>(),
        (2..=6).rev().map(|n| t0 + Duration::minutes(n)).collect::<Vec<_>>()
    );
    let since = AuditFilter { since: Some(t0 + Duration::minutes(8)), ..by_action };
    assert_eq!(count(list(since, None, 100).await), 1);
    let nothing = AuditFilter { action: Some("no.such".to_owned()), ..all.clone() };
    assert_eq!(list(nothing, None, 100).await, crate::Page { items: vec![], next_after: None });
    assert_eq!(count(list(all.clone(), Some(page.items[9].seq), 100).await), 0);
    assert_eq!(count(list(AuditFilter { tenant: Some(TenantId::new()), ..all }, None, 100).await), 0);

    // The platform filter sees platform entries only.
    let platform = list(AuditFilter::default(), None, 500).await;
    assert!(!platform.items.is_empty());
    assert!(platform.items.iter().all(|e| e.tenant_id.is_none()));
}

// ---- members -----------------------------------------------------------------

/// A fresh user who is a member of `tenant` with `role`.
async fn member(store: &dyn Store, tenant: TenantId, role: &str) -> UserRecord {
    let u = user();
    store.create_user(&u).await.unwrap();
    store.add_membership(tenant, u.id, role, now()).await.unwrap();
    u
}

pub async fn members_add_list_change_remove(store: &dyn Store) {
    let (owner, t, _) = owner_with_tenant(store).await;
    let t0 = now();
    let admin = member(store, t.id, "admin").await;
    let viewer = member(store, t.id, "viewer").await;
    assert_eq!(store.get_membership(t.id, admin.id).await.unwrap().as_deref(), Some("admin"));
    assert_conflict(store.add_membership(t.id, admin.id, "viewer", t0).await, "already_member");
    assert_not_found(store.add_membership(t.id, UserId::new(), "viewer", t0).await);
    assert_not_found(store.add_membership(TenantId::new(), admin.id, "viewer", t0).await);
    let stranger = user();
    store.create_user(&stranger).await.unwrap();
    assert_conflict(store.add_membership(t.id, stranger.id, "ghost", t0).await, "unknown_role");
    assert_eq!(store.get_membership(t.id, stranger.id).await.unwrap(), None);

    // Listed by user id, with email, role and whether MFA is on.
    store.put_pending_mfa(viewer.id, &[1, 2], 1, t0).await.unwrap();
    store.enable_mfa(viewer.id, 1, &[], t0).await.unwrap();
    let mut want: Vec<_> = [(&owner, "super_admin", false), (&admin, "admin", false), (&viewer, "viewer", true)]
        .into_iter()
        .map(|(u, role, mfa_enabled)| MemberRecord {
            user_id: u.id,
            email: u.email.clone(),
            name: None,
            role: role.to_owned(),
            mfa_enabled,
            joined_at: t0,
        })
        .collect();
    want.sort_by_key(|m| m.user_id);
    let all = store.list_members(t.id, None, 10).await.unwrap();
    assert_eq!(all.items.len(), 3);
    for (got, want) in all.items.iter().zip(&want) {
        assert!(got.joined_at >= t0 - Duration::seconds(5) && got.joined_at <= now());
        assert_eq!(got, &MemberRecord { joined_at: got.joined_at, ..want.clone() });
    }
    let first = store.list_members(t.id, None, 2).await.unwrap();
    assert_eq!(first.items, all.items[..2].to_vec());
    assert_eq!(first.next_after, Some(all.items[1].user_id.to_string()));
    let rest = store.list_members(t.id, first.next_after.as_deref(), 2).await.unwrap();
    assert_eq!((rest.items, rest.next_after), (all.items[2..].to_vec(), None));
    assert_eq!(store.list_members(TenantId::new(), None, 10).await.unwrap().items, vec![]);
    for m in &all.items {
        assert_eq!(store.get_member(t.id, m.user_id).await.unwrap().as_ref(), Some(m));
    }
    assert_eq!(store.get_member(t.id, stranger.id).await.unwrap(), None);
    assert_eq!(store.get_member(TenantId::new(), owner.id).await.unwrap(), None);

    store.set_member_role(t.id, viewer.id, "editor", &[]).await.unwrap();
    assert_eq!(store.get_membership(t.id, viewer.id).await.unwrap().as_deref(), Some("editor"));
    assert_not_found(store.set_member_role(t.id, stranger.id, "editor", &[]).await);
    assert_conflict(store.set_member_role(t.id, viewer.id, "ghost", &[]).await, "unknown_role");
    store.remove_membership(t.id, viewer.id, &[]).await.unwrap();
    assert_eq!(store.get_membership(t.id, viewer.id).await.unwrap(), None);
    assert_not_found(store.remove_membership(t.id, viewer.id, &[]).await);

    // The last super_admin can be neither demoted nor removed…
    assert_conflict(store.set_member_role(t.id, owner.id, "admin", &[]).await, "last_super_admin");
    assert_conflict(store.remove_membership(t.id, owner.id, &[]).await, "last_super_admin");
    assert_eq!(store.get_membership(t.id, owner.id).await.unwrap().as_deref(), Some("super_admin"));
    // …but once there is another, either may go.
    store.set_member_role(t.id, admin.id, "super_admin", &[]).await.unwrap();
    store.set_member_role(t.id, owner.id, "super_admin", &[]).await.unwrap();
    store.remove_membership(t.id, owner.id, &[]).await.unwrap();
    assert_conflict(store.set_member_role(t.id, admin.id, "viewer", &[]).await, "last_super_admin");
}

pub async fn members_last_super_admin_under_concurrency(store: &dyn Store) {
    for round in 0..4 {
        let (owner, t, _) = owner_with_tenant(store).await;
        let second = member(store, t.id, "super_admin").await;
        let ids = [owner.id, second.id];
        let results = if round % 2 == 0 {
            join_all(ids.iter().map(|&u| store.set_member_role(t.id, u, "admin", &[])).collect()).await
        } else {
            join_all(ids.iter().map(|&u| store.remove_membership(t.id, u, &[])).collect()).await
        };
        let wins = results.into_iter().filter(|r| ok_or_conflict_any(r, "last_super_admin")).count();
        assert_eq!(wins, 1, "round {round}");
        let members = store.list_members(t.id, None, 10).await.unwrap().items;
        assert_eq!(members.iter().filter(|m| m.role == "super_admin").count(), 1, "round {round}");
    }
}

fn ok_or_conflict_any(result: &crate::Result<()>, code: &str) -> bool {
    match result {
        Ok(()) => true,
        Err(StoreError::Conflict(c)) if *c == code => false,
        other => panic!("expected Ok or Conflict({code:?}), got {other:?}"),
    }
}

// ---- custom roles ----------------------------------------------------------------

pub async fn custom_roles_crud_and_in_use(store: &dyn Store) {
    let (owner, t, _) = owner_with_tenant(store).await;
    let t0 = now();
    let role = |name: &str| CustomRoleRecord {
        tenant_id: t.id,
        name: name.to_owned(),
        permissions: vec![(Resource::Apps, Action::Read), (Resource::Webhooks, Action::Update)],
        created_at: t0,
        updated_at: t0,
    };
    let auditor = role("auditor");
    store.create_role(&auditor).await.unwrap();
    store.create_role(&CustomRoleRecord { permissions: vec![], ..role("billing-clerk") }).await.unwrap();
    assert_conflict(store.create_role(&auditor).await, "role_exists");
    assert_conflict(store.create_role(&role("admin")).await, "role_exists");
    assert_not_found(store.create_role(&CustomRoleRecord { tenant_id: TenantId::new(), ..role("x") }).await);

    assert_eq!(store.get_role(t.id, "auditor").await.unwrap(), Some(auditor.clone()));
    assert_eq!(store.get_role(t.id, "nobody").await.unwrap(), None);
    let (_, other, _) = owner_with_tenant(store).await;
    assert_eq!(store.get_role(other.id, "auditor").await.unwrap(), None);
    let names: Vec<_> = store.list_roles(t.id).await.unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, vec!["auditor", "billing-clerk"]);
    assert_eq!(store.list_roles(other.id).await.unwrap(), vec![]);

    let t1 = t0 + Duration::minutes(1);
    let perms = vec![(Resource::Audit, Action::Read), (Resource::Members, Action::Delete)];
    store.update_role_permissions(t.id, "auditor", &perms, t1).await.unwrap();
    let updated = CustomRoleRecord { permissions: perms.clone(), updated_at: t1, ..auditor.clone() };
    assert_eq!(store.get_role(t.id, "auditor").await.unwrap(), Some(updated));
    assert_not_found(store.update_role_permissions(t.id, "nobody", &perms, t1).await);

    // In use by a member: kept.
    let m = member(store, t.id, "auditor").await;
    assert_conflict(store.delete_role(t.id, "auditor", t1).await, "role_in_use");
    assert!(store.get_role(t.id, "auditor").await.unwrap().is_some());
    store.remove_membership(t.id, m.id, &[]).await.unwrap();
    // In use by a live invite: kept; by an expired one only: deletable.
    let inv = invite(t.id, owner.id, "auditor", t1 + Duration::days(7));
    store.create_invite(&inv).await.unwrap();
    assert_conflict(store.delete_role(t.id, "auditor", t1).await, "role_in_use");
    store.delete_role(t.id, "auditor", inv.expires_at).await.unwrap();
    assert_eq!(store.get_role(t.id, "auditor").await.unwrap(), None);
    assert_not_found(store.delete_role(t.id, "auditor", t1).await);
    // Gone: nobody can be given it any more.
    assert_conflict(store.add_membership(t.id, m.id, "auditor", t1).await, "unknown_role");
    store.delete_role(t.id, "billing-clerk", t1).await.unwrap();
    assert_eq!(store.list_roles(t.id).await.unwrap(), vec![]);
}

pub async fn custom_role_delete_races_assignment(store: &dyn Store) {
    let (owner, t, _) = owner_with_tenant(store).await;
    let t0 = now();
    for round in 0..4 {
        let name = format!("racer-{round}");
        let role = CustomRoleRecord {
            tenant_id: t.id,
            name: name.clone(),
            permissions: vec![(Resource::Documents, Action::Read)],
            created_at: t0,
            updated_at: t0,
        };
        store.create_role(&role).await.unwrap();
        let u = user();
        store.create_user(&u).await.unwrap();
        let inv = invite(t.id, owner.id, &name, t0 + Duration::days(1));
        let (deleted, assigned) = if round % 2 == 0 {
            let delete = store.delete_role(t.id, &name, t0);
            let add = store.add_membership(t.id, u.id, &name, t0);
            let mut r = join_all(vec![Box::pin(delete) as Boxed<'_, _>, Box::pin(add)]).await;
            let add = r.pop().unwrap();
            (r.pop().unwrap(), add)
        } else {
            let delete = store.delete_role(t.id, &name, t0);
            let add = store.create_invite(&inv);
            let mut r = join_all(vec![Box::pin(delete) as Boxed<'_, _>, Box::pin(add)]).await;
            let add = r.pop().unwrap();
            (r.pop().unwrap(), add)
        };
        // Never both: a role is not deleted from under a member or an invite.
        let deleted = ok_or_conflict(deleted, "role_in_use");
        let assigned = ok_or_conflict(assigned, "unknown_role");
        assert!(deleted != assigned, "round {round}: deleted {deleted}, assigned {assigned}");
        assert_eq!(store.get_role(t.id, &name).await.unwrap().is_some(), assigned);
    }
}

// ---- invites ---------------------------------------------------------------------

pub fn invite(tenant: TenantId, by: UserId, role: &str, expires_at: OffsetDateTime) -> InviteRecord {
    InviteRecord {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant,
        email: format!("invitee-{}@example.test", unique()),
        role: role.to_owned(),
        token_hash: unique(),
        invited_by: by,
        created_at: now(),
        expires_at,
        accepted_at: None,
        accepted_by: None,
    }
}

pub async fn invites_create_list_accept(store: &dyn Store) {
    let (owner, t, _) = owner_with_tenant(store).await;
    let t0 = now();
    let week = t0 + Duration::days(7);
    let a = invite(t.id, owner.id, "editor", week);
    let b = invite(t.id, owner.id, "viewer", week);
    let expired = invite(t.id, owner.id, "viewer", t0 - Duration::seconds(1));
    for i in [&a, &b, &expired] {
        store.create_invite(i).await.unwrap();
    }
    assert_conflict(store.create_invite(&invite(t.id, owner.id, "ghost", week)).await, "unknown_role");
    assert_not_found(store.create_invite(&invite(TenantId::new(), owner.id, "viewer", week)).await);
    let clash = InviteRecord { token_hash: a.token_hash.clone(), ..invite(t.id, owner.id, "viewer", week) };
    assert_conflict(store.create_invite(&clash).await, "token_taken");
    assert_eq!(store.get_invite_by_token(&a.token_hash).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_invite_by_token("nope").await.unwrap(), None);

    let first = store.list_invites(t.id, None, 2).await.unwrap();
    assert_eq!(first.items, vec![a.clone(), b.clone()]);
    let rest = store.list_invites(t.id, first.next_after.as_deref(), 2).await.unwrap();
    assert_eq!((rest.items, rest.next_after), (vec![expired.clone()], None));

    // A newcomer: the user and the membership appear together.
    let newcomer = UserRecord { email: a.email.clone(), ..user() };
    let accepted =
        store.accept_invite(&a.token_hash, InviteAcceptor::NewUser(&newcomer), Some("Ada L."), t0, &[]).await.unwrap();
    assert_eq!(accepted, InviteRecord { accepted_at: Some(t0), accepted_by: Some(newcomer.id), ..a.clone() });
    assert_eq!(store.get_invite_by_token(&a.token_hash).await.unwrap(), Some(accepted));
    // The name given is stored with the account, and shows among the members.
    let named = UserRecord { name: Some("Ada L.".into()), ..newcomer.clone() };
    assert_eq!(store.get_user(newcomer.id).await.unwrap(), Some(named));
    assert_eq!(store.get_member(t.id, newcomer.id).await.unwrap().unwrap().name.as_deref(), Some("Ada L."));
    assert_eq!(store.get_membership(t.id, newcomer.id).await.unwrap().as_deref(), Some("editor"));
    // Single use; expired and unknown tokens are refused alike.
    let again = user();
    assert_conflict(
        store.accept_invite(&a.token_hash, InviteAcceptor::NewUser(&again), None, t0, &[]).await,
        "invalid_token",
    );
    assert_eq!(store.get_user(again.id).await.unwrap(), None);
    let existing = user();
    store.create_user(&existing).await.unwrap();
    for token in [expired.token_hash.as_str(), "unknown"] {
        assert_conflict(
            store.accept_invite(token, InviteAcceptor::Existing(existing.id), None, t0, &[]).await,
            "invalid_token",
        );
    }
    assert_conflict(
        store.accept_invite(&b.token_hash, InviteAcceptor::Existing(existing.id), None, week, &[]).await,
        "invalid_token",
    );
    // Accepted invites leave the pending list.
    let pending: Vec<_> = store.list_invites(t.id, None, 10).await.unwrap().items;
    assert_eq!(pending, vec![b.clone(), expired.clone()]);

    // Refusals roll back: the invite stays usable, nothing else is stored.
    let taken = UserRecord { email: owner.email.clone(), ..user() };
    assert_conflict(
        store.accept_invite(&b.token_hash, InviteAcceptor::NewUser(&taken), None, t0, &[]).await,
        "email_taken",
    );
    assert_conflict(
        store.accept_invite(&b.token_hash, InviteAcceptor::Existing(owner.id), None, t0, &[]).await,
        "already_member",
    );
    assert_eq!(store.get_invite_by_token(&b.token_hash).await.unwrap(), Some(b.clone()));
    assert_eq!(store.get_user(taken.id).await.unwrap(), None);
    assert_eq!(store.get_membership(t.id, owner.id).await.unwrap().as_deref(), Some("super_admin"));
    // An existing account joins.
    let joined = store
        .accept_invite(&b.token_hash, InviteAcceptor::Existing(existing.id), Some("Grace"), t0, &[])
        .await
        .unwrap();
    assert_eq!(joined.accepted_by, Some(existing.id));
    // An existing account without a name takes the one given...
    assert_eq!(store.get_user(existing.id).await.unwrap().unwrap().name.as_deref(), Some("Grace"));
    assert_eq!(store.get_membership(t.id, existing.id).await.unwrap().as_deref(), Some("viewer"));

    // Deleting: pending invites of this tenant only.
    let (_, other, _) = owner_with_tenant(store).await;
    assert!(!store.delete_invite(other.id, &expired.id).await.unwrap());
    assert!(!store.delete_invite(t.id, &b.id).await.unwrap(), "accepted invites are history");
    assert!(store.delete_invite(t.id, &expired.id).await.unwrap());
    assert!(!store.delete_invite(t.id, &expired.id).await.unwrap());
    assert_eq!(store.list_invites(t.id, None, 10).await.unwrap().items, vec![]);
}

pub async fn invite_accept_under_concurrency(store: &dyn Store) {
    let (owner, t, _) = owner_with_tenant(store).await;
    let t0 = now();
    let inv = invite(t.id, owner.id, "viewer", t0 + Duration::days(7));
    store.create_invite(&inv).await.unwrap();
    let users: Vec<_> = (0..8).map(|_| user()).collect();
    let results = join_all(
        users.iter().map(|u| store.accept_invite(&inv.token_hash, InviteAcceptor::NewUser(u), None, t0, &[])).collect(),
    )
    .await;
    let mut winners = Vec::new();
    for (u, r) in users.iter().zip(results) {
        match r {
            Ok(accepted) => winners.push((u, accepted)),
            other => assert_conflict(other, "invalid_token"),
        }
    }
    assert_eq!(winners.len(), 1);
    let (winner, accepted) = &winners[0];
    assert_eq!(accepted.accepted_by, Some(winner.id));
    for u in &users {
        let stored = store.get_user(u.id).await.unwrap();
        assert_eq!(stored.is_some(), u.id == winner.id);
    }
    assert_eq!(store.list_members(t.id, None, 10).await.unwrap().items.len(), 2);
}

// ---- password resets ---------------------------------------------------------------

pub fn reset(user: UserId, expires_at: OffsetDateTime) -> PasswordResetRecord {
    PasswordResetRecord { token_hash: unique(), user_id: user, created_at: now(), expires_at, used_at: None }
}

pub async fn password_reset_ends_everything(store: &dyn Store) {
    let (alice, bob) = (user(), user());
    store.create_user(&alice).await.unwrap();
    store.create_user(&bob).await.unwrap();
    let t0 = now();
    let later = t0 + Duration::minutes(30);
    let session =
        |user_id| SessionRecord { token_hash: unique(), user_id, created_at: t0, expires_at: later, family_id: None };
    let (s1, s2, bobs) = (session(alice.id), session(alice.id), session(bob.id));
    for s in [&s1, &s2, &bobs] {
        store.create_session(s).await.unwrap();
    }
    let token = |u: &UserRecord| refresh(RefreshKind::User, &u.id.to_string(), FamilyId::new(), t0 + Duration::days(1));
    let (r1, bob_token) = (token(&alice), token(&bob));
    let old_revocation = t0 - Duration::hours(1);
    let r2 = RefreshTokenRecord { revoked_at: Some(old_revocation), ..token(&alice) };
    for r in [&r1, &r2, &bob_token] {
        store.insert_refresh_token(r).await.unwrap();
    }
    let (first, second) = (reset(alice.id, later), reset(alice.id, later));
    let expired = reset(alice.id, t0);
    for r in [&first, &second, &expired] {
        store.create_password_reset(r).await.unwrap();
    }
    assert_not_found(store.create_password_reset(&reset(UserId::new(), later)).await);

    assert_conflict(store.consume_password_reset(&expired.token_hash, "$new", t0).await, "invalid_token");
    assert_conflict(store.consume_password_reset("unknown", "$new", t0).await, "invalid_token");
    assert_eq!(store.get_user(alice.id).await.unwrap(), Some(alice.clone()));

    assert_eq!(store.consume_password_reset(&first.token_hash, "$argon2id$new", t0).await.unwrap(), alice.id);
    assert_eq!(store.get_user(alice.id).await.unwrap().unwrap().password_hash, "$argon2id$new");
    for s in [&s1, &s2] {
        assert_eq!(store.get_session(&s.token_hash).await.unwrap(), None);
    }
    assert_eq!(store.get_refresh_token(&r1.token_hash).await.unwrap().unwrap().revoked_at, Some(t0));
    assert_eq!(store.get_refresh_token(&r2.token_hash).await.unwrap().unwrap().revoked_at, Some(old_revocation));
    // Bob keeps everything.
    assert_eq!(store.get_session(&bobs.token_hash).await.unwrap(), Some(bobs.clone()));
    assert_eq!(store.get_refresh_token(&bob_token.token_hash).await.unwrap(), Some(bob_token.clone()));
    assert_eq!(store.get_user(bob.id).await.unwrap(), Some(bob.clone()));
    // Used, and the user's other outstanding token with it.
    assert_conflict(store.consume_password_reset(&first.token_hash, "$again", t0).await, "invalid_token");
    assert_conflict(store.consume_password_reset(&second.token_hash, "$again", t0).await, "invalid_token");
    assert_eq!(store.get_user(alice.id).await.unwrap().unwrap().password_hash, "$argon2id$new");

    store.set_user_password(alice.id, "$argon2id$set").await.unwrap();
    assert_eq!(store.get_user(alice.id).await.unwrap().unwrap().password_hash, "$argon2id$set");
    assert_not_found(store.set_user_password(UserId::new(), "$x").await);
}

pub async fn password_reset_under_concurrency(store: &dyn Store) {
    let u = user();
    store.create_user(&u).await.unwrap();
    let t0 = now();
    let r = reset(u.id, t0 + Duration::minutes(30));
    store.create_password_reset(&r).await.unwrap();
    let hashes: Vec<String> = (0..8).map(|n| format!("$argon2id$parallel{n}")).collect();
    let results = join_all(hashes.iter().map(|h| store.consume_password_reset(&r.token_hash, h, t0)).collect()).await;
    let mut winners = Vec::new();
    for (h, result) in hashes.iter().zip(results) {
        match result {
            Ok(id) => {
                assert_eq!(id, u.id);
                winners.push(h);
            }
            Err(e) => assert_conflict::<()>(Err(e), "invalid_token"),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(&store.get_user(u.id).await.unwrap().unwrap().password_hash, winners[0]);

    // Different tokens of one user: a reset spends them all, so one wins.
    for round in 0..3 {
        let resets: Vec<_> = (0..4).map(|_| reset(u.id, t0 + Duration::minutes(30))).collect();
        for r in &resets {
            store.create_password_reset(r).await.unwrap();
        }
        let results =
            join_all(resets.iter().map(|r| store.consume_password_reset(&r.token_hash, "$argon2id$x", t0)).collect())
                .await;
        let mut wins = 0;
        for result in results {
            match result {
                Ok(id) => {
                    assert_eq!(id, u.id);
                    wins += 1;
                }
                Err(e) => assert_conflict::<()>(Err(e), "invalid_token"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
}

// ---- MFA ---------------------------------------------------------------------------

/// A fresh user with MFA enabled at `step`, with the given recovery codes.
async fn mfa_user(store: &dyn Store, step: i64, codes: &[String]) -> UserRecord {
    let u = user();
    store.create_user(&u).await.unwrap();
    store.put_pending_mfa(u.id, &[7, 7, 7], 1, now()).await.unwrap();
    store.enable_mfa(u.id, step, codes, now()).await.unwrap();
    u
}

pub async fn mfa_pending_enable_disable(store: &dyn Store) {
    let u = user();
    store.create_user(&u).await.unwrap();
    let t0 = now();
    assert_eq!(store.get_mfa(u.id).await.unwrap(), None);
    assert!(!store.consume_totp_step(u.id, 1).await.unwrap());
    assert_conflict(store.enable_mfa(u.id, 1, &[], t0).await, "mfa_not_pending");
    assert_not_found(store.put_pending_mfa(UserId::new(), &[1], 1, t0).await);

    // A pending secret is replaced by a new setup, and accepts no code.
    store.put_pending_mfa(u.id, &[1, 1], 1, t0 - Duration::minutes(5)).await.unwrap();
    store.put_pending_mfa(u.id, &[2, 2, 2], 2, t0).await.unwrap();
    let pending = MfaRecord {
        user_id: u.id,
        secret_enc: vec![2, 2, 2],
        master_key_version: 2,
        created_at: t0,
        enabled_at: None,
        last_step: None,
    };
    assert_eq!(store.get_mfa(u.id).await.unwrap(), Some(pending.clone()));
    assert!(!store.consume_totp_step(u.id, 100).await.unwrap());

    let codes: Vec<String> = (0..3).map(|n| format!("code-hash-{n}")).collect();
    let t1 = t0 + Duration::seconds(30);
    store.enable_mfa(u.id, 100, &codes, t1).await.unwrap();
    let enabled = MfaRecord { enabled_at: Some(t1), last_step: Some(100), ..pending };
    assert_eq!(store.get_mfa(u.id).await.unwrap(), Some(enabled.clone()));
    assert_conflict(store.enable_mfa(u.id, 101, &[], t1).await, "mfa_not_pending");
    assert_conflict(store.put_pending_mfa(u.id, &[9], 3, t1).await, "mfa_already_enabled");
    assert_eq!(store.get_mfa(u.id).await.unwrap(), Some(enabled));

    // The enabling code's step is spent; only later steps pass, each once.
    for (step, ok) in [(100, false), (99, false), (101, true), (101, false), (103, true), (102, false), (104, true)] {
        assert_eq!(store.consume_totp_step(u.id, step).await.unwrap(), ok, "step {step}");
    }
    assert_eq!(store.get_mfa(u.id).await.unwrap().unwrap().last_step, Some(104));

    assert_eq!(store.unused_recovery_codes(u.id).await.unwrap(), 3);
    assert!(store.consume_recovery_code(u.id, &codes[1], t1).await.unwrap());
    assert!(!store.consume_recovery_code(u.id, &codes[1], t1).await.unwrap());
    assert!(!store.consume_recovery_code(u.id, "not-a-code", t1).await.unwrap());
    let other = mfa_user(store, 1, &[]).await;
    assert!(!store.consume_recovery_code(other.id, &codes[0], t1).await.unwrap());
    assert_eq!(store.unused_recovery_codes(u.id).await.unwrap(), 2);

    assert!(store.disable_mfa(u.id).await.unwrap());
    assert_eq!(store.get_mfa(u.id).await.unwrap(), None);
    assert_eq!(store.unused_recovery_codes(u.id).await.unwrap(), 0);
    assert!(!store.consume_recovery_code(u.id, &codes[0], t1).await.unwrap());
    assert!(!store.disable_mfa(u.id).await.unwrap());
    // Set up afresh: the old codes are gone for good.
    store.put_pending_mfa(u.id, &[3], 1, t1).await.unwrap();
    store.enable_mfa(u.id, 5, &codes[..1], t1).await.unwrap();
    assert_eq!(store.unused_recovery_codes(u.id).await.unwrap(), 1);
    assert!(store.get_mfa(other.id).await.unwrap().is_some());
}

pub async fn mfa_totp_step_under_concurrency(store: &dyn Store) {
    let u = mfa_user(store, 10, &[]).await;
    for step in [11, 12, 13] {
        let results = join_all((0..8).map(|_| store.consume_totp_step(u.id, step)).collect()).await;
        let wins = results.into_iter().filter(|r| *r.as_ref().unwrap()).count();
        assert_eq!(wins, 1, "step {step}");
    }
    // Racing steps: the highest always ends up stored, older ones never after it.
    let results = join_all((20..28).rev().map(|s| store.consume_totp_step(u.id, s)).collect()).await;
    assert!(results[0].as_ref().unwrap(), "the first, highest step always passes");
    assert_eq!(store.get_mfa(u.id).await.unwrap().unwrap().last_step, Some(27));
}

pub async fn mfa_recovery_code_under_concurrency(store: &dyn Store) {
    let codes = vec!["only-code".to_owned(), "spare".to_owned()];
    let u = mfa_user(store, 1, &codes).await;
    let t0 = now();
    let results = join_all((0..8).map(|_| store.consume_recovery_code(u.id, &codes[0], t0)).collect()).await;
    assert_eq!(results.into_iter().filter(|r| *r.as_ref().unwrap()).count(), 1);
    assert_eq!(store.unused_recovery_codes(u.id).await.unwrap(), 1);
}

pub async fn mfa_enable_under_concurrency(store: &dyn Store) {
    let u = user();
    store.create_user(&u).await.unwrap();
    let t0 = now();
    store.put_pending_mfa(u.id, &[1], 1, t0).await.unwrap();
    let code_sets: Vec<Vec<String>> = (0..8).map(|n| vec![format!("set{n}-a"), format!("set{n}-b")]).collect();
    let results =
        join_all(code_sets.iter().enumerate().map(|(n, c)| store.enable_mfa(u.id, 50 + n as i64, c, t0)).collect())
            .await;
    let mut winner = None;
    for (n, r) in results.into_iter().enumerate() {
        if ok_or_conflict(r, "mfa_not_pending") {
            assert!(winner.replace(n).is_none(), "two enables won");
        }
    }
    let n = winner.unwrap();
    assert_eq!(store.get_mfa(u.id).await.unwrap().unwrap().last_step, Some(50 + n as i64));
    // Only the winner's codes are stored.
    assert_eq!(store.unused_recovery_codes(u.id).await.unwrap(), 2);
    assert!(store.consume_recovery_code(u.id, &code_sets[n][0], t0).await.unwrap());
}

pub async fn mfa_rewrap_and_list_all(store: &dyn Store) {
    let u = mfa_user(store, 1, &[]).await;
    let pending = user();
    store.create_user(&pending).await.unwrap();
    store.put_pending_mfa(pending.id, &[4, 4], 1, now()).await.unwrap();
    let all = store.list_all_mfa_secrets().await.unwrap();
    for id in [u.id, pending.id] {
        assert!(all.iter().any(|m| m.user_id == id));
    }
    store.rewrap_mfa_secret(u.id, &[9, 9, 9, 9], 2).await.unwrap();
    let m = store.get_mfa(u.id).await.unwrap().unwrap();
    assert_eq!((m.secret_enc, m.master_key_version, m.last_step), (vec![9, 9, 9, 9], 2, Some(1)));
    assert!(m.enabled_at.is_some());
    assert_not_found(store.rewrap_mfa_secret(UserId::new(), &[1], 2).await);
}

// ---- webhooks --------------------------------------------------------------------

pub fn webhook(app: &AppRecord, events: &[&str]) -> WebhookRecord {
    WebhookRecord {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: app.tenant_id,
        app_id: app.id,
        url: format!("https://hooks.example.test/{}", unique()),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        secret_enc: vec![5, 6, 7],
        master_key_version: 1,
        created_at: now(),
        updated_at: now(),
    }
}

pub async fn webhooks_crud_and_scoping(store: &dyn Store) {
    let a = doc_app(store).await;
    let sibling = app(a.tenant_id, PlanId::Pro);
    store.create_app(&sibling, None, &[]).await.unwrap();
    let stranger = doc_app(store).await;

    let w1 = webhook(&a, &["document.updated", "app.deleted"]);
    let w2 = webhook(&a, &["*"]);
    let w3 = webhook(&sibling, &[]);
    for w in [&w1, &w2, &w3] {
        store.create_webhook(w).await.unwrap();
    }
    // The app must exist and belong to the tenant.
    assert_not_found(store.create_webhook(&WebhookRecord { tenant_id: stranger.tenant_id, ..webhook(&a, &[]) }).await);
    assert_not_found(store.create_webhook(&WebhookRecord { app_id: AppId::new(), ..webhook(&a, &[]) }).await);

    assert_eq!(store.get_webhook(a.tenant_id, a.id, &w1.id).await.unwrap(), Some(w1.clone()));
    assert_eq!(store.get_webhook(stranger.tenant_id, a.id, &w1.id).await.unwrap(), None);
    assert_eq!(store.get_webhook(a.tenant_id, sibling.id, &w1.id).await.unwrap(), None);
    let first = store.list_webhooks(a.id, None, 1).await.unwrap();
    assert_eq!((first.items.clone(), first.next_after.clone()), (vec![w1.clone()], Some(w1.id.clone())));
    let rest = store.list_webhooks(a.id, first.next_after.as_deref(), 5).await.unwrap();
    assert_eq!((rest.items, rest.next_after), (vec![w2.clone()], None));
    assert_eq!(store.webhooks_for_tenant(a.tenant_id).await.unwrap(), vec![w1.clone(), w2.clone(), w3.clone()]);
    assert_eq!(store.webhooks_for_tenant(TenantId::new()).await.unwrap(), vec![]);

    let t1 = now() + Duration::minutes(1);
    let changed = WebhookRecord {
        url: "https://elsewhere.example.test/hook".to_owned(),
        events: vec!["member.joined".to_owned()],
        updated_at: t1,
        // Neither the secret nor created_at is changed by an update.
        secret_enc: vec![0],
        created_at: t1,
        ..w1.clone()
    };
    store.update_webhook(&changed).await.unwrap();
    let stored = WebhookRecord { secret_enc: w1.secret_enc.clone(), created_at: w1.created_at, ..changed.clone() };
    assert_eq!(store.get_webhook(a.tenant_id, a.id, &w1.id).await.unwrap(), Some(stored.clone()));
    assert_not_found(store.update_webhook(&WebhookRecord { tenant_id: stranger.tenant_id, ..changed.clone() }).await);

    store.set_webhook_secret(&w1.id, &[8, 8], 2, t1 + Duration::minutes(1)).await.unwrap();
    let rotated = store.get_webhook(a.tenant_id, a.id, &w1.id).await.unwrap().unwrap();
    assert_eq!((rotated.secret_enc, rotated.master_key_version), (vec![8, 8], 2));
    assert_eq!(rotated.updated_at, t1 + Duration::minutes(1));
    assert_not_found(store.set_webhook_secret("no-such-hook", &[1], 1, t1).await);

    assert!(store.list_all_webhook_secrets().await.unwrap().iter().any(|w| w.id == w2.id));
    store.rewrap_webhook_secret(&w2.id, &[4, 3, 2, 1], 3).await.unwrap();
    let rewrapped = store.get_webhook(a.tenant_id, a.id, &w2.id).await.unwrap().unwrap();
    assert_eq!(rewrapped, WebhookRecord { secret_enc: vec![4, 3, 2, 1], master_key_version: 3, ..w2.clone() });
    assert_not_found(store.rewrap_webhook_secret("no-such-hook", &[1], 1).await);

    assert!(!store.delete_webhook(stranger.tenant_id, a.id, &w2.id).await.unwrap());
    assert!(store.delete_webhook(a.tenant_id, a.id, &w2.id).await.unwrap());
    assert!(!store.delete_webhook(a.tenant_id, a.id, &w2.id).await.unwrap());
    // Deleting the app deletes its webhooks.
    store.delete_app(a.tenant_id, a.id, &[]).await.unwrap();
    assert_eq!(store.webhooks_for_tenant(a.tenant_id).await.unwrap(), vec![w3.clone()]);
    assert!(store.delete_webhook(a.tenant_id, sibling.id, &w3.id).await.unwrap());
}

pub fn job(hook: &WebhookRecord, event_id: &str, due: OffsetDateTime) -> WebhookJobRecord {
    WebhookJobRecord {
        id: uuid::Uuid::now_v7().to_string(),
        event_id: event_id.to_owned(),
        webhook_id: hook.id.clone(),
        tenant_id: hook.tenant_id,
        event_type: "app.updated".to_owned(),
        payload: format!(r#"{{"id":"{event_id}","type":"app.updated","data":{{}}}}"#),
        attempt: 0,
        status: JobStatus::Pending,
        next_attempt_at: due,
        locked_until: None,
        created_at: due,
        updated_at: due,
    }
}

fn attempt(at: OffsetDateTime, status_code: Option<u16>, error: Option<&str>) -> DeliveryRecord {
    DeliveryRecord {
        seq: 0,
        webhook_id: String::new(),
        job_id: String::new(),
        event_id: String::new(),
        event_type: String::new(),
        attempt: 0,
        at,
        status_code,
        latency_ms: 42,
        error: error.map(str::to_owned),
    }
}

/// Outbox tests delete their webhooks (and so their jobs) at the end: a
/// claim takes every due job in the database.
pub async fn webhook_outbox_lifecycle(store: &dyn Store) {
    let a = doc_app(store).await;
    let (hook, other) = (webhook(&a, &["*"]), webhook(&a, &["*"]));
    store.create_webhook(&hook).await.unwrap();
    store.create_webhook(&other).await.unwrap();
    let t0 = now();
    let event = unique();
    let (j1, j2) = (job(&hook, &event, t0), job(&other, &event, t0));
    let later = job(&hook, &unique(), t0 + Duration::minutes(10));
    let orphan = WebhookJobRecord { webhook_id: "deleted-hook".to_owned(), ..job(&hook, &unique(), t0) };
    assert_eq!(store.enqueue_webhook_jobs(&[j1.clone(), j2.clone(), later.clone(), orphan.clone()]).await.unwrap(), 3);
    // Idempotent per (event, webhook), whatever the job id.
    let twin = WebhookJobRecord { id: uuid::Uuid::now_v7().to_string(), ..j1.clone() };
    assert_eq!(store.enqueue_webhook_jobs(&[twin.clone(), j1.clone()]).await.unwrap(), 0);
    assert_eq!(store.enqueue_webhook_jobs(&[]).await.unwrap(), 0);
    assert_eq!(store.get_webhook_job(&twin.id).await.unwrap(), None);
    assert_eq!(store.get_webhook_job(&orphan.id).await.unwrap(), None);
    assert_eq!(store.get_webhook_job(&j1.id).await.unwrap(), Some(j1.clone()));

    // Due jobs are leased once.
    let lease = t0 + Duration::seconds(30);
    let claimed = store.claim_webhook_jobs(t0, lease, 10).await.unwrap();
    let mut want = [j1.clone(), j2.clone()];
    want.sort_by(|x, y| x.id.cmp(&y.id));
    let leased: Vec<_> = want.iter().map(|j| WebhookJobRecord { locked_until: Some(lease), ..j.clone() }).collect();
    assert_eq!(claimed, leased);
    assert_eq!(store.claim_webhook_jobs(t0, lease, 10).await.unwrap(), vec![]);
    // A lease that runs out frees the job (its claimer crashed).
    let reclaimed = store.claim_webhook_jobs(lease, lease + Duration::seconds(30), 1).await.unwrap();
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].id, want[0].id);
    let rest = store.claim_webhook_jobs(lease, lease + Duration::seconds(30), 10).await.unwrap();
    assert_eq!(rest.iter().map(|j| &j.id).collect::<Vec<_>>(), vec![&want[1].id]);

    // A failed attempt: retried later, lease cleared, delivery logged.
    let retry_at = t0 + Duration::minutes(1);
    store
        .finish_webhook_attempt(&j1.id, &attempt(t0, Some(503), Some("status 503")), JobNext::Retry { at: retry_at })
        .await
        .unwrap();
    let after = store.get_webhook_job(&j1.id).await.unwrap().unwrap();
    assert_eq!(
        after,
        WebhookJobRecord { attempt: 1, next_attempt_at: retry_at, locked_until: None, updated_at: t0, ..j1.clone() }
    );
    assert_eq!(store.claim_webhook_jobs(retry_at - Duration::seconds(1), retry_at, 10).await.unwrap().len(), 0);
    let again = store.claim_webhook_jobs(retry_at, retry_at + Duration::seconds(30), 10).await.unwrap();
    assert!(again.iter().any(|j| j.id == j1.id));
    store.finish_webhook_attempt(&j1.id, &attempt(retry_at, Some(204), None), JobNext::Delivered).await.unwrap();
    let done = store.get_webhook_job(&j1.id).await.unwrap().unwrap();
    assert_eq!((done.status, done.attempt, done.locked_until), (JobStatus::Delivered, 2, None));
    assert_conflict(
        store.finish_webhook_attempt(&j1.id, &attempt(retry_at, None, None), JobNext::Failed).await,
        "job_not_pending",
    );
    assert_not_found(store.finish_webhook_attempt("no-such-job", &attempt(t0, None, None), JobNext::Failed).await);
    store.finish_webhook_attempt(&j2.id, &attempt(t0, None, Some("timeout")), JobNext::Failed).await.unwrap();
    assert_eq!(store.get_webhook_job(&j2.id).await.unwrap().unwrap().status, JobStatus::Failed);
    // Finished jobs are never claimed again; the later one comes when due.
    let due = store
        .claim_webhook_jobs(later.next_attempt_at, later.next_attempt_at + Duration::minutes(1), 10)
        .await
        .unwrap();
    assert_eq!(due.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), vec![later.id.as_str()]);

    // Deliveries, newest first, with the job's facts.
    let log = store.list_webhook_deliveries(&hook.id, None, 10).await.unwrap();
    assert_eq!(log.next_after, None);
    let summary: Vec<_> = log.items.iter().map(|d| (d.attempt, d.at, d.status_code, d.error.as_deref())).collect();
    assert_eq!(summary, vec![(2, retry_at, Some(204), None), (1, t0, Some(503), Some("status 503"))]);
    for d in &log.items {
        assert_eq!(
            (d.webhook_id.as_str(), d.job_id.as_str(), d.event_id.as_str()),
            (hook.id.as_str(), j1.id.as_str(), event.as_str())
        );
        assert_eq!((d.event_type.as_str(), d.latency_ms), ("app.updated", 42));
    }
    let first = store.list_webhook_deliveries(&hook.id, None, 1).await.unwrap();
    assert_eq!(first.items, log.items[..1].to_vec());
    let before = first.next_after.unwrap().parse::<i64>().unwrap();
    assert_eq!(store.list_webhook_deliveries(&hook.id, Some(before), 1).await.unwrap().items, log.items[1..].to_vec());
    assert_eq!(store.list_webhook_deliveries(&other.id, None, 10).await.unwrap().items.len(), 1);

    // Deleting a webhook deletes its jobs and deliveries.
    for h in [&hook, &other] {
        assert!(store.delete_webhook(a.tenant_id, a.id, &h.id).await.unwrap());
    }
    assert_eq!(store.get_webhook_job(&later.id).await.unwrap(), None);
    assert_eq!(store.list_webhook_deliveries(&hook.id, None, 10).await.unwrap().items, vec![]);
}

pub async fn webhook_enqueue_under_concurrency(store: &dyn Store) {
    let a = doc_app(store).await;
    let hooks: Vec<_> = (0..3).map(|_| webhook(&a, &["*"])).collect();
    for h in &hooks {
        store.create_webhook(h).await.unwrap();
    }
    let t0 = now();
    let events: Vec<_> = (0..4).map(|_| unique()).collect();
    // Four dispatchers enqueue the same events, in different orders.
    let batches: Vec<Vec<WebhookJobRecord>> = (0..4)
        .map(|n| {
            let mut batch: Vec<_> =
                events.iter().flat_map(|e| hooks.iter().map(move |h| job(h, e, t0 + Duration::days(1)))).collect();
            if n % 2 == 1 {
                batch.reverse();
            }
            batch
        })
        .collect();
    let results = join_all(batches.iter().map(|b| store.enqueue_webhook_jobs(b)).collect()).await;
    let added: u64 = results.into_iter().map(|r| r.unwrap()).sum();
    assert_eq!(added, 12);
    for h in &hooks {
        assert!(store.delete_webhook(a.tenant_id, a.id, &h.id).await.unwrap());
    }
}

pub async fn webhook_claims_under_concurrency(store: &dyn Store) {
    let a = doc_app(store).await;
    let hook = webhook(&a, &["*"]);
    store.create_webhook(&hook).await.unwrap();
    let t0 = now();
    let jobs: Vec<_> = (0..24).map(|_| job(&hook, &unique(), t0)).collect();
    assert_eq!(store.enqueue_webhook_jobs(&jobs).await.unwrap(), 24);
    let lease = t0 + Duration::minutes(1);
    let claims = join_all((0..4).map(|_| store.claim_webhook_jobs(t0, lease, 8)).collect()).await;
    let mut seen = std::collections::HashSet::new();
    for claim in claims {
        for j in claim.unwrap() {
            assert!(seen.insert(j.id.clone()), "job {} claimed twice", j.id);
        }
    }
    // Whatever the race left is still there for the next claim.
    for j in store.claim_webhook_jobs(t0, lease, 100).await.unwrap() {
        assert!(seen.insert(j.id.clone()), "job {} claimed twice", j.id);
    }
    assert_eq!(seen.len(), 24);
    assert!(store.delete_webhook(a.tenant_id, a.id, &hook.id).await.unwrap());
}

pub async fn nodes_register_heartbeat_and_drain(store: &dyn Store) {
    let t0 = now();
    let id = format!("node-{}", unique());
    let beat = |instance: &str, connections: i64| NodeHeartbeat {
        id: id.clone(),
        region: "eu-central-1".into(),
        url: "http://10.0.0.7:8080".into(),
        instance: instance.into(),
        started_at: t0,
        connections,
        documents: 2,
    };
    assert!(store.get_node(&id).await.unwrap().is_none());
    assert!(store.set_node_draining(&id, true).await.unwrap().is_none(), "an unknown node cannot drain");
    let n = store.node_heartbeat(&beat("a", 3), t0).await.unwrap();
    assert_eq!(
        (n.id.as_str(), n.region.as_str(), n.draining, n.connections, n.documents),
        (id.as_str(), "eu-central-1", false, 3, 2)
    );
    assert_eq!(n.last_heartbeat_at, t0);
    // Drained, it stays drained across the same process's heartbeats...
    assert!(store.set_node_draining(&id, true).await.unwrap().unwrap().draining);
    let n = store.node_heartbeat(&beat("a", 0), t0 + Duration::seconds(5)).await.unwrap();
    assert!(n.draining);
    assert_eq!((n.connections, n.last_heartbeat_at), (0, t0 + Duration::seconds(5)));
    assert_eq!(store.get_node(&id).await.unwrap().unwrap(), n);
    // ...until undrained, or until it restarts (a new instance comes back up).
    let n = store.node_heartbeat(&beat("b", 1), t0 + Duration::seconds(60)).await.unwrap();
    assert!(!n.draining);
    assert_eq!(n.instance, "b");
    assert!(store.set_node_draining(&id, true).await.unwrap().unwrap().draining);
    assert!(!store.set_node_draining(&id, false).await.unwrap().unwrap().draining);
    // Listed by id, in pages.
    let other = NodeHeartbeat { id: format!("{id}-2"), ..beat("c", 0) };
    store.node_heartbeat(&other, t0).await.unwrap();
    let page = store.list_nodes(Some(&id[..id.len() - 1]), 1).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, id);
    let rest = store.list_nodes(page.next_after.as_deref(), 10).await.unwrap();
    assert!(rest.items.iter().any(|n| n.id == other.id));
    assert!(rest.items.iter().all(|n| n.id > id));
}

/// Two months of simulated use, a purge each day: what expired (or, for
/// what is shown a while, aged past the retention) is gone, the rest
/// stays, so every table holds a window of rows however long it runs.
pub async fn purge_keeps_tables_bounded_over_two_months(store: &dyn Store) {
    let retention = Duration::days(30);
    let t0 = now();
    let (owner, t, _) = owner_with_tenant(store).await;
    let a = app(t.id, PlanId::Pro);
    store.create_app(&a, None, &[]).await.unwrap();
    let hook = webhook(&a, &["*"]);
    store.create_webhook(&hook).await.unwrap();
    let u = user();
    store.create_user(&u).await.unwrap();
    let mut days = Vec::new();
    let mut purged = crate::PurgeReport::default();
    for d in 0..60 {
        let at = t0 + Duration::days(d);
        let session = SessionRecord {
            token_hash: unique(),
            user_id: u.id,
            created_at: at,
            expires_at: at + Duration::hours(12),
            family_id: None,
        };
        store.create_session(&session).await.unwrap();
        store.create_password_reset(&reset(u.id, at + Duration::minutes(30))).await.unwrap();
        let inv = invite(t.id, owner.id, "viewer", at + Duration::days(7));
        store.create_invite(&inv).await.unwrap();
        let token = refresh(RefreshKind::User, &u.id.to_string(), FamilyId::new(), at + Duration::days(30));
        store.insert_refresh_token(&token).await.unwrap();
        let j = job(&hook, &unique(), at);
        store.enqueue_webhook_jobs(std::slice::from_ref(&j)).await.unwrap();
        let claimed = store.claim_webhook_jobs(at, at + Duration::minutes(1), 10).await.unwrap();
        for c in &claimed {
            store.finish_webhook_attempt(&c.id, &attempt(at, Some(200), None), JobNext::Delivered).await.unwrap();
        }
        // The purge of the day, an hour later.
        let report = store.purge_expired(at + Duration::hours(13), retention).await.unwrap();
        for (sum, n) in [
            (&mut purged.sessions, report.sessions),
            (&mut purged.password_resets, report.password_resets),
            (&mut purged.invites, report.invites),
            (&mut purged.refresh_tokens, report.refresh_tokens),
            (&mut purged.webhook_jobs, report.webhook_jobs),
            (&mut purged.webhook_deliveries, report.webhook_deliveries),
        ] {
            *sum += n;
        }
        days.push((at, session, inv, token, j));
    }
    let end = t0 + Duration::days(59) + Duration::hours(13);
    for (at, session, inv, token, j) in &days {
        // Sessions last 12 h: none survives its day's purge.
        assert_eq!(store.get_session(&session.token_hash).await.unwrap(), None);
        // Invites: kept for the retention after they expire (7 days).
        let invite_kept = *at + Duration::days(7) > end - retention;
        assert_eq!(store.get_invite_by_token(&inv.token_hash).await.unwrap().is_some(), invite_kept, "invite of {at}");
        // Refresh tokens: until they expire (30 days).
        let token_kept = *at + Duration::days(30) > end;
        assert_eq!(store.get_refresh_token(&token.token_hash).await.unwrap().is_some(), token_kept, "token of {at}");
        // Finished jobs: for the retention.
        let job_kept = *at > end - retention;
        assert_eq!(store.get_webhook_job(&j.id).await.unwrap().is_some(), job_kept, "job of {at}");
    }
    // The delivery log keeps the retention's worth.
    let log = store.list_webhook_deliveries(&hook.id, None, 500).await.unwrap().items;
    assert!(log.iter().all(|l| l.at > end - retention));
    assert_eq!(log.len(), 30);
    // And the counts agree: everything of this test's that went was counted.
    assert!(purged.sessions >= 60 && purged.password_resets >= 60, "{purged:?}");
    assert!(purged.invites >= 22 && purged.refresh_tokens >= 29, "{purged:?}");
    assert!(purged.webhook_jobs >= 29 && purged.webhook_deliveries >= 29, "{purged:?}");
}

/// An outbox row as a route builds one.
pub fn outbox_event(tenant: TenantId, app: Option<AppId>, kind: &str) -> OutboxEvent {
    let id = uuid::Uuid::now_v7().to_string();
    OutboxEvent {
        payload: format!(r#"{{"id":"{id}","type":"{kind}","data":{{}}}}"#),
        id,
        tenant_id: tenant,
        app_id: app,
        event_type: kind.to_owned(),
        created_at: now(),
    }
}

/// Which of `events` the outbox holds (other tests may have rows of their own).
async fn in_outbox(store: &dyn Store, events: &[&OutboxEvent]) -> Vec<OutboxEvent> {
    let all = store.pending_events(1000).await.unwrap();
    all.into_iter().filter(|e| events.iter().any(|o| o.id == e.id)).collect()
}

/// Every method that takes `events` stores them in the transaction of its
/// change: with it when it commits, not at all when it is refused.
pub async fn events_commit_with_their_change_or_not_at_all(store: &dyn Store) {
    let (owner, t, k1) = owner_with_tenant(store).await;
    let t0 = now();
    let ev = |kind: &str, app: Option<AppId>| outbox_event(t.id, app, kind);

    // Changes that commit carry their events.
    let free = app(t.id, PlanId::Free);
    let created = ev("app.created", Some(free.id));
    store.create_app(&free, None, std::slice::from_ref(&created)).await.unwrap();
    let edited = AppRecord { name: "renamed".to_owned(), ..free.clone() };
    let updated = ev("app.updated", Some(free.id));
    store.update_app(&edited, std::slice::from_ref(&updated)).await.unwrap();
    let rotated_secret = ev("app.secret_rotated", Some(free.id));
    store.set_app_secret(free.id, &"b".repeat(64), t0, std::slice::from_ref(&rotated_secret)).await.unwrap();
    let k2 = key(t.id, t0);
    let rotated = ev("key.rotated", None);
    store.rotate_signing_key(t.id, &k2, t0 + Duration::minutes(30), std::slice::from_ref(&rotated)).await.unwrap();
    let revoked = ev("key.revoked", None);
    store.revoke_signing_key(t.id, &k1.kid, t0, None, std::slice::from_ref(&revoked)).await.unwrap();
    let viewer = member(store, t.id, "viewer").await;
    let promoted = ev("member.role_changed", None);
    store.set_member_role(t.id, viewer.id, "editor", std::slice::from_ref(&promoted)).await.unwrap();
    let removed = ev("member.removed", None);
    store.remove_membership(t.id, viewer.id, std::slice::from_ref(&removed)).await.unwrap();
    let inv = invite(t.id, owner.id, "viewer", t0 + Duration::days(1));
    store.create_invite(&inv).await.unwrap();
    let joiner = user();
    let joined = ev("member.joined", None);
    store
        .accept_invite(&inv.token_hash, InviteAcceptor::NewUser(&joiner), None, t0, std::slice::from_ref(&joined))
        .await
        .unwrap();
    let dk = doc_key(free.id, "doc");
    append_one(store, &dk, &update("x", 1), t0).await;
    let doc_deleted = ev("document.deleted", Some(free.id));
    assert!(store.delete_doc(&dk, std::slice::from_ref(&doc_deleted)).await.unwrap());
    let deleted = ev("app.deleted", Some(free.id));
    store.delete_app(t.id, free.id, std::slice::from_ref(&deleted)).await.unwrap();
    let committed =
        [&created, &updated, &rotated_secret, &rotated, &revoked, &promoted, &removed, &joined, &doc_deleted, &deleted];
    let stored = in_outbox(store, &committed).await;
    assert_eq!(stored, committed.iter().map(|e| (*e).clone()).collect::<Vec<_>>(), "in creation order, as written");

    // Refused changes store nothing, also when the refusal comes late in
    // the transaction (after the change's first statement ran).
    let other_free = app(t.id, PlanId::Free);
    let mut refused = Vec::new();
    let e = ev("app.created", Some(other_free.id));
    store.create_app(&other_free, None, &[]).await.unwrap();
    assert_conflict(
        store.create_app(&app(t.id, PlanId::Free), None, std::slice::from_ref(&e)).await,
        "free_plan_limit",
    );
    refused.push(e);
    let e = ev("app.updated", None);
    assert_not_found(store.update_app(&app(t.id, PlanId::Pro), std::slice::from_ref(&e)).await);
    refused.push(e);
    let e = ev("app.deleted", None);
    assert_not_found(store.delete_app(t.id, AppId::new(), std::slice::from_ref(&e)).await);
    refused.push(e);
    let e = ev("app.secret_rotated", None);
    assert_not_found(store.set_app_secret(AppId::new(), &"c".repeat(64), t0, std::slice::from_ref(&e)).await);
    refused.push(e);
    let e = ev("member.role_changed", None);
    assert_conflict(
        store.set_member_role(t.id, owner.id, "viewer", std::slice::from_ref(&e)).await,
        "last_super_admin",
    );
    refused.push(e);
    let e = ev("member.removed", None);
    assert_conflict(store.remove_membership(t.id, owner.id, std::slice::from_ref(&e)).await, "last_super_admin");
    refused.push(e);
    let e = ev("member.joined", None);
    let late = user();
    let used = store.accept_invite(&inv.token_hash, InviteAcceptor::NewUser(&late), None, t0, std::slice::from_ref(&e));
    assert_conflict(used.await, "invalid_token");
    refused.push(e);
    let e = ev("key.rotated", None);
    let taken = key(t.id, t0);
    let taken = SigningKeyRecord { kid: k2.kid.clone(), ..taken };
    assert_conflict(store.rotate_signing_key(t.id, &taken, t0, std::slice::from_ref(&e)).await, "kid_taken");
    refused.push(e);
    // Revoking a revoked key changes nothing, so reports nothing.
    let e = ev("key.revoked", None);
    store.revoke_signing_key(t.id, &k1.kid, t0, None, std::slice::from_ref(&e)).await.unwrap();
    refused.push(e);
    let e = ev("document.deleted", None);
    assert!(!store.delete_doc(&doc_key(other_free.id, "never"), std::slice::from_ref(&e)).await.unwrap());
    refused.push(e);
    assert_eq!(in_outbox(store, &refused.iter().collect::<Vec<_>>()).await, vec![]);
    // The refused rotation left the key set as it was.
    assert_eq!(active_keys(store, t.id).await.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(), vec![k2.kid.clone()]);

    for e in committed {
        store.fan_out_event(&e.id, &[]).await.unwrap();
    }
    assert_eq!(in_outbox(store, &committed).await, vec![]);
}

/// Fanning an event out enqueues its jobs and removes it in one step; a
/// second fan-out of the same event (another process, or a retry after a
/// crash) adds nothing.
pub async fn events_fan_out_once(store: &dyn Store) {
    let a = doc_app(store).await;
    let hook = webhook(&a, &["*"]);
    store.create_webhook(&hook).await.unwrap();
    let solo = outbox_event(a.tenant_id, Some(a.id), "app.updated");
    store.insert_events(std::slice::from_ref(&solo)).await.unwrap();
    store.insert_events(&[]).await.unwrap();
    assert_eq!(in_outbox(store, &[&solo]).await, vec![solo.clone()]);
    let first = job(&hook, &solo.id, solo.created_at);
    assert_eq!(store.fan_out_event(&solo.id, std::slice::from_ref(&first)).await.unwrap(), 1);
    assert_eq!(in_outbox(store, &[&solo]).await, vec![]);
    let again = job(&hook, &solo.id, solo.created_at);
    assert_eq!(store.fan_out_event(&solo.id, std::slice::from_ref(&again)).await.unwrap(), 0);
    assert_eq!(store.get_webhook_job(&first.id).await.unwrap().map(|j| j.event_id), Some(solo.id.clone()));
    assert_eq!(store.get_webhook_job(&again.id).await.unwrap(), None);
    // The outbox answers oldest first, whatever order rows were written in.
    let (e1, e2) = (outbox_event(a.tenant_id, None, "key.rotated"), outbox_event(a.tenant_id, None, "key.revoked"));
    store.insert_events(&[e2.clone(), e1.clone()]).await.unwrap();
    let mut want = vec![e1.clone(), e2.clone()];
    want.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(in_outbox(store, &[&e1, &e2]).await, want);
    for e in [&e1, &e2] {
        store.fan_out_event(&e.id, &[]).await.unwrap();
    }
    assert!(store.delete_webhook(a.tenant_id, a.id, &hook.id).await.unwrap());
}
