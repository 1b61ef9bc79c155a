//! Tenants, signing keys, JWKS, RFC 8414 metadata.

use crate::helpers::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use time::Duration;

/// Verifies a token exactly as a third party would: with only the JWKS document.
pub async fn decode_with_jwks(app: &TestApp, tenant: &str, token: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    let jwks: JwkSet = app.get(&format!("/{tenant}/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(token)?;
    let kid = header.kid.expect("kid in header");
    let Some(jwk) = jwks.find(&kid) else {
        return Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into());
    };
    let key = DecodingKey::from_jwk(jwk)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["wiresocket"]);
    validation.set_issuer(&[format!("{}/{}", app.state.public_url, tenant)]);
    Ok(jsonwebtoken::decode::<Value>(token, &key, &validation)?.claims)
}

/// Whether the server still accepts the token (data-plane API).
pub async fn accepted(app: &TestApp, token: &str) -> bool {
    let r = app.post("/v1/client-tokens").bearer_auth(token).json(&json!({"docs": ["*"]})).send().await.unwrap();
    match r.status().as_u16() {
        200 => true,
        401 => false,
        s => panic!("unexpected {s}"),
    }
}

#[tokio::test]
async fn create_and_read_tenants_with_isolation() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let r = app.post("/v1/tenants").bearer_auth(&owner.session).json(&json!({"name": "Second"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["name"], "Second");
    let tid = t["id"].as_str().unwrap();
    assert!(t["created_at"].as_str().unwrap().ends_with('Z'));
    let me: Value = app.get("/v1/me").bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
    assert!(me["tenants"].as_array().unwrap().iter().any(|x| x["id"] == tid && x["role"] == "super_admin"));
    let got: Value =
        app.get(&format!("/v1/tenants/{tid}")).bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["id"], tid);

    // Another user sees neither tenant: 404, never 403.
    let other = app.create_user("mallory@example.com").await;
    for t in [tid, owner.tenant_id.as_str()] {
        assert_error(app.get(&format!("/v1/tenants/{t}")).bearer_auth(&other).send().await.unwrap(), 404, "not_found")
            .await;
        assert_error(
            app.get(&format!("/v1/tenants/{t}/keys")).bearer_auth(&other).send().await.unwrap(),
            404,
            "not_found",
        )
        .await;
    }
    assert_error(app.get("/v1/tenants/not-a-uuid").bearer_auth(&owner.session).send().await.unwrap(), 404, "not_found")
        .await;
    assert_error(
        app.post("/v1/tenants").bearer_auth(&owner.session).json(&json!({"name": ""})).send().await.unwrap(),
        400,
        "invalid_name",
    )
    .await;
    assert_error(app.post("/v1/tenants").json(&json!({"name": "x"})).send().await.unwrap(), 401, "unauthorized").await;
    assert!(app.audit_actions(Some(tid)).await.contains(&"tenant.created".to_owned()));
}

