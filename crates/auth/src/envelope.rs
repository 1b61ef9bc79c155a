//! Envelope encryption of secrets at rest (signing keys, TOTP seeds) under a
//! versioned master key ring.
//!
//! Blob format v1: `[0x01][version: u32 BE][nonce: 12 bytes][ciphertext || tag]`,
//! AES-256-GCM. The 5-byte header is authenticated together with the
//! caller's associated data, so a blob cannot be relabelled to another key
//! version or format, and [`key_aad`] binds it to the row it belongs to.
//!
//! Rotation: [`MasterKeyRing::add_version`] makes a new current key; old blobs
//! keep decrypting under their own version until they are re-sealed and the
//! old version is removed.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use zeroize::{Zeroize, Zeroizing};

use crate::AuthError;

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const FORMAT_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 4;
const MIN_BLOB_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

// Operators paste keys from many tools; accept both alphabets, with or
// without padding, but still reject non-canonical trailing bits.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// One master key. Boxed so that moving it (into the map, between map
/// nodes) never leaves an unwiped copy of the bytes on the stack.
struct MasterKey(Box<[u8; KEY_LEN]>);

impl MasterKey {
    fn random() -> Result<Self, AuthError> {
        let mut key = Self(Box::new([0u8; KEY_LEN]));
        aws_lc_rs::rand::fill(key.0.as_mut_slice()).map_err(|_| AuthError::Crypto("system RNG failed"))?;
        Ok(key)
    }

    fn aead(&self) -> Result<RandomizedNonceKey, AuthError> {
        RandomizedNonceKey::new(&AES_256_GCM, self.0.as_slice())
            .map_err(|_| AuthError::Crypto("AES-256-GCM key setup failed"))
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The master keys, by version. The highest version seals; every version
/// opens what it sealed.
pub struct MasterKeyRing {
    keys: BTreeMap<u32, MasterKey>,
}

impl fmt::Debug for MasterKeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeyRing").field("algorithm", &"AES-256-GCM").field("versions", &self.versions()).finish()
    }
}

impl MasterKeyRing {
    /// A fresh ring holding one random key at version 1.
    pub fn generate() -> Result<Self, AuthError> {
        let mut keys = BTreeMap::new();
        keys.insert(1, MasterKey::random()?);
        Ok(Self { keys })
    }

