//! MFA recovery codes: shown once when MFA is enabled, each accepted once at
//! login instead of a TOTP code (CONTRACT.md, "MFA").
//!
//! A code is sixteen characters of Crockford base32 in four groups,
//! `7k2m-9x4q-d0ab-c3ef`: 80 random bits (NIST SP 800-63B's floor for a
//! look-up secret that may be guessed offline from a stolen hash list is 64;
//! we keep a margin), lowercase, and without `i`, `l`, `o`, `u`. Users copy
//! these from paper, so input is forgiving: case, dashes and spaces do not
//! matter, and `o`, `i`, `l` are read as the digits they look like. Only the
//! hash of the normalised form is stored ([`hash_recovery_code`]), and the
//! same function hashes what the user types, so storing and looking up
//! cannot drift apart.
//!
//! Codes issued before (ten characters, `7k2m9-x4qd0`, 50 bits) still
//! normalise to their own form and so keep working until used or replaced
//! by re-enrolling; new ones are never issued in that form.

use secrecy::{ExposeSecret as _, SecretString};
use zeroize::{Zeroize as _, Zeroizing};

use crate::token::{fill_from_os, hash_token};

/// How many codes a user gets when MFA is enabled.
pub const RECOVERY_CODE_COUNT: usize = 10;

/// Crockford's base32 alphabet: no `i`, `l`, `o` (they look like `1`, `1`,
/// `0`) and no `u`.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A code's shape: how many symbols, grouped how.
struct Shape {
    chars: usize,
    group: usize,
}

/// What is issued: 16 symbols × 5 bits = 80 bits, in groups of four.
const CURRENT: Shape = Shape { chars: 16, group: 4 };
/// What was issued before: 10 symbols (50 bits), in groups of five.
const LEGACY: Shape = Shape { chars: 10, group: 5 };

/// Anything much longer than a code with generous spacing is not a code;
/// refusing it early bounds the work per attempt.
const MAX_INPUT_LEN: usize = 96;

/// `n` distinct recovery codes in display form (`xxxx-xxxx-xxxx-xxxx`).
pub fn generate_recovery_codes(n: usize) -> Vec<SecretString> {
    let mut codes: Vec<SecretString> = Vec::with_capacity(n);
    while codes.len() < n {
        let code = generate_one();
        // A repeat within one set is a 2^-80 event, but two equal codes
        // would share one stored hash and so be one code: draw again.
        if !codes.iter().any(|c| c.expose_secret() == code.expose_secret()) {
            codes.push(code);
        }
    }
    codes
}

fn generate_one() -> SecretString {
    // 10 random bytes = 80 bits, five per symbol.
    let mut bytes = Zeroizing::new([0u8; 16]);
    fill_from_os(&mut bytes[..10]);
    let mut bits = u128::from_le_bytes(*bytes);
    let mut code = String::with_capacity(CURRENT.chars + CURRENT.chars / CURRENT.group);
    for i in 0..CURRENT.chars {
        if i > 0 && i % CURRENT.group == 0 {
            code.push('-');
        }
        code.push(char::from(ALPHABET[(bits & 0x1f) as usize]));
        bits >>= 5;
    }
    bits.zeroize();
    SecretString::from(code)
}

