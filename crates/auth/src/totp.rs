//! TOTP second factor (RFC 6238 with the parameters every authenticator app
//! supports: HMAC-SHA-1, 6 digits, 30-second steps), the otpauth URL and QR
//! code that enrol it, and verification that accepts one step of clock skew
//! either way and refuses replays.
//!
//! Code generation is `totp-rs`; the verification is ours because the
//! replay rule needs the matched step compared with the last one used, and
//! every candidate step must be checked without an early exit.
//!
//! The secret is encrypted by the caller ([`crate::envelope`]) before it is
//! stored, together with the last accepted step.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use qrcode::QrCode;
use qrcode::render::svg;
use secrecy::SecretString;
use subtle::{Choice, ConditionallySelectable as _, ConstantTimeEq as _};
use totp_rs::{Algorithm, Builder, Totp};
use zeroize::Zeroizing;

use crate::AuthError;
use crate::token::fill_from_os;

/// Seconds per time step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// RFC 4226 recommends 160 bits; it is also what apps expect to be given.
pub const SECRET_BYTES: usize = 20;
/// RFC 4226's minimum is 128 bits. The upper bound only keeps planted or
/// corrupted rows small.
const MIN_SECRET_BYTES: usize = 16;
const MAX_SECRET_BYTES: usize = 64;
/// Steps of clock skew accepted on each side of the current one.
const SKEW_STEPS: u64 = 1;

/// RFC 3986 unreserved characters stay as they are; everything else in a
/// label or parameter is percent-encoded (so a space is `%20`, never `+`,
/// which some apps would show literally).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A user's TOTP shared secret. Wiped on drop (`totp-rs` is built with its
/// `zeroize` feature); `Debug` names the algorithm, never the bytes.
pub struct TotpSecret {
    totp: Totp,
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpSecret")
            .field("algorithm", &"HMAC-SHA1")
            .field("bits", &(self.as_bytes().len() * 8))
            .finish_non_exhaustive()
    }
}

