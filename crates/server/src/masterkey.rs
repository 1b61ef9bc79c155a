//! Loading, generating and rotating the master key ring that wraps every
//! tenant's private signing key, every webhook signing secret and every
//! user's TOTP secret.

use crate::config::{Config, MasterKeySource};
use auth::envelope::MasterKeyRing;
use secrecy::ExposeSecret;
use std::io::Write;
use std::path::Path;
use store::Store;

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key file {path}: {msg}")]
    File { path: String, msg: String },
    #[error("master key: {0}")]
    Bad(#[from] auth::AuthError),
    #[error("{0}")]
    Other(String),
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> MasterKeyError {
    MasterKeyError::File { path: path.display().to_string(), msg: msg.to_string() }
}

/// Loads the ring; when none was configured, generates one into the data dir
/// (mode 0600) and warns that production must supply its own.
pub fn load_or_generate(config: &Config) -> Result<MasterKeyRing, MasterKeyError> {
    match &config.master_key {
        MasterKeySource::Inline(text) => Ok(MasterKeyRing::parse(text.expose_secret())?),
        MasterKeySource::File(path) => {
            if path.exists() {
                check_permissions(path)?;
                let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
                return Ok(MasterKeyRing::parse(&text)?);
            }
            if !config.master_key_generated {
                return Err(file_err(path, "does not exist"));
            }
            let ring = MasterKeyRing::generate()?;
            write_ring(path, &ring)?;
            tracing::warn!(
                path = %path.display(),
                "generated a master key inside the data dir; anyone who can read the data dir can decrypt the signing keys. \
                 In production supply your own with --master-key-file or WIRESOCKET_MASTER_KEY, kept apart from the data"
            );
            Ok(ring)
        }
    }
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), MasterKeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_err(|e| file_err(path, e))?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "master key file is readable by group or others; chmod 600 it");
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_: &Path) -> Result<(), MasterKeyError> {
    Ok(())
}

/// Writes atomically (temp file + rename) with mode 0600, so a crash never
/// leaves a half-written ring.
pub fn write_ring(path: &Path, ring: &MasterKeyRing) -> Result<(), MasterKeyError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| file_err(path, e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| file_err(&tmp, e))?;
    f.write_all(ring.to_text().as_bytes()).map_err(|e| file_err(&tmp, e))?;
    f.sync_all().map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))?;
    Ok(())
}

/// `wiresocket keys rotate-master`: adds a new master key version, saves the
/// ring (before touching any row, so every ciphertext stays decryptable
/// whatever happens next), then re-wraps every stored signing key, webhook
/// secret and MFA secret under it; answers the version and how many moved.
/// Old versions stay in the ring until removed with `remove_version`.
pub async fn rotate_master(config: &Config, store: &dyn Store) -> Result<(u32, usize), MasterKeyError> {
    let MasterKeySource::File(path) = &config.master_key else {
        return Err(MasterKeyError::Other(
            "rotate-master rewrites the key ring and so needs --master-key-file (or the generated key in the data dir), \
             not WIRESOCKET_MASTER_KEY"
                .into(),
        ));
    };
    let mut ring = load_or_generate(config)?;
    let version = ring.add_version()?;
    write_ring(path, &ring)?;
    let n = rewrap_all(&ring, store).await?;
    Ok((version, n))
}

/// Re-wraps every signing key, MFA secret and webhook secret not yet under
/// the ring's current version; answers how many.
pub async fn rewrap_all(ring: &MasterKeyRing, store: &dyn Store) -> Result<usize, MasterKeyError> {
    Ok(rewrap_signing_keys(ring, store).await?
        + rewrap_mfa_secrets(ring, store).await?
        + rewrap_webhook_secrets(ring, store).await?)
}

async fn rewrap_mfa_secrets(ring: &MasterKeyRing, store: &dyn Store) -> Result<usize, MasterKeyError> {
    let current = ring.current_version();
    let mut n = 0;
    for record in store.list_all_mfa_secrets().await.map_err(|e| MasterKeyError::Other(e.to_string()))? {
        if record.master_key_version == current {
            continue;
        }
        let aad = auth::envelope::mfa_aad(&record.user_id.to_string());
        let secret = ring.decrypt(&record.secret_enc, &aad)?;
        let blob = ring.encrypt(&secret, &aad)?;
        match store.rewrap_mfa_secret(record.user_id, &blob, current).await {
            Ok(()) => n += 1,
            // Turned off meanwhile: nothing left to re-wrap.
            Err(store::StoreError::NotFound) => {}
            Err(e) => return Err(MasterKeyError::Other(e.to_string())),
        }
    }
    Ok(n)
}