/// The canonical form of what a user typed (`xxxx-xxxx-xxxx-xxxx`, or a
/// legacy `xxxxx-xxxxx`), or `None` when it cannot be a recovery code.
/// Ignores case, `-` and whitespace; reads `o` as `0` and `i`, `l` as `1`.
pub fn normalize_recovery_code(input: &str) -> Option<SecretString> {
    if input.len() > MAX_INPUT_LEN {
        return None;
    }
    let mut symbols = Zeroizing::new(String::with_capacity(CURRENT.chars));
    for c in input.chars() {
        if c == '-' || c.is_whitespace() {
            continue;
        }
        let c = match c.to_ascii_lowercase() {
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || symbols.len() == CURRENT.chars {
            return None;
        }
        symbols.push(c);
    }
    let shape = [CURRENT, LEGACY].into_iter().find(|s| s.chars == symbols.len())?;
    let mut code = Zeroizing::new(String::with_capacity(shape.chars + shape.chars / shape.group));
    for (i, c) in symbols.chars().enumerate() {
        if i > 0 && i % shape.group == 0 {
            code.push('-');
        }
        code.push(c);
    }
    Some(SecretString::from(code.as_str()))
}

/// What is stored for a recovery code, and what a login looks up:
/// [`hash_token`] of the normalised code. `None` when the input cannot be a
/// code (no lookup needed).
pub fn hash_recovery_code(input: &str) -> Option<String> {
    normalize_recovery_code(input).map(|code| hash_token(code.expose_secret()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    /// The current display form: four groups of four.
    fn is_code(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 19 && b.iter().enumerate().all(|(i, c)| if i % 5 == 4 { *c == b'-' } else { ALPHABET.contains(c) })
    }

    fn is_legacy_code(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 11 && b[5] == b'-' && b.iter().enumerate().all(|(i, c)| i == 5 || ALPHABET.contains(c))
    }

    #[test]
    fn ten_distinct_well_formed_codes() {
        let codes = generate_recovery_codes(RECOVERY_CODE_COUNT);
        assert_eq!(codes.len(), 10);
        let texts: HashSet<&str> = codes.iter().map(|c| c.expose_secret()).collect();
        assert_eq!(texts.len(), 10);
        for code in &texts {
            assert!(is_code(code), "{code}");
            assert_eq!(normalize_recovery_code(code).unwrap().expose_secret(), *code);
        }
        assert!(generate_recovery_codes(0).is_empty());
    }

    /// 80 bits per code: over many codes every one of the 16 positions takes
    /// every symbol. A generator that lost bits (say, drew 64 and padded)
    /// would leave the last positions stuck on few symbols.
    #[test]
    fn every_position_uses_the_whole_alphabet() {
        let codes = generate_recovery_codes(2000);
        let unique: HashSet<&str> = codes.iter().map(|c| c.expose_secret()).collect();
        assert_eq!(unique.len(), 2000);
        for pos in (0..19).filter(|p| p % 5 != 4) {
            let symbols: HashSet<u8> = codes.iter().map(|c| c.expose_secret().as_bytes()[pos]).collect();
            // 2000 draws of 32 symbols miss one with probability ~1e-26.
            assert_eq!(symbols.len(), 32, "position {pos}");
        }
    }

    #[test]
    fn normalisation_forgives_case_dashes_spaces_and_lookalikes() {
        let canonical = "7k2m-9x4q-d0ab-c3ef";
        for typed in [
            "7k2m-9x4q-d0ab-c3ef",
            "7K2M-9X4Q-D0AB-C3EF",
            "7k2m9x4qd0abc3ef",
            " 7k2m 9x4q d0ab c3ef ",
            "7k2m - 9x4q - d0ab - c3ef",
            "7k2m9-x4qdO-abc3ef",
            "\t7k2m\n-9x4qd0abc3ef",
        ] {
            assert_eq!(normalize_recovery_code(typed).unwrap().expose_secret(), canonical, "{typed:?}");
            assert_eq!(hash_recovery_code(typed).unwrap(), hash_token(canonical));
        }
        assert_eq!(normalize_recovery_code("1111-IiLl-1111-1111").unwrap().expose_secret(), "1111-1111-1111-1111");
    }

    /// Codes issued before 80-bit codes keep their stored hashes valid.
    #[test]
    fn legacy_ten_character_codes_still_normalise_to_their_own_form() {
        for typed in ["7k2m9-x4qd0", "7K2M9X4QD0", " 7k2m9 - x4qdO "] {
            let code = normalize_recovery_code(typed).unwrap();
            assert_eq!(code.expose_secret(), "7k2m9-x4qd0");
            assert!(is_legacy_code(code.expose_secret()));
        }
    }

    #[test]
    fn normalisation_refuses_non_codes() {
        for bad in [
            "",
            "-",
            "7k2m9-x4qd",
            "7k2m9-x4qd00",
            "7k2m-9x4q-d0ab-c3e",
            "7k2m-9x4q-d0ab-c3eff",
            "7k2m-9x4q-d0ab-c3eu",
            "7k2m-9x4q-d0ab-c3e!",
            "7k2m_9x4q_d0ab_c3ef",
            "7k2m-9x4q-d0ab-c3eé",
            "7k2m-9x4q-d0ab-c3e٣",
            "123456",
            &format!("7k2m-9x4q-d0ab-c3ef{}", " ".repeat(90)),
        ] {
            assert!(normalize_recovery_code(bad).is_none(), "{bad:?}");
            assert!(hash_recovery_code(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let code = generate_recovery_codes(1).pop().unwrap();
        assert!(!format!("{code:?}").contains(code.expose_secret()));
    }

    proptest! {
        #[test]
        fn normalize_never_panics_and_is_idempotent(s in "\\PC{0,100}") {
            if let Some(code) = normalize_recovery_code(&s) {
                prop_assert!(is_code(code.expose_secret()) || is_legacy_code(code.expose_secret()));
                let again = normalize_recovery_code(code.expose_secret()).unwrap();
                prop_assert_eq!(again.expose_secret(), code.expose_secret());
            }
        }

        #[test]
        fn mangled_codes_normalise_back(
            code in "[0-9a-hjkmnp-tv-z]{16}",
            upper in proptest::collection::vec(any::<bool>(), 16),
            seps in proptest::collection::vec("[ -]{0,2}", 17),
        ) {
            let canonical = format!("{}-{}-{}-{}", &code[..4], &code[4..8], &code[8..12], &code[12..]);
            let mut typed = seps[16].clone();
            for (i, c) in code.chars().enumerate() {
                typed.push(if upper[i] { c.to_ascii_uppercase() } else { c });
                typed.push_str(&seps[i]);
            }
            let normalized = normalize_recovery_code(&typed);
            prop_assert_eq!(normalized.as_ref().map(|c| c.expose_secret()), Some(canonical.as_str()));
        }
    }
}
