//! Webhook rules (CONTRACT.md, "Webhooks"): the event vocabulary, which
//! events a webhook subscribed to, what a target URL may be, which addresses
//! count as public for the SSRF defence, and the retry schedule.
//!
//! Signing lives in `auth::webhook`; delivery (HTTP, DNS, the outbox) in the
//! server, which calls [`ip_is_public`] on every address a target resolves
//! to and connects only to addresses it accepted.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Something that happened that webhooks can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookEvent {
    #[serde(rename = "document.updated")]
    DocumentUpdated,
    #[serde(rename = "document.deleted")]
    DocumentDeleted,
    #[serde(rename = "app.created")]
    AppCreated,
    #[serde(rename = "app.updated")]
    AppUpdated,
    #[serde(rename = "app.deleted")]
    AppDeleted,
    #[serde(rename = "app.secret_rotated")]
    AppSecretRotated,
    #[serde(rename = "key.rotated")]
    KeyRotated,
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    #[serde(rename = "member.joined")]
    MemberJoined,
    #[serde(rename = "member.removed")]
    MemberRemoved,
    #[serde(rename = "member.role_changed")]
    MemberRoleChanged,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 11] = [
        Self::DocumentUpdated,
        Self::DocumentDeleted,
        Self::AppCreated,
        Self::AppUpdated,
        Self::AppDeleted,
        Self::AppSecretRotated,
        Self::KeyRotated,
        Self::KeyRevoked,
        Self::MemberJoined,
        Self::MemberRemoved,
        Self::MemberRoleChanged,
    ];

    /// The `type` of the delivery body, and the name used in subscriptions.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::DocumentUpdated => "document.updated",
            Self::DocumentDeleted => "document.deleted",
            Self::AppCreated => "app.created",
            Self::AppUpdated => "app.updated",
            Self::AppDeleted => "app.deleted",
            Self::AppSecretRotated => "app.secret_rotated",
            Self::KeyRotated => "key.rotated",
            Self::KeyRevoked => "key.revoked",
            Self::MemberJoined => "member.joined",
            Self::MemberRemoved => "member.removed",
            Self::MemberRoleChanged => "member.role_changed",
        }
    }

    /// Exact names only: these are identifiers, not prose.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Signing keys and members belong to the tenant, not to one app, so
    /// these events go to the subscribed webhooks of every app of the tenant.
    pub fn is_tenant_wide(&self) -> bool {
        match self {
            Self::KeyRotated
            | Self::KeyRevoked
            | Self::MemberJoined
            | Self::MemberRemoved
            | Self::MemberRoleChanged => true,
            Self::DocumentUpdated
            | Self::DocumentDeleted
            | Self::AppCreated
            | Self::AppUpdated
            | Self::AppDeleted
            | Self::AppSecretRotated => false,
        }
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most entries an `events` list may have. With eleven events and no
/// duplicates a valid list has at most eleven; the cap bounds the work on
/// junk before it is looked at.
pub const MAX_EVENT_FILTER_ENTRIES: usize = 20;

/// Which events a webhook receives: `["*"]` for all, or a list of names.
/// Serialises as the list of names, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct EventFilter {
    all: bool,
    events: Vec<WebhookEvent>,
}

impl EventFilter {
    /// Every event, present and future.
    pub fn all() -> Self {
        Self { all: true, events: Vec::new() }
    }

