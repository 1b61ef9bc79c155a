//! The TOTP second factor at run time: sealing secrets under the master key
//! ring (bound to their user), and the one check every login path makes
//! (`/v1/auth/login`, the OAuth password grant, turning MFA off).
//!
//! A code is accepted once: the step it matched is compared with the last
//! accepted one, then claimed with the store's compare-and-set, so two
//! concurrent logins with one code cannot both pass. Recovery codes are
//! looked up by hash and marked used in one statement.

use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::state::{Actor, AppState};
use auth::envelope::mfa_aad;
use auth::totp::TotpSecret;
use domain::audit::AuditAction;
use domain::ids::UserId;
use serde_json::json;
use store::MfaRecord;

/// The issuer shown in authenticator apps.
pub const ISSUER: &str = "WireSocket";

/// What the user offered as a second factor.
#[derive(Clone, Copy)]
pub enum Proof<'a> {
    Totp(&'a str),
    RecoveryCode(&'a str),
}

impl<'a> Proof<'a> {
    /// From a login's optional fields; a TOTP code wins when both are given.
    pub fn from_fields(totp: Option<&'a str>, recovery_code: Option<&'a str>) -> Option<Self> {
        match (totp, recovery_code) {
            (Some(code), _) => Some(Self::Totp(code)),
            (None, Some(code)) => Some(Self::RecoveryCode(code)),
            (None, None) => None,
        }
    }

    /// One field that may hold either: six digits are a TOTP code, anything
    /// else is tried as a recovery code.
    pub fn either(code: &'a str) -> Self {
        let digits = code.chars().filter(|c| !c.is_whitespace()).count();
        if digits == auth::totp::DIGITS && code.chars().all(|c| c.is_ascii_digit() || c.is_whitespace()) {
            Self::Totp(code)
        } else {
            Self::RecoveryCode(code)
        }
    }
}

/// Why a second factor was refused.
#[derive(Debug)]
pub enum MfaError {
    /// MFA is on and no code was given.
    Required,
    /// Wrong, expired or replayed code, or a used recovery code.
    Invalid,
    Internal(ApiError),
}

impl From<ApiError> for MfaError {
    fn from(e: ApiError) -> Self {
        Self::Internal(e)
    }
}

impl From<store::StoreError> for MfaError {
    fn from(e: store::StoreError) -> Self {
        Self::Internal(e.into())
    }
}

/// Seals a fresh secret for `user`; answers the blob and its master key version.
pub fn seal(state: &AppState, user: UserId, secret: &TotpSecret) -> Result<(Vec<u8>, u32), ApiError> {
    state.keys.seal(secret.as_bytes(), &mfa_aad(&user.to_string()))
}

/// Opens a stored secret; the associated data refuses a blob moved from another user's row.
pub async fn open(state: &AppState, record: &MfaRecord) -> Result<TotpSecret, ApiError> {
    let ring = state.keys.ring_for(record.master_key_version).await?;
    let bytes = ring.decrypt(&record.secret_enc, &mfa_aad(&record.user_id.to_string()))?;
    Ok(TotpSecret::from_bytes(&bytes)?)
}

/// Seconds since the epoch at the state's clock (0 before 1970).
pub fn unix_now(state: &AppState) -> u64 {
    u64::try_from(state.now().unix_timestamp()).unwrap_or(0)
}

/// The user's enabled MFA record, if MFA is on (a pending setup is not).
pub async fn enabled(state: &AppState, user: UserId) -> Result<Option<MfaRecord>, ApiError> {
    Ok(state.store.get_mfa(user).await?.filter(|m| m.enabled_at.is_some()))
}

/// The second-factor check of a login whose password already checked out:
/// passes at once when MFA is off, else needs a fresh TOTP code or an
/// unused recovery code, which it consumes. Failures and recovery-code use
/// are audited.
pub async fn check(state: &AppState, user: UserId, proof: Option<Proof<'_>>, ip: &ClientIp) -> Result<(), MfaError> {
    let Some(record) = enabled(state, user).await? else {
        return Ok(());
    };
    let Some(proof) = proof else {
        return Err(MfaError::Required);
    };
    verify_enabled(state, &record, proof, ip).await
}

/// Checks and consumes `proof` against an enabled secret.
pub async fn verify_enabled(
    state: &AppState,
    record: &MfaRecord,
    proof: Proof<'_>,
    ip: &ClientIp,
) -> Result<(), MfaError> {
    let user = record.user_id;
    let actor = Actor::user_id(user, ip);
    let accepted = match proof {
        Proof::Totp(code) => {
            let secret = open(state, record).await?;
            let last = record.last_step.and_then(|s| u64::try_from(s).ok());
            match secret.verify(code, unix_now(state), last).and_then(|s| i64::try_from(s).ok()) {
                Some(step) => state.store.consume_totp_step(user, step).await?,
                None => false,
            }
        }
        Proof::RecoveryCode(code) => {
            let used = match auth::recovery::hash_recovery_code(code) {
                Some(hash) => state.store.consume_recovery_code(user, &hash, state.now()).await?,
                None => false,
            };
            if used {
                let left = state.store.unused_recovery_codes(user).await?;
                state.audit_user(user, &actor, AuditAction::RecoveryCodeUsed, json!({"remaining": left})).await;
            }
            used
        }
    };
    if accepted {
        return Ok(());
    }
    let kind = match proof {
        Proof::Totp(_) => "totp",
        Proof::RecoveryCode(_) => "recovery_code",
    };
    state.audit_user(user, &actor, AuditAction::MfaFailed, json!({"method": kind})).await;
    Err(MfaError::Invalid)
}
