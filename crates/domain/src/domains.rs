//! The allowed domains of an app and the browser `Origin` check of the data
//! plane (CONTRACT.md, "Allowed domains").
//!
//! Domains are stored in their normalised text form (`*.example.com:8443`)
//! and put verbatim into the `origins` claim, so the check at connect time
//! re-parses them; one grammar for hosts serves both sides, so what a user
//! may store is exactly what an `Origin` can match.

use crate::DomainError;
use std::fmt;

/// More than a handful of domains per app usually means one app is being
/// shared between unrelated sites; the contract caps it at three.
pub const MAX_ALLOWED_DOMAINS: usize = 3;

const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
const HTTP_PORT: u16 = 80;
const HTTPS_PORT: u16 = 443;

/// One entry of an app's allowed domains: `host`, `host:port`, optionally
/// with a leading `*.` that matches any subdomain but not the apex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllowedDomain {
    wildcard: bool,
    host: String,
    port: Option<u16>,
}

impl AllowedDomain {
    /// Trims and lowercases, then accepts `[*.]host[:port]` where host is a
    /// DNS name or an IPv4 address (`invalid_domain` otherwise).
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::parse_normalised(&s.trim().to_ascii_lowercase()).map_err(|reason| {
            DomainError::new("invalid_domain", format!("{:?} is not a valid domain: {reason}", s.trim()))
        })
    }

    fn parse_normalised(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("it is empty");
        }
        // These get their own reasons because pasting a URL is the most
        // common mistake, and "invalid character" would not explain it.
        if s.contains("://") {
            return Err("give only the host, like example.com, without a scheme");
        }
        if s.contains(['/', '?', '#']) {
            return Err("give only the host, like example.com, without a path");
        }
        if s.contains('@') {
            return Err("give only the host, like example.com, without a user name");
        }
        if s.contains(char::is_whitespace) {
            return Err("it must not contain spaces");
        }
        let (wildcard, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (host, port) = split_host_port(rest)?;
        let kind = check_host(host)?;
        if wildcard {
            match kind {
                HostKind::Ipv4 => return Err("a wildcard needs a DNS name, not an IP address"),
                // `*.com` or `*.localhost` would hand the app to everyone
                // under a whole top-level name.
                HostKind::Dns { labels } if labels < 2 => {
                    return Err("a wildcard needs at least two labels after it, like *.example.com");
                }
                HostKind::Dns { .. } => {}
            }
        }
        Ok(Self { wildcard, host: host.to_owned(), port })
    }

    pub fn wildcard(&self) -> bool {
        self.wildcard
    }

    /// The host without the `*.` prefix.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The normalised text, as stored and put in the `origins` claim.
    pub fn as_string(&self) -> String {
        self.to_string()
    }

    /// Whether an origin's (already lowercased, validated) host and effective
    /// port fall under this domain.
    fn matches(&self, origin: &Origin) -> bool {
        let port_ok = match self.port {
            Some(p) => p == origin.port,
            None => origin.port == origin.default_port,
        };
        if !port_ok {
            return false;
        }
        if !self.wildcard {
            return origin.host == self.host;
        }
        // The dot before the suffix keeps `evilexample.com` out of
        // `*.example.com`; a non-empty rest keeps the apex out.
        origin
            .host
            .strip_suffix(self.host.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|sub| !sub.is_empty())
    }
}

impl fmt::Display for AllowedDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Parses the `allowed_domains` of an app create or update request. Refuses
/// more than [`MAX_ALLOWED_DOMAINS`] entries (`too_many_domains`) before
/// looking at them, then drops duplicates after normalisation, keeping the
/// first occurrence so the stored order is the order the user gave.
pub fn parse_allowed_domains(input: &[String]) -> Result<Vec<AllowedDomain>, DomainError> {
    if input.len() > MAX_ALLOWED_DOMAINS {
        return Err(DomainError::new(
            "too_many_domains",
            format!("an app may have at most {MAX_ALLOWED_DOMAINS} allowed domains"),
        ));
    }
    let mut out: Vec<AllowedDomain> = Vec::with_capacity(input.len());
    for raw in input {
        let domain = AllowedDomain::parse(raw)?;
        if !out.contains(&domain) {
            out.push(domain);
        }
    }
    Ok(out)
}