    /// Parses the `events` list of a webhook create or update request.
    /// Refused with `invalid_events`: an empty list, more than
    /// [`MAX_EVENT_FILTER_ENTRIES`] entries, an unknown name, a duplicate,
    /// and `*` together with anything else (it already means everything, so
    /// the rest would be a misunderstanding worth pointing out).
    pub fn parse(input: &[String]) -> Result<Self, DomainError> {
        let invalid = |message: String| DomainError::new("invalid_events", message);
        if input.is_empty() {
            return Err(invalid("events must name at least one event, or be [\"*\"] for all".into()));
        }
        if input.len() > MAX_EVENT_FILTER_ENTRIES {
            return Err(invalid(format!("events may have at most {MAX_EVENT_FILTER_ENTRIES} entries")));
        }
        if input.iter().any(|s| s == "*") {
            if input.len() > 1 {
                return Err(invalid("\"*\" already means every event; give it alone".into()));
            }
            return Ok(Self::all());
        }
        let mut events = Vec::with_capacity(input.len());
        for name in input {
            let Some(event) = WebhookEvent::parse(name) else {
                let known: Vec<&str> = WebhookEvent::ALL.iter().map(WebhookEvent::as_str).collect();
                return Err(invalid(format!("unknown event {name:?}; known events: {}, or \"*\"", known.join(", "))));
            };
            if events.contains(&event) {
                return Err(invalid(format!("event {name:?} is listed twice")));
            }
            events.push(event);
        }
        Ok(Self { all: false, events })
    }

    /// [`EventFilter::parse`] for an arbitrary JSON value, so a wrong type
    /// (not a list, or a list with non-strings) gets the same error code.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, DomainError> {
        let not_strings = || DomainError::new("invalid_events", "events must be a list of event names");
        let list = value.as_array().ok_or_else(not_strings)?;
        if list.len() > MAX_EVENT_FILTER_ENTRIES {
            return Err(DomainError::new(
                "invalid_events",
                format!("events may have at most {MAX_EVENT_FILTER_ENTRIES} entries"),
            ));
        }
        let names = list
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(not_strings)?;
        Self::parse(&names)
    }

    pub fn is_all(&self) -> bool {
        self.all
    }

    pub fn matches(&self, event: WebhookEvent) -> bool {
        self.all || self.events.contains(&event)
    }

    /// The stored and displayed form: `["*"]` or the names in the order given.
    pub fn names(&self) -> Vec<&'static str> {
        if self.all { vec!["*"] } else { self.events.iter().map(WebhookEvent::as_str).collect() }
    }
}

impl TryFrom<Vec<String>> for EventFilter {
    type Error = DomainError;

