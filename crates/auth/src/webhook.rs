//! Webhook secrets and the `X-Webhook-Signature` header (CONTRACT.md,
//! "Webhooks"): lowercase hex HMAC-SHA256 of the raw request body, keyed
//! with the bytes of the secret string as the receiver sees it (`whsec_…`,
//! prefix included), so a receiver can check it with any HMAC library and
//! no decoding step.

use secrecy::SecretString;

use crate::token::{ct_eq, generate_token, hmac_sha256, hmac_sha256_hex};

/// Marks webhook secrets for secret scanners and for humans reading config.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";

/// A new webhook secret: `whsec_` followed by 256 random bits in base64url.
pub fn generate_webhook_secret() -> SecretString {
    generate_token(WEBHOOK_SECRET_PREFIX)
}

/// The `X-Webhook-Signature` value for `body`.
pub fn sign_webhook_body(secret: &str, body: &[u8]) -> String {
    hmac_sha256_hex(secret.as_bytes(), body)
}

/// Whether `sig_hex` is the signature of `body` under `secret`. Either hex
/// case is accepted; anything that is not 64 hex digits is simply wrong. The
/// comparison is on the decoded bytes and takes the same time wherever they
/// differ.
pub fn verify_webhook_signature(secret: &str, body: &[u8], sig_hex: &str) -> bool {
    let Ok(given) = hex::decode(sig_hex) else {
        return false;
    };
    ct_eq(&hmac_sha256(secret.as_bytes(), body), &given)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use secrecy::ExposeSecret as _;

    use super::*;
    use crate::token::tests::rfc4231_cases;

    /// The RFC 4231 vectors through the functions the server calls. A
    /// signature key is a string, so the vectors whose key is not UTF-8
    /// (cases 3, 6, 7: bytes 0xaa) go through [`hmac_sha256`], which
    /// [`sign_webhook_body`] is a thin layer over.
    #[test]
    fn rfc4231_vectors_through_the_webhook_functions() {
        let mut via_string_key = 0;
        for (i, (key, msg, expected)) in rfc4231_cases().iter().enumerate() {
            let case = i + 1;
            let full = match std::str::from_utf8(key) {
                Ok(secret) => {
                    via_string_key += 1;
                    let sig = sign_webhook_body(secret, msg);
                    assert!(sig.starts_with(expected), "case {case}: {sig}");
                    assert!(verify_webhook_signature(secret, msg, &sig), "case {case}");
                    sig
                }
                Err(_) => hex::encode(hmac_sha256(key, msg)),
            };
            assert!(full.starts_with(expected), "case {case}: {full}");
            assert_eq!(full.len(), 64, "case {case}");
        }
        assert_eq!(via_string_key, 4);
    }

    #[test]
    fn signature_is_lowercase_hex_of_the_raw_body() {
        let secret = "whsec_test";
        let body = br#"{"id":"evt_1","type":"app.created","timestamp":1700000000,"data":{}}"#;
        let sig = sign_webhook_body(secret, body);
        assert_eq!(sig.len(), 64);
        assert!(sig.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{sig}");
        // Keyed with the whole secret string, prefix included.
        assert_eq!(sig, hex::encode(hmac_sha256(b"whsec_test", body)));
        assert_ne!(sig, hex::encode(hmac_sha256(b"test", body)));
    }

    #[test]
    fn verify_refuses_wrong_secret_body_or_signature() {
        let secret = "whsec_abc";
        let body = b"payload";
        let sig = sign_webhook_body(secret, body);
        assert!(verify_webhook_signature(secret, body, &sig));
        assert!(verify_webhook_signature(secret, body, &sig.to_ascii_uppercase()));
        assert!(!verify_webhook_signature("whsec_abd", body, &sig));
        assert!(!verify_webhook_signature(secret, b"payloaD", &sig));
        assert!(!verify_webhook_signature(secret, body, ""));
        assert!(!verify_webhook_signature(secret, body, &sig[..62]));
        assert!(!verify_webhook_signature(secret, body, &format!("{sig}00")));
        assert!(!verify_webhook_signature(secret, body, &format!("sha256={sig}")));
        assert!(!verify_webhook_signature(secret, body, &format!(" {sig}")));
        let mut flipped = sig.into_bytes();
        flipped[63] = if flipped[63] == b'0' { b'1' } else { b'0' };
        assert!(!verify_webhook_signature(secret, body, std::str::from_utf8(&flipped).unwrap()));
    }

    #[test]
    fn secrets_are_prefixed_256_bit_and_redacted() {
        let secret = generate_webhook_secret();
        let text = secret.expose_secret();
        let body = text.strip_prefix("whsec_").unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_ne!(text, generate_webhook_secret().expose_secret());
        assert!(!format!("{secret:?}").contains(body));
    }

    proptest::proptest! {
        #[test]
        fn sign_then_verify(secret in "\\PC{0,40}", body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let sig = sign_webhook_body(&secret, &body);
            proptest::prop_assert!(verify_webhook_signature(&secret, &body, &sig));
        }

        #[test]
        fn verify_never_panics(sig in "\\PC{0,80}") {
            let _ = verify_webhook_signature("whsec_x", b"body", &sig);
        }
    }
}
