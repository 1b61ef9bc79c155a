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
    AppRecord, AuditRecord, DocKey, DocRecord, DocState, InvoiceRecord, RefreshKind, RefreshTokenRecord, RotateOutcome,
    SessionRecord, SigningKeyRecord, Store, StoreError, TenantRecord, UserRecord,
};
use domain::ids::{AppId, FamilyId, InvoiceId, TenantId, UserId};
use domain::keys::KeyState;
use domain::plan::PlanId;
use domain::proration::InvoiceLine;
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
async fn doc_app(store: &dyn Store) -> AppRecord {
    let (_, t, _) = owner_with_tenant(store).await;
    let a = app(t.id, PlanId::Pro);
    store.create_app(&a, None).await.unwrap();
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
    store.rotate_signing_key(t.id, &k2, grace_end).await.unwrap();

    let keys = store.list_signing_keys(t.id).await.unwrap();
    let retired_k1 = SigningKeyRecord { state: KeyState::Retiring, retires_at: Some(grace_end), ..k1.clone() };
    assert_eq!(keys, vec![k2.clone(), retired_k1.clone()]);
    assert_eq!(store.get_signing_key(&k1.kid).await.unwrap(), Some(retired_k1.clone()));
    assert_eq!(store.get_signing_key("no-such-kid").await.unwrap(), None);

    // Rotating again retires k2 only; k1 keeps its own grace end.
    let k3 = key(t.id, now() + Duration::seconds(1));
    let later = grace_end + Duration::minutes(5);
    store.rotate_signing_key(t.id, &k3, later).await.unwrap();
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
    assert_conflict(store.rotate_signing_key(t.id, &k3, later).await, "kid_taken");
    assert_eq!(store.get_signing_key(&k3.kid).await.unwrap().unwrap().state, KeyState::Active);
}