/// Whether a browser `Origin` header may open a connection to an app whose
/// stored allowed domains are `domains`.
///
/// No domains means the app did not restrict browsers, so any Origin, or
/// none (a backend client), is fine. Otherwise the Origin must be present:
/// a client that omits it could be any page. A stored entry that no longer
/// parses (say, written by an older, laxer version) matches nothing rather
/// than everything.
pub fn origin_allowed(domains: &[String], origin: Option<&str>) -> bool {
    if domains.is_empty() {
        return true;
    }
    let Some(origin) = origin.and_then(Origin::parse) else {
        return false;
    };
    domains.iter().filter_map(|d| AllowedDomain::parse(d).ok()).any(|d| d.matches(&origin))
}

/// A parsed serialised origin (`scheme://host[:port]`).
struct Origin {
    /// Lowercased and checked with the same grammar as allowed domains.
    host: String,
    /// The explicit port, or the scheme's default.
    port: u16,
    default_port: u16,
}

impl Origin {
    /// Browsers serialise origins lowercase, but the scheme and host are
    /// case-insensitive, so other clients' spellings are accepted too.
    /// `null` (opaque origins: sandboxed frames, `file:`) has no `://` and
    /// so never parses; neither does anything with a path, since a `/`
    /// fails the host grammar.
    fn parse(origin: &str) -> Option<Self> {
        let (scheme, rest) = origin.split_once("://")?;
        let default_port = if scheme.eq_ignore_ascii_case("https") {
            HTTPS_PORT
        } else if scheme.eq_ignore_ascii_case("http") {
            HTTP_PORT
        } else {
            return None;
        };
        let rest = rest.to_ascii_lowercase();
        let (host, port) = split_host_port(&rest).ok()?;
        // An IPv6 literal (`[::1]`) fails here; no allowed domain can name
        // one, so it could never match anyway.
        check_host(host).ok()?;
        Some(Self { host: host.to_owned(), port: port.unwrap_or(default_port), default_port })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKind {
    Dns { labels: usize },
    Ipv4,
}

/// Splits `host[:port]`. The port is canonical decimal (no sign, no leading
/// zero) because browsers serialise it that way; anything else could not
/// match an Origin and would only hide a typo.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), &'static str> {
    let Some((host, port)) = s.split_once(':') else {
        return Ok((s, None));
    };
    let bad_port = "the port must be a number from 1 to 65535";
    let canonical =
        !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()) && !port.starts_with('0');
    if !canonical {
        return Err(bad_port);
    }
    match port.parse::<u16>() {
        Ok(p) => Ok((host, Some(p))),
        Err(_) => Err(bad_port),
    }
}

/// Checks an (already lowercased) host: an IPv4 dotted quad or a DNS name of
/// LDH labels.
fn check_host(host: &str) -> Result<HostKind, &'static str> {
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.len() > MAX_HOST_LEN {
        return Err("the host must be at most 253 characters");
    }
    // Browsers treat `example.com.` as an origin distinct from
    // `example.com`; refusing the dot keeps one spelling per host.
    if host.ends_with('.') {
        return Err("the host must not end with a dot");
    }
    let labels: Vec<&str> = host.split('.').collect();
    // URL parsers read a host whose last label is numeric as an IPv4
    // address (and refuse it if it is not one), so such a host is never a
    // DNS name.
    if labels.last().is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())) {
        return if labels.len() == 4 && labels.iter().all(|l| is_ipv4_octet(l)) {
            Ok(HostKind::Ipv4)
        } else {
            Err("a numeric host must be an IPv4 address like 127.0.0.1")
        };
    }
    for label in &labels {
        if label.is_empty() {
            return Err("the host must not contain empty labels");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("each label of the host must be at most 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err("the host may only contain letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label of the host must not start or end with '-'");
        }
    }
    Ok(HostKind::Dns { labels: labels.len() })
}

