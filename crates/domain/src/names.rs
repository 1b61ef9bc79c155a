//! Human-facing names and labels: tenant and app names, user emails,
//! environment labels, and the password policy. Each newtype can only be
//! built through `parse`, so holding one means the input was checked.

use crate::DomainError;
use std::fmt;

const NAME_MAX_CHARS: usize = 100;
const EMAIL_MAX_BYTES: usize = 254;
const EMAIL_LOCAL_MAX_BYTES: usize = 64;
const ENVIRONMENT_MAX_CHARS: usize = 32;
const PASSWORD_MIN_CHARS: usize = 10;
const PASSWORD_MAX_CHARS: usize = 1024;

/// Names are shown in dashboards and logs, so control characters (which can
/// forge log lines or hide text) are refused; anything else printable is the
/// user's business.
fn parse_display_name(input: &str, what: &str) -> Result<String, DomainError> {
    let name = input.trim();
    let chars = name.chars().count();
    if chars == 0 {
        return Err(DomainError::new("invalid_name", format!("{what} name must not be empty")));
    }
    if chars > NAME_MAX_CHARS {
        return Err(DomainError::new(
            "invalid_name",
            format!("{what} name must be at most {NAME_MAX_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(DomainError::new("invalid_name", format!("{what} name must not contain control characters")));
    }
    Ok(name.to_owned())
}

macro_rules! display_name {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// Trims surrounding whitespace, then requires 1 to 100
            /// characters without control characters (`invalid_name`).
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                parse_display_name(s, $what).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

display_name!(
    /// The display name of a tenant.
    TenantName, "tenant"
);
display_name!(
    /// The display name of an app.
    AppName, "app"
);

/// A user's email address, the login identifier.
///
/// Stored lowercased so that `Ann@Example.com` and `ann@example.com` are one
/// account. This is deliberately not a full RFC 5322 parser: the address is
/// only ever compared, never used to route mail by us, so the checks only
/// keep out what is certainly wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let invalid = |message: &str| DomainError::new("invalid_email", message);
        let email = s.trim().to_lowercase();
        if email.is_empty() {
            return Err(invalid("email must not be empty"));
        }
        if email.len() > EMAIL_MAX_BYTES {
            return Err(invalid("email must be at most 254 bytes"));
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("email must not contain spaces or control characters"));
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err(invalid("email must contain an '@'"));
        };
        if domain.contains('@') {
            return Err(invalid("email must contain exactly one '@'"));
        }
        if local.is_empty() {
            return Err(invalid("email needs a part before the '@'"));
        }
        if local.len() > EMAIL_LOCAL_MAX_BYTES {
            return Err(invalid("the part of an email before the '@' must be at most 64 bytes"));
        }
        if domain.is_empty() {
            return Err(invalid("email needs a domain after the '@'"));
        }
        if domain.split('.').any(str::is_empty) {
            return Err(invalid("email domain must not have empty labels"));
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The environment label of an app (`production`, `staging`, `dev-eu`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment(String);

impl Environment {
    /// Trims and lowercases, then requires 1 to 32 of `[a-z0-9_-]`.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        // ASCII lowercasing only: Unicode lowercasing would turn look-alikes
        // such as the Kelvin sign into `k` and let them through.
        let env = s.trim().to_ascii_lowercase();
        let valid_chars = env.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if env.is_empty() || env.len() > ENVIRONMENT_MAX_CHARS || !valid_chars {
            return Err(DomainError::new(
                "invalid_environment",
                "environment must be 1 to 32 characters of a-z, 0-9, '_' or '-'",
            ));
        }
        Ok(Self(env))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl Default for Environment {
    fn default() -> Self {
        Self("production".to_owned())
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Length is the only rule (10 to 1024 characters): composition rules push
/// users to predictable patterns, and the upper bound only caps hashing cost.
/// Counted in characters, not bytes, so non-Latin passphrases are not
/// penalised.
pub fn check_password_policy(pw: &str) -> Result<(), DomainError> {
    let chars = pw.chars().count();
    if chars < PASSWORD_MIN_CHARS {
        return Err(DomainError::new(
            "weak_password",
            format!("password must be at least {PASSWORD_MIN_CHARS} characters long"),
        ));
    }
    if chars > PASSWORD_MAX_CHARS {
        return Err(DomainError::new(
            "weak_password",
            format!("password must be at most {PASSWORD_MAX_CHARS} characters long"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(TenantName::parse("  Acme Inc.  ").unwrap().as_str(), "Acme Inc.");
        assert_eq!(AppName::parse("Notes ✍").unwrap().into_string(), "Notes ✍");
        assert_eq!(TenantName::parse("").unwrap_err().code, "invalid_name");
        assert_eq!(AppName::parse(" \t\n ").unwrap_err().code, "invalid_name");
        assert_eq!(AppName::parse("a\u{0}b").unwrap_err().code, "invalid_name");
        assert_eq!(TenantName::parse("line\nbreak").unwrap_err().code, "invalid_name");
        assert_eq!(TenantName::parse("a\u{7f}").unwrap_err().code, "invalid_name");
    }

    #[test]
    fn name_length_counts_characters_not_bytes() {
        assert!(TenantName::parse(&"é".repeat(100)).is_ok());
        assert_eq!(TenantName::parse(&"a".repeat(101)).unwrap_err().code, "invalid_name");
        // Surrounding whitespace does not count against the limit.
        assert!(AppName::parse(&format!("  {}  ", "a".repeat(100))).is_ok());
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(Email::parse("  Ann@Example.COM ").unwrap().as_str(), "ann@example.com");
        assert_eq!(Email::parse("a@localhost").unwrap().as_str(), "a@localhost");
        assert_eq!(
            Email::parse("first.last+tag@mail.example.org").unwrap().as_str(),
            "first.last+tag@mail.example.org"
        );
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "ann@@example.com",
            "a@b@c",
            "a@b..c",
            "a@.b",
            "a@b.",
            "a b@example.com",
            "ann@exa mple.com",
            "a\u{0}@b",
            "a\u{a0}b@c",
        ] {
            assert_eq!(Email::parse(bad).unwrap_err().code, "invalid_email", "{bad:?}");
        }
    }

    #[test]
    fn email_length_limits() {
        let local64 = "a".repeat(64);
        assert!(Email::parse(&format!("{local64}@b")).is_ok());
        assert_eq!(Email::parse(&format!("{local64}a@b")).unwrap_err().code, "invalid_email");
        let domain = format!("{}.com", "d".repeat(254 - 2 - 4));
        assert_eq!(format!("a@{domain}").len(), 254);
        assert!(Email::parse(&format!("a@{domain}")).is_ok());
        assert_eq!(Email::parse(&format!("ab@{domain}")).unwrap_err().code, "invalid_email");
    }

    #[test]
    fn environments() {
        assert_eq!(Environment::default().as_str(), "production");
        assert_eq!(Environment::parse(" Staging-EU_2 ").unwrap().as_str(), "staging-eu_2");
        assert!(Environment::parse(&"a".repeat(32)).is_ok());
        for bad in ["", "  ", &"a".repeat(33), "pro duction", "prod.eu", "prød", "\u{212a}ube"] {
            assert_eq!(Environment::parse(bad).unwrap_err().code, "invalid_environment", "{bad:?}");
        }
    }

    #[test]
    fn password_policy_counts_characters() {
        assert_eq!(check_password_policy("123456789").unwrap_err().code, "weak_password");
        assert!(check_password_policy("1234567890").is_ok());
        // Five 2-byte characters are 10 bytes but only 5 characters.
        assert!(check_password_policy("ééééé").is_err());
        assert!(check_password_policy(&"é".repeat(10)).is_ok());
        assert!(check_password_policy(&"x".repeat(1024)).is_ok());
        let long = check_password_policy(&"x".repeat(1025)).unwrap_err();
        assert_eq!(long.code, "weak_password");
        assert!(long.message.contains("1024"));
    }

    fn check_all(s: &str) {
        let _ = TenantName::parse(s);
        let _ = AppName::parse(s);
        let _ = Environment::parse(s);
        let _ = check_password_policy(s);
        if let Ok(e) = Email::parse(s) {
            assert_eq!(Email::parse(e.as_str()).as_ref(), Ok(&e));
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".*") {
            check_all(&s);
        }

        #[test]
        fn parsers_never_panic_printable(s in "\\PC*") {
            check_all(&s);
        }

        #[test]
        fn parsed_names_reparse_to_themselves(s in "\\PC{0,120}") {
            if let Ok(n) = TenantName::parse(&s) {
                prop_assert_eq!(TenantName::parse(n.as_str()), Ok(n));
            }
            if let Ok(e) = Environment::parse(&s) {
                prop_assert_eq!(Environment::parse(e.as_str()), Ok(e));
            }
        }
    }
}
