//! The webhook dispatcher: one background loop per process that leases due
//! jobs from the outbox and delivers them, at most [`MAX_IN_FLIGHT`] at a
//! time, each in its own task so a slow receiver holds only its own slot.
//!
//! Delivery is at least once: a job is leased for [`LEASE`] (longer than an
//! attempt can take), and a process that dies mid-attempt leaves a lease
//! that simply runs out, after which any dispatcher (this one after a
//! restart, or another node) tries again with the same `X-Webhook-Id`.
//!
//! SSRF: a literal IP target is checked before connecting; a name is
//! resolved by [`GuardedResolver`], which refuses the whole name when any
//! address is not public (unless private targets are allowed), so the
//! client can only ever connect to an address that was checked. Redirects
//! are not followed and proxies from the environment are ignored, so no
//! second, unchecked connection can happen.

use crate::state::AppState;
use crate::webhooks::{TargetPolicy, secret_aad};
use domain::webhook::{WebhookHost, WebhookUrl, retry_delay};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{DeliveryRecord, JobNext, StoreError, WebhookJobRecord};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Deliveries in flight at once, per process.
pub const MAX_IN_FLIGHT: usize = 16;
/// How often to look for due jobs when nothing woke us.
pub const POLL: Duration = Duration::from_secs(1);
/// Connect timeout, and total time for one attempt (connect, send, headers, body).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed job is ours: well past [`TIMEOUT`] plus the store write.
pub const LEASE: time::Duration = time::Duration::seconds(60);
/// Most of a response body read (only a prefix is kept, for the log).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most of a response body quoted in a failed attempt's `error`.
const ERROR_EXCERPT_CHARS: usize = 200;
/// At shutdown, how long deliveries in flight may take to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
pub const USER_AGENT: &str = "WireSocket-Webhooks/1";

/// The name resolved to an address webhooks may not go to.
#[derive(Debug, thiserror::Error)]
#[error("forbidden_target: {host} resolves to {ip}, a loopback, private or reserved address")]
pub struct ForbiddenTarget {
    host: String,
    ip: std::net::IpAddr,
}

/// A resolver that answers only names whose every address the policy
/// permits. Refusing the name when any address is bad (rather than
/// filtering) keeps a name that mixes public and internal addresses from
/// being used to probe the internal one.
pub struct GuardedResolver {
    pub policy: TargetPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !policy.permits(a.ip())) {
                return Err(Box::new(ForbiddenTarget { host, ip: bad.ip() }) as _);
            }
            if addrs.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for deliveries: guarded DNS, no redirects, no proxies,
/// timeouts, our User-Agent.
pub fn http_client(policy: TargetPolicy) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .user_agent(USER_AGENT)
        .build()
}

pub struct Dispatcher {
    state: AppState,
    client: reqwest::Client,
}

/// What one attempt came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// An HTTP answer (2xx is success), with a note for the log if not 2xx.
    Answered { status: u16, error: Option<String> },
    /// No HTTP answer: refused target, DNS, connect, TLS, timeout.
    Failed(String),
    /// Nothing to record (the webhook is gone, or the store failed); the
    /// lease runs out and the job is tried again if it still exists.
    Skip,
}

impl Dispatcher {
    pub fn new(state: AppState, client: reqwest::Client) -> Arc<Self> {
        Arc::new(Self { state, client })
    }

    /// Claims and delivers until `stop` turns true, then gives deliveries in
    /// flight [`SHUTDOWN_GRACE`] to finish (the rest keep their lease and are
    /// retried when it runs out).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let wake = self.state.events.wake_handle();
        let mut tasks: JoinSet<()> = JoinSet::new();
        // Job ids in flight, and which task runs each: a lease that ran out
        // under a slow receiver must not start a second attempt here.
        let mut in_flight: HashSet<String> = HashSet::new();
        let mut task_jobs: HashMap<tokio::task::Id, String> = HashMap::new();
        // At start (what a crash left), then on each wake-up and poll; not
        // after every finished delivery, which has nothing new to fan out.
        let mut fan_out_due = true;
        loop {
            if *stop.borrow() {
                break;
            }
            // Events committed with their changes become jobs first.
            if std::mem::take(&mut fan_out_due)
                && let Err(e) = self.state.events.fan_out().await
            {
                tracing::warn!(error = %e, "fanning out webhook events failed; will retry");
            }
            let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
            let mut claimed_all = false;
            if room > 0 {
                let now = self.state.now();
                let limit = u32::try_from(room).unwrap_or(u32::MAX);
                match self.state.store.claim_webhook_jobs(now, now + LEASE, limit).await {
                    Ok(jobs) => {
                        claimed_all = jobs.len() == room;
                        for job in jobs {
                            if in_flight.insert(job.id.clone()) {
                                let id = job.id.clone();
                                let me = self.clone();
                                let handle = tasks.spawn(async move { me.deliver(job).await });
                                task_jobs.insert(handle.id(), id);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming webhook jobs failed; will retry"),
                }
            }
            // A full batch means more may be due: claim again once a slot frees.
            let idle = !claimed_all || in_flight.len() < MAX_IN_FLIGHT;
            tokio::select! {
                () = wake.notified(), if idle => fan_out_due = true,
                () = tokio::time::sleep(POLL), if idle => fan_out_due = true,
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    reap(done, &mut in_flight, &mut task_jobs);
                }
                _ = stop.changed() => break,
            }
            while let Some(done) = tasks.try_join_next_with_id() {
                reap(done, &mut in_flight, &mut task_jobs);
            }
        }
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::info!(in_flight = tasks.len(), "webhook deliveries still running at shutdown are retried later");
        }
        tasks.abort_all();
    }