/// Leading zeros are refused because URL parsers read them as octal.
fn is_ipv4_octet(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 3
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
        && s.parse::<u8>().is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    fn normalised(s: &str) -> String {
        AllowedDomain::parse(s).unwrap().as_string()
    }

    fn allowed(domains: &[&str], origin: &str) -> bool {
        let domains: Vec<String> = domains.iter().map(|d| (*d).to_owned()).collect();
        origin_allowed(&domains, Some(origin))
    }

    #[test]
    fn parses_and_normalises() {
        assert_eq!(normalised("example.com"), "example.com");
        assert_eq!(normalised("  MyApp.Example.COM  "), "myapp.example.com");
        assert_eq!(normalised("localhost:3000"), "localhost:3000");
        assert_eq!(normalised("*.Example.com:8443"), "*.example.com:8443");
        assert_eq!(normalised("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(normalised("localhost"), "localhost");
        assert_eq!(normalised("x-1.a2.io:65535"), "x-1.a2.io:65535");
        assert_eq!(normalised("a:1"), "a:1");
        let d = AllowedDomain::parse("*.example.com:8443").unwrap();
        assert!(d.wildcard());
        assert_eq!(d.host(), "example.com");
        assert_eq!(d.port(), Some(8443));
        assert_eq!(d.to_string(), "*.example.com:8443");
    }

    #[test]
    fn label_and_host_lengths() {
        let label63 = "a".repeat(63);
        assert!(AllowedDomain::parse(&format!("{label63}.com")).is_ok());
        assert!(AllowedDomain::parse(&format!("{label63}a.com")).is_err());
        // 4 labels of 63 plus 3 dots is 255; trim to exactly 253.
        let host253 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
        assert_eq!(host253.len(), 253);
        assert!(AllowedDomain::parse(&host253).is_ok());
        assert!(AllowedDomain::parse(&format!("{host253}b")).is_err());
    }

    #[test]
    fn refuses_malformed_domains() {
        for bad in [
            "",
            "   ",
            "https://example.com",
            "example.com/",
            "example.com/path",
            "example.com?q",
            "user@example.com",
            "exa mple.com",
            "example.com.",
            ".example.com",
            "example..com",
            "-example.com",
            "example-.com",
            "exa_mple.com",
            "exämple.com",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:+80",
            "example.com:080",
            "example.com:80:80",
            "example.com:-1",
            "example.com:http",
            "*",
            "*.",
            "*example.com",
            "*.*.example.com",
            "a.*.example.com",
            "*.com",
            "*.localhost",
            "*.127.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "256.0.0.1",
            "01.2.3.4",
            "example.123",
            "[::1]",
            "[::1]:3000",
            ":80",
        ] {
            let err = AllowedDomain::parse(bad).unwrap_err();
            assert_eq!(err.code, "invalid_domain", "{bad:?}");
        }
    }

    #[test]
    fn numeric_labels_are_fine_before_the_last() {
        assert!(AllowedDomain::parse("123.example.com").is_ok());
        assert!(AllowedDomain::parse("0.0.0.0").is_ok());
        assert!(AllowedDomain::parse("*.co.uk").is_ok());
    }

    #[test]
    fn list_is_capped_and_deduplicated() {
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let out = parse_allowed_domains(&list(&["B.com", "a.com", "b.com"])).unwrap();
        let texts: Vec<String> = out.iter().map(AllowedDomain::as_string).collect();
        assert_eq!(texts, ["b.com", "a.com"]);
        assert!(parse_allowed_domains(&[]).unwrap().is_empty());
        let err = parse_allowed_domains(&list(&["a.com", "b.com", "c.com", "d.com"])).unwrap_err();
        assert_eq!(err.code, "too_many_domains");
        let err = parse_allowed_domains(&list(&["a.com", "not a domain"])).unwrap_err();
        assert_eq!(err.code, "invalid_domain");
        assert!(err.message.contains("not a domain"));
    }

    #[test]
    fn no_domains_allows_anything() {
        assert!(origin_allowed(&[], None));
        assert!(origin_allowed(&[], Some("null")));
        assert!(origin_allowed(&[], Some("https://anything.example")));
    }

    #[test]
    fn with_domains_an_origin_is_required() {
        let domains = vec!["example.com".to_owned()];
        assert!(!origin_allowed(&domains, None));
        assert!(!origin_allowed(&domains, Some("null")));
        assert!(!origin_allowed(&domains, Some("")));
    }

    #[test]
    fn exact_host_and_default_ports() {
        let d = ["example.com"];
        assert!(allowed(&d, "https://example.com"));
        assert!(allowed(&d, "http://example.com"));
        assert!(allowed(&d, "HTTPS://EXAMPLE.COM"));
        assert!(allowed(&d, "https://example.com:443"));
        assert!(allowed(&d, "http://example.com:80"));
        assert!(!allowed(&d, "http://example.com:443"));
        assert!(!allowed(&d, "https://example.com:8443"));
        assert!(!allowed(&d, "https://www.example.com"));
        assert!(!allowed(&d, "https://example.com.evil.net"));
        assert!(!allowed(&d, "https://evilexample.com"));
        assert!(!allowed(&d, "https://example.com."));
    }

    #[test]
    fn explicit_port_matches_only_that_port() {
        let d = ["localhost:3000"];
        assert!(allowed(&d, "http://localhost:3000"));
        assert!(allowed(&d, "https://localhost:3000"));
        assert!(!allowed(&d, "http://localhost"));
        assert!(!allowed(&d, "http://localhost:3001"));
        // A port equal to the scheme default still matches the implicit form.
        assert!(allowed(&["example.com:443"], "https://example.com"));
        assert!(!allowed(&["example.com:443"], "http://example.com"));
    }

    #[test]
    fn wildcard_matches_subdomains_not_apex() {
        let d = ["*.example.com"];
        assert!(allowed(&d, "https://a.example.com"));
        assert!(allowed(&d, "https://a.b.example.com"));
        assert!(!allowed(&d, "https://example.com"));
        assert!(!allowed(&d, "https://aexample.com"));
        assert!(!allowed(&d, "https://.example.com"));
        assert!(!allowed(&d, "https://a.example.com:8443"));
        assert!(allowed(&["*.example.com:8443"], "https://a.example.com:8443"));
    }

    #[test]
    fn malformed_origins_never_match() {
        let d = ["example.com", "localhost:3000"];
        for bad in [
            "example.com",
            "ftp://example.com",
            "ws://example.com",
            "https//example.com",
            "https://example.com/",
            "https://example.com/path",
            "https://example.com?x",
            "https://user@example.com",
            "https://example.com:",
            "https://example.com:0443",
            "https://example.com:99999",
            "https://example.com:443:443",
            "https:// example.com",
            "https://example.com ",
            "https://",
            "http://[::1]:3000",
        ] {
            assert!(!allowed(&d, bad), "{bad:?}");
        }
    }

    #[test]
    fn ip_origins() {
        assert!(allowed(&["127.0.0.1:8080"], "http://127.0.0.1:8080"));
        assert!(!allowed(&["127.0.0.1:8080"], "http://127.0.0.2:8080"));
    }

    #[test]
    fn unparsable_stored_entries_match_nothing() {
        assert!(!allowed(&["not a domain"], "https://example.com"));
        assert!(allowed(&["not a domain", "example.com"], "https://example.com"));
        // A stored wildcard over a whole TLD is refused rather than obeyed.
        assert!(!allowed(&["*.com"], "https://example.com"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = AllowedDomain::parse(&s);
        }

        #[test]
        fn parse_never_panics_printable(s in "\\PC*") {
            let _ = AllowedDomain::parse(&s);
            let _ = parse_allowed_domains(&[s.clone(), s]);
        }

        #[test]
        fn display_round_trips(s in "(\\*\\.)?[a-zA-Z0-9-]{1,8}(\\.[a-zA-Z0-9-]{1,8}){0,3}(:[0-9]{1,5})?") {
            if let Ok(d) = AllowedDomain::parse(&s) {
                let text = d.to_string();
                prop_assert_eq!(AllowedDomain::parse(&text), Ok(d));
                prop_assert_eq!(text, s.to_ascii_lowercase());
            }
        }

        #[test]
        fn display_round_trips_arbitrary(s in "\\PC{0,40}") {
            if let Ok(d) = AllowedDomain::parse(&s) {
                prop_assert_eq!(AllowedDomain::parse(&d.to_string()), Ok(d));
            }
        }

        #[test]
        fn origin_allowed_never_panics(
            domains in proptest::collection::vec("\\PC{0,30}", 0..4),
            origin in proptest::option::of("(https?://)?\\PC{0,30}"),
        ) {
            let _ = origin_allowed(&domains, origin.as_deref());
        }

        #[test]
        fn origin_of_a_plain_domain_is_allowed(
            host in "[a-z][a-z0-9]{0,8}(\\.[a-z][a-z0-9]{0,8}){0,2}",
            port in proptest::option::of(1u16..),
            https in any::<bool>(),
        ) {
            let domain = match port {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            };
            let scheme = if https { "https" } else { "http" };
            let origin = match port {
                Some(p) => format!("{scheme}://{host}:{p}"),
                None => format!("{scheme}://{host}"),
            };
            prop_assert!(origin_allowed(&[domain], Some(&origin)));
        }
    }
}