    fn try_from(value: Vec<String>) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<EventFilter> for Vec<String> {
    fn from(filter: EventFilter) -> Self {
        filter.names().into_iter().map(str::to_owned).collect()
    }
}

/// The longest target URL accepted, in bytes, as given and as normalised.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;

/// A webhook target: an absolute `http` or `https` URL with a host, no user
/// name or password (they would be sent to the target in the clear and
/// stored unencrypted), and no fragment (never sent, so it would only
/// mislead).
///
/// Parsing is the WHATWG URL parser of the `url` crate, the same one the
/// HTTP client uses, so the host checked here is the host connected to:
/// `http://0x7f.1/` is `127.0.0.1` to both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WebhookUrl(url::Url);

/// The host of a [`WebhookUrl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookHost<'a> {
    /// A DNS name, lowercase (and punycode for international names). The
    /// server must check every address it resolves to.
    Domain(&'a str),
    /// An IP literal, which needs no resolution.
    Ip(IpAddr),
}

impl WebhookUrl {
    /// Accepts `http(s)://host[:port][/path][?query]`, refusing the rest
    /// with `invalid_url`. Surrounding whitespace is trimmed; whitespace or
    /// control characters inside are refused rather than silently dropped
    /// as a browser would.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let invalid = |why: &str| DomainError::new("invalid_url", format!("the webhook URL {why}"));
        let s = s.trim();
        if s.is_empty() {
            return Err(invalid("is empty"));
        }
        if s.len() > MAX_WEBHOOK_URL_LEN {
            return Err(invalid("must be at most 2048 bytes"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("must not contain spaces or control characters"));
        }
        let starts_with = |prefix: &str| s.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
        if !starts_with("http://") && !starts_with("https://") {
            return Err(invalid("must start with http:// or https://"));
        }
        let url = url::Url::parse(s).map_err(|_| invalid("is not a valid URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("must use http or https"));
        }
        if url.host().is_none() || url.host_str().is_some_and(str::is_empty) {
            return Err(invalid("must have a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("must not contain a user name or password"));
        }
        if url.fragment().is_some() {
            return Err(invalid("must not contain a fragment (#...)"));
        }
        if url.port() == Some(0) {
            return Err(invalid("must not use port 0"));
        }
        // Normalising can grow a URL (percent-encoding, punycode).
        if url.as_str().len() > MAX_WEBHOOK_URL_LEN {
            return Err(invalid("must be at most 2048 bytes"));
        }
        Ok(Self(url))
    }

    /// The normalised URL, as stored and requested.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn host(&self) -> WebhookHost<'_> {
        match self.0.host() {
            Some(url::Host::Ipv4(ip)) => WebhookHost::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => WebhookHost::Ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => WebhookHost::Domain(name),
            // `parse` refused URLs without a host.
            None => WebhookHost::Domain(""),
        }
    }

    /// The port connected to: the explicit one or the scheme's default.
    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(if self.is_https() { 443 } else { 80 })
    }

    pub fn is_https(&self) -> bool {
        self.0.scheme() == "https"
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for WebhookUrl {
    type Error = DomainError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<WebhookUrl> for String {
    fn from(url: WebhookUrl) -> Self {
        url.0.into()
    }
}

/// IPv4 networks that are not on the public internet.
const V4_NOT_PUBLIC: [(Ipv4Addr, u8); 14] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),      // "this network" (RFC 791); 0.0.0.0 reaches localhost
    (Ipv4Addr::new(10, 0, 0, 0), 8),     // private (RFC 1918)
    (Ipv4Addr::new(100, 64, 0, 0), 10),  // carrier-grade NAT (RFC 6598)
    (Ipv4Addr::new(127, 0, 0, 0), 8),    // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16), // link-local, incl. cloud metadata 169.254.169.254
    (Ipv4Addr::new(172, 16, 0, 0), 12),  // private (RFC 1918)
    (Ipv4Addr::new(192, 0, 0, 0), 24),   // IETF protocol assignments (RFC 6890)
    (Ipv4Addr::new(192, 0, 2, 0), 24),   // documentation TEST-NET-1
    (Ipv4Addr::new(192, 168, 0, 0), 16), // private (RFC 1918)
    (Ipv4Addr::new(198, 18, 0, 0), 15),  // benchmarking (RFC 2544)
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation TEST-NET-2
    (Ipv4Addr::new(203, 0, 113, 0), 24), // documentation TEST-NET-3
    (Ipv4Addr::new(224, 0, 0, 0), 4),    // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),    // reserved, incl. broadcast 255.255.255.255
];

/// Parts of the IPv6 global unicast block 2000::/3 that are not public.
/// Everything outside 2000::/3 (loopback, unspecified, ULA fc00::/7,
/// link-local fe80::/10, site-local fec0::/10, multicast ff00::/8, discard
/// 100::/64, local NAT64 64:ff9b:1::/48, ...) is not public either, apart
/// from the forms that embed an IPv4 address.
const V6_GLOBAL_NOT_PUBLIC: [(Ipv6Addr, u8); 3] = [
    // IETF protocol assignments (RFC 2928): Teredo 2001::/32, which embeds
    // an IPv4 address, ORCHID, benchmarking 2001:2::/48. None is a web server.
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation (RFC 3849)
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),     // documentation (RFC 9637)
];
const V6_GLOBAL_UNICAST: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);
const V6_NAT64: (Ipv6Addr, u8) = (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);
const V6_6TO4: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16);
const V6_V4_COMPATIBLE: (Ipv6Addr, u8) = (Ipv6Addr::UNSPECIFIED, 96);