    /// One attempt of one job, recorded with its outcome and the job's next step.
    async fn deliver(&self, job: WebhookJobRecord) {
        let at = self.state.now();
        let started = Instant::now();
        let outcome = self.attempt(&job, at).await;
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (status_code, error) = match outcome {
            Outcome::Skip => return,
            Outcome::Answered { status, error } => (Some(status), error),
            Outcome::Failed(e) => (None, Some(e)),
        };
        let delivered = status_code.is_some_and(|s| (200..300).contains(&s));
        let attempt = job.attempt.saturating_add(1);
        let next = if delivered {
            JobNext::Delivered
        } else {
            let number = u32::try_from(attempt).unwrap_or(u32::MAX);
            match retry_delay(number, rand::random::<f64>()) {
                Some(delay) => JobNext::Retry { at: at + scaled(delay, self.state.config.webhook_retry_scale) },
                None => JobNext::Failed,
            }
        };
        let outcome = match next {
            JobNext::Delivered => "delivered",
            JobNext::Retry { .. } => "retry",
            JobNext::Failed => "failed",
        };
        metrics::counter!("wiresocket_webhook_attempts_total", "outcome" => outcome).increment(1);
        metrics::histogram!("wiresocket_webhook_attempt_seconds").record(started.elapsed().as_secs_f64());
        let record = DeliveryRecord {
            seq: 0,
            webhook_id: job.webhook_id.clone(),
            job_id: job.id.clone(),
            event_id: job.event_id.clone(),
            event_type: job.event_type.clone(),
            attempt,
            at,
            status_code,
            latency_ms,
            error,
        };
        match self.state.store.finish_webhook_attempt(&job.id, &record, next).await {
            Ok(()) => {
                if next == JobNext::Failed {
                    tracing::info!(webhook = %job.webhook_id, event = %job.event_id, attempts = attempt, "webhook event failed for good");
                }
            }
            // Deleted with its webhook, or finished by another dispatcher whose lease overlapped.
            Err(StoreError::NotFound | StoreError::Conflict(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, job = %job.id, "recording a webhook attempt failed; it will be retried")
            }
        }
    }

    async fn attempt(&self, job: &WebhookJobRecord, at: OffsetDateTime) -> Outcome {
        let state = &self.state;
        let hook = match state.store.webhooks_for_tenant(job.tenant_id).await {
            Ok(hooks) => match hooks.into_iter().find(|h| h.id == job.webhook_id) {
                Some(h) => h,
                None => return Outcome::Skip,
            },
            Err(e) => {
                tracing::warn!(error = %e, "reading a webhook failed; its job is retried when the lease runs out");
                return Outcome::Skip;
            }
        };
        let url = match WebhookUrl::parse(&hook.url) {
            Ok(u) => u,
            Err(e) => return Outcome::Failed(format!("invalid_url: {}", e.message)),
        };
        if let WebhookHost::Ip(ip) = url.host()
            && !state.events.targets.permits(ip)
        {
            return Outcome::Failed(format!("forbidden_target: {ip} is a loopback, private or reserved address"));
        }
        let secret = match state
            .keys
            .open(&hook.secret_enc, hook.master_key_version, &secret_aad(hook.tenant_id, &hook.id))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(webhook = %hook.id, error = ?e, "cannot unseal a webhook secret");
                return Outcome::Failed("internal error: the webhook secret cannot be read".into());
            }
        };
        let Ok(secret) = std::str::from_utf8(&secret) else {
            return Outcome::Failed("internal error: the webhook secret cannot be read".into());
        };
        let signature = auth::webhook::sign_webhook_body(secret, job.payload.as_bytes());
        let sent = self
            .client
            .post(url.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Webhook-Signature", signature)
            .header("X-Webhook-Id", &job.event_id)
            .header("X-Webhook-Timestamp", at.unix_timestamp().to_string())
            .body(job.payload.clone())
            .send()
            .await;
        match sent {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let body = read_capped(&mut response).await;
                let error = (!(200..300).contains(&status)).then(|| answer_note(status, &body));
                Outcome::Answered { status, error }
            }
            Err(e) => Outcome::Failed(describe(&e)),
        }
    }
}

