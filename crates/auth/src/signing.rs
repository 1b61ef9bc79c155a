//! Tenant signing keys (RSA-2048) and RS256 access tokens in the RFC 9068
//! `at+jwt` profile: issuing, verifying and publishing as JWKs.
//!
//! Signing and verification go straight to aws-lc-rs with each key parsed
//! once. jsonwebtoken (which we started with) builds the RSA key again on
//! every call: most of the cost of a signature, and about half of a
//! verification's, which every WebSocket connect pays. What it did for us
//! beyond the signature is small and done here: the compact-JWS split, the
//! header checks (algorithm, type, kid, no `crit`) in front, and time and
//! audience behind, always against the caller's "now". The API tests still
//! check our tokens with jsonwebtoken, as an independent verifier.

use std::fmt;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{
    KeyPair as _, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::claims::Claims;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::AuthError;

const ALG: &str = "RS256";
const TYP: &str = "at+jwt";
/// RFC 9068 §4 also allows the full media type.
const TYP_FULL: &str = "application/at+jwt";
/// 2048 to 8192 bits, the range the RS256 verifier accepts.
const MIN_MODULUS_BYTES: usize = 256;
const MAX_MODULUS_BYTES: usize = 1024;
const MAX_KID_LEN: usize = 256;
/// Clock skew tolerated between the issuing node and a verifying node.
const IAT_SKEW_SECONDS: i64 = 60;
/// Far above any token we issue; stops a caller from making us base64- and
/// JSON-decode megabytes before the signature check fails.
const MAX_TOKEN_LEN: usize = 64 * 1024;

#[derive(Serialize)]
struct IssuedHeader<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// A tenant's RSA private key, parsed once and kept ready to sign.
pub struct SigningKey {
    kid: String,
    key_pair: KeyPair,
    n: String,
    e: String,
    /// The JWS header only depends on the kid: encode it once.
    header_b64: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &format_args!("RSA-{}", self.modulus_bits()))
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new RSA-2048 key. Takes tens of milliseconds: not for hot paths.
    pub fn generate(kid: String) -> Result<Self, AuthError> {
        let key_pair =
            KeyPair::generate(KeySize::Rsa2048).map_err(|_| AuthError::Crypto("RSA key generation failed"))?;
        Self::new(kid, key_pair)
    }

    /// Loads a key stored with [`SigningKey::to_pkcs8`].
    pub fn from_pkcs8(kid: String, der: &[u8]) -> Result<Self, AuthError> {
        let key_pair = KeyPair::from_pkcs8(der).map_err(|_| AuthError::InvalidKey("not an RSA PKCS#8 private key"))?;
        Self::new(kid, key_pair)
    }

    fn new(kid: String, key_pair: KeyPair) -> Result<Self, AuthError> {
        check_kid(&kid)?;
        let modulus_len = key_pair.public_modulus_len();
        if !(MIN_MODULUS_BYTES..=MAX_MODULUS_BYTES).contains(&modulus_len) {
            return Err(AuthError::InvalidKey("RSA modulus must be 2048 to 8192 bits"));
        }
        let public = key_pair.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        let header =
            serde_json::to_vec(&IssuedHeader { alg: ALG, typ: TYP, kid: &kid }).map_err(|_| AuthError::Claims)?;
        Ok(Self { header_b64: URL_SAFE_NO_PAD.encode(header), kid, key_pair, n, e })
    }

    /// PKCS#8 v1 DER of the private key, to be sealed with the envelope
    /// before it is stored.
    pub fn to_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, AuthError> {
        // The library buffer wipes itself on drop; the copy is ours to wipe.
        let der = self.key_pair.as_der().map_err(|_| AuthError::Crypto("PKCS#8 encoding failed"))?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The modulus as a JWK `n`: base64url, no padding, no leading zeros.
    pub fn public_n(&self) -> &str {
        &self.n
    }

    /// The public exponent as a JWK `e`.
    pub fn public_e(&self) -> &str {
        &self.e
    }

    pub fn verifying_key(&self) -> Result<VerifyingKey, AuthError> {
        VerifyingKey::from_components(self.kid.clone(), &self.n, &self.e)
    }

    /// A compact JWS: header `{"alg":"RS256","typ":"at+jwt","kid":…}`.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, AuthError> {
        let payload = serde_json::to_vec(claims).map_err(|_| AuthError::Claims)?;
        let sig_len = self.key_pair.public_modulus_len();
        let mut token = String::with_capacity(self.header_b64.len() + 2 + (payload.len() + sig_len).div_ceil(3) * 4);
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);

        let mut signature = vec![0u8; sig_len];
        // PKCS#1 v1.5 is deterministic; aws-lc-rs ignores the RNG argument,
        // which only exists for ring compatibility.
        self.key_pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), token.as_bytes(), &mut signature)
            .map_err(|_| AuthError::Crypto("RSA signing failed"))?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }

    fn modulus_bits(&self) -> usize {
        self.key_pair.public_modulus_len() * 8
    }
}

