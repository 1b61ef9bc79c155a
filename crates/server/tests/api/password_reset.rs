//! Password reset: always 202, a single-use 30-minute link by mail, and
//! every session and refresh token of the user ends.

use crate::helpers::*;
use serde_json::{Value, json};
use time::Duration;

async fn request(app: &TestApp, email: &str) -> reqwest::Response {
    app.post("/v1/auth/password-reset").json(&json!({"email": email})).send().await.unwrap()
}

async fn confirm(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    app.post("/v1/auth/password-reset/confirm")
        .json(&json!({"token": token, "password": password}))
        .send()
        .await
        .unwrap()
}

const NEW_PASSWORD: &str = "a brand new passphrase";

#[tokio::test]
async fn a_reset_sets_the_password_once_and_ends_every_session() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let second = app.login(&owner.email, PASSWORD).await;
    let grant = app
        .post("/oauth/token")
        .form(&[
            ("grant_type", "password"),
            ("username", &owner.email),
            ("password", PASSWORD),
            ("client_id", "dashboard"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(grant.status(), 200);
    let refresh = grant.json::<Value>().await.unwrap()["refresh_token"].as_str().unwrap().to_owned();

    assert_eq!(request(&app, &owner.email.to_uppercase()).await.status(), 202);
    let token = app.tokens_mailed_to(&owner.email, "rst_", 1).await.remove(0);
    let mail = &app.mails_to(&owner.email)[0];
    assert!(mail.body.contains(&format!("{}/dashboard/reset-password#token={token}", app.url)), "{}", mail.body);
    assert!(mail.headers.contains("Subject: Reset your WireSocket password"));

    assert_error(confirm(&app, &token, "short").await, 400, "weak_password").await;
    assert_error(confirm(&app, "rst_forged", NEW_PASSWORD).await, 400, "invalid_token").await;
    assert_eq!(confirm(&app, &token, NEW_PASSWORD).await.status(), 204);

    // Every session is gone, and the dashboard refresh token with them.
    for session in [&owner.session, &second] {
        assert_error(app.get("/v1/me").bearer_auth(session).send().await.unwrap(), 401, "unauthorized").await;
    }
    let r = app
        .post("/oauth/token")
        .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("client_id", "dashboard")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let old =
        app.post("/v1/auth/login").json(&json!({"email": owner.email, "password": PASSWORD})).send().await.unwrap();
    assert_error(old, 401, "invalid_credentials").await;
    app.login(&owner.email, NEW_PASSWORD).await;

    // Single use.
    assert_error(confirm(&app, &token, "yet another passphrase").await, 400, "invalid_token").await;
    app.login(&owner.email, NEW_PASSWORD).await;

    let platform = app.audit_actions(None).await;
    assert!(platform.contains(&"password.reset_requested".to_owned()), "{platform:?}");
    assert!(platform.contains(&"password.reset".to_owned()), "{platform:?}");
    assert!(app.audit_actions(Some(&owner.tenant_id)).await.contains(&"password.reset".to_owned()));
}

#[tokio::test]
async fn an_unknown_address_gets_the_same_202_and_no_mail() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    assert_eq!(request(&app, "nobody@example.com").await.status(), 202);
    // A known address requested after it: once its mail is out, the
    // unknown one's (cheaper) background work is long done.
    assert_eq!(request(&app, &owner.email).await.status(), 202);
    app.tokens_mailed_to(&owner.email, "rst_", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(app.mails_to("nobody@example.com").is_empty());
    let files = std::fs::read_dir(app.outbox()).unwrap().count();
    assert_eq!(files, 1);
    assert_error(request(&app, "not an email").await, 400, "invalid_email").await;
}

#[tokio::test]
async fn a_reset_link_works_for_thirty_minutes() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    assert_eq!(request(&app, &owner.email).await.status(), 202);
    let first = app.tokens_mailed_to(&owner.email, "rst_", 1).await.remove(0);
    app.clock.advance(Duration::minutes(30));
    assert_error(confirm(&app, &first, NEW_PASSWORD).await, 400, "invalid_token").await;

    assert_eq!(request(&app, &owner.email).await.status(), 202);
    let second = app.tokens_mailed_to(&owner.email, "rst_", 2).await.into_iter().find(|t| *t != first).unwrap();
    app.clock.advance(Duration::minutes(29));
    assert_eq!(confirm(&app, &second, NEW_PASSWORD).await.status(), 204);
    app.login(&owner.email, NEW_PASSWORD).await;
}
