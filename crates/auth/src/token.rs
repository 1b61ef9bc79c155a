//! Opaque bearer tokens (sessions, refresh tokens, client secrets) and the
//! small primitives around them: storage hashes, constant-time comparison,
//! random ids, HMAC-SHA256.

use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use secrecy::SecretString;
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize as _, Zeroizing};

const TOKEN_BYTES: usize = 32;

/// Straight from the OS. These helpers are infallible by contract, and an OS
/// that cannot produce randomness leaves nothing safe to return: the
/// `UnwrapErr` adapter aborts the request by panicking instead of handing out
/// a guessable token.
pub(crate) fn fill_from_os(buf: &mut [u8]) {
    UnwrapErr(SysRng).fill_bytes(buf);
}

/// `prefix` followed by 256 random bits in base64url, e.g. `wss_…`. The
/// prefix makes leaked tokens recognisable to secret scanners.
pub fn generate_token(prefix: &str) -> SecretString {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    fill_from_os(bytes.as_mut_slice());
    let mut token = String::with_capacity(prefix.len() + TOKEN_BYTES.div_ceil(3) * 4);
    token.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes.as_slice(), &mut token);
    SecretString::from(token)
}

/// What is stored for an opaque token: SHA-256, lowercase hex. A fast hash
/// is enough because the token carries 256 bits of entropy.
pub fn hash_token(token: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

/// Constant-time equality for secrets of equal length. Lengths are not
/// secret; different lengths are simply unequal.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// `nbytes` random bytes from the OS as base64url without padding.
pub fn random_id(nbytes: usize) -> String {
    let mut bytes = vec![0u8; nbytes];
    fill_from_os(&mut bytes);
    let id = URL_SAFE_NO_PAD.encode(&bytes);
    // Ids may be used as secrets (state, nonces): leave no copy behind.
    bytes.zeroize();
    id
}

/// HMAC-SHA256 of `msg` under `key` (RFC 2104; keys of any length).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(&key, msg).as_ref());
    out
}

/// [`hmac_sha256`] as lowercase hex (what webhook signatures carry).
pub fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    hex::encode(hmac_sha256(key, msg))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn tokens_have_prefix_and_256_bits() {
        let token = generate_token("wss_");
        let token = token.expose_secret();
        let body = token.strip_prefix("wss_").unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_eq!(body.len(), 43);
        assert_ne!(token, generate_token("wss_").expose_secret());
    }

    #[test]
    fn token_debug_is_redacted() {
        let token = generate_token("wss_");
        let debug = format!("{token:?}");
        assert!(!debug.contains(&token.expose_secret()[4..]), "{debug}");
    }

    #[test]
    fn hash_token_is_sha256_hex() {
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hash_token(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn ct_eq_cases() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret "));
        assert!(!ct_eq(b"secret", b""));
        assert!(!ct_eq(b"", b"x"));
    }

    #[test]
    fn random_ids() {
        assert_eq!(random_id(0), "");
        assert_eq!(random_id(16).len(), 22);
        assert_eq!(URL_SAFE_NO_PAD.decode(random_id(9)).unwrap().len(), 9);
        assert_ne!(random_id(16), random_id(16));
    }

    #[test]
    fn hmac_sha256_rfc4231() {
        for (i, (key, msg, expected)) in rfc4231_cases().iter().enumerate() {
            let hex = hmac_sha256_hex(key, msg);
            assert!(hex.starts_with(expected), "RFC 4231 case {}: {hex}", i + 1);
            assert_eq!(hex, hex::encode(hmac_sha256(key, msg)));
            assert_eq!(hex.len(), 64);
        }
    }

    /// All of RFC 4231 section 4 as `(key, data, expected hex)`: the key and
    /// data sizes around the block size (64 bytes) are where an HMAC
    /// implementation goes wrong. Case 5 is specified truncated to 128 bits, so
    /// compare expected values as a prefix.
    pub(crate) fn rfc4231_cases() -> [(Vec<u8>, Vec<u8>, &'static str); 7] {
        let large_key_msg = b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec();
        let large_data_msg = b"This is a test using a larger than block-size key and a larger than block-size data. \
    The key needs to be hashed before being used by the HMAC algorithm."
            .to_vec();
        [
            (vec![0x0b; 20], b"Hi There".to_vec(), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (vec![0xaa; 20], vec![0xdd; 50], "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
            (
                (0x01..=0x19).collect(),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (vec![0x0c; 20], b"Test With Truncation".to_vec(), "a3b6167473100ee06e0c796c2955552b"),
            (vec![0xaa; 131], large_key_msg, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
            (vec![0xaa; 131], large_data_msg, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
        ]
    }
}