/// A public key that verifies one kid's tokens. Cheap to clone.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    n: String,
    e: String,
    modulus_bits: usize,
    /// Parsed once: verifying then costs only the RSA operation.
    parsed: ParsedPublicKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithm", &format_args!("RSA-{}", self.modulus_bits))
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// From JWK-style `n` and `e` (base64url without padding). Leading zero
    /// bytes are tolerated and dropped, so [`VerifyingKey::jwk`] is canonical.
    pub fn from_components(kid: String, n: &str, e: &str) -> Result<Self, AuthError> {
        check_kid(&kid)?;
        let n_raw = URL_SAFE_NO_PAD.decode(n).map_err(|_| AuthError::InvalidKey("n is not base64url"))?;
        let e_raw = URL_SAFE_NO_PAD.decode(e).map_err(|_| AuthError::InvalidKey("e is not base64url"))?;
        let n_bytes = strip_leading_zeros(&n_raw);
        let e_bytes = strip_leading_zeros(&e_raw);
        if !(MIN_MODULUS_BYTES..=MAX_MODULUS_BYTES).contains(&n_bytes.len()) {
            return Err(AuthError::InvalidKey("RSA modulus must be 2048 to 8192 bits"));
        }
        // An even or tiny exponent is never a real RSA key; 4 bytes covers
        // every exponent in use (65537 is 3).
        let e_odd = e_bytes.last().is_some_and(|b| b & 1 == 1);
        if e_bytes.is_empty() || e_bytes.len() > 4 || !e_odd || e_bytes == [1] {
            return Err(AuthError::InvalidKey("unacceptable RSA exponent"));
        }
        let parsed = RsaPublicKeyComponents { n: n_bytes, e: e_bytes }
            .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
            .map_err(|_| AuthError::InvalidKey("not a usable RSA public key"))?;
        Ok(Self {
            modulus_bits: bit_len(n_bytes),
            parsed,
            n: URL_SAFE_NO_PAD.encode(n_bytes),
            e: URL_SAFE_NO_PAD.encode(e_bytes),
            kid,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The RFC 7517 public JWK for the tenant's JWKS.
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "RSA".into(),
            n: self.n.clone(),
            e: self.e.clone(),
            kid: self.kid.clone(),
            alg: ALG.into(),
            use_: "sig".into(),
        }
    }
}

/// One entry of a JWK Set (RFC 7517), as published for a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `RSA`.
    pub kty: String,
    pub n: String,
    pub e: String,
    pub kid: String,
    /// Always `RS256`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// Why a token was refused. Deliberately coarse: callers answer 401 for all
/// of them and only log the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm")]
    UnsupportedAlgorithm,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token audience is not wiresocket")]
    WrongAudience,
}

/// The header as sent. Derived `Deserialize` rejects duplicate members, so
/// a header cannot say two things about one parameter.
#[derive(Deserialize)]
struct ReceivedHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    /// RFC 7515 §4.1.11: we understand no extensions, so any `crit` is fatal.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

