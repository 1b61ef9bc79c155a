//! Rate limits: failed logins per account, auth requests per client IP
//! (and who the client is behind a proxy), token requests per client_id.

use crate::helpers::*;
use serde_json::{Value, json};
use server::config::per_minute;
use time::Duration;

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.post("/v1/auth/login").json(&json!({"email": email, "password": password})).send().await.unwrap()
}

/// Asserts a 429 with `Retry-After` and the given error code; answers the header.
async fn assert_429(r: reqwest::Response, code: &str) -> u64 {
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    retry_after
}

/// The audit entries with `action` in a trail, waiting for background writes.
async fn wait_for_audit(app: &TestApp, tenant: Option<&str>, action: &str, count: usize) -> Vec<store::AuditRecord> {
    let tenant = tenant.map(|t| domain::ids::TenantId::parse(t).unwrap());
    let mut found = Vec::new();
    for _ in 0..100 {
        found = app.state.store.list_audit(tenant, 500).await.unwrap();
        found.retain(|e| e.action == action);
        if found.len() >= count {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    found
}

#[tokio::test]
async fn the_sixth_failed_login_is_refused_and_so_is_the_right_password_until_it_is_time() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    for _ in 0..5 {
        assert_error(login(&app, &owner.email, "wrong password!").await, 401, "invalid_credentials").await;
    }
    assert_eq!(assert_429(login(&app, &owner.email, "wrong password!").await, "too_many_requests").await, 12);
    // Guessing right does not get past the lock, in any spelling of the email.
    assert_eq!(assert_429(login(&app, &owner.email, PASSWORD).await, "too_many_requests").await, 12);
    let shouted = format!("  {}  ", owner.email.to_uppercase());
    assert_429(login(&app, &shouted, PASSWORD).await, "too_many_requests").await;
    // Nor does the dashboard's password grant.
    let form = [("grant_type", "password"), ("username", owner.email.as_str()), ("password", PASSWORD)];
    let r = app.post("/oauth/token").form(&form).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(assert_429(r, "slow_down").await, 12);

    // An unknown email is counted the same way: refusals tell nothing.
    for _ in 0..5 {
        assert_error(login(&app, "nobody@example.com", PASSWORD).await, 401, "invalid_credentials").await;
    }
    assert_429(login(&app, "nobody@example.com", PASSWORD).await, "too_many_requests").await;
    // Other accounts are not affected, and successful logins do not count.
    let other = "second@example.com";
    app.create_user(other).await;
    for _ in 0..7 {
        app.login(other, PASSWORD).await;
    }

    app.clock.advance(Duration::seconds(11));
    assert_429(login(&app, &owner.email, PASSWORD).await, "too_many_requests").await;
    app.clock.advance(Duration::seconds(1));
    assert_eq!(login(&app, &owner.email, PASSWORD).await.status(), 200);

    // One audit entry per locked key and window, not one per refusal: the
    // owner's (in the platform trail and the tenant's) and the unknown email's.
    let platform = wait_for_audit(&app, None, "auth.rate_limited", 2).await;
    assert_eq!(platform.len(), 2, "{platform:?}");
    assert!(platform.iter().all(|e| e.details["limit"] == "login_failures"));
    assert!(platform.iter().any(|e| e.target_id.as_deref() == Some(owner.user_id.as_str())));
    let tenant = wait_for_audit(&app, Some(&owner.tenant_id), "auth.rate_limited", 1).await;
    assert_eq!(tenant.len(), 1);
    let metrics = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wiresocket_rate_limited_total{limit=\"login_failures\"}"), "{metrics}");
}

#[tokio::test]
async fn parallel_wrong_passwords_get_at_most_five_answers_that_are_not_429() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let attempts = (0..50).map(|_| login(&app, &owner.email, "wrong password!"));
    let statuses: Vec<u16> =
        futures::future::join_all(attempts).await.into_iter().map(|r| r.status().as_u16()).collect();
    let answered = statuses.iter().filter(|&&s| s != 429).count();
    assert!(answered <= 5, "{answered} guesses were checked: {statuses:?}");
    assert!(statuses.iter().all(|&s| s == 401 || s == 429), "{statuses:?}");
    assert_429(login(&app, &owner.email, PASSWORD).await, "too_many_requests").await;
}

