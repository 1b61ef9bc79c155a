//! TOTP MFA: enrolment, login with a code (once), recovery codes, the
//! password grant, turning it off (self and admin), master-key rotation.

use crate::helpers::*;
use serde_json::{Value, json};
use time::Duration;

/// Enrols `session`'s user; answers (base32 secret, recovery codes).
async fn enable_mfa(app: &TestApp, session: &str) -> (String, Vec<String>) {
    let r = app.post("/v1/me/mfa/setup").bearer_auth(session).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let secret = r.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_owned();
    let r = app.post("/v1/me/mfa/verify").bearer_auth(session).json(&json!({"code": totp_now(app, &secret)})).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let codes = body["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    (secret, codes)
}

async fn login(app: &TestApp, body: Value) -> reqwest::Response {
    app.post("/v1/auth/login").json(&body).send().await.unwrap()
}

#[tokio::test]
async fn enrol_then_log_in_with_a_code_that_works_once() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let email = owner.email.as_str();

    let r = app.post("/v1/me/mfa/setup").bearer_auth(&owner.session).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let setup: Value = r.json().await.unwrap();
    let secret = setup["secret"].as_str().unwrap().to_owned();
    assert_eq!(base32_decode(&secret).len(), 20);
    let url = setup["otpauth_url"].as_str().unwrap();
    assert!(url.starts_with("otpauth://totp/WireSocket:owner-"), "{url}");
    assert!(url.contains(&format!("secret={secret}")) && url.contains("issuer=WireSocket"), "{url}");
    assert!(setup["qr_svg"].as_str().unwrap().starts_with("<svg"));
    // The secret is stored sealed, not in the clear.
    let user = domain::ids::UserId::parse(&owner.user_id).unwrap();
    let stored = app.state.store.get_mfa(user).await.unwrap().unwrap();
    assert!(!stored.secret_enc.windows(20).any(|w| w == base32_decode(&secret).as_slice()));

    // Pending protects nothing yet.
    let me: Value = app.get("/v1/me").bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["mfa_enabled"], false);
    assert_eq!(login(&app, json!({"email": email, "password": PASSWORD})).await.status(), 200);

    let verify =
        |code: String| app.post("/v1/me/mfa/verify").bearer_auth(&owner.session).json(&json!({"code": code})).send();
    let wrong = if totp_now(&app, &secret) == "000000" { "111111" } else { "000000" };
    assert_error(verify(wrong.to_owned()).await.unwrap(), 400, "invalid_totp").await;
    let code = totp_now(&app, &secret);
    let r = verify(code.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let enabled: Value = r.json().await.unwrap();
    assert_eq!(enabled["enabled"], true);
    let recovery: Vec<String> =
        enabled["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(recovery.len(), 10);
    assert_error(
        app.post("/v1/me/mfa/setup").bearer_auth(&owner.session).send().await.unwrap(),
        409,
        "mfa_already_enabled",
    )
    .await;
    let me: Value = app.get("/v1/me").bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["mfa_enabled"], true);
    assert_eq!(me["recovery_codes_remaining"], 10);

    // A wrong password never tells that MFA is on.
    let r = login(&app, json!({"email": email, "password": "wrong password!"})).await;
    assert_error(r, 401, "invalid_credentials").await;
    assert_error(login(&app, json!({"email": email, "password": PASSWORD})).await, 401, "mfa_required").await;
    // The code that enabled MFA is spent.
    assert_error(login(&app, json!({"email": email, "password": PASSWORD, "totp": code})).await, 401, "invalid_totp")
        .await;
    let wrong = if totp_now(&app, &secret) == "000000" { "111111" } else { "000000" };
    assert_error(login(&app, json!({"email": email, "password": PASSWORD, "totp": wrong})).await, 401, "invalid_totp")
        .await;

    // The next step's code works, once.
    app.clock.advance(Duration::seconds(30));
    let next = totp_now(&app, &secret);
    let r = login(&app, json!({"email": email, "password": PASSWORD, "totp": next})).await;
    assert_eq!(r.status(), 200);
    assert_error(login(&app, json!({"email": email, "password": PASSWORD, "totp": next})).await, 401, "invalid_totp")
        .await;

    // Codes carry 80 bits: 16 base32 symbols in four groups.
    assert!(recovery.iter().all(|c| c.len() == 19 && c.matches('-').count() == 3), "{recovery:?}");
    // A recovery code works once too (typed loosely, as people do).
    let typed = recovery[0].to_uppercase().replace('-', " ");
    let r = login(&app, json!({"email": email, "password": PASSWORD, "recovery_code": typed})).await;
    assert_eq!(r.status(), 200);
    let again = login(&app, json!({"email": email, "password": PASSWORD, "recovery_code": recovery[0]})).await;
    assert_error(again, 401, "invalid_totp").await;
    let me: Value = app.get("/v1/me").bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["recovery_codes_remaining"], 9);

    // Members lists show it.
    let members: Value = app
        .get(&format!("/v1/tenants/{}/members", owner.tenant_id))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(members["items"][0]["mfa_enabled"], true);

    // Turning it off takes the second factor itself.
    let off = |body: Value| app.delete("/v1/me/mfa").bearer_auth(&owner.session).json(&body).send();
    assert_error(off(json!({})).await.unwrap(), 400, "invalid_totp").await;
    assert_error(off(json!({"code": recovery[0]})).await.unwrap(), 400, "invalid_totp").await;
    assert_eq!(off(json!({"code": recovery[1]})).await.unwrap().status(), 204);
    assert_eq!(login(&app, json!({"email": email, "password": PASSWORD})).await.status(), 200);
    assert_error(off(json!({})).await.unwrap(), 409, "mfa_not_enabled").await;

    let actions = app.audit_actions(Some(&owner.tenant_id)).await;
    for a in ["mfa.enabled", "auth.mfa_failed", "mfa.recovery_code_used", "mfa.disabled"] {
        assert!(actions.contains(&a.to_owned()), "{a}: {actions:?}");
    }
}