/// The header's `kid`, unverified: only for choosing the key to verify with.
pub fn token_kid(token: &str) -> Result<String, JwtError> {
    read_header(token)?.kid.ok_or(JwtError::Malformed)
}

/// Verifies an access token against one key at time `now`: RS256 only,
/// `typ` `at+jwt`, header kid equal to the key's, signature, then
/// `exp > now` (no leeway), `iat` and `nbf` at most 60 s ahead, and
/// `aud == wiresocket`.
pub fn verify(token: &str, key: &VerifyingKey, now: OffsetDateTime) -> Result<Claims, JwtError> {
    let header = read_header(token)?;
    if header.alg != ALG {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    if header.crit.is_some() {
        return Err(JwtError::Malformed);
    }
    // RFC 9068 §4: refuse other JWT types, so an ID token or any other JWT
    // signed with the same key is never taken as an access token.
    match header.typ.as_deref() {
        Some(typ) if typ.eq_ignore_ascii_case(TYP) || typ.eq_ignore_ascii_case(TYP_FULL) => {}
        _ => return Err(JwtError::Malformed),
    }
    if header.kid.as_deref() != Some(key.kid()) {
        return Err(JwtError::BadSignature);
    }

    // `read_header` checked the shape: header.payload.signature.
    let Some((signed, signature)) = token.rsplit_once('.') else { return Err(JwtError::Malformed) };
    let Some((_, payload)) = signed.split_once('.') else { return Err(JwtError::Malformed) };
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| JwtError::Malformed)?;
    key.parsed.verify_sig(signed.as_bytes(), &signature).map_err(|_| JwtError::BadSignature)?;
    // Only signed bytes are parsed as claims.
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| JwtError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| JwtError::Malformed)?;

    let now = now.unix_timestamp();
    if claims.exp <= now {
        return Err(JwtError::Expired);
    }
    let latest_start = now.saturating_add(IAT_SKEW_SECONDS);
    if claims.iat > latest_start || claims.nbf.is_some_and(|nbf| nbf > latest_start) {
        return Err(JwtError::NotYetValid);
    }
    if claims.aud != domain::AUDIENCE {
        return Err(JwtError::WrongAudience);
    }
    Ok(claims)
}

fn read_header(token: &str) -> Result<ReceivedHeader, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    let json = URL_SAFE_NO_PAD.decode(header).map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| JwtError::Malformed)
}

