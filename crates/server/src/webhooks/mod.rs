//! Webhooks at run time (CONTRACT.md, "Webhooks"): turning things that
//! happened into signed HTTP deliveries, durably.
//!
//! # Layout
//! - [`events`]: the [`Events`](events::Events) service on `AppState`:
//!   builds an event's outbox row (body serialised once) for the store call
//!   that makes the change, and fans outbox rows out into one job per
//!   matching webhook; `document.updated` is debounced per document in
//!   memory before it gets there.
//! - [`dispatch`]: the background dispatcher started by `run_until`: fans
//!   the outbox out, leases due jobs, POSTs them (bounded concurrency,
//!   SSRF-guarded resolver, no redirects, timeouts), records every attempt
//!   and schedules retries.
//! - here: what both sides and the routes share: which webhooks an event
//!   reaches, the body format, the SSRF target policy, sealing secrets.
//!
//! # Emitting an event (for other routes)
//! The event rides in the transaction of the change it reports (every
//! store method that makes such a change takes `events`), so a crash right
//! after the commit loses neither:
//!
//! ```ignore
//! let data = json!({"user_id": user.id, "role": role.as_str()});
//! let event = state.events.event(tenant.id, None, WebhookEvent::MemberJoined, data)?;
//! state.store.add_the_member(…, &[event]).await?;
//! state.events.committed();
//! ```
//!
//! `app` is `Some(app_id)` for app-scoped events and `None` for tenant-wide
//! ones (`key.*`, `member.*`). `tenant_id` (and `app_id`, when given) are
//! added to `data`. Which webhooks get it is decided at fan-out, against
//! the webhooks of that moment.

pub mod dispatch;
pub mod events;

use crate::config::Config;
use domain::DomainError;
use domain::ids::{AppId, TenantId};
use domain::webhook::{WebhookEvent, WebhookHost, WebhookUrl, ip_is_public};
use serde::Serialize;
use std::net::IpAddr;
use time::OffsetDateTime;

/// The `type` of the event `POST …/webhooks/{wid}/test` sends. Not a
/// subscribable event: it goes to the one webhook asked, whatever it
/// subscribed to.
pub const PING: &str = "ping";

/// Whether an event about `event_app` (`None`: about the tenant) goes to a
/// webhook of `hook_app`, before looking at what the webhook subscribed to.
///
/// Tenant-wide events (`key.*`, `member.*`) reach every app's webhooks. So
/// do `app.created` and `app.deleted`: a new app has no webhooks yet and a
/// deleted app's webhooks are deleted with it, so "the app's own webhooks"
/// would never receive them; they concern the tenant's set of apps. Every
/// other event goes to the webhooks of the app it is about.
pub fn reaches(event: WebhookEvent, event_app: Option<AppId>, hook_app: AppId) -> bool {
    let tenant_wide = event.is_tenant_wide() || matches!(event, WebhookEvent::AppCreated | WebhookEvent::AppDeleted);
    tenant_wide || event_app.is_none_or(|a| a == hook_app)
}

#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    data: &'a serde_json::Value,
}

/// The delivery body `{id, type, timestamp, data}`, serialised once: these
/// exact bytes are stored, signed and sent on every attempt.
pub fn event_body(
    id: &str,
    kind: &str,
    timestamp: OffsetDateTime,
    data: &serde_json::Value,
) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Body { id, kind, timestamp, data })
}

/// Adds `tenant_id` and `app_id` to an object `data` unless present, so
/// every event says whose it is without each emitter remembering to.
pub fn with_owner(mut data: serde_json::Value, tenant: TenantId, app: Option<AppId>) -> serde_json::Value {
    if let Some(map) = data.as_object_mut() {
        map.entry("tenant_id").or_insert_with(|| tenant.to_string().into());
        if let Some(app) = app {
            map.entry("app_id").or_insert_with(|| app.to_string().into());
        }
    }
    data
}

/// Which addresses webhooks may be delivered to (the SSRF defence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPolicy {
    allow_private: bool,
}