#[tokio::test]
async fn the_password_grant_needs_the_second_factor() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let (secret, recovery) = enable_mfa(&app, &owner.session).await;
    let grant = |extra: Vec<(&'static str, String)>| {
        let mut form = vec![
            ("grant_type", "password".to_owned()),
            ("username", owner.email.clone()),
            ("password", PASSWORD.to_owned()),
        ];
        form.extend(extra);
        app.post("/oauth/token").form(&form).send()
    };

    let r = grant(vec![]).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!((body["error"].as_str(), body["mfa"].as_str()), (Some("invalid_grant"), Some("required")), "{body}");
    // The code that enabled MFA is spent.
    let r = grant(vec![("totp", totp_now(&app, &secret))]).await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!((body["error"].as_str(), body["mfa"].as_str()), (Some("invalid_grant"), Some("invalid")), "{body}");
    // A wrong password says nothing about MFA.
    let r = app
        .post("/oauth/token")
        .form(&[("grant_type", "password"), ("username", &owner.email), ("password", "wrong password!")])
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert!(body.get("mfa").is_none(), "{body}");

    app.clock.advance(Duration::seconds(30));
    let code = totp_now(&app, &secret);
    let r = grant(vec![("totp", code.clone())]).await.unwrap();
    assert_eq!(r.status(), 200);
    let token: Value = r.json().await.unwrap();
    assert_eq!(token["scope"], "dashboard");
    let replay: Value = grant(vec![("totp", code)]).await.unwrap().json().await.unwrap();
    assert_eq!(replay["mfa"], "invalid");
    assert_eq!(grant(vec![("recovery_code", recovery[0].clone())]).await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_admin_resets_a_members_mfa_and_a_viewer_cannot() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let tid = owner.tenant_id.clone();
    let (admin, admin_id) = add_member(&app, &tid, "admin@example.com", "admin").await;
    let (viewer, _) = add_member(&app, &tid, "viewer@example.com", "viewer").await;
    let (member, member_id) = add_member(&app, &tid, "member@example.com", "editor").await;
    enable_mfa(&app, &member).await;
    enable_mfa(&app, &owner.session).await;
    let reset = |session: &str, uid: &str| {
        app.delete(&format!("/v1/tenants/{tid}/members/{uid}/mfa")).bearer_auth(session.to_owned()).send()
    };
    let member_login = || login(&app, json!({"email": "member@example.com", "password": PASSWORD}));
    assert_error(member_login().await, 401, "mfa_required").await;

    assert_error(reset(&viewer, &member_id).await.unwrap(), 403, "forbidden").await;
    // Not a super_admin's, nor one's own (that is DELETE /v1/me/mfa).
    assert_error(reset(&admin, &owner.user_id).await.unwrap(), 403, "forbidden").await;
    assert_error(reset(&admin, &admin_id).await.unwrap(), 403, "forbidden").await;
    assert_error(reset(&admin, "00000000-0000-7000-8000-000000000000").await.unwrap(), 404, "not_found").await;

    assert_eq!(reset(&admin, &member_id).await.unwrap().status(), 204);
    assert_eq!(member_login().await.status(), 200);
    let me: Value = app.get("/v1/me").bearer_auth(&member).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["mfa_enabled"], false);
    assert!(app.audit_actions(Some(&tid)).await.contains(&"mfa.disabled".to_owned()));

    // MFA belongs to the account: an admin here cannot weaken the login of
    // someone who is super_admin of another tenant.
    enable_mfa(&app, &member).await;
    let r = app.post("/v1/tenants").bearer_auth(&member).json(&json!({"name": "Member's own"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_error(reset(&admin, &member_id).await.unwrap(), 403, "forbidden").await;
    // The super_admin of both tenants can.
    let other_tid = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let owner_id = domain::ids::UserId::parse(&owner.user_id).unwrap();
    let other = domain::ids::TenantId::parse(&other_tid).unwrap();
    app.state.store.add_membership(other, owner_id, "super_admin", app.clock_now()).await.unwrap();
    assert_eq!(reset(&owner.session, &member_id).await.unwrap().status(), 204);
}

#[tokio::test]
async fn master_key_rotation_rewraps_mfa_secrets() {
    let data_dir = temp_dir();
    let config = test_config(&data_dir);
    let app = spawn_with(config.clone()).await;
    let owner = app.setup().await;
    let (secret, _) = enable_mfa(&app, &owner.session).await;
    app.stop().await;

    let store = server::open_store(&config).await.unwrap();
    let (version, rewrapped) = server::masterkey::rotate_master(&config, store.as_ref()).await.unwrap();
    assert_eq!((version, rewrapped), (2, 2), "one signing key and one MFA secret");
    let secrets = store.list_all_mfa_secrets().await.unwrap();
    assert_eq!(secrets.iter().map(|m| m.master_key_version).collect::<Vec<_>>(), [2]);
    server::masterkey::remove_master_version(&config, store.as_ref(), 1).await.unwrap();
    drop(store);

    let app = spawn_with(config.clone()).await;
    // A fresh clock starts at the real time: move past the step the enrolment used.
    app.clock.advance(Duration::seconds(60));
    let r = login(&app, json!({"email": owner.email, "password": PASSWORD, "totp": totp_now(&app, &secret)})).await;
    assert_eq!(r.status(), 200);

    // Rotated while this server runs: it keeps sealing under the version it
    // knows (2), so removing that version must wait for another rotation.
    let store = server::open_store(&config).await.unwrap();
    assert_eq!(server::masterkey::rotate_master(&config, store.as_ref()).await.unwrap(), (3, 2));
    let session = app.create_user("late@example.com").await;
    enable_mfa(&app, &session).await;
    let err = server::masterkey::remove_master_version(&config, store.as_ref(), 2).await.unwrap_err();
    assert!(err.to_string().contains("MFA secrets are still wrapped under version 2"), "{err}");
    assert_eq!(server::masterkey::rotate_master(&config, store.as_ref()).await.unwrap(), (4, 3));
    server::masterkey::remove_master_version(&config, store.as_ref(), 2).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn accepting_an_invite_into_an_mfa_account_needs_the_code() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let session = app.create_user("guarded@example.com").await;
    let (secret, _) = enable_mfa(&app, &session).await;
    let r = app
        .post(&format!("/v1/tenants/{}/invites", owner.tenant_id))
        .bearer_auth(&owner.session)
        .json(&json!({"email": "guarded@example.com", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token = app.tokens_mailed_to("guarded@example.com", "inv_", 1).await.remove(0);
    let accept = |body: Value| app.post("/v1/invites/accept").json(&body).send();
    let r = accept(json!({"token": token, "password": PASSWORD})).await.unwrap();
    assert_error(r, 401, "mfa_required").await;
    app.clock.advance(Duration::seconds(30));
    let r = accept(json!({"token": token, "password": PASSWORD, "totp": totp_now(&app, &secret)})).await.unwrap();
    assert_eq!(r.status(), 201);
}