fn check_kid(kid: &str) -> Result<(), AuthError> {
    if kid.is_empty() || kid.len() > MAX_KID_LEN {
        return Err(AuthError::InvalidKey("kid must be 1 to 256 bytes"));
    }
    Ok(())
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn bit_len(big_endian: &[u8]) -> usize {
    match big_endian.first() {
        Some(&top) => big_endian.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::OnceLock;

    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
    use time::Duration;

    use super::*;

    const KID: &str = "kid-test-1";

    // RSA keygen costs ~160 ms in debug builds: generate once per test binary.
    fn key() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::generate(KID.into()).unwrap())
    }

    /// A different private key that claims the same kid.
    fn impostor() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::generate(KID.into()).unwrap())
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn claims_at(now: OffsetDateTime) -> Claims {
        let iat = now.unix_timestamp();
        Claims {
            iss: "http://127.0.0.1:8080/t_1".into(),
            sub: "client_1".into(),
            aud: domain::AUDIENCE.into(),
            exp: iat + 900,
            iat,
            jti: "jti-1".into(),
            client_id: "client_1".into(),
            tid: "t_1".into(),
            app: "app_1".into(),
            region: "eu-central-1".into(),
            scope: "WireSocket.API".into(),
            origins: vec!["myapp.com".into(), "localhost:3000".into()],
            docs: Some(vec!["notes/*".into()]),
            access: Some(domain::claims::Access::Read),
            name: Some("Ada \"the\" Lovelace ✓".into()),
            nbf: None,
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn vk() -> VerifyingKey {
        key().verifying_key().unwrap()
    }

    #[test]
    fn sign_then_verify_round_trips_claims() {
        let claims = claims_at(now());
        let token = key().sign(&claims).unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(verify(&token, &vk(), now()), Ok(claims));
    }

    #[test]
    fn minimal_claims_round_trip() {
        let mut claims = claims_at(now());
        claims.docs = None;
        claims.access = None;
        claims.name = None;
        claims.origins = vec![];
        let token = key().sign(&claims).unwrap();
        assert_eq!(verify(&token, &vk(), now()), Ok(claims));
    }

    #[test]
    fn header_is_rs256_at_jwt_with_kid() {
        let token = key().sign(&claims_at(now())).unwrap();
        let header = token.split('.').next().unwrap();
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "at+jwt", "kid": KID}));
        assert_eq!(token_kid(&token).unwrap(), KID);
    }

    #[test]
    fn token_kid_requires_a_kid_and_a_jws_shape() {
        let no_kid = format!("{}.e30.sig", b64(br#"{"alg":"RS256"}"#));
        assert_eq!(token_kid(&no_kid), Err(JwtError::Malformed));
        assert_eq!(token_kid("not a token"), Err(JwtError::Malformed));
        assert_eq!(token_kid("a.b"), Err(JwtError::Malformed));
        assert_eq!(token_kid("!!.e30.sig"), Err(JwtError::Malformed));
    }

    #[test]
    fn exp_is_exclusive_with_no_leeway() {
        let claims = claims_at(now());
        let token = key().sign(&claims).unwrap();
        let at_exp = OffsetDateTime::from_unix_timestamp(claims.exp).unwrap();
        assert_eq!(verify(&token, &vk(), at_exp), Err(JwtError::Expired));
        assert_eq!(verify(&token, &vk(), at_exp + Duration::seconds(1)), Err(JwtError::Expired));
        assert!(verify(&token, &vk(), at_exp - Duration::seconds(1)).is_ok());
    }

    #[test]
    fn iat_may_be_at_most_a_minute_ahead() {
        let token = key().sign(&claims_at(now())).unwrap();
        assert!(verify(&token, &vk(), now() - Duration::seconds(60)).is_ok());
        assert_eq!(verify(&token, &vk(), now() - Duration::seconds(61)), Err(JwtError::NotYetValid));
    }

    #[test]
    fn nbf_in_the_future_is_refused() {
        let claims = Claims { nbf: Some(now().unix_timestamp() + 120), ..claims_at(now()) };
        let token = key().sign(&claims).unwrap();
        assert_eq!(verify(&token, &vk(), now()), Err(JwtError::NotYetValid));
        assert_eq!(verify(&token, &vk(), now() + Duration::seconds(60)), Ok(claims));
    }

    #[test]
    fn wrong_audience_is_refused() {
        let mut claims = claims_at(now());
        claims.aud = "someone-else".into();
        let token = key().sign(&claims).unwrap();
        assert_eq!(verify(&token, &vk(), now()), Err(JwtError::WrongAudience));
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let token = key().sign(&claims_at(now())).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut claims = claims_at(now());
        claims.scope = "WireSocket.API admin".into();
        parts[1] = b64(&serde_json::to_vec(&claims).unwrap());
        assert_eq!(verify(&parts.join("."), &vk(), now()), Err(JwtError::BadSignature));
    }

    #[test]
    fn tampered_signature_fails() {
        let token = key().sign(&claims_at(now())).unwrap();
        let (body, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        sig[10] ^= 1;
        let bad = format!("{body}.{}", b64(&sig));
        assert_eq!(verify(&bad, &vk(), now()), Err(JwtError::BadSignature));
        let truncated = format!("{body}.{}", b64(&sig[..255]));
        assert_eq!(verify(&truncated, &vk(), now()), Err(JwtError::BadSignature));
        let empty = format!("{body}.");
        assert_ne!(verify(&empty, &vk(), now()).ok(), Some(claims_at(now())));
    }

    #[test]
    fn another_key_with_the_same_kid_fails() {
        let token = impostor().sign(&claims_at(now())).unwrap();
        assert_eq!(token_kid(&token).unwrap(), KID);
        assert_eq!(verify(&token, &vk(), now()), Err(JwtError::BadSignature));
    }

    #[test]
    fn header_kid_must_match_the_key() {
        let token = key().sign(&claims_at(now())).unwrap();
        let renamed = VerifyingKey::from_components("other-kid".into(), key().public_n(), key().public_e()).unwrap();
        assert_eq!(verify(&token, &renamed, now()), Err(JwtError::BadSignature));
    }

    /// Re-signs `header` + claims with the real key, to show that only the
    /// header is what gets the token refused.
    fn signed_with_header(header: serde_json::Value) -> String {
        let message = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&serde_json::to_vec(&claims_at(now())).unwrap())
        );
        let mut sig = vec![0u8; key().key_pair.public_modulus_len()];
        key().key_pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message.as_bytes(), &mut sig).unwrap();
        format!("{message}.{}", b64(&sig))
    }

    #[test]
    fn typ_other_than_at_jwt_is_refused() {
        for typ in [serde_json::json!("JWT"), serde_json::json!(null)] {
            let token = signed_with_header(serde_json::json!({"alg": "RS256", "typ": typ, "kid": KID}));
            assert_eq!(verify(&token, &vk(), now()), Err(JwtError::Malformed));
        }
        let token = signed_with_header(serde_json::json!({"alg": "RS256", "kid": KID}));
        assert_eq!(verify(&token, &vk(), now()), Err(JwtError::Malformed));
        let token = signed_with_header(serde_json::json!({"alg": "RS256", "typ": "application/at+jwt", "kid": KID}));
        assert!(verify(&token, &vk(), now()).is_ok());
    }

    #[test]
    fn crit_header_is_refused() {
        let token =
            signed_with_header(serde_json::json!({"alg": "RS256", "typ": "at+jwt", "kid": KID, "crit": ["exp"]}));
        assert_eq!(verify(&token, &vk(), now()), Err(JwtError::Malformed));
    }

    #[test]
    fn duplicate_header_members_are_refused() {
        let claims = b64(&serde_json::to_vec(&claims_at(now())).unwrap());
        for header in [
            format!(r#"{{"alg":"none","alg":"RS256","typ":"at+jwt","kid":"{KID}"}}"#),
            format!(r#"{{"alg":"RS256","typ":"at+jwt","kid":"x","kid":"{KID}"}}"#),
        ] {
            let message = format!("{}.{claims}", b64(header.as_bytes()));
            let mut sig = vec![0u8; key().key_pair.public_modulus_len()];
            key().key_pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message.as_bytes(), &mut sig).unwrap();
            let token = format!("{message}.{}", b64(&sig));
            assert_eq!(verify(&token, &vk(), now()), Err(JwtError::Malformed));
        }
    }

    #[test]
    fn alg_none_is_refused() {
        let claims = b64(&serde_json::to_vec(&claims_at(now())).unwrap());
        for alg in ["none", "None", "NONE", ""] {
            let header =
                b64(&serde_json::to_vec(&serde_json::json!({"alg": alg, "typ": "at+jwt", "kid": KID})).unwrap());
            for sig in ["", "AAAA"] {
                let token = format!("{header}.{claims}.{sig}");
                assert_eq!(verify(&token, &vk(), now()), Err(JwtError::UnsupportedAlgorithm), "alg {alg:?}");
            }
        }
    }

    #[test]
    fn hs256_with_the_public_key_as_secret_is_refused() {
        use aws_lc_rs::hmac;
        let header =
            b64(&serde_json::to_vec(&serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": KID})).unwrap());
        let claims = b64(&serde_json::to_vec(&claims_at(now())).unwrap());
        let message = format!("{header}.{claims}");
        let n = URL_SAFE_NO_PAD.decode(key().public_n()).unwrap();
        // The classic confusion: the "secret" is public key material.
        for secret in [n.as_slice(), key().public_n().as_bytes()] {
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), message.as_bytes());
            let token = format!("{message}.{}", b64(tag.as_ref()));
            assert_eq!(verify(&token, &vk(), now()), Err(JwtError::UnsupportedAlgorithm));
        }
        for alg in ["RS384", "RS512", "PS256", "ES256", "EdDSA", "rs256"] {
            let token = signed_with_header(serde_json::json!({"alg": alg, "typ": "at+jwt", "kid": KID}));
            assert_eq!(verify(&token, &vk(), now()), Err(JwtError::UnsupportedAlgorithm), "alg {alg}");
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let token = key().sign(&claims_at(now())).unwrap();
        let (_, rest) = token.split_once('.').unwrap();
        for bad in [
            String::new(),
            "a.b".into(),
            "a.b.c.d".into(),
            format!("{token}.x"),
            format!("{}.{rest}", b64(b"not json")),
            format!("!!!.{rest}"),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(verify(&bad, &vk(), now()), Err(JwtError::Malformed), "{bad:.40}");
        }
    }

    #[test]
    fn the_payload_is_only_read_after_the_signature_holds() {
        let token = key().sign(&claims_at(now())).unwrap();
        let mut parts = token.split('.');
        let (header, _, sig) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());
        for payload in ["!!!".to_string(), b64(b"not json")] {
            let bad = format!("{header}.{payload}.{sig}");
            assert_eq!(verify(&bad, &vk(), now()), Err(JwtError::BadSignature));
        }
    }

    #[test]
    fn signed_payload_that_is_not_claims_is_malformed() {
        let token = key().sign(&serde_json::json!({"sub": "x"})).unwrap();
        assert_eq!(verify(&token, &vk(), now()), Err(JwtError::Malformed));
    }

    #[test]
    fn pkcs8_round_trip_keeps_the_key() {
        let der = key().to_pkcs8().unwrap();
        let loaded = SigningKey::from_pkcs8("kid-test-1".into(), &der).unwrap();
        assert_eq!(loaded.public_n(), key().public_n());
        assert_eq!(loaded.public_e(), key().public_e());
        assert_eq!(*loaded.to_pkcs8().unwrap(), *der);
        // A token from the reloaded key verifies under the original's public key.
        let claims = claims_at(now());
        let token = loaded.sign(&claims).unwrap();
        assert_eq!(verify(&token, &vk(), now()), Ok(claims));

        assert!(matches!(SigningKey::from_pkcs8("k".into(), b"not der"), Err(AuthError::InvalidKey(_))));
        assert!(matches!(SigningKey::from_pkcs8(String::new(), &der), Err(AuthError::InvalidKey(_))));
    }

    #[test]
    fn jwk_matches_the_public_key() {
        let key = key();
        let jwk = vk().jwk();
        assert_eq!(
            jwk,
            Jwk {
                kty: "RSA".into(),
                n: key.public_n().into(),
                e: key.public_e().into(),
                kid: KID.into(),
                alg: "RS256".into(),
                use_: "sig".into(),
            }
        );
        assert_eq!(jwk.e, "AQAB");
        let n = URL_SAFE_NO_PAD.decode(&jwk.n).unwrap();
        assert_eq!(n.len(), 256);
        assert_ne!(n[0], 0);
        assert_eq!(bit_len(&n), 2048);
        let json = serde_json::to_value(&jwk).unwrap();
        assert_eq!(json["use"], "sig");
        assert!(json.get("use_").is_none());
    }

    #[test]
    fn from_components_validates_and_canonicalises() {
        let n = URL_SAFE_NO_PAD.decode(key().public_n()).unwrap();
        let mut padded = vec![0u8];
        padded.extend_from_slice(&n);
        let vk = VerifyingKey::from_components(KID.into(), &b64(&padded), "AAEAAQ").unwrap();
        assert_eq!(vk.jwk().n, key().public_n());
        assert_eq!(vk.jwk().e, "AQAB");

        let reject = |n: &str, e: &str| VerifyingKey::from_components(KID.into(), n, e).is_err();
        assert!(reject(&b64(&n[..255]), "AQAB"), "short modulus");
        assert!(reject(key().public_n(), "AQ"), "e = 1");
        assert!(reject(key().public_n(), "AQAA"), "even e");
        assert!(reject(key().public_n(), ""), "empty e");
        assert!(reject("***", "AQAB"), "not base64");
        let padded_b64 = base64::engine::general_purpose::URL_SAFE.encode(&n);
        assert!(reject(&padded_b64, "AQAB"), "JWK base64 has no padding");
        assert!(VerifyingKey::from_components(String::new(), key().public_n(), "AQAB").is_err());
    }

    #[test]
    fn jsonwebtoken_accepts_our_token_via_our_jwk() {
        // Real clock: jsonwebtoken checks exp against the system time.
        let now = OffsetDateTime::now_utc();
        let claims = claims_at(now);
        let token = key().sign(&claims).unwrap();
        let jwk_json = serde_json::to_string(&vk().jwk()).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(&jwk_json).unwrap();
        let decoding = DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[domain::AUDIENCE]);
        let data = jsonwebtoken::decode::<Claims>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims, claims);
        assert_eq!(data.header.kid.as_deref(), Some(KID));
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
    }

    /// The other direction: a token signed by jsonwebtoken (an independent
    /// implementation, same key) passes our verifier, and a flipped bit in
    /// any of its three parts does not.
    #[test]
    fn our_verifier_accepts_a_jsonwebtoken_token() {
        let now = OffsetDateTime::now_utc();
        let claims = claims_at(now);
        let der = key().to_pkcs8().unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_slice());
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"));
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(KID.into());
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()).unwrap();
        assert_eq!(verify(&token, &vk(), now), Ok(claims));

        let parts: Vec<&str> = token.split('.').collect();
        for i in 0..3 {
            let mut bytes = URL_SAFE_NO_PAD.decode(parts[i]).unwrap();
            bytes[3] ^= 1;
            let mut tampered = parts.clone();
            let changed = URL_SAFE_NO_PAD.encode(&bytes);
            tampered[i] = &changed;
            assert!(verify(&tampered.join("."), &vk(), now).is_err(), "part {i} changed");
        }
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = key();
        let der = key.to_pkcs8().unwrap();
        let der_b64 = base64::engine::general_purpose::STANDARD.encode(&*der);
        for debug in [format!("{key:?}"), format!("{:?}", vk())] {
            assert!(debug.contains(KID), "{debug}");
            assert!(debug.contains("RSA-2048"), "{debug}");
            assert!(!debug.contains(&der_b64[..24]), "{debug}");
            assert!(!debug.contains(&der_b64[200..240]), "{debug}");
            assert!(!debug.contains(&key.public_n()[..24]), "{debug}");
            assert!(!debug.contains(&hex::encode(&der[..40])[60..]), "{debug}");
        }
    }

    /// `cargo test -p wiresocket-auth --release -- --ignored --nocapture timing`
    #[test]
    #[ignore = "timing report, not a check"]
    fn timing() {
        use std::time::Instant;
        let claims = claims_at(now());
        let vk = vk();
        let rounds = 500;
        let start = Instant::now();
        let mut token = String::new();
        for _ in 0..rounds {
            token = key().sign(&claims).unwrap();
        }
        let sign = start.elapsed() / rounds;
        let start = Instant::now();
        for _ in 0..rounds {
            verify(&token, &vk, now()).unwrap();
        }
        let verify_time = start.elapsed() / rounds;
        let start = Instant::now();
        let _ = SigningKey::generate("k".into()).unwrap();
        let keygen = start.elapsed();
        println!("sign {sign:?}/op, verify {verify_time:?}/op, keygen {keygen:?}");
    }
}
