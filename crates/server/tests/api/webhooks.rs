//! Webhooks end to end: a real receiver on 127.0.0.1 checks every signature
//! with its own HMAC code, answers 500 when told to, and records what it
//! got; retries are driven by the manual clock, so nothing sleeps minutes.

use crate::helpers::*;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use yrs::{Text, Transact};

const WAIT: Duration = Duration::from_secs(10);

// ---- the receiver ------------------------------------------------------

/// HMAC-SHA256 (RFC 2104) written out here on top of SHA-256, so the
/// server's signing code is checked against an independent implementation.
fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key)[..]);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(&inner[..]).finalize();
    hex::encode(&outer[..])
}

#[test]
fn the_receivers_hmac_matches_rfc_4231() {
    // RFC 4231 test case 2.
    assert_eq!(
        hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // Test case 6: a key longer than the block.
    assert_eq!(
        hmac_sha256_hex(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First"),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub id: String,
    pub timestamp: i64,
    pub body: Vec<u8>,
    pub json: Value,
    pub sig_ok: bool,
    pub user_agent: String,
    pub content_type: String,
    /// What the receiver answered.
    pub status: u16,
}

#[derive(Default)]
struct Inbox {
    hits: Mutex<Vec<Hit>>,
    /// Secret per path, to verify signatures.
    secrets: Mutex<HashMap<String, String>>,
    /// Answer 500 to this many more (signature-valid) requests.
    fail_next: AtomicUsize,
    changed: tokio::sync::Notify,
}

pub struct Receiver {
    pub base: String,
    inbox: Arc<Inbox>,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

async fn receive(
    State(inbox): State<Arc<Inbox>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if path.starts_with("slow") {
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let signature = header("x-webhook-signature");
    let secret = inbox.secrets.lock().unwrap().get(&path).cloned();
    let sig_ok = secret.is_some_and(|s| hmac_sha256_hex(s.as_bytes(), &body) == signature);
    let status = if !sig_ok {
        401
    } else if inbox.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        500
    } else {
        200
    };
    let hit = Hit {
        path,
        id: header("x-webhook-id"),
        timestamp: header("x-webhook-timestamp").parse().unwrap_or(-1),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body: body.to_vec(),
        sig_ok,
        user_agent: header("user-agent"),
        content_type: header("content-type"),
        status,
    };
    inbox.hits.lock().unwrap().push(hit);
    inbox.changed.notify_waiters();
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let inbox = Arc::new(Inbox::default());
        let router = axum::Router::new().route("/{*path}", axum::routing::post(receive)).with_state(inbox.clone());
        let handle = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { base, inbox, handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    pub fn expect(&self, path: &str, secret: &str) {
        self.inbox.secrets.lock().unwrap().insert(path.to_owned(), secret.to_owned());
    }

    pub fn fail_next(&self, n: usize) {
        self.inbox.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn hits(&self, path: &str) -> Vec<Hit> {
        self.inbox.hits.lock().unwrap().iter().filter(|h| h.path == path).cloned().collect()
    }

    /// Waits until `path` got at least `n` requests; answers them.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Hit> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let changed = self.inbox.changed.notified();
            let hits = self.hits(path);
            if hits.len() >= n {
                return hits;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("{path}: {} requests after {WAIT:?}, wanted {n}: {hits:#?}", hits.len());
            }
        }
    }
}

// ---- fixtures ------------------------------------------------------------

struct Fixture {
    app: TestApp,
    owner: Owner,
    creds: TestAppCreds,
}

async fn fixture_with(config: server::Config) -> Fixture {
    let app = spawn_with(config).await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    Fixture { app, owner, creds }
}

async fn fixture() -> Fixture {
    let dir = temp_dir();
    let mut f = fixture_with(test_config(&dir)).await;
    f.app.owned_dir = Some(dir);
    f
}

impl Fixture {
    fn hooks_path(&self, app_id: &str) -> String {
        format!("/v1/tenants/{}/apps/{app_id}/webhooks", self.owner.tenant_id)
    }

    async fn create_raw(&self, app_id: &str, body: Value) -> reqwest::Response {
        self.app.post(&self.hooks_path(app_id)).bearer_auth(&self.owner.session).json(&body).send().await.unwrap()
    }

    /// Creates a webhook to `receiver`'s `path` and tells the receiver its secret.
    async fn hook(&self, app_id: &str, rx: &Receiver, path: &str, events: &[&str]) -> Value {
        let r = self.create_raw(app_id, json!({"url": rx.url(path), "events": events})).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let body: Value = r.json().await.unwrap();
        rx.expect(path, body["secret"].as_str().unwrap());
        body
    }

    async fn patch_app(&self, app_id: &str, name: &str) {
        let r = self
            .app
            .patch(&format!("/v1/tenants/{}/apps/{app_id}", self.owner.tenant_id))
            .bearer_auth(&self.owner.session)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn deliveries(&self, app_id: &str, hook_id: &str) -> Vec<Value> {
        let r = self
            .app
            .get(&format!("{}/{hook_id}/deliveries", self.hooks_path(app_id)))
            .bearer_auth(&self.owner.session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
    }

    /// Waits until the delivery log has `n` attempts (newest first).
    async fn wait_deliveries(&self, app_id: &str, hook_id: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let items = self.deliveries(app_id, hook_id).await;
            if items.len() >= n {
                return items;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} deliveries, wanted {n}: {items:#?}", items.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Moves the manual clock and tells the dispatcher to look.
    fn advance(&self, by: time::Duration) {
        self.app.clock.advance(by);
        self.app.state.events.wake();
    }
}

fn assert_signed_event(hit: &Hit, kind: &str) {
    assert!(hit.sig_ok, "bad signature: {hit:?}");
    assert_eq!(hit.status, 200);
    assert_eq!(hit.json["type"], kind, "{hit:?}");
    assert_eq!(hit.json["id"], hit.id.as_str(), "X-Webhook-Id is the event id");
    assert_eq!(hit.user_agent, "WireSocket-Webhooks/1");
    assert_eq!(hit.content_type, "application/json");
    let ts = hit.json["timestamp"].as_str().unwrap();
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(uuid::Uuid::parse_str(&hit.id).is_ok_and(|u| u.get_version_num() == 7), "{}", hit.id);
}

// ---- tests -----------------------------------------------------------------

#[tokio::test]
async fn an_app_update_is_delivered_signed() {
    let f = fixture().await;
    let rx = Receiver::start().await;
    let created = f.hook(&f.creds.id, &rx, "updates", &["app.updated"]).await;
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{secret}");
    assert_eq!(created["events"], json!(["app.updated"]));
    assert_eq!(created["url"], rx.url("updates"));
    assert_eq!(created["app_id"], f.creds.id.as_str());
    assert!(created["created_at"].is_string() && created["id"].is_string());

    f.patch_app(&f.creds.id, "Renamed").await;
    let hits = rx.wait_for("updates", 1).await;
    let hit = &hits[0];
    assert_signed_event(hit, "app.updated");
    assert_eq!(hit.timestamp, f.app.clock_now().unix_timestamp());
    assert_eq!(hit.json["data"]["app_id"], f.creds.id.as_str());
    assert_eq!(hit.json["data"]["tenant_id"], f.owner.tenant_id.as_str());
    assert_eq!(hit.json["data"]["name"], "Renamed");
    assert_eq!(hit.json["data"]["changed"], json!(["name"]));
    // The body carries exactly the contract's four members.
    let mut keys: Vec<&String> = hit.json.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["data", "id", "timestamp", "type"]);

    let log = f.wait_deliveries(&f.creds.id, created["id"].as_str().unwrap(), 1).await;
    assert_eq!(log.len(), 1);
    let d = &log[0];
    assert_eq!(d["event_id"], hit.id.as_str());
    assert_eq!(d["type"], "app.updated");
    assert_eq!((d["attempt"].as_i64(), d["status"].as_u64()), (Some(1), Some(200)));
    assert!(d["error"].is_null() && d["latency_ms"].as_i64().unwrap() >= 0 && d["at"].is_string(), "{d}");

    // An event it did not subscribe to is not delivered.
    let r = f
        .app
        .post(&format!("/v1/tenants/{}/apps/{}/secret/rotate", f.owner.tenant_id, f.creds.id))
        .bearer_auth(&f.owner.session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.hits("updates").len(), 1);
    f.app.stop().await;
}

#[tokio::test]
async fn failed_attempts_are_retried_with_the_same_id_on_schedule() {
    let f = fixture().await;
    let rx = Receiver::start().await;
    let hook = f.hook(&f.creds.id, &rx, "flaky", &["*"]).await;
    let wid = hook["id"].as_str().unwrap();
    rx.fail_next(2);

    f.patch_app(&f.creds.id, "One").await;
    let first = rx.wait_for("flaky", 1).await[0].clone();
    assert_eq!(first.status, 500);
    let log = f.wait_deliveries(&f.creds.id, wid, 1).await;
    assert_eq!((log[0]["attempt"].as_i64(), log[0]["status"].as_u64()), (Some(1), Some(500)));
    assert!(log[0]["error"].as_str().unwrap().starts_with("HTTP 500"), "{}", log[0]);

    // Not before the first retry is due (about 5 s on the server's clock).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.hits("flaky").len(), 1, "retried before it was due");
    f.advance(time::Duration::seconds(7));
    let second = rx.wait_for("flaky", 2).await[1].clone();
    assert_eq!(second.status, 500);
    f.wait_deliveries(&f.creds.id, wid, 2).await;

    // The second retry waits about 30 s.
    f.advance(time::Duration::seconds(10));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.hits("flaky").len(), 2, "second retry before it was due");
    f.advance(time::Duration::seconds(30));
    let hits = rx.wait_for("flaky", 3).await;
    assert_eq!(hits[2].status, 200);

    // Same event, same id, same bytes, fresh timestamps, every one signed.
    for hit in &hits {
        assert_signed_event(&Hit { status: 200, ..hit.clone() }, "app.updated");
        assert_eq!(hit.id, first.id);
        assert_eq!(hit.body, first.body);
    }
    assert!(hits[0].timestamp < hits[1].timestamp && hits[1].timestamp < hits[2].timestamp);

    let log = f.wait_deliveries(&f.creds.id, wid, 3).await;
    let summary: Vec<(i64, Option<u64>)> =
        log.iter().map(|d| (d["attempt"].as_i64().unwrap(), d["status"].as_u64())).collect();
    assert_eq!(summary, [(3, Some(200)), (2, Some(500)), (1, Some(500))], "newest first");
    assert!(log.iter().all(|d| d["event_id"] == first.id.as_str()));
    // Nothing more once delivered.
    f.advance(time::Duration::hours(7));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.hits("flaky").len(), 3);
    f.app.stop().await;
}

#[tokio::test]
async fn an_event_is_marked_failed_after_the_last_attempt() {
    let mut f = fixture().await;
    let rx = Receiver::start().await;
    let hook = f.hook(&f.creds.id, &rx, "down", &["app.updated"]).await;
    let wid = hook["id"].as_str().unwrap();
    rx.fail_next(usize::MAX);
    f.patch_app(&f.creds.id, "Doomed").await;
    for attempt in 1..=7 {
        rx.wait_for("down", attempt).await;
        f.wait_deliveries(&f.creds.id, wid, attempt).await;
        // Past the longest wait (6 h + 20 %); sessions do not last that long.
        f.advance(time::Duration::hours(8));
        f.owner.session = f.app.login(&f.owner.email, PASSWORD).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.hits("down").len(), 7, "no attempt after the seventh");
    let log = f.deliveries(&f.creds.id, wid).await;
    assert_eq!(log.len(), 7);
    assert!(log.iter().all(|d| d["status"] == 500));

    let deliveries = f.app.state.store.list_webhook_deliveries(wid, None, 10).await.unwrap();
    let job = f.app.state.store.get_webhook_job(&deliveries.items[0].job_id).await.unwrap().unwrap();
    assert_eq!(job.status, store::JobStatus::Failed);
    assert_eq!(job.attempt, 7);
    f.app.stop().await;
}

#[tokio::test]
async fn ssrf_private_targets_are_refused_when_the_server_is_public() {
    let dir = temp_dir();
    let mut config = test_config(&dir);
    // Listening on every interface, as a public server does.
    config.listen = "0.0.0.0:0".parse().unwrap();
    config.allow_private_webhooks = false;
    let f = fixture_with(config).await;
    let rx = Receiver::start().await;
    let port = rx.base.rsplit(':').next().unwrap().to_owned();

    for url in [
        format!("http://127.0.0.1:{port}/x"),
        "http://10.0.0.1/hook".into(),
        "http://[::1]/hook".into(),
        "http://169.254.169.254/latest/meta-data".into(),
        "http://0x7f.1/hook".into(),
        "http://[::ffff:192.168.0.1]/hook".into(),
    ] {
        let r = f.create_raw(&f.creds.id, json!({"url": url, "events": ["*"]})).await;
        assert_error(r, 400, "forbidden_target").await;
    }
    // A public literal is fine (never delivered to here: nothing triggers it).
    let ok = f.create_raw(&f.creds.id, json!({"url": "https://93.184.216.34/hook", "events": ["*"]})).await;
    assert_eq!(ok.status(), 201);
    let public_id = ok.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let r = f
        .app
        .patch(&format!("{}/{public_id}", f.hooks_path(&f.creds.id)))
        .bearer_auth(&f.owner.session)
        .json(&json!({"url": "http://192.168.1.1/"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "forbidden_target").await;
    f.delete_hook(&public_id).await;

    // A name is checked when delivering, against what it resolves to.
    let named =
        f.create_raw(&f.creds.id, json!({"url": format!("http://localhost:{port}/named"), "events": ["*"]})).await;
    assert_eq!(named.status(), 201);
    let named: Value = named.json().await.unwrap();
    rx.expect("named", named["secret"].as_str().unwrap());
    let wid = named["id"].as_str().unwrap();
    f.ping(wid).await;
    let log = f.wait_deliveries(&f.creds.id, wid, 1).await;
    assert!(log[0]["status"].is_null(), "{}", log[0]);
    let error = log[0]["error"].as_str().unwrap();
    assert!(error.starts_with("forbidden_target: localhost resolves to"), "{error}");
    assert!(rx.hits("named").is_empty(), "the receiver was reached");
    f.app.stop().await;

    // The same public server with --allow-private-webhooks delivers there.
    let dir = temp_dir();
    let mut config = test_config(&dir);
    config.listen = "0.0.0.0:0".parse().unwrap();
    config.allow_private_webhooks = true;
    let f = fixture_with(config).await;
    let hook = f.hook(&f.creds.id, &rx, "allowed", &["app.updated"]).await;
    assert!(hook["url"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    f.patch_app(&f.creds.id, "Allowed").await;
    assert_signed_event(&rx.wait_for("allowed", 1).await[0], "app.updated");
    f.app.stop().await;
}

impl Fixture {
    async fn ping(&self, wid: &str) -> Value {
        let r = self
            .app
            .post(&format!("{}/{wid}/test", self.hooks_path(&self.creds.id)))
            .bearer_auth(&self.owner.session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn delete_hook(&self, wid: &str) {
        let r = self
            .app
            .delete(&format!("{}/{wid}", self.hooks_path(&self.creds.id)))
            .bearer_auth(&self.owner.session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }

    async fn write_doc(&self, m2m: &str, doc: &str, ydoc: &yrs::Doc, text: &str) {
        let update = {
            let t = ydoc.get_or_insert_text("t");
            let mut txn = ydoc.transact_mut();
            t.insert(&mut txn, 0, text);
            txn.encode_update_v1()
        };
        let r = self.app.post(&format!("/v1/docs/{doc}/update")).bearer_auth(m2m).body(update).send().await.unwrap();
        assert_eq!(r.status(), 204);
    }
}

#[tokio::test]
async fn document_updates_are_debounced_per_document() {
    let dir = temp_dir();
    let mut config = test_config(&dir);
    config.webhook_debounce = Duration::from_millis(1500);
    let f = fixture_with(config).await;
    let rx = Receiver::start().await;
    let m2m = f.app.m2m_token(&f.creds).await;
    let notes = yrs::Doc::new();
    let todo = yrs::Doc::new();

    // A window closes while the app has no webhook: the server remembers
    // "no subscribers" and must forget it when one is created.
    f.write_doc(&m2m, "notes", &notes, "before").await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    f.hook(&f.creds.id, &rx, "docs", &["document.updated", "document.deleted"]).await;

    let started = std::time::Instant::now();
    for i in 0..5 {
        f.write_doc(&m2m, "notes", &notes, &format!("n{i}")).await;
    }
    f.write_doc(&m2m, "todo", &todo, "t").await;
    let hits = rx.wait_for("docs", 2).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400), "sent before the window closed: {waited:?}");
    assert!(waited < server::webhooks::events::SUBSCRIBERS_TTL, "the new webhook was not seen at once: {waited:?}");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let hits_after = rx.hits("docs");
    assert_eq!(hits_after.len(), 2, "one event per document per window: {hits_after:#?}");
    let mut by_doc: HashMap<String, Value> = HashMap::new();
    for hit in &hits {
        assert_signed_event(hit, "document.updated");
        by_doc.insert(hit.json["data"]["doc"].as_str().unwrap().to_owned(), hit.json["data"].clone());
    }
    assert_eq!(by_doc["notes"]["updates"], 5);
    assert_eq!(by_doc["todo"]["updates"], 1);
    assert_eq!(by_doc["notes"]["app_id"], f.creds.id.as_str());

    // A new window after the last one closed.
    f.write_doc(&m2m, "notes", &notes, "again").await;
    let hits = rx.wait_for("docs", 3).await;
    assert_eq!(hits[2].json["data"]["updates"], 1);

    // Deleted within an open window: only `document.deleted` follows.
    f.write_doc(&m2m, "todo", &todo, "last").await;
    let r = f.app.delete("/v1/docs/todo").bearer_auth(&m2m).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let hits = rx.wait_for("docs", 4).await;
    assert_signed_event(&hits[3], "document.deleted");
    assert_eq!(hits[3].json["data"]["doc"], "todo");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(rx.hits("docs").len(), 4, "no document.updated after the deletion");
    f.app.stop().await;
}

#[tokio::test]
async fn tenant_wide_events_reach_every_apps_subscribed_webhooks() {
    let f = fixture().await;
    let other = f.app.create_app(&f.owner, "starter", &[]).await;
    let rx = Receiver::start().await;
    f.hook(&f.creds.id, &rx, "a-keys", &["key.rotated"]).await;
    f.hook(&other.id, &rx, "b-all", &["*"]).await;
    f.hook(&other.id, &rx, "b-apps", &["app.updated"]).await;

    let r = f
        .app
        .post(&format!("/v1/tenants/{}/keys/rotate", f.owner.tenant_id))
        .bearer_auth(&f.owner.session)
        .json(&json!({"grace_seconds": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let kid = r.json::<Value>().await.unwrap()["kid"].as_str().unwrap().to_owned();
    let a = rx.wait_for("a-keys", 1).await;
    let b = rx.wait_for("b-all", 1).await;
    assert_signed_event(&a[0], "key.rotated");
    assert_signed_event(&b[0], "key.rotated");
    assert_eq!(a[0].id, b[0].id, "one event, one id, for every webhook");
    assert_eq!(a[0].body, b[0].body);
    assert_eq!(a[0].json["data"]["kid"], kid.as_str());
    assert_eq!(a[0].json["data"]["tenant_id"], f.owner.tenant_id.as_str());

    // App-scoped events stay with their app.
    f.patch_app(&f.creds.id, "First only").await;
    f.patch_app(&other.id, "Second").await;
    let c = rx.wait_for("b-apps", 1).await;
    assert_eq!(c[0].json["data"]["app_id"], other.id.as_str());
    let b = rx.wait_for("b-all", 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.hits("b-apps").len(), 1, "the first app's update reached the second app");
    assert_eq!(rx.hits("b-all").len(), 2);
    assert_eq!(b[1].json["data"]["app_id"], other.id.as_str());
    assert_eq!(rx.hits("a-keys").len(), 1);

    // Revocation is tenant-wide too; and so is a new app (it has no webhooks of its own yet).
    let r = f
        .app
        .post(&format!("/v1/tenants/{}/keys/{kid}/revoke", f.owner.tenant_id))
        .bearer_auth(&f.owner.session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let third = f.app.create_app(&f.owner, "starter", &[]).await;
    let b = rx.wait_for("b-all", 4).await;
    let kinds: Vec<&str> = b[2..].iter().map(|h| h.json["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"key.revoked") && kinds.contains(&"app.created"), "{kinds:?}");
    let created = b.iter().find(|h| h.json["type"] == "app.created").unwrap();
    assert_eq!(created.json["data"]["app_id"], third.id.as_str());
    f.app.stop().await;
}

#[tokio::test]
async fn crud_secret_rotation_ping_and_audit() {
    let f = fixture().await;
    let rx = Receiver::start().await;
    let base = f.hooks_path(&f.creds.id);
    let h1 = f.hook(&f.creds.id, &rx, "one", &["app.updated"]).await;
    f.hook(&f.creds.id, &rx, "two", &["*"]).await;
    f.hook(&f.creds.id, &rx, "three", &["document.deleted"]).await;
    let wid = h1["id"].as_str().unwrap();
    let old_secret = h1["secret"].as_str().unwrap().to_owned();

    // The secret is stored only sealed.
    for entry in std::fs::read_dir(&f.app.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(old_secret.len()).any(|w| w == old_secret.as_bytes()), "{}", path.display());
        }
    }

    // List: paged, no secrets.
    let page: Value =
        f.app.get(&format!("{base}?limit=2")).bearer_auth(&f.owner.session).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["items"].as_array().unwrap().iter().all(|h| h.get("secret").is_none()));
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = f
        .app
        .get(&format!("{base}?limit=2&cursor={cursor}"))
        .bearer_auth(&f.owner.session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());

    let got: Value =
        f.app.get(&format!("{base}/{wid}")).bearer_auth(&f.owner.session).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["id"], wid);
    assert!(got.get("secret").is_none());

    // PATCH events and URL.
    let r = f
        .app
        .patch(&format!("{base}/{wid}"))
        .bearer_auth(&f.owner.session)
        .json(&json!({"events": ["app.updated", "app.secret_rotated"], "url": rx.url("one")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.unwrap();
    assert_eq!(patched["events"], json!(["app.updated", "app.secret_rotated"]));
    assert!(patched.get("secret").is_none());
    for (body, code) in [
        (json!({"events": []}), "invalid_events"),
        (json!({"events": ["nope"]}), "invalid_events"),
        (json!({"events": "app.updated"}), "invalid_events"),
        (json!({"url": "ftp://example.com/"}), "invalid_url"),
        (json!({"url": 5}), "invalid_url"),
    ] {
        let r = f.app.patch(&format!("{base}/{wid}")).bearer_auth(&f.owner.session).json(&body).send().await.unwrap();
        assert_error(r, 400, code).await;
    }

    // Rotation: a new secret, and deliveries are signed with it.
    let r = f.app.post(&format!("{base}/{wid}/secret/rotate")).bearer_auth(&f.owner.session).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().await.unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != old_secret);
    rx.expect("one", new_secret);
    let ping = f.ping(wid).await;
    assert_eq!(ping["type"], "ping");
    let hits = rx.wait_for("one", 1).await;
    assert_signed_event(&hits[0], "ping");
    assert_eq!(hits[0].id, ping["event_id"].as_str().unwrap());
    assert_eq!(hits[0].json["data"]["webhook_id"], wid);
    assert!(rx.hits("two").is_empty(), "a ping goes to the one webhook tested");

    // Delete: gone, and its log with it.
    f.delete_hook(wid).await;
    let r = f.app.get(&format!("{base}/{wid}")).bearer_auth(&f.owner.session).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    let r = f.app.get(&format!("{base}/{wid}/deliveries")).bearer_auth(&f.owner.session).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    let r = f.app.delete(&format!("{base}/{wid}")).bearer_auth(&f.owner.session).send().await.unwrap();
    assert_error(r, 404, "not_found").await;

    let actions = f.app.audit_actions(Some(&f.owner.tenant_id)).await;
    for action in ["webhook.created", "webhook.updated", "webhook.secret_rotated", "webhook.deleted"] {
        assert!(actions.iter().any(|a| a == action), "{action} missing from {actions:?}");
    }
    f.app.stop().await;
}

#[tokio::test]
async fn bad_input_permissions_and_tenancy() {
    let f = fixture().await;
    let base = f.hooks_path(&f.creds.id);
    for (body, code) in [
        (json!({"events": ["*"]}), "invalid_url"),
        (json!({"url": "not a url", "events": ["*"]}), "invalid_url"),
        (json!({"url": "https://user:pw@example.com/", "events": ["*"]}), "invalid_url"),
        (json!({"url": ["x"], "events": ["*"]}), "invalid_url"),
        (json!({"url": "https://example.com/"}), "invalid_events"),
        (json!({"url": "https://example.com/", "events": ["*", "app.updated"]}), "invalid_events"),
        (json!({"url": "https://example.com/", "events": [1]}), "invalid_events"),
        (json!({"url": "https://example.com/", "events": ["app.updated", "app.updated"]}), "invalid_events"),
    ] {
        assert_error(f.create_raw(&f.creds.id, body).await, 400, code).await;
    }
    let r = f
        .app
        .post(&base)
        .bearer_auth(&f.owner.session)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await;
    assert_error(r.unwrap(), 400, "invalid_json").await;
    assert_error(f.app.post(&base).json(&json!({})).send().await.unwrap(), 401, "unauthorized").await;

    let hook = f.create_raw(&f.creds.id, json!({"url": "https://example.com/h", "events": ["*"]})).await;
    let wid = hook.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // A viewer reads but does not change.
    let viewer = f.app.create_user("viewer@example.com").await;
    let user = f.app.state.store.get_user_by_email("viewer@example.com").await.unwrap().unwrap();
    let tenant = domain::ids::TenantId::parse(&f.owner.tenant_id).unwrap();
    f.app.state.store.add_membership(tenant, user.id, "viewer", f.app.clock_now()).await.unwrap();
    assert_eq!(f.app.get(&base).bearer_auth(&viewer).send().await.unwrap().status(), 200);
    assert_eq!(f.app.get(&format!("{base}/{wid}/deliveries")).bearer_auth(&viewer).send().await.unwrap().status(), 200);
    let body = json!({"url": "https://example.com/v", "events": ["*"]});
    assert_error(f.app.post(&base).bearer_auth(&viewer).json(&body).send().await.unwrap(), 403, "forbidden").await;
    for (method, path) in [
        (reqwest::Method::PATCH, format!("{base}/{wid}")),
        (reqwest::Method::DELETE, format!("{base}/{wid}")),
        (reqwest::Method::POST, format!("{base}/{wid}/secret/rotate")),
        (reqwest::Method::POST, format!("{base}/{wid}/test")),
    ] {
        let r =
            f.app.client.request(method, format!("{}{path}", f.app.url)).bearer_auth(&viewer).json(&json!({})).send();
        assert_error(r.await.unwrap(), 403, "forbidden").await;
    }

    // Another tenant: its owner sees none of this, and its app is not ours.
    let r = f.app.post("/v1/tenants").bearer_auth(&f.owner.session).json(&json!({"name": "Other"})).send().await;
    let other_tid = r.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let stranger = f.app.create_user("stranger@example.com").await;
    assert_error(f.app.get(&base).bearer_auth(&stranger).send().await.unwrap(), 404, "not_found").await;
    assert_error(f.app.get(&format!("{base}/{wid}")).bearer_auth(&stranger).send().await.unwrap(), 404, "not_found")
        .await;
    let other_app = f
        .app
        .post(&format!("/v1/tenants/{other_tid}/apps"))
        .bearer_auth(&f.owner.session)
        .json(&json!({"name": "o", "region": "eu-central-1", "plan": "starter"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = f.create_raw(&other_app, json!({"url": "https://example.com/x", "events": ["*"]})).await;
    assert_error(r, 404, "not_found").await;
    let wrong_app = format!("/v1/tenants/{other_tid}/apps/{other_app}/webhooks/{wid}");
    assert_error(f.app.get(&wrong_app).bearer_auth(&f.owner.session).send().await.unwrap(), 404, "not_found").await;
    for bad in ["nope", "00000000-0000-0000-0000-000000000000"] {
        let r = f.app.get(&format!("{base}/{bad}")).bearer_auth(&f.owner.session).send().await.unwrap();
        assert_error(r, 404, "not_found").await;
    }
    let r = f.app.get(&format!("{base}/{wid}/deliveries?cursor=%%%")).bearer_auth(&f.owner.session).send().await;
    assert_eq!(r.unwrap().status(), 400);
    let r = f.app.get(&format!("{base}/{wid}/deliveries?cursor=bm9wZQ")).bearer_auth(&f.owner.session).send().await;
    assert_error(r.unwrap(), 400, "invalid_cursor").await;

    // At most 20 per app.
    for i in 1..20 {
        let r = f.create_raw(&f.creds.id, json!({"url": format!("https://example.com/{i}"), "events": ["*"]})).await;
        assert_eq!(r.status(), 201);
    }
    let r = f.create_raw(&f.creds.id, json!({"url": "https://example.com/21", "events": ["*"]})).await;
    assert_error(r, 409, "webhook_limit").await;

    f.app.stop().await;
}

#[tokio::test]
async fn a_slow_receiver_does_not_hold_up_the_others() {
    let f = fixture().await;
    let rx = Receiver::start().await;
    f.hook(&f.creds.id, &rx, "slow", &["app.updated"]).await;
    f.hook(&f.creds.id, &rx, "fast", &["app.updated"]).await;
    let started = std::time::Instant::now();
    f.patch_app(&f.creds.id, "Race").await;
    rx.wait_for("fast", 1).await;
    assert!(started.elapsed() < Duration::from_secs(3), "the fast receiver waited for the slow one");
    assert!(rx.hits("slow").is_empty());
    rx.wait_for("slow", 1).await;
    f.app.stop().await;
}

#[tokio::test]
async fn master_key_rotation_rewraps_webhook_secrets() {
    let data_dir = temp_dir();
    let config = test_config(&data_dir);
    let f = fixture_with(config.clone()).await;
    let rx = Receiver::start().await;
    f.hook(&f.creds.id, &rx, "kept", &["app.updated"]).await;
    f.app.stop().await;

    let store = server::open_store(&config).await.unwrap();
    let (version, rewrapped) = server::masterkey::rotate_master(&config, store.as_ref()).await.unwrap();
    assert_eq!((version, rewrapped), (2, 2), "the signing key and the webhook secret");
    assert!(store.list_all_webhook_secrets().await.unwrap().iter().all(|h| h.master_key_version == 2));
    server::masterkey::remove_master_version(&config, store.as_ref(), 1).await.unwrap();
    drop(store);

    // Only version 2 is left, and deliveries are still signed with the same secret.
    let app = spawn_with(config).await;
    let session = app.login(&f.owner.email, PASSWORD).await;
    let r = app
        .patch(&format!("/v1/tenants/{}/apps/{}", f.owner.tenant_id, f.creds.id))
        .bearer_auth(&session)
        .json(&json!({"name": "After"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_signed_event(&rx.wait_for("kept", 1).await[0], "app.updated");
    app.stop().await;
}

// ---- with the real binary ----------------------------------------------------

/// `extra`: more flags. The retry schedule is the real one: the first retry
/// is due about 5 s after the first attempt, which is when the restarted
/// server must deliver it.
fn start_binary(data_dir: &std::path::Path, port: u16, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(crate::crash::binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("WIRESOCKET_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn an_event_enqueued_before_a_crash_is_delivered_after_restart() {
    let dir = temp_dir();
    let port = crate::crash::free_port();
    let receiver_port = crate::crash::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut server = start_binary(&dir, port, &[]);
    crate::crash::wait_ready(&http, &base).await;

    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body);
    let setup: Value =
        post("/v1/setup", json!({"email": "hook@example.com", "password": PASSWORD, "tenant_name": "H"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let tid = setup["tenant_id"].as_str().unwrap().to_owned();
    let login: Value = post("/v1/auth/login", json!({"email": "hook@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = login["session_token"].as_str().unwrap().to_owned();
    let app: Value =
        post(&format!("/v1/tenants/{tid}/apps"), json!({"name": "a", "region": "eu-central-1", "plan": "pro"}))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let aid = app["id"].as_str().unwrap().to_owned();
    // The receiver is down: nothing listens on its port yet.
    let url = format!("http://127.0.0.1:{receiver_port}/after-crash");
    let hook: Value =
        post(&format!("/v1/tenants/{tid}/apps/{aid}/webhooks"), json!({"url": url, "events": ["app.updated"]}))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let wid = hook["id"].as_str().unwrap().to_owned();
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let r = http
        .patch(format!("{base}/v1/tenants/{tid}/apps/{aid}"))
        .bearer_auth(&session)
        .json(&json!({"name": "before the crash"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Wait for the failed first attempt, so the job is not under a lease when we kill.
    let deliveries = format!("{base}/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}/deliveries");
    let mut first = Value::Null;
    for _ in 0..200 {
        let log: Value = http.get(&deliveries).bearer_auth(&session).send().await.unwrap().json().await.unwrap();
        if let Some(d) = log["items"].as_array().and_then(|a| a.first()) {
            first = d.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(first["status"].is_null(), "{first}");
    assert!(first["error"].as_str().unwrap().starts_with("connection failed"), "{first}");
    server.kill().unwrap();
    server.wait().unwrap();

    let rx = Receiver::start_on(format!("127.0.0.1:{receiver_port}").parse().unwrap()).await;
    rx.expect("after-crash", &secret);
    // The flag is accepted; it shortens only retries scheduled from now on.
    let mut server = start_binary(&dir, port, &["--webhook-retry-scale", "0.01"]);
    crate::crash::wait_ready(&http, &base).await;
    let hits = rx.wait_for("after-crash", 1).await;
    assert_signed_event(&hits[0], "app.updated");
    assert_eq!(hits[0].id, first["event_id"].as_str().unwrap(), "the same event, by its id");
    assert_eq!(hits[0].json["data"]["name"], "before the crash");

    let session = {
        let login: Value = post("/v1/auth/login", json!({"email": "hook@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        login["session_token"].as_str().unwrap().to_owned()
    };
    let mut log = Value::Null;
    for _ in 0..100 {
        log = http.get(&deliveries).bearer_auth(&session).send().await.unwrap().json().await.unwrap();
        if log["items"].as_array().is_some_and(|a| a.len() >= 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{log}");
    assert_eq!((items[0]["attempt"].as_i64(), items[0]["status"].as_u64()), (Some(2), Some(200)), "{log}");
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The route writes its change and its event in one transaction, then
/// wakes the dispatcher. A process that dies right after that commit, before
/// the fan-out, leaves the event in the outbox: here the change is made
/// exactly as `PATCH …/apps/{aid}` makes it, with the server down, and the
/// next start delivers it.
#[tokio::test]
async fn an_event_committed_with_its_change_survives_a_crash_before_fan_out() {
    let dir = temp_dir();
    let config = test_config(&dir);
    let f = fixture_with(config.clone()).await;
    let rx = Receiver::start().await;
    f.hook(&f.creds.id, &rx, "outbox", &["app.updated"]).await;
    f.app.stop().await;

    let store = server::open_store(&config).await.unwrap();
    let id: domain::ids::AppId = f.creds.id.parse().unwrap();
    let app = store.get_app_by_id(id).await.unwrap().unwrap();
    let renamed = store::AppRecord { name: "committed, then crashed".to_owned(), ..app.clone() };
    let event_id = uuid::Uuid::now_v7().to_string();
    let now = time::OffsetDateTime::now_utc();
    let data = server::webhooks::with_owner(json!({"name": renamed.name}), app.tenant_id, Some(app.id));
    let event = store::OutboxEvent {
        payload: server::webhooks::event_body(&event_id, "app.updated", now, &data).unwrap(),
        id: event_id.clone(),
        tenant_id: app.tenant_id,
        app_id: Some(app.id),
        event_type: "app.updated".to_owned(),
        created_at: now,
    };
    store.update_app(&renamed, &[event]).await.unwrap();
    assert_eq!(store.pending_events(10).await.unwrap().len(), 1);
    drop(store);

    let app = spawn_with(config).await;
    let hits = rx.wait_for("outbox", 1).await;
    assert_signed_event(&hits[0], "app.updated");
    assert_eq!(hits[0].id, event_id, "the event committed with the change, by its id");
    assert_eq!(hits[0].json["data"]["name"], "committed, then crashed");
    assert_eq!(app.state.store.pending_events(10).await.unwrap(), vec![], "fanned out, so gone from the outbox");
    app.stop().await;
}

#[tokio::test]
async fn member_events_reach_subscribed_webhooks() {
    let f = fixture().await;
    let rx = Receiver::start().await;
    f.hook(&f.creds.id, &rx, "members", &["member.joined", "member.role_changed", "member.removed"]).await;
    let tid = f.owner.tenant_id.as_str();

    // Joined: through an invite, read from the outbox like the invitee would.
    let r = f
        .app
        .post(&format!("/v1/tenants/{tid}/invites"))
        .bearer_auth(&f.owner.session)
        .json(&json!({"email": "joiner@example.com", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let token = f.app.tokens_mailed_to("joiner@example.com", "inv_", 1).await.remove(0);
    let r = f
        .app
        .post("/v1/invites/accept")
        .json(&json!({"token": token, "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let uid = f.app.state.store.get_user_by_email("joiner@example.com").await.unwrap().unwrap().id.to_string();
    let hits = rx.wait_for("members", 1).await;
    assert_signed_event(&hits[0], "member.joined");
    assert_eq!(hits[0].json["data"]["user_id"], uid.as_str());
    assert_eq!(hits[0].json["data"]["role"], "viewer");

    let r = f
        .app
        .client
        .put(format!("{}/v1/tenants/{tid}/members/{uid}", f.app.url))
        .bearer_auth(&f.owner.session)
        .json(&json!({"role": "editor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let hits = rx.wait_for("members", 2).await;
    assert_signed_event(&hits[1], "member.role_changed");
    assert_eq!(hits[1].json["data"]["role"], "editor");

    let r =
        f.app.delete(&format!("/v1/tenants/{tid}/members/{uid}")).bearer_auth(&f.owner.session).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let hits = rx.wait_for("members", 3).await;
    assert_signed_event(&hits[2], "member.removed");
    assert_eq!(hits[2].json["data"]["tenant_id"], tid);
    f.app.stop().await;
}
