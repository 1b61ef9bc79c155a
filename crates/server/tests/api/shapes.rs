//! Valid JSON of the wrong shape: a body that must be an object and is an
//! array (which serde would read into a struct field by field), a string or
//! `null` is 400 `invalid_request` on every route family, and changes
//! nothing.

use crate::helpers::*;
use serde_json::{Value, json};

const NOT_OBJECTS: [&str; 5] =
    [r#"["x"]"#, r#" ["x@shape.test", "a-password-long-enough", "Shape"]"#, "[]", r#""x""#, "null"];

/// Every refused shape, sent with a JSON content type.
async fn refuse_all(app: &TestApp, method: &str, path: &str, auth: Option<&str>) {
    for body in NOT_OBJECTS {
        let mut req = app
            .client
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", app.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let got: Value = r.json().await.unwrap();
        assert_eq!(
            (status.as_u16(), got["error"].as_str()),
            (400, Some("invalid_request")),
            "{method} {path} {body}: {got}"
        );
    }
}

#[tokio::test]
async fn setup_and_login_refuse_arrays() {
    let app = spawn_app().await;
    // Before any user exists: an array would otherwise be the first user.
    refuse_all(&app, "POST", "/v1/setup", None).await;
    assert!(app.state.store.get_user_by_email("x@shape.test").await.unwrap().is_none());
    let owner = app.setup().await;
    refuse_all(&app, "POST", "/v1/auth/login", None).await;
    refuse_all(&app, "POST", "/v1/auth/password-reset", None).await;
    refuse_all(&app, "POST", "/v1/auth/password-reset/confirm", None).await;
    refuse_all(&app, "POST", "/v1/invites/accept", None).await;
    assert!(app.mails_to(&owner.email).is_empty());
    // Malformed JSON and a wrong content type keep their own answers.
    let r = app.post("/v1/auth/login").header("content-type", "application/json").body("[\"x\"").send().await.unwrap();
    assert_error(r, 400, "invalid_json").await;
    let r = app.post("/v1/auth/login").header("content-type", "text/plain").body("[\"x\"]").send().await.unwrap();
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn management_routes_refuse_arrays_and_change_nothing() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let s = owner.session.as_str();
    let tid = owner.tenant_id.as_str();
    let creds = app.create_app(&owner, "starter", &[]).await;
    let aid = creds.id.as_str();
    let r = app
        .post(&format!("/v1/tenants/{tid}/roles"))
        .bearer_auth(s)
        .json(&json!({"name": "shaper", "permissions": [{"resource": "apps", "action": "read"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = app
        .post(&format!("/v1/tenants/{tid}/apps/{aid}/webhooks"))
        .bearer_auth(s)
        .json(&json!({"url": "https://93.184.216.34/hook", "events": ["app.updated"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let wid = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let (_, uid) = add_member(&app, tid, "member@shape.test", "viewer").await;

    let tenant_audit = app.audit_actions(Some(tid)).await;
    let platform_audit = app.audit_actions(None).await;
    let routes = [
        ("POST", "/v1/tenants".to_owned()),
        ("POST", format!("/v1/tenants/{tid}/keys/rotate")),
        ("POST", format!("/v1/tenants/{tid}/apps")),
        ("PATCH", format!("/v1/tenants/{tid}/apps/{aid}")),
        ("POST", format!("/v1/tenants/{tid}/apps/{aid}/plan")),
        ("PUT", format!("/v1/tenants/{tid}/members/{uid}")),
        ("POST", format!("/v1/tenants/{tid}/invites")),
        ("POST", format!("/v1/tenants/{tid}/roles")),
        ("PUT", format!("/v1/tenants/{tid}/roles/shaper")),
        ("POST", format!("/v1/tenants/{tid}/apps/{aid}/webhooks")),
        ("PATCH", format!("/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}")),
        ("POST", "/v1/me/mfa/verify".to_owned()),
        ("DELETE", "/v1/me/mfa".to_owned()),
    ];
    for (method, path) in &routes {
        refuse_all(&app, method, path, Some(s)).await;
    }
    assert_eq!(app.audit_actions(Some(tid)).await, tenant_audit);
    assert_eq!(app.audit_actions(None).await, platform_audit);
    let me: Value = app.get("/v1/me").bearer_auth(s).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["tenants"].as_array().unwrap().len(), 1, "{me}");
    let apps: Value =
        app.get(&format!("/v1/tenants/{tid}/apps")).bearer_auth(s).send().await.unwrap().json().await.unwrap();
    assert_eq!(apps["items"].as_array().unwrap().len(), 1, "{apps}");
    assert_eq!(apps["items"][0]["plan"], "starter");
    assert_eq!(app.audit_actions(Some(tid)).await, tenant_audit);
}

#[tokio::test]
async fn client_tokens_refuse_arrays() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let m2m = app.m2m_token(&creds).await;
    refuse_all(&app, "POST", "/v1/client-tokens", Some(&m2m)).await;
    // The array serde would read as `{"docs": ["a"]}`, every field given.
    let r = app
        .post("/v1/client-tokens")
        .bearer_auth(&m2m)
        .header("content-type", "application/json")
        .body(r#"[["a"], null, null, null]"#);
    assert_error(r.send().await.unwrap(), 400, "invalid_request").await;
    // An object is still a token.
    let r = app.post("/v1/client-tokens").bearer_auth(&m2m).json(&json!({"docs": ["a"]})).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