#[tokio::test]
async fn jwks_and_metadata_are_public_and_well_formed() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let tid = &owner.tenant_id;
    for path in [format!("/{tid}/.well-known/jwks"), format!("/{tid}/.well-known/jwks.json")] {
        let r = app.get(&path).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let cc = r.headers()["cache-control"].to_str().unwrap().to_owned();
        let max_age: u64 = cc.split("max-age=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
        assert!(cc.contains("public") && max_age <= 300, "{cc}");
        let body: Value = r.json().await.unwrap();
        let keys = body["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let k = &keys[0];
        assert_eq!(
            (k["kty"].as_str(), k["alg"].as_str(), k["use"].as_str()),
            (Some("RSA"), Some("RS256"), Some("sig"))
        );
        assert_eq!(k["e"], "AQAB");
        // 2048-bit modulus: 256 bytes = 342 base64url characters.
        assert_eq!(k["n"].as_str().unwrap().len(), 342);
        assert!(k.get("d").is_none() && k.get("p").is_none());
    }
    for path in [
        format!("/.well-known/oauth-authorization-server/{tid}"),
        format!("/{tid}/.well-known/oauth-authorization-server"),
    ] {
        let m: Value = app.get(&path).send().await.unwrap().json().await.unwrap();
        assert_eq!(m["issuer"], format!("{}/{tid}", app.url));
        assert_eq!(m["token_endpoint"], format!("{}/oauth/token", app.url));
        assert_eq!(m["jwks_uri"], format!("{}/{tid}/.well-known/jwks.json", app.url));
        assert_eq!(m["response_types_supported"], json!([]));
        assert_eq!(m["token_endpoint_auth_methods_supported"], json!(["client_secret_basic", "client_secret_post"]));
        assert_eq!(m["introspection_endpoint"], format!("{}/oauth/introspect", app.url));
        assert_eq!(m["revocation_endpoint"], format!("{}/oauth/revoke", app.url));
        assert!(m["grant_types_supported"].as_array().unwrap().contains(&json!("client_credentials")));
        assert_eq!(m["scopes_supported"], json!(["WireSocket.API"]));
    }
    let unknown = uuid::Uuid::now_v7();
    assert_error(app.get(&format!("/{unknown}/.well-known/jwks")).send().await.unwrap(), 404, "not_found").await;
    assert_error(app.get("/nope/.well-known/jwks").send().await.unwrap(), 404, "not_found").await;
    assert_error(
        app.get(&format!("/.well-known/oauth-authorization-server/{unknown}")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
}

async fn keys(app: &TestApp, owner: &Owner) -> Vec<Value> {
    let r: Value = app
        .get(&format!("/v1/tenants/{}/keys", owner.tenant_id))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["next_cursor"].is_null());
    r["items"].as_array().unwrap().clone()
}

async fn jwks_kids(app: &TestApp, tid: &str) -> Vec<String> {
    let j: Value = app.get(&format!("/{tid}/.well-known/jwks")).send().await.unwrap().json().await.unwrap();
    j["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn rotation_keeps_old_tokens_verifying_for_the_grace_period() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let old_token = app.m2m_token(&creds).await;
    let old_kid = keys(&app, &owner).await[0]["kid"].as_str().unwrap().to_owned();

    let r = app
        .post(&format!("/v1/tenants/{}/keys/rotate", owner.tenant_id))
        .bearer_auth(&owner.session)
        .json(&json!({"grace_seconds": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let new_key: Value = r.json().await.unwrap();
    assert_eq!(new_key["status"], "active");
    let new_kid = new_key["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);

    let listed = keys(&app, &owner).await;
    let old = listed.iter().find(|k| k["kid"] == old_kid.as_str()).unwrap();
    assert_eq!(old["status"], "retiring");
    assert!(old["retires_at"].is_string());
    for k in &listed {
        let fields: Vec<&String> = k.as_object().unwrap().keys().collect();
        assert!(
            fields
                .iter()
                .all(|f| ["kid", "alg", "status", "created_at", "retires_at", "revoked_at"].contains(&f.as_str())),
            "{fields:?}"
        );
    }
    let kids = jwks_kids(&app, &owner.tenant_id).await;
    assert!(kids.contains(&old_kid) && kids.contains(&new_kid));

    // New tokens are signed with the new key; old ones keep working in the grace period.
    let new_token = app.m2m_token(&creds).await;
    assert_eq!(jsonwebtoken::decode_header(&new_token).unwrap().kid.unwrap(), new_kid);
    assert!(accepted(&app, &old_token).await);
    decode_with_jwks(&app, &owner.tenant_id, &old_token).await.unwrap();

    app.clock.advance(Duration::seconds(600));
    let listed = keys(&app, &owner).await;
    assert_eq!(listed.iter().find(|k| k["kid"] == old_kid.as_str()).unwrap()["status"], "retired");
    assert_eq!(jwks_kids(&app, &owner.tenant_id).await, vec![new_kid]);
    assert!(!accepted(&app, &old_token).await);
    assert!(accepted(&app, &new_token).await);
}

#[tokio::test]
async fn rotation_grace_defaults_and_validation() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let path = format!("/v1/tenants/{}/keys/rotate", owner.tenant_id);
    // No body at all: default grace (1800 s).
    let r = app.post(&path).bearer_auth(&owner.session).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let listed = keys(&app, &owner).await;
    let retiring = listed.iter().find(|k| k["status"] == "retiring").unwrap();
    let retires_at = time::OffsetDateTime::parse(
        retiring["retires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((retires_at - app.clock_now()).whole_seconds(), 1800);
    // grace 0: the old key retires at once.
    let r = app.post(&path).bearer_auth(&owner.session).json(&json!({"grace_seconds": 0})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(jwks_kids(&app, &owner.tenant_id).await.len(), 2, "the 1800 s one and the new one");
    for bad in [json!({"grace_seconds": -1}), json!({"grace_seconds": 99_999_999})] {
        assert_error(
            app.post(&path).bearer_auth(&owner.session).json(&bad).send().await.unwrap(),
            400,
            "invalid_grace",
        )
        .await;
    }
    assert_error(
        app.post(&path).bearer_auth(&owner.session).json(&json!({"grace_seconds": "x"})).send().await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert!(app.audit_actions(Some(&owner.tenant_id)).await.contains(&"key.rotated".to_owned()));
}

#[tokio::test]
async fn revocation_is_immediate_and_a_lone_active_key_is_replaced() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let token = app.m2m_token(&creds).await;
    let kid = keys(&app, &owner).await[0]["kid"].as_str().unwrap().to_owned();
    assert!(accepted(&app, &token).await);

    let r = app
        .post(&format!("/v1/tenants/{}/keys/{kid}/revoke", owner.tenant_id))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked: Value = r.json().await.unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string());

    assert!(!accepted(&app, &token).await);
    assert!(decode_with_jwks(&app, &owner.tenant_id, &token).await.is_err());
    let listed = keys(&app, &owner).await;
    assert_eq!(listed.len(), 2);
    let active: Vec<_> = listed.iter().filter(|k| k["status"] == "active").collect();
    assert_eq!(active.len(), 1, "a fresh key replaced the revoked one");
    assert_eq!(jwks_kids(&app, &owner.tenant_id).await, vec![active[0]["kid"].as_str().unwrap().to_owned()]);
    // The tenant can keep issuing tokens.
    let fresh = app.m2m_token(&creds).await;
    assert!(accepted(&app, &fresh).await);

    // Revoking a retiring key also kills its tokens at once.
    let r = app
        .post(&format!("/v1/tenants/{}/keys/rotate", owner.tenant_id))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let retiring_kid = active[0]["kid"].as_str().unwrap();
    assert!(accepted(&app, &fresh).await);
    let r = app
        .post(&format!("/v1/tenants/{}/keys/{retiring_kid}/revoke", owner.tenant_id))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!accepted(&app, &fresh).await);
    assert_eq!(keys(&app, &owner).await.iter().filter(|k| k["status"] == "active").count(), 1);

    assert_error(
        app.post(&format!("/v1/tenants/{}/keys/nope/revoke", owner.tenant_id))
            .bearer_auth(&owner.session)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert!(app.audit_actions(Some(&owner.tenant_id)).await.contains(&"key.revoked".to_owned()));
}

#[tokio::test]
async fn another_tenants_key_cannot_be_touched() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let kid = keys(&app, &owner).await[0]["kid"].as_str().unwrap().to_owned();
    let other = app.create_user("eve@example.com").await;
    let r: Value = app
        .post("/v1/tenants")
        .bearer_auth(&other)
        .json(&json!({"name": "Eve Inc"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let eve_tid = r["id"].as_str().unwrap();
    // Eve's own tenant path with Acme's kid: not found, and the key survives.
    let r = app.post(&format!("/v1/tenants/{eve_tid}/keys/{kid}/revoke")).bearer_auth(&other).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    let r = app
        .post(&format!("/v1/tenants/{}/keys/{kid}/revoke", owner.tenant_id))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
    assert_eq!(keys(&app, &owner).await[0]["status"], "active");
}
