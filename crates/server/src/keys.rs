//! Tenant signing keys at run time: generation (wrapped under the master key
//! before it touches the store), and caches of decrypted signers and of
//! verifying keys so the hot paths (token issue and verify) do not hit the
//! database or decrypt on every call.
//!
//! The caches use `std::sync::RwLock`: they are never held across an await,
//! and a std lock is cheaper than tokio's for such short sections.

use crate::error::ApiError;
use auth::envelope::{MasterKeyRing, key_aad};
use auth::signing::{SigningKey, VerifyingKey};
use domain::ids::TenantId;
use domain::keys::{KeyState, KeyStatus};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use store::{SigningKeyRecord, Store};
use time::OffsetDateTime;

#[derive(Clone)]
struct CachedVerifier {
    key: VerifyingKey,
    tenant: TenantId,
    state: KeyState,
    retires_at: Option<OffsetDateTime>,
}

pub struct KeyService {
    ring: MasterKeyRing,
    store: Arc<dyn Store>,
    signers: RwLock<HashMap<TenantId, Arc<SigningKey>>>,
    verifiers: RwLock<HashMap<String, CachedVerifier>>,
}

impl KeyService {
    pub fn new(ring: MasterKeyRing, store: Arc<dyn Store>) -> Self {
        Self { ring, store, signers: RwLock::default(), verifiers: RwLock::default() }
    }

    /// Generates an RSA-2048 key (off the async threads: ≈65–160 ms of CPU)
    /// and wraps its private half for storage.
    pub async fn new_key(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
    ) -> Result<(SigningKeyRecord, Arc<SigningKey>), ApiError> {
        let kid = auth::token::random_id(16);
        let key =
            tokio::task::spawn_blocking(move || SigningKey::generate(kid)).await.map_err(ApiError::internal)??;
        let record = self.wrap(tenant, &key, now)?;
        Ok((record, Arc::new(key)))
    }

    fn wrap(&self, tenant: TenantId, key: &SigningKey, now: OffsetDateTime) -> Result<SigningKeyRecord, ApiError> {
        let der = key.to_pkcs8()?;
        let private_key_enc = self.ring.encrypt(&der, &key_aad(&tenant.to_string(), key.kid()))?;
        Ok(SigningKeyRecord {
            kid: key.kid().to_owned(),
            tenant_id: tenant,
            state: KeyState::Active,
            public_n: key.public_n().to_owned(),
            public_e: key.public_e().to_owned(),
            private_key_enc,
            master_key_version: self.ring.current_version(),
            created_at: now,
            retires_at: None,
            revoked_at: None,
        })
    }

    /// Makes a just-stored active key the tenant's signer.
    pub fn install_signer(&self, tenant: TenantId, key: Arc<SigningKey>) {
        let mut signers = self.signers.write().unwrap_or_else(|e| e.into_inner());
        signers.insert(tenant, key);
    }

    /// The tenant's active signing key.
    pub async fn signer(&self, tenant: TenantId) -> Result<Arc<SigningKey>, ApiError> {
        if let Some(k) = self.signers.read().unwrap_or_else(|e| e.into_inner()).get(&tenant) {
            return Ok(k.clone());
        }
        let keys = self.store.list_signing_keys(tenant).await?;
        let record = keys
            .iter()
            .find(|k| k.state == KeyState::Active)
            .ok_or_else(|| ApiError::internal(format!("tenant {tenant} has no active signing key")))?;
        let key = Arc::new(unwrap_key(&self.ring, record)?);
        self.install_signer(tenant, key.clone());
        Ok(key)
    }

    /// The verifying key for `kid` and its tenant, if that key still verifies at `now`.
    pub async fn verifier(&self, kid: &str, now: OffsetDateTime) -> Result<Option<(VerifyingKey, TenantId)>, ApiError> {
        let cached = self.verifiers.read().unwrap_or_else(|e| e.into_inner()).get(kid).cloned();
        let entry = match cached {
            Some(e) => e,
            None => match self.store.get_signing_key(kid).await? {
                Some(record) => self.cache_verifier(&record)?,
                None => return Ok(None),
            },
        };
        let status = KeyStatus::derive(entry.state, entry.retires_at, now);
        Ok(status.verifies().then_some((entry.key, entry.tenant)))
    }

    fn cache_verifier(&self, record: &SigningKeyRecord) -> Result<CachedVerifier, ApiError> {
        let entry = CachedVerifier {
            key: VerifyingKey::from_components(record.kid.clone(), &record.public_n, &record.public_e)?,
            tenant: record.tenant_id,
            state: record.state,
            retires_at: record.retires_at,
        };
        self.verifiers.write().unwrap_or_else(|e| e.into_inner()).insert(record.kid.clone(), entry.clone());
        Ok(entry)
    }

    /// Re-reads a tenant's keys after a rotation or revocation. In one
    /// process this is immediate; a fleet delivers the same call by event.
    pub async fn reload_tenant(&self, tenant: TenantId) -> Result<Vec<SigningKeyRecord>, ApiError> {
        let keys = self.store.list_signing_keys(tenant).await?;
        for k in &keys {
            self.cache_verifier(k)?;
        }
        self.signers.write().unwrap_or_else(|e| e.into_inner()).remove(&tenant);
        Ok(keys)
    }
}

/// Decrypts a stored key; the associated data ties it to its row.
pub fn unwrap_key(ring: &MasterKeyRing, record: &SigningKeyRecord) -> Result<SigningKey, ApiError> {
    let der = ring.decrypt(&record.private_key_enc, &key_aad(&record.tenant_id.to_string(), &record.kid))?;
    Ok(SigningKey::from_pkcs8(record.kid.clone(), &der)?)
}
