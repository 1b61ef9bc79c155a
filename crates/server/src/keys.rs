//! Tenant signing keys at run time: generation (wrapped under the master key
//! before it touches the store), and caches of decrypted signers and of
//! verifying keys so the hot paths (token issue and verify) do not hit the
//! database or decrypt on every call.
//!
//! Cache coherence: every change to a tenant's keys goes through
//! [`KeyService::reload_tenant`], which bumps a generation counter. A cache
//! fill that read the store before such a bump is discarded instead of
//! overwriting the newer entry, so a revoked key can never be re-cached as
//! active. Entries also expire after [`CACHE_TTL`], which bounds staleness
//! when another process changed the keys (until fleet events arrive).
//!
//! The caches use `std::sync::RwLock`: they are never held across an await,
//! and a std lock is cheaper than tokio's for such short sections.

use crate::config::{Config, MasterKeySource};
use crate::error::ApiError;
use auth::envelope::{MasterKeyRing, key_aad};
use auth::signing::{SigningKey, VerifyingKey};
use domain::ids::TenantId;
use domain::keys::{KeyState, KeyStatus};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use store::{SigningKeyRecord, Store};
use time::OffsetDateTime;

/// How long a cached key is trusted without re-reading the store.
pub const CACHE_TTL: Duration = Duration::from_secs(10);

/// The least time between two runs of `--master-key-command` for a missing
/// version.
pub const COMMAND_REREAD_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct CachedVerifier {
    key: VerifyingKey,
    tenant: TenantId,
    state: KeyState,
    retires_at: Option<OffsetDateTime>,
    loaded: Instant,
}

struct CachedSigner {
    key: Arc<SigningKey>,
    loaded: Instant,
}

pub struct KeyService {
    ring: RwLock<Arc<MasterKeyRing>>,
    /// Where to re-read the ring from when a blob names a version we lack
    /// (`keys rotate-master` ran while we were up, or a version was added
    /// in the vault); `None` for `WIRESOCKET_MASTER_KEY`.
    reread: Option<MasterKeySource>,
    /// One re-read at a time, and when the last one ran: a blob naming a
    /// version no ring has must not start a vault CLI per request.
    last_reread: tokio::sync::Mutex<Option<Instant>>,
    store: Arc<dyn Store>,
    generation: AtomicU64,
    signers: RwLock<HashMap<TenantId, CachedSigner>>,
    verifiers: RwLock<HashMap<String, CachedVerifier>>,
}

impl KeyService {
    pub fn new(ring: MasterKeyRing, store: Arc<dyn Store>, config: &Config) -> Self {
        let reread = match &config.master_key {
            MasterKeySource::Inline(_) => None,
            source => Some(source.clone()),
        };
        Self {
            ring: RwLock::new(Arc::new(ring)),
            reread,
            last_reread: tokio::sync::Mutex::new(None),
            store,
            generation: AtomicU64::new(0),
            signers: RwLock::default(),
            verifiers: RwLock::default(),
        }
    }

