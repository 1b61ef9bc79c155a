//! The master key ring: generated into the data dir when none is given,
//! rotated offline with every signing key re-wrapped, tokens verifying across it.

use crate::helpers::*;
use crate::tenants::decode_with_jwks;
use serde_json::Value;

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn tokens_keep_verifying_across_a_master_key_rotation() {
    let data_dir = temp_dir();
    let mut config = test_config(&data_dir);
    // Restarts bind a new port; the issuer must not move with it.
    config.public_url = Some("https://ws.example.test".into());
    let app = spawn_with(config.clone()).await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let token = app.m2m_token(&creds).await;
    app.stop().await;

    let key_file = data_dir.join("master.key");
    #[cfg(unix)]
    assert_eq!(mode(&key_file), 0o600);
    let before = std::fs::read_to_string(&key_file).unwrap();

    let store = server::open_store(&config).await.unwrap();
    let (version, rewrapped) = server::masterkey::rotate_master(&config, store.as_ref()).await.unwrap();
    assert_eq!((version, rewrapped), (2, 1));
    for k in store.list_all_signing_keys().await.unwrap() {
        assert_eq!(k.master_key_version, 2);
    }
    let after = std::fs::read_to_string(&key_file).unwrap();
    assert!(after.contains(before.lines().find(|l| l.starts_with("1:")).unwrap()), "version 1 is kept");
    // Version 2 is current, so it cannot be removed; version 1 can, now that nothing uses it.
    assert!(server::masterkey::remove_master_version(&config, store.as_ref(), 2).await.is_err());
    drop(store);

    let app = spawn_with(config.clone()).await;
    let session = app.login(&owner.email, PASSWORD).await;
    let claims = decode_with_jwks(&app, &owner.tenant_id, &token).await.unwrap();
    assert_eq!(claims["client_id"], creds.client_id.as_str());
    let r = app
        .post("/oauth/introspect")
        .basic_auth(&creds.client_id, Some(&creds.client_secret))
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
    // Signing after the restart decrypts the key under version 2.
    let fresh = app.m2m_token(&creds).await;
    decode_with_jwks(&app, &owner.tenant_id, &fresh).await.unwrap();
    assert_eq!(app.get("/v1/me").bearer_auth(&session).send().await.unwrap().status(), 200);
    app.stop().await;

    let store = server::open_store(&config).await.unwrap();
    server::masterkey::remove_master_version(&config, store.as_ref(), 1).await.unwrap();
    drop(store);
    assert!(!std::fs::read_to_string(&key_file).unwrap().lines().any(|l| l.starts_with("1:")));
    let app = spawn_with(config).await;
    let again = app.m2m_token(&creds).await;
    decode_with_jwks(&app, &owner.tenant_id, &again).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn removing_a_version_still_in_use_is_refused() {
    let data_dir = temp_dir();
    let config = test_config(&data_dir);
    let app = spawn_with(config.clone()).await;
    app.setup().await;
    app.stop().await;
    let store = server::open_store(&config).await.unwrap();
    let err = server::masterkey::remove_master_version(&config, store.as_ref(), 1).await.unwrap_err();
    assert!(err.to_string().contains("current") || err.to_string().contains("still"), "{err}");
}

#[tokio::test]
async fn a_missing_key_file_or_a_foreign_key_refuses_to_start() {
    let data_dir = temp_dir();
    let mut config = test_config(&data_dir);
    config.master_key = server::config::MasterKeySource::File(data_dir.join("missing.key"));
    config.master_key_generated = false;
    assert!(server::Application::build(config).await.is_err());

    // Data written under one master key cannot be signed with under another.
    let config = test_config(&data_dir);
    let app = spawn_with(config.clone()).await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    app.stop().await;
    let other = auth::envelope::MasterKeyRing::generate().unwrap();
    let mut wrong = config.clone();
    wrong.master_key = server::config::MasterKeySource::Inline(auth::SecretString::from(other.to_text().to_string()));
    let err = server::Application::build(wrong).await.err().expect("a foreign master key must refuse to start");
    assert!(err.to_string().contains("cannot decrypt"), "{err}");
    drop(creds);
}
