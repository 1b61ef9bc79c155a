//! The token endpoint, introspection, revocation and client tokens, checked
//! against RFC 6749, 7009, 7662 and CONTRACT.md.

use crate::helpers::*;
use crate::tenants::{accepted, decode_with_jwks};
use base64::Engine;
use serde_json::{Value, json};
use time::Duration;

async fn oauth_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["error_description"].is_string());
    body
}

#[tokio::test]
async fn client_credentials_issues_a_verifiable_jwt() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &["myapp.com", "localhost:3000"]).await;
    let r = app.token_request(&creds, &[("grant_type", "client_credentials")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "WireSocket.API");
    assert!(body["refresh_token"].as_str().unwrap().starts_with("wsr_"));

    let token = body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert!(header.kid.is_some());
    let c = decode_with_jwks(&app, &owner.tenant_id, token).await.unwrap();
    assert_eq!(c["iss"], format!("{}/{}", app.url, owner.tenant_id));
    assert_eq!(c["sub"], creds.client_id.as_str());
    assert_eq!(c["client_id"], creds.client_id.as_str());
    assert_eq!(c["aud"], "wiresocket");
    assert_eq!(c["tid"], owner.tenant_id.as_str());
    assert_eq!(c["app"], creds.id.as_str());
    assert_eq!(c["region"], "eu-central-1");
    assert_eq!(c["scope"], "WireSocket.API");
    assert_eq!(c["origins"], json!(["myapp.com", "localhost:3000"]));
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
    assert!(c["jti"].as_str().unwrap().len() >= 16);

    // client_secret_post works too, and jtis differ.
    let r = app
        .post("/oauth/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &creds.client_id),
            ("client_secret", &creds.client_secret),
            ("scope", "WireSocket.API"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let other = r.json::<Value>().await.unwrap();
    let c2 = decode_with_jwks(&app, &owner.tenant_id, other["access_token"].as_str().unwrap()).await.unwrap();
    assert_ne!(c["jti"], c2["jti"]);
}

#[tokio::test]
async fn basic_credentials_are_form_urldecoded() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    // RFC 6749 §2.3.1: encode before base64; a server that skips decoding fails this.
    let encode = |s: &str| s.replace('_', "%5F").replace('-', "%2D");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        encode(&creds.client_id),
        encode(&creds.client_secret)
    ));
    let r = app
        .post("/oauth/token")
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn token_endpoint_errors_follow_rfc6749() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let wrong = TestAppCreds {
        client_secret: "wscs_wrong".into(),
        id: creds.id.clone(),
        client_id: creds.client_id.clone(),
        body: Value::Null,
    };
    // Failed Basic: 401 with a challenge.
    let r = app.token_request(&wrong, &[("grant_type", "client_credentials")]).await;
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    oauth_error(r, 401, "invalid_client").await;
    let r = app
        .post("/oauth/token")
        .form(&[("grant_type", "client_credentials"), ("client_id", &creds.client_id), ("client_secret", "nope")])
        .send()
        .await
        .unwrap();
    oauth_error(r, 401, "invalid_client").await;
    let r = app
        .post("/oauth/token")
        .form(&[("grant_type", "client_credentials"), ("client_id", "wsc_unknown"), ("client_secret", "x")])
        .send()
        .await
        .unwrap();
    oauth_error(r, 401, "invalid_client").await;
    let r = app.post("/oauth/token").form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    oauth_error(r, 401, "invalid_client").await;
    let r = app
        .post("/oauth/token")
        .header("authorization", "Basic !!!")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    oauth_error(r, 401, "invalid_client").await;

    oauth_error(app.token_request(&creds, &[]).await, 400, "invalid_request").await;
    oauth_error(
        app.token_request(&creds, &[("grant_type", "authorization_code")]).await,
        400,
        "unsupported_grant_type",
    )
    .await;
    oauth_error(
        app.token_request(&creds, &[("grant_type", "client_credentials"), ("scope", "admin")]).await,
        400,
        "invalid_scope",
    )
    .await;
    oauth_error(
        app.token_request(&creds, &[("grant_type", "client_credentials"), ("grant_type", "client_credentials")]).await,
        400,
        "invalid_request",
    )
    .await;
    // Two authentication methods at once.
    let r = app
        .post("/oauth/token")
        .basic_auth(&creds.client_id, Some(&creds.client_secret))
        .form(&[("grant_type", "client_credentials"), ("client_secret", &creds.client_secret)])
        .send()
        .await
        .unwrap();
    oauth_error(r, 400, "invalid_request").await;
    let r = app.post("/oauth/token").json(&json!({"grant_type": "client_credentials"})).send().await.unwrap();
    oauth_error(r, 400, "invalid_request").await;
    oauth_error(app.token_request(&creds, &[("grant_type", "refresh_token")]).await, 400, "invalid_request").await;
    oauth_error(
        app.token_request(&creds, &[("grant_type", "refresh_token"), ("refresh_token", "wsr_nope")]).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(app.audit_actions(Some(&owner.tenant_id)).await.contains(&"auth.token_failed".to_owned()));
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let first = app.client_credentials(&creds).await;
    let r1 = first["refresh_token"].as_str().unwrap();

    let r = app.token_request(&creds, &[("grant_type", "refresh_token"), ("refresh_token", r1)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let second: Value = r.json().await.unwrap();
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2);
    assert!(accepted(&app, second["access_token"].as_str().unwrap()).await);

    // Reusing r1 is theft: the whole family, r2 included, dies.
    oauth_error(
        app.token_request(&creds, &[("grant_type", "refresh_token"), ("refresh_token", r1)]).await,
        400,
        "invalid_grant",
    )
    .await;
    oauth_error(
        app.token_request(&creds, &[("grant_type", "refresh_token"), ("refresh_token", r2)]).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(app.audit_actions(Some(&owner.tenant_id)).await.contains(&"auth.refresh_reuse".to_owned()));

    // A narrower scope is allowed; a wider one is not.
    let fresh = app.client_credentials(&creds).await;
    let r = app
        .token_request(
            &creds,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", fresh["refresh_token"].as_str().unwrap()),
                ("scope", "other"),
            ],
        )
        .await;
    oauth_error(r, 400, "invalid_scope").await;
}

#[tokio::test]
async fn refresh_token_of_another_client_is_invalid_grant_and_not_consumed() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let a = app.create_app(&owner, "starter", &[]).await;
    let b = app.create_app(&owner, "pro", &[]).await;
    let rt = app.client_credentials(&a).await["refresh_token"].as_str().unwrap().to_owned();
    oauth_error(
        app.token_request(&b, &[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await,
        400,
        "invalid_grant",
    )
    .await;
    let r =
        app.post("/oauth/token").form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]).send().await.unwrap();
    oauth_error(r, 401, "invalid_client").await;
    assert_eq!(app.token_request(&a, &[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await.status(), 200);
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_let_at_most_one_through() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let rt = app.client_credentials(&creds).await["refresh_token"].as_str().unwrap().to_owned();
    let form = [("grant_type", "refresh_token"), ("refresh_token", rt.as_str())];
    let results = futures::future::join_all((0..8).map(|_| app.token_request(&creds, &form))).await;
    let mut winners = Vec::new();
    for r in results {
        match r.status().as_u16() {
            200 => winners.push(r.json::<Value>().await.unwrap()),
            400 => assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant"),
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one refresh succeeds");
    // The losers presented a used token: reuse, so even the winner's new token is dead.
    let rt2 = winners[0]["refresh_token"].as_str().unwrap();
    let r = app.token_request(&creds, &[("grant_type", "refresh_token"), ("refresh_token", rt2)]).await;
    oauth_error(r, 400, "invalid_grant").await;
}

#[tokio::test]
async fn expired_refresh_tokens_and_access_tokens_are_refused() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let body = app.client_credentials(&creds).await;
    let access = body["access_token"].as_str().unwrap();
    app.clock.advance(Duration::seconds(899));
    assert!(accepted(&app, access).await);
    app.clock.advance(Duration::seconds(1));
    assert!(!accepted(&app, access).await, "exp is exclusive");
    app.clock.advance(Duration::days(30));
    let r = app
        .token_request(
            &creds,
            &[("grant_type", "refresh_token"), ("refresh_token", body["refresh_token"].as_str().unwrap())],
        )
        .await;
    oauth_error(r, 400, "invalid_grant").await;
}

#[tokio::test]
async fn password_grant_serves_the_dashboard() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let r = app
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
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "dashboard");
    assert_eq!(body["expires_in"], 12 * 3600);
    let session = body["access_token"].as_str().unwrap();
    assert!(!session.contains('.'), "a human session is opaque, never a JWT");
    assert_eq!(app.get("/v1/me").bearer_auth(session).send().await.unwrap().status(), 200);

    let r = app
        .post("/oauth/token")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", body["refresh_token"].as_str().unwrap()),
            ("client_id", "dashboard"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let refreshed: Value = r.json().await.unwrap();
    assert_eq!(
        app.get("/v1/me").bearer_auth(refreshed["access_token"].as_str().unwrap()).send().await.unwrap().status(),
        200
    );

    let r = app
        .post("/oauth/token")
        .form(&[("grant_type", "password"), ("username", &owner.email), ("password", "wrong password")])
        .send()
        .await
        .unwrap();
    oauth_error(r, 400, "invalid_grant").await;
    let r = app
        .post("/oauth/token")
        .form(&[
            ("grant_type", "password"),
            ("username", &owner.email),
            ("password", PASSWORD),
            ("client_id", "someone-else"),
        ])
        .send()
        .await
        .unwrap();
    oauth_error(r, 400, "unauthorized_client").await;
    let r =
        app.post("/oauth/token").form(&[("grant_type", "password"), ("username", &owner.email)]).send().await.unwrap();
    oauth_error(r, 400, "invalid_request").await;
}

async fn introspect(app: &TestApp, as_app: &TestAppCreds, token: &str) -> Value {
    let r = app
        .post("/oauth/introspect")
        .basic_auth(&as_app.client_id, Some(&as_app.client_secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn introspection_shows_only_the_clients_own_tokens() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let a = app.create_app(&owner, "starter", &[]).await;
    let b = app.create_app(&owner, "pro", &[]).await;
    let body = app.client_credentials(&a).await;
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();

    let i = introspect(&app, &a, access).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["client_id"], a.client_id.as_str());
    assert_eq!(i["scope"], "WireSocket.API");
    assert!(i["exp"].is_i64() && i["iat"].is_i64());
    assert_eq!(introspect(&app, &a, refresh).await["active"], true);
    assert_eq!(introspect(&app, &b, access).await, json!({"active": false}));
    assert_eq!(introspect(&app, &b, refresh).await, json!({"active": false}));
    assert_eq!(introspect(&app, &a, "garbage").await, json!({"active": false}));
    assert_eq!(introspect(&app, &a, &owner.session).await, json!({"active": false}));
    let r = app.post("/oauth/introspect").form(&[("token", access)]).send().await.unwrap();
    oauth_error(r, 401, "invalid_client").await;
    let r = app
        .post("/oauth/introspect")
        .basic_auth(&a.client_id, Some(&a.client_secret))
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    oauth_error(r, 400, "invalid_request").await;
}

#[tokio::test]
async fn revocation_denies_access_tokens_everywhere_and_kills_refresh_families() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let a = app.create_app(&owner, "starter", &[]).await;
    let b = app.create_app(&owner, "pro", &[]).await;
    let body = app.client_credentials(&a).await;
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();

    // Another client revoking it is a silent no-op.
    let r = app
        .post("/oauth/revoke")
        .basic_auth(&b.client_id, Some(&b.client_secret))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(accepted(&app, access).await);

    let r = app
        .post("/oauth/revoke")
        .basic_auth(&a.client_id, Some(&a.client_secret))
        .form(&[("token", access), ("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!accepted(&app, access).await);
    assert_eq!(introspect(&app, &a, access).await["active"], false);

    let r = app
        .post("/oauth/revoke")
        .basic_auth(&a.client_id, Some(&a.client_secret))
        .form(&[("token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    oauth_error(
        app.token_request(&a, &[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await,
        400,
        "invalid_grant",
    )
    .await;
    // Unknown tokens: 200 as well (RFC 7009 §2.2).
    let r = app
        .post("/oauth/revoke")
        .basic_auth(&a.client_id, Some(&a.client_secret))
        .form(&[("token", "whatever")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app.post("/oauth/revoke").form(&[("token", access)]).send().await.unwrap();
    oauth_error(r, 401, "invalid_client").await;
    assert!(app.audit_actions(Some(&owner.tenant_id)).await.contains(&"token.revoked".to_owned()));
}

#[tokio::test]
async fn client_tokens_are_narrow_and_short_lived() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &["myapp.com"]).await;
    let m2m = app.m2m_token(&creds).await;
    let r = app
        .post("/v1/client-tokens")
        .bearer_auth(&m2m)
        .json(&json!({"docs": ["notes/*", "board"], "access": "r", "user": {"id": "user-42", "name": "Ada"}, "ttl_seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["expires_in"], 900, "a longer ttl is capped, not refused");
    let token = body["token"].as_str().unwrap();
    let c = decode_with_jwks(&app, &owner.tenant_id, token).await.unwrap();
    assert_eq!(c["sub"], "user-42");
    assert_eq!(c["name"], "Ada");
    assert_eq!(c["docs"], json!(["notes/*", "board"]));
    assert_eq!(c["access"], "r");
    assert_eq!(c["client_id"], creds.client_id.as_str());
    assert_eq!(c["origins"], json!(["myapp.com"]));

    let r = app
        .post("/v1/client-tokens")
        .bearer_auth(&m2m)
        .json(&json!({"docs": ["*"], "ttl_seconds": 60}))
        .send()
        .await
        .unwrap();
    let short: Value = r.json().await.unwrap();
    assert_eq!(short["expires_in"], 60);
    let c = decode_with_jwks(&app, &owner.tenant_id, short["token"].as_str().unwrap()).await.unwrap();
    assert_eq!(c["access"], "rw");

    // A client token cannot mint more; humans cannot use the data-plane API.
    assert_error(
        app.post("/v1/client-tokens").bearer_auth(token).json(&json!({"docs": ["*"]})).send().await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_error(
        app.post("/v1/client-tokens").bearer_auth(&owner.session).json(&json!({"docs": ["*"]})).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        app.post("/v1/client-tokens").json(&json!({"docs": ["*"]})).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let bad = [
        (json!({"docs": []}), "invalid_docs"),
        (json!({"docs": ["a\u{1}b"]}), "invalid_docs"),
        (json!({"docs": ["*"], "access": "x"}), "invalid_access"),
        (json!({"docs": ["*"], "ttl_seconds": 0}), "invalid_ttl"),
        (json!({"docs": ["*"], "user": {"id": ""}}), "invalid_request"),
        (json!({"access": "r"}), "invalid_request"),
    ];
    for (b, code) in bad {
        assert_error(app.post("/v1/client-tokens").bearer_auth(&m2m).json(&b).send().await.unwrap(), 400, code).await;
    }
}

#[tokio::test]
async fn app_tokens_cannot_manage_and_forged_ones_are_401() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let m2m = app.m2m_token(&creds).await;
    assert_error(app.get("/v1/me").bearer_auth(&m2m).send().await.unwrap(), 403, "forbidden").await;
    assert_error(
        app.get(&format!("/v1/tenants/{}/apps", owner.tenant_id)).bearer_auth(&m2m).send().await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    // Flip one character of the signature: 401, not 403.
    // (Not the last character: it carries base64 padding bits a decoder may ignore.)
    let mut chars: Vec<char> = m2m.chars().collect();
    let i = chars.len() - 20;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let forged: String = chars.into_iter().collect();
    assert_error(app.get("/v1/me").bearer_auth(&forged).send().await.unwrap(), 401, "unauthorized").await;
    assert!(!accepted(&app, &forged).await);
    // alg=none is never accepted.
    let parts: Vec<&str> = m2m.split('.').collect();
    let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    assert!(!accepted(&app, &format!("{none_header}.{}.", parts[1])).await);
}

#[tokio::test]
async fn dashboard_refresh_families_have_a_hard_end_and_can_be_revoked() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let password_grant = || async {
        let form = [("grant_type", "password"), ("username", owner.email.as_str()), ("password", PASSWORD)];
        let body: Value = app.post("/oauth/token").form(&form).send().await.unwrap().json().await.unwrap();
        body["refresh_token"].as_str().unwrap().to_owned()
    };
    let refresh = |rt: String| {
        let req = app.post("/oauth/token").form(&[
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", rt),
            ("client_id", "dashboard".to_owned()),
        ]);
        async move { req.send().await.unwrap() }
    };
    // Refreshing every 10 days does not extend the family past 30 days.
    let mut rt = password_grant().await;
    for _ in 0..2 {
        app.clock.advance(Duration::days(10));
        let r = refresh(rt.clone()).await;
        assert_eq!(r.status(), 200);
        rt = r.json::<Value>().await.unwrap()["refresh_token"].as_str().unwrap().to_owned();
    }
    app.clock.advance(Duration::days(10));
    oauth_error(refresh(rt).await, 400, "invalid_grant").await;

    // The dashboard (a public client) revokes its own refresh token.
    let rt = password_grant().await;
    let r = app.post("/oauth/revoke").form(&[("token", rt.as_str()), ("client_id", "dashboard")]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    oauth_error(refresh(rt).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn a_token_signed_by_another_tenants_key_is_refused() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let genuine = app.m2m_token(&creds).await;
    let r = app.post("/v1/tenants").bearer_auth(&owner.session).json(&json!({"name": "Other"})).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    let other = domain::ids::TenantId::parse(body["id"].as_str().unwrap()).unwrap();
    // The same claims (tenant A's tid and iss), signed with tenant B's key.
    let claims = decode_with_jwks(&app, &owner.tenant_id, &genuine).await.unwrap();
    let claims: domain::claims::Claims = serde_json::from_value(claims).unwrap();
    let forged = app.state.keys.signer(other).await.unwrap().sign(&claims).unwrap();
    assert!(!accepted(&app, &forged).await);
    assert!(accepted(&app, &genuine).await);
}