/// Whether a webhook may be delivered to `ip` without
/// `--allow-private-webhooks`: false for loopback, unspecified, private,
/// link-local (incl. cloud metadata), CGNAT, multicast, broadcast,
/// reserved, documentation and benchmarking ranges, IPv6 ULA, link-local
/// and multicast, and anything outside IPv6 global unicast. IPv6 forms that
/// carry an IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by that address, since
/// that is where the packets end up.
pub fn ip_is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => v4_is_public(v4),
            None => in_v6(v6, V6_GLOBAL_UNICAST) && !V6_GLOBAL_NOT_PUBLIC.iter().any(|&net| in_v6(v6, net)),
        },
    }
}

fn v4_is_public(ip: Ipv4Addr) -> bool {
    !V4_NOT_PUBLIC.iter().any(|&(net, len)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        ip.to_bits() & mask == net.to_bits()
    })
}

fn in_v6(ip: Ipv6Addr, (net, len): (Ipv6Addr, u8)) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    ip.to_bits() & mask == net.to_bits()
}

fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // The low 32 bits. `::` and `::1` land in 0.0.0.0/8, not public.
    let low = Ipv4Addr::from_bits(ip.to_bits() as u32);
    if in_v6(ip, V6_V4_COMPATIBLE) || in_v6(ip, V6_NAT64) {
        return Some(low);
    }
    if in_v6(ip, V6_6TO4) {
        return Some(Ipv4Addr::from_bits((ip.to_bits() >> 80) as u32));
    }
    None
}

/// Waits after each failed attempt (CONTRACT.md: about 5 s, 30 s, 2 min,
/// 10 min, 1 h, 6 h), before jitter.
pub const RETRY_SCHEDULE: [Duration; 6] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(2 * 60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(6 * 60 * 60),
];

/// Deliveries per event, first try included; after the last the event is
/// marked failed.
pub const MAX_DELIVERY_ATTEMPTS: u32 = RETRY_SCHEDULE.len() as u32 + 1;

