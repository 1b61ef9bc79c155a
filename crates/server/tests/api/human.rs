//! Setup, login, logout, /v1/me.

use crate::helpers::*;
use serde_json::{Value, json};
use time::Duration;

#[tokio::test]
async fn setup_is_one_shot_and_atomic_under_concurrency() {
    let app = spawn_app().await;
    let attempts = (0..8).map(|i| {
        app.post("/v1/setup")
            .json(&json!({"email": format!("u{i}@example.com"), "password": PASSWORD, "tenant_name": "Acme"}))
            .send()
    });
    let results = futures::future::join_all(attempts).await;
    let mut created = 0;
    for r in results {
        let r = r.unwrap();
        match r.status().as_u16() {
            201 => created += 1,
            409 => assert_eq!(r.json::<Value>().await.unwrap()["error"], "setup_disabled"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created, 1);
    let again = app
        .post("/v1/setup")
        .json(&json!({"email": "late@example.com", "password": PASSWORD, "tenant_name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_error(again, 409, "setup_disabled").await;
}

#[tokio::test]
async fn setup_refuses_bad_input() {
    let app = spawn_app().await;
    let cases = [
        (json!({"email": "a@example.com", "password": "short", "tenant_name": "Acme"}), 400, "weak_password"),
        (json!({"email": "not-an-email", "password": PASSWORD, "tenant_name": "Acme"}), 400, "invalid_email"),
        (json!({"email": "a@example.com", "password": PASSWORD, "tenant_name": "  "}), 400, "invalid_name"),
        (json!({"email": "a@example.com", "password": "x".repeat(1025), "tenant_name": "Acme"}), 400, "weak_password"),
        (json!({"email": "a@example.com", "tenant_name": "Acme"}), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        assert_error(app.post("/v1/setup").json(&body).send().await.unwrap(), status, code).await;
    }
    let malformed =
        app.post("/v1/setup").header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_error(malformed, 400, "invalid_json").await;
    let wrong_type = app.post("/v1/setup").header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_error(wrong_type, 415, "unsupported_media_type").await;
    let huge = app
        .post("/v1/setup")
        .header("content-type", "application/json")
        .body(format!("{{\"email\":\"{}\"}}", "a".repeat(2 * 1024 * 1024)))
        .send()
        .await
        .unwrap();
    assert_error(huge, 413, "payload_too_large").await;
    // Nothing was created by the refusals: setup still works.
    app.setup().await;
}

#[tokio::test]
async fn login_me_logout() {
    let app = spawn_app().await;
    let owner = app.setup().await;

    let me: Value = app.get("/v1/me").bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["id"], owner.user_id.as_str());
    assert_eq!(me["email"], owner.email.as_str());
    assert_eq!(me["mfa_enabled"], false);
    assert_eq!(me["tenants"][0]["id"], owner.tenant_id.as_str());
    assert_eq!(me["tenants"][0]["name"], "Acme");
    assert_eq!(me["tenants"][0]["role"], "super_admin");

    // The email is matched case-insensitively.
    let second = app.login(&owner.email.to_uppercase(), PASSWORD).await;
    assert!(second.starts_with("wss_"));

    let r = app.post("/v1/auth/logout").bearer_auth(&owner.session).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_error(app.get("/v1/me").bearer_auth(&owner.session).send().await.unwrap(), 401, "unauthorized").await;
    // Logout ends only the session presented.
    assert_eq!(app.get("/v1/me").bearer_auth(&second).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn login_refusals_are_recorded() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    for (email, pw) in
        [(owner.email.as_str(), "wrong password!"), ("nobody@example.com", PASSWORD), ("garbage", PASSWORD)]
    {
        let r = app.post("/v1/auth/login").json(&json!({"email": email, "password": pw})).send().await.unwrap();
        assert_error(r, 401, "invalid_credentials").await;
    }
    // Recorded in the background (so timing does not tell which emails
    // exist): a known user's failure appears in each of the user's tenants.
    let mut platform = Vec::new();
    for _ in 0..50 {
        platform = app.audit_actions(None).await;
        if platform.iter().filter(|a| *a == "auth.login_failed").count() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(platform.iter().filter(|a| *a == "auth.login_failed").count(), 3);
    assert!(app.audit_actions(Some(&owner.tenant_id)).await.contains(&"auth.login_failed".to_owned()));
}

#[tokio::test]
async fn sessions_expire_after_their_lifetime_and_are_not_sliding() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    app.clock.advance(Duration::hours(11));
    assert_eq!(app.get("/v1/me").bearer_auth(&owner.session).send().await.unwrap().status(), 200);
    app.clock.advance(Duration::hours(1));
    assert_error(app.get("/v1/me").bearer_auth(&owner.session).send().await.unwrap(), 401, "unauthorized").await;
}

#[tokio::test]
async fn bad_credentials_are_401() {
    let app = spawn_app().await;
    app.setup().await;
    assert_error(app.get("/v1/me").send().await.unwrap(), 401, "unauthorized").await;
    assert_error(app.get("/v1/me").bearer_auth("wss_forged").send().await.unwrap(), 401, "unauthorized").await;
    assert_error(app.get("/v1/me").bearer_auth("a.b.c").send().await.unwrap(), 401, "unauthorized").await;
    assert_error(
        app.get("/v1/me").header("authorization", "Basic Zm9vOmJhcg==").send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert_error(app.post("/v1/auth/logout").send().await.unwrap(), 401, "unauthorized").await;
}