impl TotpSecret {
    /// A fresh 160-bit secret from the OS.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
        fill_from_os(bytes.as_mut_slice());
        Self::build(bytes.as_slice())
    }

    /// A secret from its raw bytes (as decrypted from storage): 16 to 64
    /// bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuthError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(AuthError::InvalidKey("a TOTP secret must be 128 to 512 bits"));
        }
        Ok(Self::build(bytes))
    }

    /// `build_noncompliant` skips only checks that the constants above and
    /// the length check in the constructors already guarantee (6 digits,
    /// non-zero step, at least 128 bits), so there is no error to handle.
    fn build(bytes: &[u8]) -> Self {
        let totp = Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(DIGITS as u8)
            .with_step_duration(STEP_SECONDS)
            .with_skew(SKEW_STEPS as u16)
            .with_secret(bytes)
            .build_noncompliant();
        Self { totp }
    }

    /// The raw secret, for the caller to encrypt before storing.
    pub fn as_bytes(&self) -> &[u8] {
        self.totp.secret().as_bytes()
    }

    /// The secret from its base32 text (as an authenticator app or a
    /// script holds it); the inverse of [`TotpSecret::to_base32`].
    pub fn from_base32(text: &str) -> Result<Self, AuthError> {
        let secret = totp_rs::Secret::try_from_base32(text.trim().to_ascii_uppercase())
            .map_err(|_| AuthError::InvalidKey("a TOTP secret must be RFC 4648 base32"))?;
        Self::from_bytes(secret.as_bytes())
    }

    /// RFC 4648 base32 without padding: what users type into an app that
    /// cannot scan the QR code.
    pub fn to_base32(&self) -> SecretString {
        SecretString::from(self.totp.secret().to_base32())
    }

    /// The Key URI an authenticator app enrols from:
    /// `otpauth://totp/{issuer}:{account}?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
    ///
    /// Issuer and account are percent-encoded. Apps split the label at its
    /// first `:` (literal or `%3A`), so a `:` in the issuer would move that
    /// split; it is replaced by `-`. A `:` in the account is fine after the
    /// separator and stays (encoded).
    pub fn otpauth_url(&self, issuer: &str, account: &str) -> String {
        let issuer = issuer.replace(':', "-");
        let issuer = utf8_percent_encode(&issuer, COMPONENT);
        let account = utf8_percent_encode(account, COMPONENT);
        let secret = Zeroizing::new(self.totp.secret().to_base32());
        format!(
            "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            secret.as_str()
        )
    }

    /// The otpauth URL as a QR code, a standalone SVG document starting with
    /// `<svg` (no XML prolog, so it can be inlined into HTML as is).
    pub fn qr_svg(&self, issuer: &str, account: &str) -> Result<String, AuthError> {
        let url = Zeroizing::new(self.otpauth_url(issuer, account));
        let code = QrCode::new(url.as_bytes()).map_err(|_| AuthError::QrCode("the otpauth URL is too long"))?;
        let image = code
            .render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build();
        match image.find("<svg") {
            Some(start) => Ok(image[start..].to_owned()),
            None => Err(AuthError::QrCode("the QR renderer produced no <svg> element")),
        }
    }

    /// The code for the step containing `unix` (seconds since the epoch).
    pub fn code_at(&self, unix: u64) -> String {
        self.totp.generate(unix).to_string()
    }

    /// Checks a code the user typed at `now_unix`. Returns the time step it
    /// belongs to, which the caller stores as the new `last_used_step`, or
    /// `None` to refuse.
    ///
    /// Accepted: exactly six ASCII digits, with any whitespace around or
    /// between them (apps show `123 456`), equal to the code of the current
    /// step or of one step either side, and only if that step is strictly
    /// after `last_used_step`. So a code works once, and once a code has
    /// been used, no code from the same or an earlier step works any more.
    ///
    /// Every candidate step is computed and compared in constant time, and
    /// the choice among them is branch-free, so timing does not tell which
    /// step (if any) matched.
    pub fn verify(&self, code: &str, now_unix: u64, last_used_step: Option<u64>) -> Option<u64> {
        let given = normalize_code(code)?;
        let current = now_unix / STEP_SECONDS;
        let mut found = Choice::from(0);
        let mut matched = 0u64;
        // Ascending, so that if two steps share a code (a one-in-a-million
        // coincidence) the later one wins and leaves no step to replay.
        for step in current.saturating_sub(SKEW_STEPS)..=current.saturating_add(SKEW_STEPS) {
            let expected = Zeroizing::new(self.totp.generate(step.saturating_mul(STEP_SECONDS)).to_string());
            // Steps are not secret, so this comparison may branch.
            let fresh = Choice::from(u8::from(last_used_step.is_none_or(|last| step > last)));
            let hit = expected.as_bytes().ct_eq(given.as_slice()) & fresh;
            matched = u64::conditional_select(&matched, &step, hit);
            found |= hit;
        }
        bool::from(found).then_some(matched)
    }
}

