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
    AppRecord, AuditRecord, InvoiceRecord, RefreshKind, RefreshTokenRecord, RotateOutcome, SessionRecord,
    SigningKeyRecord, Store, StoreError, TenantRecord, UserRecord,
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

contract_tests![
    // These three need an empty store; keep them first.
    setup_runs_once,
    setup_refused_when_users_exist,
    setup_concurrent_exactly_one,
    ping,
    users_and_email_taken,
    sessions_expire_and_delete,
    tenants_and_memberships,
    create_tenant_is_atomic,
    signing_key_rotation,
    signing_key_revocation,
    signing_key_rewrap_and_list_all,
    apps_crud_and_tenant_scoping,
    one_free_app_per_tenant,
    one_free_app_under_concurrency,
    change_app_plan_stores_invoice,
    list_apps_pages,
    list_invoices_pages,
    refresh_rotation_and_reuse,
    refresh_expired_revoked_unknown_are_invalid,
    refresh_rotation_under_concurrency,
    deny_list_expires,
    purge_expired_removes_only_expired,
    audit_is_newest_first,
    delete_app_cascades,
];

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
    store.create_app(&a).await.unwrap();

    assert_eq!(store.get_app(t.id, a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_app(other.id, a.id).await.unwrap(), None);
    assert_eq!(store.get_app(t.id, AppId::new()).await.unwrap(), None);
    assert_eq!(store.get_app_by_id(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_app_by_client_id(&a.client_id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_app_by_client_id("ws_nope").await.unwrap(), None);

    let same_client = AppRecord { id: AppId::new(), ..a.clone() };
    assert_conflict(store.create_app(&same_client).await, "client_id_taken");

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
    store.create_app(&free).await.unwrap();
    let second = app(t.id, PlanId::Free);
    assert_conflict(store.create_app(&second).await, "free_plan_limit");
    assert_eq!(store.get_app_by_id(second.id).await.unwrap(), None);
    // Paid apps and other tenants are unaffected.
    let paid = app(t.id, PlanId::Starter);
    store.create_app(&paid).await.unwrap();
    store.create_app(&app(other.id, PlanId::Free)).await.unwrap();

    // Downgrading to free while a free app exists: refused, nothing stored.
    let inv = invoice(&paid, PlanId::Free);
    assert_conflict(store.change_app_plan(paid.id, PlanId::Free, &inv).await, "free_plan_limit");
    assert_eq!(store.get_app_by_id(paid.id).await.unwrap().unwrap().plan, PlanId::Starter);
    assert_eq!(store.list_invoices(paid.id, None, 10).await.unwrap().items, vec![]);

    // Free → free is not a second free app.
    store.change_app_plan(free.id, PlanId::Free, &invoice(&free, PlanId::Free)).await.unwrap();

    // Once the free app is gone, another may take the slot.
    store.delete_app(t.id, free.id).await.unwrap();
    store.change_app_plan(paid.id, PlanId::Free, &inv).await.unwrap();
    assert_eq!(store.get_app_by_id(paid.id).await.unwrap().unwrap().plan, PlanId::Free);
}

pub async fn one_free_app_under_concurrency(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let apps: Vec<_> = (0..8).map(|_| app(t.id, PlanId::Free)).collect();
    let results = join_all(apps.iter().map(|a| store.create_app(a)).collect()).await;
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
        store.create_app(a).await.unwrap();
    }
    let invoices: Vec<_> = apps.iter().map(|a| invoice(a, PlanId::Free)).collect();
    let results =
        join_all(apps.iter().zip(&invoices).map(|(a, i)| store.change_app_plan(a.id, PlanId::Free, i)).collect()).await;
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

pub async fn change_app_plan_stores_invoice(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let a = app(t.id, PlanId::Starter);
    store.create_app(&a).await.unwrap();
    let inv = invoice(&a, PlanId::Pro);
    store.change_app_plan(a.id, PlanId::Pro, &inv).await.unwrap();
    assert_eq!(store.get_app_by_id(a.id).await.unwrap().unwrap().plan, PlanId::Pro);
    let page = store.list_invoices(a.id, None, 10).await.unwrap();
    assert_eq!(page.items, vec![inv]);
    assert_eq!(page.next_after, None);

    let ghost = app(t.id, PlanId::Starter);
    assert_not_found(store.change_app_plan(ghost.id, PlanId::Pro, &invoice(&ghost, PlanId::Pro)).await);
    assert_eq!(store.list_invoices(ghost.id, None, 10).await.unwrap().items, vec![]);
}

pub async fn list_apps_pages(store: &dyn Store) {
    let (_, t, _) = owner_with_tenant(store).await;
    let (_, other, _) = owner_with_tenant(store).await;
    store.create_app(&app(other.id, PlanId::Pro)).await.unwrap();
    let mut created = Vec::new();
    for _ in 0..7 {
        let a = app(t.id, PlanId::Pro);
        store.create_app(&a).await.unwrap();
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
    store.create_app(&a).await.unwrap();
    let other = app(t.id, PlanId::Starter);
    store.create_app(&other).await.unwrap();
    store.change_app_plan(other.id, PlanId::Pro, &invoice(&other, PlanId::Pro)).await.unwrap();

    let mut created = Vec::new();
    for plan in [PlanId::Pro, PlanId::Enterprise, PlanId::Starter, PlanId::Pro, PlanId::Enterprise] {
        let inv = invoice(&a, plan);
        store.change_app_plan(a.id, plan, &inv).await.unwrap();
        created.push(inv);
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
    store.create_app(&doomed).await.unwrap();
    store.create_app(&kept).await.unwrap();

    let app_token = |a: &AppRecord| RefreshTokenRecord {
        client_id: a.client_id.clone(),
        scope: "WireSocket.API".to_owned(),
        ..refresh(RefreshKind::App, &a.id.to_string(), FamilyId::new(), now() + Duration::days(1))
    };
    let (doomed_token, kept_token) = (app_token(&doomed), app_token(&kept));
    store.insert_refresh_token(&doomed_token).await.unwrap();
    store.insert_refresh_token(&kept_token).await.unwrap();
    let human_token = user_token(store, FamilyId::new(), now() + Duration::days(1)).await;
    store.change_app_plan(doomed.id, PlanId::Pro, &invoice(&doomed, PlanId::Pro)).await.unwrap();
    let kept_invoice = invoice(&kept, PlanId::Pro);
    store.change_app_plan(kept.id, PlanId::Pro, &kept_invoice).await.unwrap();

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