impl TargetPolicy {
    /// Private and loopback targets are fine when the server itself only
    /// listens on loopback (a developer's machine: the receiver is on it
    /// too) or when the operator said so; a server reachable from outside
    /// must not become a proxy into its own network.
    pub fn new(config: &Config) -> Self {
        Self { allow_private: config.allow_private_webhooks || config.listen.ip().is_loopback() }
    }

    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private || ip_is_public(ip)
    }

    /// The check at create/update time: a literal IP must be permitted.
    /// Names are checked on every delivery, against what they resolve to
    /// then (a check now would prove nothing about later).
    pub fn check_url(&self, url: &WebhookUrl) -> Result<(), DomainError> {
        match url.host() {
            WebhookHost::Ip(ip) if !self.permits(ip) => Err(DomainError::new(
                "forbidden_target",
                format!(
                    "{ip} is a loopback, private or reserved address; webhooks go to public addresses only \
                     (see --allow-private-webhooks)"
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Associated data that ties a sealed webhook secret to its row (a blob
/// copied into another webhook does not open). Length-prefixed fields.
pub fn secret_aad(tenant: TenantId, webhook_id: &str) -> Vec<u8> {
    const DOMAIN: &[u8] = b"wiresocket:webhook-secret:v1:";
    let tenant = tenant.to_string();
    let mut aad = Vec::with_capacity(DOMAIN.len() + 8 + tenant.len() + webhook_id.len());
    aad.extend_from_slice(DOMAIN);
    for field in [tenant.as_str(), webhook_id] {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(field.as_bytes());
    }
    aad
}

/// The URL without its query, for the audit trail and logs: receivers
/// sometimes put a token there.
pub fn redacted_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use serde_json::json;

    #[test]
    fn routing_of_app_scoped_and_tenant_wide_events() {
        let (a, b) = (AppId::new(), AppId::new());
        assert!(reaches(WebhookEvent::AppUpdated, Some(a), a));
        assert!(!reaches(WebhookEvent::AppUpdated, Some(a), b));
        assert!(!reaches(WebhookEvent::DocumentUpdated, Some(a), b));
        assert!(!reaches(WebhookEvent::AppSecretRotated, Some(a), b));
        for tenant_wide in [
            WebhookEvent::KeyRotated,
            WebhookEvent::KeyRevoked,
            WebhookEvent::MemberJoined,
            WebhookEvent::MemberRemoved,
            WebhookEvent::MemberRoleChanged,
            WebhookEvent::AppCreated,
            WebhookEvent::AppDeleted,
        ] {
            assert!(reaches(tenant_wide, None, b), "{tenant_wide}");
            assert!(reaches(tenant_wide, Some(a), b), "{tenant_wide}");
        }
        // An app-scoped event emitted without an app concerns every app.
        assert!(reaches(WebhookEvent::DocumentDeleted, None, b));
    }

    #[test]
    fn body_has_the_contract_fields_in_order() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let body = event_body("evt", "app.updated", at, &json!({"x": 1})).unwrap();
        assert_eq!(body, r#"{"id":"evt","type":"app.updated","timestamp":"2023-11-14T22:13:20Z","data":{"x":1}}"#);
    }

    #[test]
    fn owner_ids_are_added_but_never_overwritten() {
        let (t, a) = (TenantId::new(), AppId::new());
        let data = with_owner(json!({"doc": "d"}), t, Some(a));
        assert_eq!(data["tenant_id"], t.to_string());
        assert_eq!(data["app_id"], a.to_string());
        let kept = with_owner(json!({"app_id": "mine"}), t, Some(a));
        assert_eq!(kept["app_id"], "mine");
        assert_eq!(with_owner(json!([1]), t, None), json!([1]));
        assert!(with_owner(json!({}), t, None).get("app_id").is_none());
    }

    fn policy(listen: &str, allow: bool) -> TargetPolicy {
        let mut config = Config::for_data_dir(std::path::Path::new("/nonexistent")).unwrap();
        config.listen = listen.parse().unwrap();
        config.allow_private_webhooks = allow;
        TargetPolicy::new(&config)
    }

    #[test]
    fn private_targets_only_on_loopback_or_when_allowed() {
        let url = |s: &str| WebhookUrl::parse(s).unwrap();
        let public = policy("0.0.0.0:8080", false);
        assert!(!public.allows_private());
        for bad in ["http://127.0.0.1/", "http://10.1.2.3:8080/h", "http://[::1]/", "http://169.254.169.254/latest"] {
            assert_eq!(public.check_url(&url(bad)).unwrap_err().code, "forbidden_target", "{bad}");
        }
        assert!(public.check_url(&url("https://93.184.216.34/hook")).is_ok());
        // Names are judged at delivery time, by what they resolve to.
        assert!(public.check_url(&url("http://localhost/")).is_ok());
        assert!(policy("127.0.0.1:8080", false).check_url(&url("http://10.0.0.1/")).is_ok());
        assert!(policy("[::1]:8080", false).allows_private());
        assert!(policy("0.0.0.0:8080", true).check_url(&url("http://192.168.1.1/")).is_ok());
    }

    #[test]
    fn secret_aad_is_unambiguous() {
        let t = TenantId::new();
        assert_ne!(secret_aad(t, "ab"), secret_aad(t, "a"));
        assert_ne!(secret_aad(t, "w1"), secret_aad(TenantId::new(), "w1"));
        assert!(secret_aad(t, "w").starts_with(b"wiresocket:webhook-secret:v1:"));
    }

    #[test]
    fn redaction_drops_the_query() {
        assert_eq!(redacted_url("https://h/p?token=x"), "https://h/p?…");
        assert_eq!(redacted_url("https://h/p"), "https://h/p");
    }
}