/// Six ASCII digits out of what the user typed, whitespace anywhere
/// ignored; `None` for anything else.
fn normalize_code(input: &str) -> Option<Zeroizing<[u8; DIGITS]>> {
    let mut out = Zeroizing::new([0u8; DIGITS]);
    let mut len = 0;
    for c in input.chars().filter(|c| !c.is_whitespace()) {
        if !c.is_ascii_digit() || len == DIGITS {
            return None;
        }
        out[len] = c as u8;
        len += 1;
    }
    (len == DIGITS).then_some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use proptest::prelude::*;
    use secrecy::ExposeSecret as _;

    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(RFC_SECRET).unwrap()
    }

    /// RFC 6238 Appendix B, SHA-1 column. The 6-digit code is the same
    /// dynamic truncation taken mod 10^6, i.e. the last six digits.
    #[test]
    fn rfc6238_appendix_b_sha1() {
        let secret = rfc_secret();
        for (time, eight_digits) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(secret.code_at(time), eight_digits[2..], "T = {time}");
            let step = time / 30;
            assert_eq!(secret.verify(&eight_digits[2..], time, None), Some(step), "T = {time}");
        }
    }

    #[test]
    fn codes_keep_leading_zeros() {
        // 1111111109 gives 07081804, whose last six digits start with 0.
        let code = rfc_secret().code_at(1_111_111_109);
        assert_eq!(code, "081804");
        let secret = rfc_secret();
        let zero_led = (0..10_000u64).map(|s| secret.code_at(s * 30)).find(|c| c.starts_with('0')).unwrap();
        assert_eq!(zero_led.len(), 6);
    }

    #[test]
    fn one_step_of_skew_either_way_and_no_more() {
        let secret = rfc_secret();
        let now = 1_700_000_015; // inside step 56_666_667
        let step = now / 30;
        let code_at_step = |s: u64| secret.code_at(s * 30);
        assert_eq!(secret.verify(&code_at_step(step), now, None), Some(step));
        assert_eq!(secret.verify(&code_at_step(step - 1), now, None), Some(step - 1));
        assert_eq!(secret.verify(&code_at_step(step + 1), now, None), Some(step + 1));
        assert_eq!(secret.verify(&code_at_step(step - 2), now, None), None);
        assert_eq!(secret.verify(&code_at_step(step + 2), now, None), None);
        // Step boundaries: the last second of a step and the first of the next.
        let start = step * 30;
        assert_eq!(secret.verify(&code_at_step(step - 1), start + 29, None), Some(step - 1));
        assert_eq!(secret.verify(&code_at_step(step - 1), start + 30, None), None);
        assert_eq!(secret.verify(&code_at_step(step + 1), start - 1, None), None);
    }

    #[test]
    fn near_the_epoch() {
        let secret = rfc_secret();
        assert_eq!(secret.verify(&secret.code_at(0), 0, None), Some(0));
        assert_eq!(secret.verify(&secret.code_at(30), 0, None), Some(1));
        assert_eq!(secret.verify(&secret.code_at(60), 0, None), None);
    }

    #[test]
    fn a_code_works_once_and_never_after_a_newer_one() {
        let secret = rfc_secret();
        let now = 1_700_000_015;
        let step = now / 30;
        let code = secret.code_at(now);
        let used = secret.verify(&code, now, None).unwrap();
        assert_eq!(used, step);
        assert_eq!(secret.verify(&code, now, Some(used)), None, "replay of the same code");
        assert_eq!(secret.verify(&code, now + 20, Some(used)), None, "replay in the next step");
        // The previous step's code is still inside the skew window, but it is
        // older than the code already used.
        assert_eq!(secret.verify(&secret.code_at(now - 30), now, Some(used)), None);
        // The next step's code is newer and works, once.
        let next = secret.verify(&secret.code_at(now + 30), now, Some(used)).unwrap();
        assert_eq!(next, step + 1);
        assert_eq!(secret.verify(&secret.code_at(now + 30), now + 30, Some(next)), None);
        assert_eq!(secret.verify(&secret.code_at(now + 60), now + 60, Some(next)), Some(step + 2));
        // A last step from the future (clock went back) refuses everything until then.
        assert_eq!(secret.verify(&code, now, Some(step + 5)), None);
    }

    #[test]
    fn input_format() {
        let secret = rfc_secret();
        let now = 59;
        let step = Some(1);
        for ok in ["287082", " 287082 ", "287 082", "2 8 7 0 8 2", "\t287082\n", "287\u{a0}082"] {
            assert_eq!(secret.verify(ok, now, None), step, "{ok:?}");
        }
        for bad in ["", "28708", "2870822", "94287082", "287-082", "287O82", "+287082", "２87082", "287082x", "٢87082"]
        {
            assert_eq!(secret.verify(bad, now, None), None, "{bad:?}");
        }
    }

    #[test]
    fn wrong_secret_refused() {
        let other = TotpSecret::from_bytes(b"12345678901234567891").unwrap();
        let now = 1_700_000_000;
        assert_eq!(other.verify(&rfc_secret().code_at(now), now, None), None);
    }

    #[test]
    fn secret_construction_and_encoding() {
        let generated = TotpSecret::generate();
        assert_eq!(generated.as_bytes().len(), 20);
        assert_ne!(generated.as_bytes(), TotpSecret::generate().as_bytes());
        let copy = TotpSecret::from_bytes(generated.as_bytes()).unwrap();
        assert_eq!(copy.code_at(1_700_000_000), generated.code_at(1_700_000_000));

        assert_eq!(rfc_secret().to_base32().expose_secret(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let back = TotpSecret::from_base32("gezdgnbvgy3tqojqgezdgnbvgy3tqojq").unwrap();
        assert_eq!(back.code_at(59), rfc_secret().code_at(59));
        assert!(TotpSecret::from_base32("not base32!").is_err());
        assert!(TotpSecret::from_bytes(&[7; 15]).is_err());
        assert!(TotpSecret::from_bytes(&[7; 16]).is_ok());
        assert!(TotpSecret::from_bytes(&[7; 64]).is_ok());
        assert!(TotpSecret::from_bytes(&[7; 65]).is_err());
        assert!(TotpSecret::from_bytes(&[]).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let secret = rfc_secret();
        let debug = format!("{secret:?}");
        assert!(debug.contains("HMAC-SHA1") && debug.contains("160"), "{debug}");
        assert!(!debug.contains("1234567890"), "{debug}");
        assert!(!debug.contains("GEZDGNBV"), "{debug}");
        assert!(!debug.contains("49, 50"), "{debug}");
    }

    #[test]
    fn otpauth_url_is_exact() {
        assert_eq!(
            rfc_secret().otpauth_url("WireSocket", "ada@example.com"),
            "otpauth://totp/WireSocket:ada%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=WireSocket&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(
            rfc_secret().otpauth_url("Acme Co: EU", "a b+c&d=e?f/g#h%i"),
            "otpauth://totp/Acme%20Co-%20EU:a%20b%2Bc%26d%3De%3Ff%2Fg%23h%25i?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Acme%20Co-%20EU&algorithm=SHA1&digits=6&period=30"
        );
    }

    /// An independent parser (`totp-rs`, as apps do) reads back the same
    /// secret, issuer, account and parameters, and generates the same codes.
    #[test]
    fn otpauth_url_round_trips_through_a_parser() {
        let secret = TotpSecret::generate();
        for (issuer, account) in
            [("WireSocket", "ada@example.com"), ("Acme & Sons", "名前+tag@exämple.com"), ("x", "100% sure")]
        {
            let url = secret.otpauth_url(issuer, account);
            let parsed = Totp::from_url(&url).unwrap();
            assert_eq!(parsed.issuer(), Some(issuer));
            assert_eq!(parsed.account_name(), account);
            assert_eq!(parsed.secret().as_bytes(), secret.as_bytes());
            assert_eq!(parsed.algorithm(), Algorithm::SHA1);
            assert_eq!(parsed.digits(), 6);
            assert_eq!(parsed.step(), 30);
            assert_eq!(parsed.generate(1_700_000_000).to_string(), secret.code_at(1_700_000_000));
        }
    }

    #[test]
    fn qr_svg_is_an_svg_document() {
        let svg = rfc_secret().qr_svg("WireSocket", "ada@example.com").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60]);
        assert!(svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<path"));
        // Different contents make different codes.
        assert_ne!(svg, rfc_secret().qr_svg("WireSocket", "bob@example.com").unwrap());
        // Far beyond QR capacity (~2.9 kB) is an error, not a panic.
        assert!(matches!(rfc_secret().qr_svg("x", &"a".repeat(5000)), Err(AuthError::QrCode(_))));
    }

    proptest! {
        #[test]
        fn verify_never_panics(code in "\\PC{0,20}", now in any::<u64>(), last in proptest::option::of(any::<u64>())) {
            let _ = rfc_secret().verify(&code, now, last);
        }

        #[test]
        fn own_code_verifies_with_any_spacing(now in 30u64..4_000_000_000, spaces in proptest::collection::vec(" {0,2}", 7)) {
            let secret = rfc_secret();
            let code = secret.code_at(now);
            let mut typed = spaces[6].clone();
            for (i, c) in code.chars().enumerate() {
                typed.push(c);
                typed.push_str(&spaces[i]);
            }
            prop_assert_eq!(secret.verify(&typed, now, None), Some(now / 30));
            prop_assert_eq!(secret.verify(&typed, now, Some(now / 30)), None);
        }

        #[test]
        fn otpauth_url_label_round_trips(issuer in "[^:]{1,20}", account in "[^:]{1,30}") {
            let url = rfc_secret().otpauth_url(&issuer, &account);
            let parsed = Totp::from_url(&url).unwrap();
            prop_assert_eq!(parsed.issuer(), Some(issuer.as_str()));
            prop_assert_eq!(parsed.account_name(), account.as_str());
        }
    }
}