/// How long to wait after attempt `attempt_just_failed` (1 is the first
/// delivery) before the next, or `None` when that was the last attempt.
///
/// `jitter` in `[0, 1)` (from the caller's RNG) spreads the wait uniformly
/// over ±20 % of the scheduled one, so webhooks that failed together (a
/// receiver outage) do not all retry in the same second. Out-of-range or NaN
/// jitter is clamped, never a panic. Attempt 0 does not exist: `None`.
pub fn retry_delay(attempt_just_failed: u32, jitter: f64) -> Option<Duration> {
    let index = usize::try_from(attempt_just_failed.checked_sub(1)?).ok()?;
    let base = RETRY_SCHEDULE.get(index)?;
    let jitter = if jitter.is_nan() { 0.5 } else { jitter.clamp(0.0, 1.0) };
    let factor = 0.8 + 0.4 * jitter;
    // At most 6 h * 1.2 in ms: far inside f64's exact integers and u64.
    let millis = (base.as_millis() as f64 * factor).round() as u64;
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use proptest::prelude::*;

    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn event_names_round_trip() {
        for event in WebhookEvent::ALL {
            assert_eq!(WebhookEvent::parse(event.as_str()), Some(event));
            assert_eq!(serde_json::to_value(event).unwrap(), serde_json::json!(event.as_str()));
            assert_eq!(event.to_string(), event.as_str());
        }
        let names: Vec<&str> = WebhookEvent::ALL.iter().map(WebhookEvent::as_str).collect();
        assert_eq!(
            names,
            [
                "document.updated",
                "document.deleted",
                "app.created",
                "app.updated",
                "app.deleted",
                "app.secret_rotated",
                "key.rotated",
                "key.revoked",
                "member.joined",
                "member.removed",
                "member.role_changed",
            ]
        );
        for bad in ["", "*", "App.Created", " app.created", "app.created ", "app", "app.*", "webhook.created"] {
            assert_eq!(WebhookEvent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn key_and_member_events_are_tenant_wide() {
        let wide: Vec<&str> =
            WebhookEvent::ALL.iter().filter(|e| e.is_tenant_wide()).map(WebhookEvent::as_str).collect();
        assert_eq!(wide, ["key.rotated", "key.revoked", "member.joined", "member.removed", "member.role_changed"]);
    }

    #[test]
    fn filter_matches_listed_events_or_all() {
        let f = EventFilter::parse(&strings(&["app.created", "key.rotated"])).unwrap();
        assert!(!f.is_all());
        assert!(f.matches(WebhookEvent::AppCreated));
        assert!(f.matches(WebhookEvent::KeyRotated));
        assert!(!f.matches(WebhookEvent::AppDeleted));
        assert!(!f.matches(WebhookEvent::DocumentUpdated));
        assert_eq!(f.names(), ["app.created", "key.rotated"]);

        let all = EventFilter::parse(&strings(&["*"])).unwrap();
        assert!(all.is_all());
        assert_eq!(all, EventFilter::all());
        assert!(WebhookEvent::ALL.iter().all(|e| all.matches(*e)));
        assert_eq!(all.names(), ["*"]);

        let every: Vec<String> = WebhookEvent::ALL.iter().map(|e| e.as_str().to_owned()).collect();
        let f = EventFilter::parse(&every).unwrap();
        assert!(!f.is_all());
        assert!(WebhookEvent::ALL.iter().all(|e| f.matches(*e)));
    }

    #[test]
    fn filter_refusals() {
        let too_many: Vec<String> = (0..21).map(|i| format!("x{i}")).collect();
        for bad in [
            vec![],
            strings(&["app.created", "app.created"]),
            strings(&["app.created", "nope"]),
            strings(&["App.Created"]),
            strings(&[""]),
            strings(&["*", "app.created"]),
            strings(&["app.created", "*"]),
            strings(&["*", "*"]),
            too_many,
        ] {
            let err = EventFilter::parse(&bad).unwrap_err();
            assert_eq!(err.code, "invalid_events", "{bad:?}");
        }
        let err = EventFilter::parse(&strings(&["app.create"])).unwrap_err();
        assert!(err.message.contains("\"app.create\"") && err.message.contains("app.created"), "{}", err.message);
    }

    #[test]
    fn filter_from_json_and_serde() {
        let f = EventFilter::from_json(&serde_json::json!(["member.joined", "app.updated"])).unwrap();
        assert_eq!(f.names(), ["member.joined", "app.updated"]);
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"["member.joined","app.updated"]"#);
        let back: EventFilter = serde_json::from_str(r#"["member.joined","app.updated"]"#).unwrap();
        assert_eq!(back, f);
        assert!(serde_json::from_str::<EventFilter>("[]").is_err());
        assert!(serde_json::from_str::<EventFilter>(r#"["nope"]"#).is_err());
        assert_eq!(serde_json::to_string(&EventFilter::all()).unwrap(), r#"["*"]"#);
        for bad in [
            serde_json::json!("app.created"),
            serde_json::json!(null),
            serde_json::json!({"events": ["*"]}),
            serde_json::json!(["app.created", 1]),
            serde_json::json!([["*"]]),
            serde_json::json!([]),
            serde_json::Value::Array(vec![serde_json::json!(1); 1000]),
        ] {
            assert_eq!(EventFilter::from_json(&bad).unwrap_err().code, "invalid_events", "{bad}");
        }
    }

    #[test]
    fn urls_are_normalised() {
        for (input, normalised) in [
            ("https://example.com", "https://example.com/"),
            ("  https://example.com/hook  ", "https://example.com/hook"),
            ("HTTPS://Example.COM:443/Hook?a=1&b=2", "https://example.com/Hook?a=1&b=2"),
            ("http://example.com:8080/x", "http://example.com:8080/x"),
            ("http://127.0.0.1:3000/hook", "http://127.0.0.1:3000/hook"),
            ("http://[::1]:3000/hook", "http://[::1]:3000/hook"),
            ("https://bücher.example/ü", "https://xn--bcher-kva.example/%C3%BC"),
            ("http://0x7f.1/", "http://127.0.0.1/"),
        ] {
            assert_eq!(WebhookUrl::parse(input).unwrap().as_str(), normalised, "{input:?}");
        }
    }

    #[test]
    fn url_parts() {
        let url = WebhookUrl::parse("https://hooks.example.com/in").unwrap();
        assert_eq!(url.host(), WebhookHost::Domain("hooks.example.com"));
        assert_eq!(url.port(), 443);
        assert!(url.is_https());
        let url = WebhookUrl::parse("http://10.1.2.3:8080/").unwrap();
        assert_eq!(url.host(), WebhookHost::Ip("10.1.2.3".parse().unwrap()));
        assert_eq!(url.port(), 8080);
        assert!(!url.is_https());
        let url = WebhookUrl::parse("http://[::ffff:127.0.0.1]/").unwrap();
        assert_eq!(url.host(), WebhookHost::Ip("::ffff:127.0.0.1".parse().unwrap()));
        assert_eq!(url.port(), 80);
        // Hex and short IPv4 forms are IP literals to the parser, so the SSRF
        // check sees them as addresses, not as names.
        assert_eq!(
            WebhookUrl::parse("http://2130706433/").unwrap().host(),
            WebhookHost::Ip("127.0.0.1".parse().unwrap())
        );
        let json = serde_json::to_string(&url).unwrap();
        assert_eq!(json, r#""http://[::ffff:7f00:1]/""#);
        assert_eq!(serde_json::from_str::<WebhookUrl>(&json).unwrap(), url);
        assert!(serde_json::from_str::<WebhookUrl>(r#""ftp://x""#).is_err());
    }

    #[test]
    fn url_refusals() {
        let long = format!("https://example.com/{}", "a".repeat(2048));
        let grows = format!("https://example.com/{}", "ü".repeat(1000)); // 2020 bytes in, 6000+ out
        for bad in [
            "",
            "   ",
            "example.com",
            "example.com/hook",
            "//example.com/hook",
            "ftp://example.com/",
            "ws://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "http:example.com",
            "http:/example.com",
            "http://",
            "https://",
            "http://:80/",
            "http://user@example.com/",
            "http://user:pass@example.com/",
            "http://:pass@example.com/",
            "https://example.com/#frag",
            "https://example.com/#",
            "https://example.com:0/",
            "https://example.com:65536/",
            "https://exa mple.com/",
            "https://example.com/a b",
            "https://example.com/\thook",
            "https://exa\nmple.com/",
            "https://example.com/\u{0}",
            "http://[::1/",
            "http://999.0.0.1/",
            "http://exa%00mple.com/",
            &long,
            &grows,
        ] {
            let err = WebhookUrl::parse(bad).unwrap_err();
            assert_eq!(err.code, "invalid_url", "{bad:?}");
        }
        assert!(WebhookUrl::parse(&format!("https://example.com/{}", "a".repeat(2028))).is_ok());
        assert!(WebhookUrl::parse(&format!("https://example.com/{}", "a".repeat(2029))).is_err());
    }

    fn public(s: &str) -> bool {
        ip_is_public(s.parse().unwrap())
    }

    /// Each range: its first and last address are refused, the addresses
    /// just outside it are accepted (unless they belong to another range).
    #[test]
    fn ipv4_range_boundaries() {
        let cases: &[(&str, bool)] = &[
            // 0.0.0.0/8
            ("0.0.0.0", false),
            ("0.255.255.255", false),
            ("1.0.0.0", true),
            // 10.0.0.0/8
            ("9.255.255.255", true),
            ("10.0.0.0", false),
            ("10.255.255.255", false),
            ("11.0.0.0", true),
            // 100.64.0.0/10
            ("100.63.255.255", true),
            ("100.64.0.0", false),
            ("100.127.255.255", false),
            ("100.128.0.0", true),
            // 127.0.0.0/8
            ("126.255.255.255", true),
            ("127.0.0.0", false),
            ("127.0.0.1", false),
            ("127.255.255.255", false),
            ("128.0.0.0", true),
            // 169.254.0.0/16
            ("169.253.255.255", true),
            ("169.254.0.0", false),
            ("169.254.169.254", false),
            ("169.254.255.255", false),
            ("169.255.0.0", true),
            // 172.16.0.0/12
            ("172.15.255.255", true),
            ("172.16.0.0", false),
            ("172.31.255.255", false),
            ("172.32.0.0", true),
            // 192.0.0.0/24 and 192.0.2.0/24
            ("191.255.255.255", true),
            ("192.0.0.0", false),
            ("192.0.0.255", false),
            ("192.0.1.0", true),
            ("192.0.1.255", true),
            ("192.0.2.0", false),
            ("192.0.2.255", false),
            ("192.0.3.0", true),
            // 192.168.0.0/16
            ("192.167.255.255", true),
            ("192.168.0.0", false),
            ("192.168.255.255", false),
            ("192.169.0.0", true),
            // 198.18.0.0/15
            ("198.17.255.255", true),
            ("198.18.0.0", false),
            ("198.19.255.255", false),
            ("198.20.0.0", true),
            // 198.51.100.0/24
            ("198.51.99.255", true),
            ("198.51.100.0", false),
            ("198.51.100.255", false),
            ("198.51.101.0", true),
            // 203.0.113.0/24
            ("203.0.112.255", true),
            ("203.0.113.0", false),
            ("203.0.113.255", false),
            ("203.0.114.0", true),
            // 224.0.0.0/4 and 240.0.0.0/4 (up to broadcast)
            ("223.255.255.255", true),
            ("224.0.0.0", false),
            ("239.255.255.255", false),
            ("240.0.0.0", false),
            ("255.255.255.255", false),
            // ordinary public addresses
            ("8.8.8.8", true),
            ("93.184.216.34", true),
        ];
        for (ip, expected) in cases {
            assert_eq!(public(ip), *expected, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges() {
        let cases: &[(&str, bool)] = &[
            ("::", false),
            ("::1", false),
            // outside 2000::/3
            ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2000::", true),
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("4000::", false),
            ("100::1", false),
            ("fc00::", false),
            ("fd12:3456::1", false),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fe80::", false),
            ("fe80::1", false),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fec0::1", false),
            ("ff00::", false),
            ("ff02::1", false),
            ("ff0e::1", false),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            // 2001::/23
            ("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2001::", false),
            ("2001:0:4136:e378::1", false),
            ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:200::", true),
            // 2001:db8::/32
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("2001:db8::", false),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("2001:db9::", true),
            // 3fff::/20
            ("3fff::", false),
            ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("3fff:1000::", true),
            // ordinary public addresses
            ("2606:4700:4700::1111", true),
            ("2a00:1450:4001:80b::200e", true),
        ];
        for (ip, expected) in cases {
            assert_eq!(public(ip), *expected, "{ip}");
        }
    }

    #[test]
    fn ipv6_with_embedded_ipv4_is_judged_by_it() {
        let cases: &[(&str, bool)] = &[
            // IPv4-mapped ::ffff:0:0/96
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:169.254.169.254", false),
            ("::ffff:0.0.0.0", false),
            ("::ffff:8.8.8.8", true),
            // IPv4-compatible ::/96
            ("::127.0.0.1", false),
            ("::192.168.1.1", false),
            ("::8.8.8.8", true),
            ("::255.255.255.255", false),
            // NAT64 64:ff9b::/96
            ("64:ff9b::127.0.0.1", false),
            ("64:ff9b::a9fe:a9fe", false),
            ("64:ff9b::8.8.8.8", true),
            ("64:ff9b::1:0:0:1", false),   // outside the /96
            ("64:ff9b:1::8.8.8.8", false), // local-use NAT64
            // 6to4 2002::/16
            ("2002:7f00:1::1", false),
            ("2002:a00:1::", false),
            ("2002:a9fe:a9fe::1", false),
            ("2002:808:808::1", true),
        ];
        for (ip, expected) in cases {
            assert_eq!(public(ip), *expected, "{ip}");
        }
    }

    #[test]
    fn retry_schedule() {
        let mid = |attempt| retry_delay(attempt, 0.5);
        assert_eq!(mid(0), None);
        assert_eq!(mid(1), Some(Duration::from_secs(5)));
        assert_eq!(mid(2), Some(Duration::from_secs(30)));
        assert_eq!(mid(3), Some(Duration::from_secs(120)));
        assert_eq!(mid(4), Some(Duration::from_secs(600)));
        assert_eq!(mid(5), Some(Duration::from_secs(3600)));
        assert_eq!(mid(6), Some(Duration::from_secs(21_600)));
        assert_eq!(mid(7), None);
        assert_eq!(mid(u32::MAX), None);
        assert_eq!(MAX_DELIVERY_ATTEMPTS, 7);
        // ±20 %.
        assert_eq!(retry_delay(1, 0.0), Some(Duration::from_secs(4)));
        assert_eq!(retry_delay(6, 0.0), Some(Duration::from_secs(17_280)));
        assert_eq!(retry_delay(2, 0.999_999), Some(Duration::from_millis(36_000)));
        // Nonsense jitter is clamped.
        assert_eq!(retry_delay(1, f64::NAN), Some(Duration::from_secs(5)));
        assert_eq!(retry_delay(1, -3.0), Some(Duration::from_secs(4)));
        assert_eq!(retry_delay(1, f64::INFINITY), Some(Duration::from_secs(6)));
    }

    proptest! {
        #[test]
        fn url_parse_never_panics(s in "\\PC{0,100}") {
            let _ = WebhookUrl::parse(&s);
        }

        #[test]
        fn url_parse_never_panics_on_url_like(s in "(https?|HTTP|ftp)://[a-z0-9.:@\\[\\]%#?/_-]{0,60}") {
            if let Ok(url) = WebhookUrl::parse(&s) {
                // Accepted URLs are stable under re-parsing.
                prop_assert_eq!(WebhookUrl::parse(url.as_str()).unwrap(), url.clone());
                prop_assert!(url.as_str().starts_with("http://") || url.as_str().starts_with("https://"));
                prop_assert!(!url.as_str().contains('#'));
                let _ = url.host();
            }
        }

        #[test]
        fn retry_delay_within_twenty_percent(attempt in 0u32..12, jitter in any::<f64>()) {
            match retry_delay(attempt, jitter) {
                None => prop_assert!(attempt == 0 || attempt >= MAX_DELIVERY_ATTEMPTS),
                Some(d) => {
                    let base = RETRY_SCHEDULE[attempt as usize - 1].as_millis();
                    prop_assert!(d.as_millis() * 10 >= base * 8, "{d:?} < 0.8 x {base} ms");
                    prop_assert!(d.as_millis() * 10 <= base * 12, "{d:?} > 1.2 x {base} ms");
                }
            }
        }

        #[test]
        fn retries_always_wait_longer(attempt in 1u32..6, a in 0.0f64..1.0, b in 0.0f64..1.0) {
            prop_assert!(retry_delay(attempt + 1, b).unwrap() > retry_delay(attempt, a).unwrap());
        }

        #[test]
        fn ip_check_never_panics(bits in any::<u128>(), v4 in any::<u32>()) {
            let _ = ip_is_public(IpAddr::V6(Ipv6Addr::from_bits(bits)));
            let _ = ip_is_public(IpAddr::V4(Ipv4Addr::from_bits(v4)));
        }

        #[test]
        fn mapped_agrees_with_ipv4(v4 in any::<u32>()) {
            let v4 = Ipv4Addr::from_bits(v4);
            prop_assert_eq!(ip_is_public(IpAddr::V6(v4.to_ipv6_mapped())), ip_is_public(IpAddr::V4(v4)));
        }
    }
}