    fn ring(&self) -> Arc<MasterKeyRing> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
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
        let ring = self.ring();
        let der = key.to_pkcs8()?;
        let private_key_enc = ring.encrypt(&der, &key_aad(&tenant.to_string(), key.kid()))?;
        let record = SigningKeyRecord {
            kid: key.kid().to_owned(),
            tenant_id: tenant,
            state: KeyState::Active,
            public_n: key.public_n().to_owned(),
            public_e: key.public_e().to_owned(),
            private_key_enc,
            master_key_version: ring.current_version(),
            created_at: now,
            retires_at: None,
            revoked_at: None,
        };
        Ok((record, Arc::new(key)))
    }

    /// Makes a just-created tenant's first key its signer.
    pub fn install_signer(&self, tenant: TenantId, key: Arc<SigningKey>) {
        let mut signers = self.signers.write().unwrap_or_else(|e| e.into_inner());
        signers.insert(tenant, CachedSigner { key, loaded: Instant::now() });
    }

    /// The tenant's active signing key.
    pub async fn signer(&self, tenant: TenantId) -> Result<Arc<SigningKey>, ApiError> {
        if let Some(k) = self.signers.read().unwrap_or_else(|e| e.into_inner()).get(&tenant)
            && k.loaded.elapsed() < CACHE_TTL
        {
            return Ok(k.key.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let keys = self.store.list_signing_keys(tenant).await?;
        let record = keys
            .iter()
            .find(|k| k.state == KeyState::Active)
            .ok_or_else(|| ApiError::internal(format!("tenant {tenant} has no active signing key")))?;
        let key = Arc::new(self.unwrap_key(record).await?);
        let mut signers = self.signers.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            signers.insert(tenant, CachedSigner { key: key.clone(), loaded: Instant::now() });
        }
        Ok(key)
    }

    /// The verifying key for `kid` and its tenant, if that key still verifies at `now`.
    pub async fn verifier(&self, kid: &str, now: OffsetDateTime) -> Result<Option<(VerifyingKey, TenantId)>, ApiError> {
        let cached = self
            .verifiers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(kid)
            .filter(|e| e.loaded.elapsed() < CACHE_TTL)
            .cloned();
        let entry = match cached {
            Some(e) => e,
            None => {
                let generation = self.generation.load(Ordering::Acquire);
                match self.store.get_signing_key(kid).await? {
                    Some(record) => self.cache_verifier(&record, Some(generation))?,
                    None => return Ok(None),
                }
            }
        };
        let status = KeyStatus::derive(entry.state, entry.retires_at, now);
        Ok(status.verifies().then_some((entry.key, entry.tenant)))
    }

    /// Caches a verifier read from the store; with `read_at`, only if no
    /// reload happened since that read (else the fresher entry stays).
    fn cache_verifier(&self, record: &SigningKeyRecord, read_at: Option<u64>) -> Result<CachedVerifier, ApiError> {
        let entry = CachedVerifier {
            key: VerifyingKey::from_components(record.kid.clone(), &record.public_n, &record.public_e)?,
            tenant: record.tenant_id,
            state: record.state,
            retires_at: record.retires_at,
            loaded: Instant::now(),
        };
        let mut verifiers = self.verifiers.write().unwrap_or_else(|e| e.into_inner());
        if read_at.is_none_or(|g| g == self.generation.load(Ordering::Acquire)) {
            verifiers.insert(record.kid.clone(), entry.clone());
        }
        Ok(entry)
    }

    /// Re-reads a tenant's keys after a rotation or revocation. In one
    /// process this is immediate; a fleet delivers the same call by event.
    pub async fn reload_tenant(&self, tenant: TenantId) -> Result<Vec<SigningKeyRecord>, ApiError> {
        // Bump first: any fill that read before this point is now stale.
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.signers.write().unwrap_or_else(|e| e.into_inner()).remove(&tenant);
        let keys = self.store.list_signing_keys(tenant).await?;
        for k in &keys {
            self.cache_verifier(k, None)?;
        }
        Ok(keys)
    }

    /// Decrypts a stored key; the associated data ties it to its row.
    async fn unwrap_key(&self, record: &SigningKeyRecord) -> Result<SigningKey, ApiError> {
        unwrap_key(self.ring_for(record.master_key_version).await?.as_ref(), record)
    }

    /// A ring that holds `version`. When ours lacks it, re-reads the ring
    /// (the operator rotated the master key while we were running) from its
    /// file, or by running `--master-key-command` again; decryption then
    /// fails on its own if it is still missing. The command runs at most
    /// once per [`COMMAND_REREAD_INTERVAL`].
    pub async fn ring_for(&self, version: u32) -> Result<Arc<MasterKeyRing>, ApiError> {
        let ring = self.ring();
        if ring.versions().contains(&version) {
            return Ok(ring);
        }
        let Some(source) = &self.reread else {
            return Ok(ring);
        };
        let mut last = self.last_reread.lock().await;
        // Another request may have re-read it while we waited.
        let ring = self.ring();
        if ring.versions().contains(&version) {
            return Ok(ring);
        }
        let fresh = match source {
            MasterKeySource::File(path) => {
                let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(ApiError::internal)?);
                MasterKeyRing::parse(&text)?
            }
            MasterKeySource::Command(command) => {
                if last.is_some_and(|at| at.elapsed() < COMMAND_REREAD_INTERVAL) {
                    return Ok(ring);
                }
                *last = Some(Instant::now());
                crate::masterkey::run_ring_command(command).await.map_err(|e| {
                    tracing::error!(error = %e, version, "could not re-read the master key ring");
                    ApiError::internal("the master key ring could not be re-read")
                })?
            }
            MasterKeySource::Inline(_) => return Ok(ring),
        };
        let fresh = Arc::new(fresh);
        tracing::info!(versions = ?fresh.versions(), "re-read the master key ring");
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    /// Seals a small secret (a webhook secret, …) under the current master
    /// key; answers the blob and the version to store beside it. `aad` binds
    /// the blob to its row.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<(Vec<u8>, u32), ApiError> {
        let ring = self.ring();
        Ok((ring.encrypt(plaintext, aad)?, ring.current_version()))
    }

    /// Opens what [`KeyService::seal`] sealed.
    pub async fn open(&self, blob: &[u8], version: u32, aad: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, ApiError> {
        Ok(self.ring_for(version).await?.decrypt(blob, aad)?)
    }
}

/// Decrypts a stored key with a given ring.
pub fn unwrap_key(ring: &MasterKeyRing, record: &SigningKeyRecord) -> Result<SigningKey, ApiError> {
    let der = ring.decrypt(&record.private_key_enc, &key_aad(&record.tenant_id.to_string(), &record.kid))?;
    Ok(SigningKey::from_pkcs8(record.kid.clone(), &der)?)
}
