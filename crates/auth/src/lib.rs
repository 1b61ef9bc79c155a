//! WireSocket's keys and crypto. No HTTP, no storage: callers hand in bytes
//! and "now", and get bytes back.
//!
//! # Layout
//! - [`envelope`]: AES-256-GCM under a versioned master key ring; the only
//!   way private keys and other secrets are written to storage.
//! - [`signing`]: per-tenant RSA-2048 signing keys, RS256 access tokens
//!   (RFC 9068 `at+jwt`), their verification and JWKs.
//! - [`password`]: argon2id password hashes.
//! - [`token`]: opaque bearer tokens, hashes for storing them, constant-time
//!   comparison, random ids and HMAC-SHA256.
//! - [`totp`]: the TOTP second factor (RFC 6238), its otpauth URL and QR
//!   code, replay-refusing verification.
//! - [`recovery`]: MFA recovery codes, their normalisation and stored hash.
//! - [`webhook`]: webhook secrets and `X-Webhook-Signature` signing and
//!   checking.
//!
//! Every type holding secret material has a hand-written `Debug` that names
//! the algorithm and never the bytes, and wipes its buffers on drop.

pub mod envelope;
pub mod password;
pub mod recovery;
pub mod signing;
pub mod token;
pub mod totp;
pub mod webhook;

pub use secrecy::{ExposeSecret, SecretString};

/// Failures of the crypto layer. Messages never carry secret material, so
/// they are safe to log; they are not meant for end users.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The crypto library refused an operation (RNG, key generation, sealing).
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    /// The master key text could not be parsed. Names the line, never the key.
    #[error("bad master key: {0}")]
    BadMasterKey(String),
    /// A blob was sealed under a master key version this ring does not hold.
    #[error("unknown master key version {0}")]
    UnknownMasterVersion(u32),
    /// The current master key version is the one that seals new data.
    #[error("master key version {0} is current and cannot be removed")]
    CurrentMasterVersion(u32),
    /// Wrong key, wrong associated data, truncated or tampered blob.
    #[error("decryption failed")]
    Decrypt,
    /// A signing or verifying key was rejected.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// Claims could not be serialised to JSON.
    #[error("claims could not be serialised")]
    Claims,
    /// Argon2 refused the parameters or the input.
    #[error("password hashing failed: {0}")]
    Password(&'static str),
    /// A QR code could not be built (the data does not fit one).
    #[error("QR code failed: {0}")]
    QrCode(&'static str),
}

#[cfg(test)]
mod tests {
    use super::envelope::MasterKeyRing;
    use super::signing::{SigningKey, VerifyingKey};
    use super::totp::TotpSecret;

    /// The server shares these across tasks behind `Arc`s.
    #[test]
    fn key_types_are_send_and_sync() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<MasterKeyRing>();
        is_send_sync::<SigningKey>();
        is_send_sync::<VerifyingKey>();
        is_send_sync::<TotpSecret>();
    }
}