    /// Parses the text form: one `<version>:<base64 of 32 bytes>` per line;
    /// blank lines and lines starting with `#` are ignored. Errors name the
    /// line, never its content.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let mut keys = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| AuthError::BadMasterKey(format!("line {line_no}: {why}"));
            let (version, encoded) = line.split_once(':').ok_or_else(|| bad("expected <version>:<base64 key>"))?;
            let version = version.trim();
            if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("version is not a number"));
            }
            let version: u32 = version.parse().map_err(|_| bad("version is out of range"))?;
            if version == 0 {
                return Err(bad("versions start at 1"));
            }
            if keys.contains_key(&version) {
                return Err(bad("duplicate version"));
            }
            keys.insert(version, decode_key(encoded.trim()).map_err(bad)?);
        }
        if keys.is_empty() {
            return Err(AuthError::BadMasterKey("no keys found".into()));
        }
        Ok(Self { keys })
    }

    /// The text form [`MasterKeyRing::parse`] reads, versions ascending.
    pub fn to_text(&self) -> Zeroizing<String> {
        const COMMENT: &str = "# WireSocket master keys: <version>:<base64 AES-256 key>. Keep secret.\n";
        // Sized up front so the buffer never reallocates and leaves an
        // unwiped copy of the keys behind.
        let per_line = 10 + 1 + KEY_LEN.div_ceil(3) * 4 + 1;
        let mut out = Zeroizing::new(String::with_capacity(COMMENT.len() + per_line * self.keys.len()));
        out.push_str(COMMENT);
        for (version, key) in &self.keys {
            out.push_str(&version.to_string());
            out.push(':');
            STANDARD.encode_string(key.0.as_slice(), &mut out);
            out.push('\n');
        }
        out
    }

    /// The version new blobs are sealed under: the highest one.
    pub fn current_version(&self) -> u32 {
        // `keys` is never empty: every constructor inserts one and
        // `remove_version` refuses to remove the current one.
        self.keys.keys().next_back().copied().unwrap_or(0)
    }

    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Adds a random key one above the current version and makes it current.
    pub fn add_version(&mut self) -> Result<u32, AuthError> {
        let version =
            self.current_version().checked_add(1).ok_or(AuthError::Crypto("master key versions exhausted"))?;
        self.keys.insert(version, MasterKey::random()?);
        Ok(version)
    }

    /// Drops an old version once nothing is sealed under it any more.
    pub fn remove_version(&mut self, version: u32) -> Result<(), AuthError> {
        if !self.keys.contains_key(&version) {
            return Err(AuthError::UnknownMasterVersion(version));
        }
        if version == self.current_version() {
            return Err(AuthError::CurrentMasterVersion(version));
        }
        self.keys.remove(&version);
        Ok(())
    }

    /// Seals `plaintext` under the current version with a fresh random nonce.
    /// Random 96-bit nonces are safe far beyond the number of secrets one
    /// deployment will ever seal under one key (NIST's 2^32 bound).
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, AuthError> {
        let version = self.current_version();
        let key = self.keys.get(&version).ok_or(AuthError::UnknownMasterVersion(version))?.aead()?;
        let header = header(version);
        // Room for the tag up front: growing the buffer would leave a stray
        // copy of the plaintext, and a failed seal leaves it in place.
        let mut in_out = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        in_out.extend_from_slice(plaintext);
        let nonce = key
            .seal_in_place_append_tag(Aad::from(full_aad(&header, aad)), &mut *in_out)
            .map_err(|_| AuthError::Crypto("AES-256-GCM seal failed"))?;

        let mut blob = Vec::with_capacity(MIN_BLOB_LEN + plaintext.len());
        blob.extend_from_slice(&header);
        blob.extend_from_slice(nonce.as_ref());
        blob.extend_from_slice(&in_out);
        Ok(blob)
    }

    /// Opens a blob with the key of the version it names. Any mismatch in
    /// key, associated data or content is the same [`AuthError::Decrypt`].
    pub fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, AuthError> {
        let version = Self::blob_version(blob).ok_or(AuthError::Decrypt)?;
        let key = self.keys.get(&version).ok_or(AuthError::UnknownMasterVersion(version))?.aead()?;
        let (header, rest) = blob.split_at(HEADER_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AuthError::Decrypt)?;

        let mut in_out = Zeroizing::new(sealed.to_vec());
        let plain_len = key
            .open_in_place(nonce, Aad::from(full_aad(header, aad)), in_out.as_mut_slice())
            .map_err(|_| AuthError::Decrypt)?
            .len();
        in_out.truncate(plain_len);
        Ok(in_out)
    }

    /// The master key version a blob was sealed under, if it looks like a
    /// blob at all. Lets callers find what still needs re-sealing.
    pub fn blob_version(blob: &[u8]) -> Option<u32> {
        if blob.len() < MIN_BLOB_LEN || blob.first() != Some(&FORMAT_V1) {
            return None;
        }
        let bytes: [u8; 4] = blob.get(1..HEADER_LEN)?.try_into().ok()?;
        Some(u32::from_be_bytes(bytes))
    }
}

/// Associated data that ties a sealed signing key to its tenant and kid, so
/// a blob copied into another row does not open. Each field is length
/// prefixed, so no two (tenant, kid) pairs share an encoding.
pub fn key_aad(tenant_id: &str, kid: &str) -> Vec<u8> {
    bound_aad(b"wiresocket:signing-key:v1:", &[tenant_id, kid])
}

/// Associated data that ties a sealed TOTP secret to its user: a secret
/// copied onto another user's row does not open, and the domain prefix keeps
/// it from ever opening as a signing key (or the other way round).
pub fn mfa_aad(user_id: &str) -> Vec<u8> {
    bound_aad(b"wiresocket:mfa-secret:v1:", &[user_id])
}

fn bound_aad(domain: &[u8], fields: &[&str]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(domain.len() + fields.iter().map(|f| 4 + f.len()).sum::<usize>());
    aad.extend_from_slice(domain);
    for field in fields {
        // Lengths above u32::MAX cannot occur for ids; saturating keeps this
        // infallible without making two different inputs collide in practice.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(field.as_bytes());
    }
    aad
}