#[tokio::test]
async fn auth_endpoints_are_limited_per_ip() {
    let dir = temp_dir();
    let mut config = test_config(&dir);
    config.rate_limits.auth_per_ip = per_minute(3);
    let app = spawn_with(config).await;
    let bogus = [("grant_type", "client_credentials"), ("client_id", "nope"), ("client_secret", "nope")];
    for _ in 0..3 {
        assert_eq!(app.post("/oauth/token").form(&bogus).send().await.unwrap().status(), 401);
    }
    let r = app.post("/oauth/token").form(&bogus).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let r_body_retry = assert_429(r, "slow_down").await;
    assert_eq!(r_body_retry, 20);
    // The whole auth surface shares the bucket; JSON endpoints answer JSON.
    assert_eq!(assert_429(login(&app, "a@example.com", PASSWORD).await, "too_many_requests").await, 20);
    let r = app.post("/oauth/introspect").form(&[("token", "x")]).send().await.unwrap();
    assert_429(r, "slow_down").await;
    // Everything else is not limited here.
    for _ in 0..5 {
        assert_eq!(app.get("/v1/regions").send().await.unwrap().status(), 200);
    }
    app.clock.advance(Duration::seconds(20));
    assert_eq!(app.post("/oauth/token").form(&bogus).send().await.unwrap().status(), 401);
    assert_429(app.post("/oauth/token").form(&bogus).send().await.unwrap(), "slow_down").await;
    let platform = wait_for_audit(&app, None, "auth.rate_limited", 1).await;
    assert_eq!(platform.len(), 1);
    assert_eq!(platform[0].details["limit"], "auth_per_ip");
    assert_eq!(platform[0].ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
    // Untrusted peer: whatever the header says, it is one client.
    let dir = temp_dir();
    let mut config = test_config(&dir);
    config.rate_limits.auth_per_ip = per_minute(2);
    let app = spawn_with(config).await;
    let from = |xff: &str| {
        app.post("/oauth/token").header("x-forwarded-for", xff).form(&[("grant_type", "client_credentials")]).send()
    };
    assert_eq!(from("198.51.100.1").await.unwrap().status(), 401);
    assert_eq!(from("198.51.100.2").await.unwrap().status(), 401);
    assert_429(from("198.51.100.3").await.unwrap(), "slow_down").await;

    // Behind a trusted proxy, the address it appended is the client.
    let dir = temp_dir();
    let mut config = test_config(&dir);
    config.rate_limits.auth_per_ip = per_minute(2);
    config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let app = spawn_with(config).await;
    let from = |xff: &str| {
        app.post("/oauth/token").header("x-forwarded-for", xff).form(&[("grant_type", "client_credentials")]).send()
    };
    assert_eq!(from("198.51.100.1").await.unwrap().status(), 401);
    assert_eq!(from("198.51.100.1").await.unwrap().status(), 401);
    assert_429(from("198.51.100.1").await.unwrap(), "slow_down").await;
    // A spoofed entry left of the real one changes nothing.
    assert_429(from("198.51.100.2, 198.51.100.1").await.unwrap(), "slow_down").await;
    // Another client behind the same proxy has its own bucket.
    assert_eq!(from("198.51.100.2").await.unwrap().status(), 401);
    assert_eq!(from("2001:db8::1, 127.0.0.1").await.unwrap().status(), 401);
    // The audit trail records the client, not the proxy.
    let r = app
        .post("/v1/auth/login")
        .header("x-forwarded-for", "203.0.113.5")
        .json(&json!({"email": "x@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "invalid_credentials").await;
    let failed = wait_for_audit(&app, None, "auth.login_failed", 1).await;
    assert_eq!(failed[0].ip.as_deref(), Some("203.0.113.5"));
}

#[tokio::test]
async fn token_requests_are_limited_per_client_id() {
    let dir = temp_dir();
    let mut config = test_config(&dir);
    config.rate_limits.token_per_client = per_minute(2);
    let app = spawn_with(config).await;
    let owner = app.setup().await;
    let busy = app.create_app(&owner, "starter", &[]).await;
    let quiet = app.create_app(&owner, "starter", &[]).await;
    let refresh = app.client_credentials(&busy).await["refresh_token"].as_str().unwrap().to_owned();
    app.client_credentials(&busy).await;
    let r = app.token_request(&busy, &[("grant_type", "client_credentials")]).await;
    assert_eq!(assert_429(r, "slow_down").await, 30);
    // Every grant of that client counts.
    let r = app.token_request(&busy, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_429(r, "slow_down").await;
    // Naming the client without its secret does not use up its quota (nor
    // would it have counted before): it is just invalid_client.
    let impostor = TestAppCreds {
        id: busy.id.clone(),
        client_id: busy.client_id.clone(),
        client_secret: "wscs_wrong".into(),
        body: Value::Null,
    };
    let r = app.token_request(&impostor, &[("grant_type", "client_credentials")]).await;
    assert_eq!(r.status(), 401);
    // Other clients are not affected.
    app.client_credentials(&quiet).await;
    app.clock.advance(Duration::seconds(30));
    app.client_credentials(&busy).await;
    assert_429(app.token_request(&busy, &[("grant_type", "client_credentials")]).await, "slow_down").await;

    let trail = wait_for_audit(&app, Some(&owner.tenant_id), "auth.rate_limited", 1).await;
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].details["limit"], "token_per_client");
    assert_eq!(trail[0].target_id.as_deref(), Some(busy.id.as_str()));
}
