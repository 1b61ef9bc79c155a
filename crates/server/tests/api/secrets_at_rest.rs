//! After a real run, the data dir's bytes hold no private key, client secret,
//! password, raw session/refresh/invite/reset token, TOTP secret or recovery
//! code. (The mail outbox is left out: its messages carry their links by
//! design, like mail in any mailbox.)

use crate::helpers::*;
use serde_json::json;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_secret_is_stored_in_the_clear() {
    let mut app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let tokens = app.client_credentials(&creds).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let r = app.token_request(&creds, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    let rotated: serde_json::Value = r.json().await.unwrap();
    let pw = app
        .post("/oauth/token")
        .form(&[("grant_type", "password"), ("username", &owner.email), ("password", PASSWORD)])
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let r = app
        .post(&format!("/v1/tenants/{}/apps/{}/secret/rotate", owner.tenant_id, creds.id))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap();
    let new_secret = r.json::<serde_json::Value>().await.unwrap()["client_secret"].as_str().unwrap().to_owned();
    let r = app.post("/v1/tenants").bearer_auth(&owner.session).json(&json!({"name": "Two"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r = app
        .post(&format!("/v1/tenants/{}/invites", owner.tenant_id))
        .bearer_auth(&owner.session)
        .json(&json!({"email": "invitee@example.com", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let invite = app.tokens_mailed_to("invitee@example.com", "inv_", 1).await.remove(0);
    let r = app.post("/v1/auth/password-reset").json(&json!({"email": owner.email})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let reset = app.tokens_mailed_to(&owner.email, "rst_", 1).await.remove(0);
    let setup: serde_json::Value =
        app.post("/v1/me/mfa/setup").bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
    let totp_secret = setup["secret"].as_str().unwrap().to_owned();
    let r = app
        .post("/v1/me/mfa/verify")
        .bearer_auth(&owner.session)
        .json(&json!({"code": totp_now(&app, &totp_secret)}))
        .send()
        .await
        .unwrap();
    let recovery: serde_json::Value = r.json().await.unwrap();

    // The private keys as the server holds them in memory.
    let tid = domain::ids::TenantId::parse(&owner.tenant_id).unwrap();
    let der = app.state.keys.signer(tid).await.unwrap().to_pkcs8().unwrap();
    let state = app.state.clone();
    // Keep the data dir past the server's shutdown: it is what we scan.
    let _keep = app.owned_dir.take();
    let data_dir = app.data_dir.clone();
    app.stop().await;
    drop(state);

    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("password".into(), PASSWORD.as_bytes().to_vec()),
        ("client secret".into(), creds.client_secret.as_bytes().to_vec()),
        ("rotated client secret".into(), new_secret.into_bytes()),
        ("session".into(), owner.session.as_bytes().to_vec()),
        ("refresh token".into(), refresh.into_bytes()),
        ("rotated refresh token".into(), rotated["refresh_token"].as_str().unwrap().as_bytes().to_vec()),
        ("dashboard session".into(), pw["access_token"].as_str().unwrap().as_bytes().to_vec()),
        ("dashboard refresh".into(), pw["refresh_token"].as_str().unwrap().as_bytes().to_vec()),
        ("invite token".into(), invite.into_bytes()),
        ("reset token".into(), reset.into_bytes()),
        ("TOTP secret (base32)".into(), totp_secret.as_bytes().to_vec()),
        ("TOTP secret".into(), base32_decode(&totp_secret)),
    ];
    for code in recovery["recovery_codes"].as_array().unwrap() {
        secrets.push(("recovery code".into(), code.as_str().unwrap().as_bytes().to_vec()));
    }
    // Any 32-byte run of the private key's DER (well inside its secret part).
    for (i, chunk) in der.chunks(32).filter(|c| c.len() == 32).enumerate() {
        secrets.push((format!("private key chunk {i}"), chunk.to_vec()));
    }
    let mut scanned = 0;
    // The data dir and its directories (the document journal's segments).
    let mut files = Vec::new();
    let mut dirs = vec![data_dir.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == "master.key" || n == "outbox") {
                continue;
            }
            if path.is_dir() { dirs.push(path) } else { files.push(path) }
        }
    }
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "log")), "the journal was scanned: {files:?}");
    for path in files {
        // SQLite may remove its -wal/-shm files as the last connection closes.
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        scanned += bytes.len();
        for (what, needle) in &secrets {
            assert!(!contains(&bytes, needle), "{what} found in {}", path.display());
        }
    }
    assert!(scanned > 10_000, "the database was scanned ({scanned} bytes)");
}
