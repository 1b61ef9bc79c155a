//! Document names and the `docs` claim patterns that scope a client token
//! to some documents of an app (CONTRACT.md, "Data plane").

use crate::DomainError;
use std::fmt;

const MAX_DOC_NAME_BYTES: usize = 255;

/// The name of a document within an app. Not trimmed or otherwise
/// rewritten: it is chosen by the user's code and must round-trip exactly
/// through URLs and storage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocName(String);

impl DocName {
    /// 1 to 255 bytes of UTF-8 without control characters
    /// (`invalid_document_name`). Bytes, not characters, because the limit
    /// exists for storage keys.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        check_doc_name(s).map_err(|reason| DomainError::new("invalid_document_name", reason))?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for DocName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_doc_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("a document name must not be empty");
    }
    if s.len() > MAX_DOC_NAME_BYTES {
        return Err("a document name must be at most 255 bytes");
    }
    if s.chars().any(char::is_control) {
        return Err("a document name must not contain control characters");
    }
    Ok(())
}

/// Whether any of the `docs` patterns of a token covers `doc`: `*` covers
/// every document, `prefix/*` every name under `prefix/` (but not `prefix`
/// itself, which is a different document), anything else only the name
/// it spells.
pub fn docs_cover(patterns: &[String], doc: &str) -> bool {
    patterns.iter().any(|p| pattern_covers(p, doc))
}

fn pattern_covers(pattern: &str, doc: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    // Keep the `/` of `prefix/*` so that `notes/*` does not cover `notes2/x`.
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => doc.starts_with(prefix),
        _ => pattern == doc,
    }
}

/// Checks one pattern of a client-token request (`invalid_docs`): `*`, a
/// valid document name, or `<valid document name>/*`.
///
/// A pattern ending in `/*` is always read as a prefix pattern by
/// [`docs_cover`], so its prefix must be a document name; `/*` alone
/// (empty prefix) is refused even though it would be a valid name.
pub fn validate_doc_pattern(p: &str) -> Result<(), DomainError> {
    if p == "*" {
        return Ok(());
    }
    let name = p.strip_suffix("/*").unwrap_or(p);
    check_doc_name(name).map_err(|reason| {
        DomainError::new(
            "invalid_docs",
            format!("{p:?} is not a valid docs pattern (use a document name, \"prefix/*\" or \"*\"): {reason}"),
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    fn pats(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn doc_names() {
        assert_eq!(DocName::parse("notes").unwrap().as_str(), "notes");
        assert_eq!(DocName::parse("a/b c/ü 🚀").unwrap().into_string(), "a/b c/ü 🚀");
        // Not trimmed: a name with spaces is a distinct document.
        assert_eq!(DocName::parse(" x ").unwrap().as_str(), " x ");
        assert!(DocName::parse(&"a".repeat(255)).is_ok());
        // 128 two-byte characters are 256 bytes.
        assert_eq!(DocName::parse(&"é".repeat(128)).unwrap_err().code, "invalid_document_name");
        for bad in ["", "a\nb", "\u{0}", "tab\there", "\u{7f}", "\u{85}", &"a".repeat(256)] {
            assert_eq!(DocName::parse(bad).unwrap_err().code, "invalid_document_name", "{bad:?}");
        }
    }

    #[test]
    fn star_covers_everything() {
        assert!(docs_cover(&pats(&["*"]), "anything"));
        assert!(docs_cover(&pats(&["*"]), "a/b/c"));
    }

    #[test]
    fn prefix_covers_children_only() {
        let p = pats(&["notes/*"]);
        assert!(docs_cover(&p, "notes/a"));
        assert!(docs_cover(&p, "notes/a/b"));
        assert!(!docs_cover(&p, "notes"));
        assert!(!docs_cover(&p, "notes2/a"));
        assert!(!docs_cover(&p, "other/notes/a"));
    }

    #[test]
    fn exact_names_and_lists() {
        let p = pats(&["a", "team/*"]);
        assert!(docs_cover(&p, "a"));
        assert!(docs_cover(&p, "team/x"));
        assert!(!docs_cover(&p, "b"));
        assert!(!docs_cover(&p, "a/b"));
        assert!(!docs_cover(&[], "a"));
        // A `*` inside a name is literal.
        assert!(docs_cover(&pats(&["a*"]), "a*"));
        assert!(!docs_cover(&pats(&["a*"]), "ab"));
    }

    #[test]
    fn patterns_are_validated() {
        for ok in ["*", "notes", "notes/*", "a/b/*", "a*", "*x"] {
            assert!(validate_doc_pattern(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "/*", "a\n/*", "bad\u{0}", &"a".repeat(256), &format!("{}/*", "a".repeat(256))] {
            assert_eq!(validate_doc_pattern(bad).unwrap_err().code, "invalid_docs", "{bad:?}");
        }
        assert!(validate_doc_pattern(&format!("{}/*", "a".repeat(255))).is_ok());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".*") {
            let _ = DocName::parse(&s);
            let _ = validate_doc_pattern(&s);
            let _ = docs_cover(std::slice::from_ref(&s), &s);
        }

        #[test]
        fn parsers_never_panic_printable(s in "\\PC*") {
            let _ = DocName::parse(&s);
            let _ = validate_doc_pattern(&s);
        }

        #[test]
        fn a_valid_name_covers_itself(s in "\\PC{1,60}") {
            if DocName::parse(&s).is_ok() {
                prop_assert!(validate_doc_pattern(&s).is_ok());
                prop_assert!(docs_cover(std::slice::from_ref(&s), &s));
            }
        }

        #[test]
        fn prefix_pattern_covers_every_child(prefix in "[a-z]{1,10}", rest in "\\PC{1,20}") {
            let pattern = format!("{prefix}/*");
            prop_assert!(validate_doc_pattern(&pattern).is_ok());
            let pattern = [pattern];
            let child = format!("{prefix}/{rest}");
            prop_assert!(docs_cover(&pattern, &child));
            prop_assert!(!docs_cover(&pattern, &prefix));
        }
    }
}