pub async fn signing_key_revocation(store: &dyn Store) {
    let (_, t, k1) = owner_with_tenant(store).await;
    let (_, other, _) = owner_with_tenant(store).await;
    let at = now();

    // Revoking the active key with a replacement.
    let k2 = key(t.id, at);
    store.revoke_signing_key(t.id, &k1.kid, at, Some(&k2)).await.unwrap();
    let revoked = store.get_signing_key(&k1.kid).await.unwrap().unwrap();
    assert_eq!((revoked.state, revoked.revoked_at), (KeyState::Revoked, Some(at)));
    assert_eq!(store.get_signing_key(&k2.kid).await.unwrap(), Some(k2.clone()));

    // Again: a no-op, and the replacement is not stored.
    let k3 = key(t.id, at);
    store.revoke_signing_key(t.id, &k1.kid, at + Duration::hours(1), Some(&k3)).await.unwrap();
    assert_eq!(store.get_signing_key(&k1.kid).await.unwrap(), Some(revoked));
    assert_eq!(store.get_signing_key(&k3.kid).await.unwrap(), None);

    // Unknown kid, or another tenant's key: NotFound, nothing changes.
    assert_not_found(store.revoke_signing_key(t.id, "no-such-kid", at, None).await);
    assert_not_found(store.revoke_signing_key(other.id, &k2.kid, at, None).await);
    assert_eq!(store.get_signing_key(&k2.kid).await.unwrap().unwrap().state, KeyState::Active);

    // A retiring key can be revoked without a replacement.
    let k4 = key(t.id, at);
    store.rotate_signing_key(t.id, &k4, at + Duration::minutes(30)).await.unwrap();
    store.revoke_signing_key(t.id, &k2.kid, at, None).await.unwrap();
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
    let results = join_all(new_keys.iter().map(|k| store.rotate_signing_key(t.id, k, grace_end)).collect()).await;
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
        racing.push(Box::pin(async move { (true, store.rotate_signing_key(t.id, rotation, grace_end).await) }));
        racing.push(Box::pin(async move {
            (false, store.revoke_signing_key(t.id, &current.kid, at, Some(replacement)).await)
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
    store.rotate_signing_key(t.id, &k2, at + Duration::minutes(30)).await.unwrap();
    let stale_replacement = key(t.id, at);
    store.revoke_signing_key(t.id, &k1.kid, at, Some(&stale_replacement)).await.unwrap();
    let revoked_k1 = store.get_signing_key(&k1.kid).await.unwrap().unwrap();
    assert_eq!((revoked_k1.state, revoked_k1.revoked_at), (KeyState::Revoked, Some(at)));
    assert_eq!(store.get_signing_key(&stale_replacement.kid).await.unwrap(), None);
    assert_eq!(active_keys(store, t.id).await, vec![k2.clone()]);

    // Revoking the active key with a replacement: the replacement takes over.
    let k3 = key(t.id, at);
    store.revoke_signing_key(t.id, &k2.kid, at, Some(&k3)).await.unwrap();
    assert_eq!(active_keys(store, t.id).await, vec![k3.clone()]);
    let states: Vec<_> = store.list_signing_keys(t.id).await.unwrap().into_iter().map(|k| (k.kid, k.state)).collect();
    assert_eq!(
        states,
        vec![(k3.kid.clone(), KeyState::Active), (k2.kid, KeyState::Revoked), (k1.kid, KeyState::Revoked)]
    );

    // Without a replacement the tenant is left with no active key, and the
    // next rotation has nothing to retire.
    store.revoke_signing_key(t.id, &k3.kid, at, None).await.unwrap();
    assert_eq!(active_keys(store, t.id).await, vec![]);
    let k4 = key(t.id, at);
    store.rotate_signing_key(t.id, &k4, at + Duration::minutes(30)).await.unwrap();
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
    store.create_app(&a, None).await.unwrap();

    assert_eq!(store.get_app(t.id, a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_app(other.id, a.id).await.unwrap(), None);
    assert_eq!(store.get_app(t.id, AppId::new()).await.unwrap(), None);
    assert_eq!(store.get_app_by_id(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_app_by_client_id(&a.client_id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_app_by_client_id("ws_nope").await.unwrap(), None);

    let same_client = AppRecord { id: AppId::new(), ..a.clone() };
    assert_conflict(store.create_app(&same_client, None).await, "client_id_taken");

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
    store.update_app(&edited).await.unwrap();
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
    assert_not_found(store.update_app(&wrong_tenant).await);
    assert_not_found(store.update_app(&app(t.id, PlanId::Pro)).await);

    let rotated_at = stored.updated_at + Duration::seconds(5);
    store.set_app_secret(a.id, &"a".repeat(64), rotated_at).await.unwrap();
    let stored = store.get_app_by_id(a.id).await.unwrap().unwrap();
    assert_eq!(stored.client_secret_hash, "a".repeat(64));
    assert_eq!(stored.secret_rotated_at, Some(rotated_at));
    assert_not_found(store.set_app_secret(AppId::new(), "x", rotated_at).await);
}

pub async fn one_free_app_per_tenant(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let (_, other, _) = owner_with_tenant(store).await;
    let free = app(t.id, PlanId::Free);
    store.create_app(&free, None).await.unwrap();
    let second = app(t.id, PlanId::Free);
    assert_conflict(store.create_app(&second, None).await, "free_plan_limit");
    assert_eq!(store.get_app_by_id(second.id).await.unwrap(), None);
    // Paid apps and other tenants are unaffected.
    let paid = app(t.id, PlanId::Starter);
    store.create_app(&paid, None).await.unwrap();
    store.create_app(&app(other.id, PlanId::Free), None).await.unwrap();

    // Downgrading to free while a free app exists: refused, nothing stored.
    let inv = invoice(&paid, PlanId::Free);
    assert_conflict(store.change_app_plan(paid.id, PlanId::Starter, PlanId::Free, &inv).await, "free_plan_limit");
    assert_eq!(store.get_app_by_id(paid.id).await.unwrap().unwrap().plan, PlanId::Starter);
    assert_eq!(store.list_invoices(paid.id, None, 10).await.unwrap().items, vec![]);

    // Free → free is not a second free app.
    store.change_app_plan(free.id, PlanId::Free, PlanId::Free, &invoice(&free, PlanId::Free)).await.unwrap();

    // Once the free app is gone, another may take the slot.
    store.delete_app(t.id, free.id).await.unwrap();
    store.change_app_plan(paid.id, PlanId::Starter, PlanId::Free, &inv).await.unwrap();
    assert_eq!(store.get_app_by_id(paid.id).await.unwrap().unwrap().plan, PlanId::Free);
}

pub async fn one_free_app_under_concurrency(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let apps: Vec<_> = (0..8).map(|_| app(t.id, PlanId::Free)).collect();
    let results = join_all(apps.iter().map(|a| store.create_app(a, None)).collect()).await;
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
        store.create_app(a, None).await.unwrap();
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
    store.create_app(&a, Some(&first)).await.unwrap();
    assert_eq!(store.get_app_by_id(a.id).await.unwrap(), Some(a.clone()));
    let stored = InvoiceRecord { app_id: a.id, tenant_id: t.id, ..first.clone() };
    assert_eq!(store.list_invoices(a.id, None, 10).await.unwrap().items, vec![stored.clone()]);

    // Refused for the free-plan limit: neither the app nor its invoice.
    let free = app(t.id, PlanId::Free);
    store.create_app(&free, Some(&invoice(&free, PlanId::Free))).await.unwrap();
    assert_eq!(store.list_invoices(free.id, None, 10).await.unwrap().items.len(), 1);
    let second = app(t.id, PlanId::Free);
    assert_conflict(store.create_app(&second, Some(&invoice(&second, PlanId::Free))).await, "free_plan_limit");
    assert_eq!(store.get_app_by_id(second.id).await.unwrap(), None);
    assert_eq!(store.list_invoices(second.id, None, 10).await.unwrap().items, vec![]);

    // An invoice refused after the app went in takes the app with it.
    let third = app(t.id, PlanId::Starter);
    let clash = InvoiceRecord { id: first.id, ..invoice(&third, PlanId::Starter) };
    assert_conflict(store.create_app(&third, Some(&clash)).await, "conflict");
    assert_eq!(store.get_app_by_id(third.id).await.unwrap(), None);
    assert_eq!(store.get_app_by_client_id(&third.client_id).await.unwrap(), None);
    assert_eq!(store.list_invoices(a.id, None, 10).await.unwrap().items, vec![stored]);
    store.create_app(&third, None).await.unwrap();
    assert_eq!(store.list_invoices(third.id, None, 10).await.unwrap().items, vec![]);
}

pub async fn change_app_plan_stores_invoice(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let a = app(t.id, PlanId::Starter);
    store.create_app(&a, None).await.unwrap();
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
    store.create_app(&a, None).await.unwrap();
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
    store.create_app(&app(other.id, PlanId::Pro), None).await.unwrap();
    let mut created = Vec::new();
    for _ in 0..7 {
        let a = app(t.id, PlanId::Pro);
        store.create_app(&a, None).await.unwrap();
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
    store.create_app(&a, None).await.unwrap();
    let other = app(t.id, PlanId::Starter);
    store.create_app(&other, None).await.unwrap();
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

    assert!(store.purge_expired(t0).await.unwrap() >= 3);
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
        assert_eq!(got, &AuditRecord { seq: got.seq, ..want.clone() });
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
    store.create_app(&doomed, None).await.unwrap();
    store.create_app(&kept, None).await.unwrap();

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

    assert_not_found(store.delete_app(other.id, doomed.id).await);
    assert!(store.get_app_by_id(doomed.id).await.unwrap().is_some());

    store.delete_app(t.id, doomed.id).await.unwrap();
    assert_eq!(store.get_app_by_id(doomed.id).await.unwrap(), None);
    assert_eq!(store.get_app_by_client_id(&doomed.client_id).await.unwrap(), None);
    assert_eq!(store.get_refresh_token(&doomed_token.token_hash).await.unwrap(), None);
    assert_eq!(store.list_invoices(doomed.id, None, 10).await.unwrap().items, vec![]);
    assert_not_found(store.delete_app(t.id, doomed.id).await);

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
    assert!(!store.delete_doc(&key).await.unwrap());
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

    assert!(store.delete_doc(&keys[0]).await.unwrap());
    assert_eq!(store.load_doc(&keys[0]).await.unwrap(), None);
    assert_eq!(store.get_doc(&keys[0]).await.unwrap(), None);
    assert_eq!(store.doc_log_stats(&keys[0]).await.unwrap(), (0, 0));
    assert_eq!(store.count_docs(a.id).await.unwrap(), 2);
    assert!(!store.delete_doc(&keys[0]).await.unwrap());
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
    assert!(store.delete_doc(&ka).await.unwrap());
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

    store.delete_app(doomed.tenant_id, doomed.id).await.unwrap();
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