async fn rewrap_signing_keys(ring: &MasterKeyRing, store: &dyn Store) -> Result<usize, MasterKeyError> {
    let current = ring.current_version();
    let mut n = 0;
    for record in store.list_all_signing_keys().await.map_err(|e| MasterKeyError::Other(e.to_string()))? {
        if record.master_key_version == current {
            continue;
        }
        let aad = auth::envelope::key_aad(&record.tenant_id.to_string(), &record.kid);
        let der = ring.decrypt(&record.private_key_enc, &aad)?;
        let blob = ring.encrypt(&der, &aad)?;
        store
            .rewrap_signing_key(&record.kid, &blob, current)
            .await
            .map_err(|e| MasterKeyError::Other(e.to_string()))?;
        n += 1;
    }
    Ok(n)
}

/// Re-wraps every webhook secret not yet under the ring's current version.
pub async fn rewrap_webhook_secrets(ring: &MasterKeyRing, store: &dyn Store) -> Result<usize, MasterKeyError> {
    let current = ring.current_version();
    let mut n = 0;
    for hook in store.list_all_webhook_secrets().await.map_err(|e| MasterKeyError::Other(e.to_string()))? {
        if hook.master_key_version == current {
            continue;
        }
        let aad = crate::webhooks::secret_aad(hook.tenant_id, &hook.id);
        let secret = ring.decrypt(&hook.secret_enc, &aad)?;
        let blob = ring.encrypt(&secret, &aad)?;
        match store.rewrap_webhook_secret(&hook.id, &blob, current).await {
            // Deleted meanwhile: nothing left to re-wrap.
            Ok(()) | Err(store::StoreError::NotFound) => {}
            Err(e) => return Err(MasterKeyError::Other(e.to_string())),
        }
        n += 1;
    }
    Ok(n)
}

/// Fails fast at start-up when the ring cannot unwrap the stored keys (a
/// missing version, or a different key altogether), instead of failing on
/// the first token request.
pub async fn check_ring_matches_store(ring: &MasterKeyRing, store: &dyn Store) -> Result<(), MasterKeyError> {
    let keys = store.list_all_signing_keys().await.map_err(|e| MasterKeyError::Other(e.to_string()))?;
    let versions = ring.versions();
    if let Some(k) = keys.iter().find(|k| !versions.contains(&k.master_key_version)) {
        return Err(MasterKeyError::Other(format!(
            "signing key {} is wrapped under master key version {}, which the configured ring lacks",
            k.kid, k.master_key_version
        )));
    }
    if let Some(k) = keys.first() {
        let aad = auth::envelope::key_aad(&k.tenant_id.to_string(), &k.kid);
        ring.decrypt(&k.private_key_enc, &aad).map_err(|_| {
            MasterKeyError::Other("the configured master key cannot decrypt the stored signing keys: wrong key?".into())
        })?;
    }
    let hooks = store.list_all_webhook_secrets().await.map_err(|e| MasterKeyError::Other(e.to_string()))?;
    if let Some(h) = hooks.iter().find(|h| !versions.contains(&h.master_key_version)) {
        return Err(MasterKeyError::Other(format!(
            "webhook {} has its secret wrapped under master key version {}, which the configured ring lacks",
            h.id, h.master_key_version
        )));
    }
    Ok(())
}

/// `wiresocket keys remove-master --version N`: refuses while any signing
/// key or MFA secret is still wrapped under N.
pub async fn remove_master_version(config: &Config, store: &dyn Store, version: u32) -> Result<(), MasterKeyError> {
    let MasterKeySource::File(path) = &config.master_key else {
        return Err(MasterKeyError::Other("remove-master needs --master-key-file".into()));
    };
    let mut ring = load_or_generate(config)?;
    let in_use = store
        .list_all_signing_keys()
        .await
        .map_err(|e| MasterKeyError::Other(e.to_string()))?
        .iter()
        .filter(|k| k.master_key_version == version)
        .count();
    if in_use > 0 {
        return Err(MasterKeyError::Other(format!(
            "{in_use} signing keys are still wrapped under version {version}; run `wiresocket keys rotate-master` first"
        )));
    }
    let hooks_in_use = store
        .list_all_webhook_secrets()
        .await
        .map_err(|e| MasterKeyError::Other(e.to_string()))?
        .iter()
        .filter(|h| h.master_key_version == version)
        .count();
    if hooks_in_use > 0 {
        return Err(MasterKeyError::Other(format!(
            "{hooks_in_use} webhook secrets are still wrapped under version {version}; \
             run `wiresocket keys rotate-master` first"
        )));
    }
    let mfa_in_use = store
        .list_all_mfa_secrets()
        .await
        .map_err(|e| MasterKeyError::Other(e.to_string()))?
        .iter()
        .filter(|m| m.master_key_version == version)
        .count();
    if mfa_in_use > 0 {
        return Err(MasterKeyError::Other(format!(
            "{mfa_in_use} MFA secrets are still wrapped under version {version}; run `wiresocket keys rotate-master` first"
        )));
    }
    ring.remove_version(version)?;
    write_ring(path, &ring)
}