fn header(version: u32) -> [u8; HEADER_LEN] {
    let v = version.to_be_bytes();
    [FORMAT_V1, v[0], v[1], v[2], v[3]]
}

fn full_aad(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(header.len() + aad.len());
    full.extend_from_slice(header);
    full.extend_from_slice(aad);
    full
}

fn decode_key(encoded: &str) -> Result<MasterKey, &'static str> {
    // Base64 error messages quote the offending byte: never pass them on.
    let decoded = Zeroizing::new(
        STD_LENIENT.decode(encoded).or_else(|_| URL_LENIENT.decode(encoded)).map_err(|_| "key is not base64")?,
    );
    if decoded.len() != KEY_LEN {
        return Err("key must be 32 bytes");
    }
    let mut key = MasterKey(Box::new([0u8; KEY_LEN]));
    key.0.copy_from_slice(&decoded);
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

    const AAD: &[u8] = b"row-1";

    #[test]
    fn round_trip() {
        let ring = MasterKeyRing::generate().unwrap();
        assert_eq!(ring.current_version(), 1);
        let blob = ring.encrypt(b"top secret", AAD).unwrap();
        assert_eq!(blob.len(), MIN_BLOB_LEN + 10);
        assert_eq!(MasterKeyRing::blob_version(&blob), Some(1));
        assert_eq!(ring.decrypt(&blob, AAD).unwrap().as_slice(), b"top secret");
        // Nonces are random: sealing twice never repeats a blob.
        assert_ne!(blob, ring.encrypt(b"top secret", AAD).unwrap());
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let ring = MasterKeyRing::generate().unwrap();
        let blob = ring.encrypt(b"", AAD).unwrap();
        assert!(ring.decrypt(&blob, AAD).unwrap().is_empty());
    }

    #[test]
    fn wrong_aad_fails() {
        let ring = MasterKeyRing::generate().unwrap();
        let blob = ring.encrypt(b"secret", &key_aad("t1", "k1")).unwrap();
        assert!(matches!(ring.decrypt(&blob, &key_aad("t2", "k1")), Err(AuthError::Decrypt)));
        assert!(matches!(ring.decrypt(&blob, b""), Err(AuthError::Decrypt)));
    }

    #[test]
    fn every_tampered_byte_fails() {
        let ring = MasterKeyRing::generate().unwrap();
        let blob = ring.encrypt(b"secret", AAD).unwrap();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(ring.decrypt(&bad, AAD).is_err(), "byte {i} not authenticated");
        }
        assert!(ring.decrypt(&blob[..blob.len() - 1], AAD).is_err());
        assert!(ring.decrypt(&blob[..MIN_BLOB_LEN - 1], AAD).is_err());
        assert!(ring.decrypt(&[], AAD).is_err());
    }

    #[test]
    fn a_different_ring_cannot_open() {
        let a = MasterKeyRing::generate().unwrap();
        let b = MasterKeyRing::generate().unwrap();
        let blob = a.encrypt(b"secret", AAD).unwrap();
        assert!(matches!(b.decrypt(&blob, AAD), Err(AuthError::Decrypt)));
    }

    #[test]
    fn rotation_keeps_old_blobs_readable_until_removed() {
        let mut ring = MasterKeyRing::generate().unwrap();
        let old = ring.encrypt(b"v1 secret", AAD).unwrap();
        assert_eq!(ring.add_version().unwrap(), 2);
        assert_eq!(ring.current_version(), 2);
        assert_eq!(ring.versions(), vec![1, 2]);

        assert_eq!(ring.decrypt(&old, AAD).unwrap().as_slice(), b"v1 secret");
        let new = ring.encrypt(b"v2 secret", AAD).unwrap();
        assert_eq!(MasterKeyRing::blob_version(&new), Some(2));

        assert!(matches!(ring.remove_version(2), Err(AuthError::CurrentMasterVersion(2))));
        assert!(matches!(ring.remove_version(7), Err(AuthError::UnknownMasterVersion(7))));
        ring.remove_version(1).unwrap();
        assert_eq!(ring.versions(), vec![2]);
        assert!(matches!(ring.decrypt(&old, AAD), Err(AuthError::UnknownMasterVersion(1))));
        assert_eq!(ring.decrypt(&new, AAD).unwrap().as_slice(), b"v2 secret");
    }

    #[test]
    fn text_round_trip() {
        let mut ring = MasterKeyRing::generate().unwrap();
        ring.add_version().unwrap();
        ring.add_version().unwrap();
        let blob = ring.encrypt(b"secret", AAD).unwrap();
        let text = ring.to_text();
        assert!(text.starts_with('#'));
        let parsed = MasterKeyRing::parse(&text).unwrap();
        assert_eq!(parsed.versions(), vec![1, 2, 3]);
        assert_eq!(parsed.current_version(), 3);
        assert_eq!(parsed.decrypt(&blob, AAD).unwrap().as_slice(), b"secret");
        assert_eq!(*parsed.to_text(), *text);
    }

    #[test]
    fn parse_accepts_both_alphabets_padding_comments_and_blanks() {
        // 0xfb.. makes the std and url-safe encodings differ.
        let key = [0xfbu8; 32];
        let text = format!(
            "# comment\n\n  3:{}  \n5:{}\n\t\n7:{}\n",
            STANDARD.encode(key),
            URL_SAFE.encode(key),
            URL_SAFE_NO_PAD.encode(key),
        );
        assert_ne!(STANDARD.encode(key), URL_SAFE.encode(key));
        let ring = MasterKeyRing::parse(&text).unwrap();
        assert_eq!(ring.versions(), vec![3, 5, 7]);
        assert_eq!(ring.current_version(), 7);
        for key in ring.keys.values() {
            assert_eq!(*key.0, [0xfbu8; 32]);
        }
    }

    #[test]
    fn parse_rejects_bad_text() {
        let good = STANDARD.encode([7u8; 32]);
        let cases = [
            String::new(),
            "# only a comment\n\n".to_string(),
            format!("1:{}", STANDARD.encode([7u8; 31])),
            format!("1:{}", STANDARD.encode([7u8; 33])),
            format!("1:{good}\n1:{good}"),
            format!("0:{good}"),
            format!("-1:{good}"),
            format!("+1:{good}"),
            format!("x:{good}"),
            format!("4294967296:{good}"),
            format!(":{good}"),
            good.clone(),
            "1:not base64 at all!".to_string(),
            "garbage".to_string(),
        ];
        for text in cases {
            assert!(matches!(MasterKeyRing::parse(&text), Err(AuthError::BadMasterKey(_))), "accepted {text:?}");
        }
    }

    #[test]
    fn parse_errors_do_not_echo_the_key() {
        let short = STANDARD.encode([0x5au8; 31]);
        let err = MasterKeyRing::parse(&format!("1:{short}")).unwrap_err().to_string();
        assert!(!err.contains(&short), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn debug_shows_versions_not_keys() {
        let mut ring = MasterKeyRing::generate().unwrap();
        ring.add_version().unwrap();
        let debug = format!("{ring:?}");
        assert!(debug.contains("[1, 2]"), "{debug}");
        for key in ring.keys.values() {
            let std = STANDARD.encode(*key.0);
            assert!(!debug.contains(&std[..16]), "{debug}");
            assert!(!debug.contains(&hex::encode(*key.0)[..16]), "{debug}");
        }
    }

    #[test]
    fn key_aad_is_unambiguous() {
        assert_ne!(key_aad("ab", "c"), key_aad("a", "bc"));
        assert_ne!(key_aad("a:b", "c"), key_aad("a", "b:c"));
        assert_ne!(key_aad("", "ab"), key_aad("ab", ""));
        assert_eq!(key_aad("t", "k"), key_aad("t", "k"));
        assert!(key_aad("t", "k").starts_with(b"wiresocket:signing-key:v1:"));
        assert!(mfa_aad("u").starts_with(b"wiresocket:mfa-secret:v1:"));
        assert_ne!(mfa_aad("u1"), mfa_aad("u2"));
    }

    #[test]
    fn mfa_secrets_are_bound_to_their_user() {
        let ring = MasterKeyRing::generate().unwrap();
        let blob = ring.encrypt(b"totp secret bytes", &mfa_aad("user-1")).unwrap();
        assert_eq!(ring.decrypt(&blob, &mfa_aad("user-1")).unwrap().as_slice(), b"totp secret bytes");
        assert!(matches!(ring.decrypt(&blob, &mfa_aad("user-2")), Err(AuthError::Decrypt)));
    }
}