/// A retry delay times the test scale, rounded up to whole seconds (the
/// store's precision), so a scaled schedule still waits at least as asked.
fn scaled(delay: Duration, scale: f64) -> time::Duration {
    let ms = delay.as_secs_f64() * scale * 1000.0;
    let ms = if ms.is_finite() && ms > 0.0 { ms.min(i64::MAX as f64 / 2.0) as i64 } else { 0 };
    time::Duration::seconds(ms.saturating_add(999) / 1000)
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of the body (bounded by the
/// client's total timeout); a read error just ends it.
async fn read_capped(response: &mut reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(MAX_RESPONSE_BYTES - body.len());
                body.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// The `error` of an attempt answered with a non-2xx status: the status and
/// the start of the body, printable characters only.
fn answer_note(status: u16, body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ERROR_EXCERPT_CHARS)
        .collect();
    let text = text.trim();
    let mut note = format!("HTTP {status}");
    if (300..400).contains(&status) {
        note.push_str(" (redirects are not followed)");
    }
    if !text.is_empty() {
        note.push_str(": ");
        note.push_str(text);
    }
    note
}

/// A transport error in words, without the URL (reqwest's own message
/// repeats it): the SSRF refusal, a timeout, or the innermost cause.
fn describe(e: &reqwest::Error) -> String {
    let mut innermost: &dyn std::error::Error = e;
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(forbidden) = s.downcast_ref::<ForbiddenTarget>() {
            return forbidden.to_string();
        }
        innermost = s;
        source = s.source();
    }
    if e.is_timeout() {
        return format!("timed out after {} s", TIMEOUT.as_secs());
    }
    let what = if e.is_connect() { "connection failed" } else { "request failed" };
    format!("{what}: {innermost}")
}

fn reap(
    done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    in_flight: &mut HashSet<String>,
    task_jobs: &mut HashMap<tokio::task::Id, String>,
) {
    let id = match done {
        Ok((id, ())) => id,
        Err(e) => {
            if e.is_panic() {
                tracing::error!("a webhook delivery task panicked; its job is retried when the lease runs out");
            }
            e.id()
        }
    };
    if let Some(job) = task_jobs.remove(&id) {
        in_flight.remove(&job);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn scaled_delays_round_up_to_seconds() {
        assert_eq!(scaled(Duration::from_secs(5), 1.0), time::Duration::seconds(5));
        assert_eq!(scaled(Duration::from_millis(4_200), 1.0), time::Duration::seconds(5));
        assert_eq!(scaled(Duration::from_secs(5), 0.01), time::Duration::seconds(1));
        assert_eq!(scaled(Duration::from_secs(21_600), 0.0), time::Duration::ZERO);
        assert_eq!(scaled(Duration::from_secs(5), f64::NAN), time::Duration::ZERO);
        assert_eq!(scaled(Duration::from_secs(21_600), 2.0), time::Duration::seconds(43_200));
    }

    #[test]
    fn answer_notes_are_short_and_printable() {
        assert_eq!(answer_note(500, b""), "HTTP 500");
        assert_eq!(answer_note(503, b"busy\r\n\x1b[31m"), "HTTP 503: busy   [31m");
        assert_eq!(answer_note(302, b""), "HTTP 302 (redirects are not followed)");
        let long = answer_note(500, &[b'x'; 5000]);
        assert_eq!(long.len(), "HTTP 500: ".len() + ERROR_EXCERPT_CHARS);
        assert!(answer_note(500, &[0xff, 0xfe]).starts_with("HTTP 500: "));
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_internal_addresses() {
        let mut config = crate::Config::for_data_dir(std::path::Path::new("/nonexistent")).unwrap();
        config.listen = "0.0.0.0:8080".parse().unwrap();
        let strict = GuardedResolver { policy: TargetPolicy::new(&config) };
        let err = match strict.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost resolved under the strict policy"),
            Err(e) => e,
        };
        assert!(err.to_string().starts_with("forbidden_target: localhost resolves to"), "{err}");
        config.allow_private_webhooks = true;
        let open = GuardedResolver { policy: TargetPolicy::new(&config) };
        let addrs: Vec<SocketAddr> = open.resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty(), "{addrs:?}");
    }
}
