//! The data plane end to end: WebSocket sync with stock-protocol clients,
//! edge enforcement, revocation, durability, documents REST and discovery.

use crate::helpers::*;
use crate::yclient::{YClient, connect};
use serde_json::{Value, json};
use std::time::Duration;
use yrs::updates::decoder::Decode;
use yrs::{GetString, Text, Transact};

const T: Duration = Duration::from_secs(5);

struct Fixture {
    app: TestApp,
    owner: Owner,
    creds: TestAppCreds,
    m2m: String,
}

async fn fixture(plan: &str, domains: &[&str]) -> Fixture {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, plan, domains).await;
    let m2m = app.m2m_token(&creds).await;
    Fixture { app, owner, creds, m2m }
}

impl Fixture {
    async fn client_token(&self, body: Value) -> String {
        let r = self.app.post("/v1/client-tokens").bearer_auth(&self.m2m).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }

    async fn join(&self, doc: &str, token: &str) -> YClient {
        let mut c = connect(&self.app.url, doc, token, None).await.unwrap();
        c.sync().await;
        c
    }

    /// The doc's key, once a background compaction has left fewer than 500
    /// entries in its log (within 10 s).
    async fn compacted(&self, doc: &str) -> store::DocKey {
        let key = store::DocKey { app_id: domain::ids::AppId::parse(&self.creds.id).unwrap(), name: doc.into() };
        let mut stats = (0, 0);
        for _ in 0..100 {
            stats = self.app.state.store.doc_log_stats(&key).await.unwrap();
            if stats.0 < 500 {
                return key;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("log entries after compaction: {stats:?}");
    }

    async fn rest_state(&self, doc: &str) -> reqwest::Response {
        self.app.get(&format!("/v1/docs/{doc}")).bearer_auth(&self.m2m).send().await.unwrap()
    }
}

fn text_of(update: &[u8]) -> String {
    let doc = yrs::Doc::new();
    let t = doc.get_or_insert_text("t");
    doc.transact_mut().apply_update(yrs::Update::decode_v1(update).unwrap()).unwrap();
    t.get_string(&doc.transact())
}

#[tokio::test]
async fn two_clients_converge_and_a_late_joiner_gets_everything() {
    let f = fixture("starter", &[]).await;
    let mut a = f.join("notes", &f.m2m).await;
    let mut b = f.join("notes", &f.m2m).await;
    a.insert("hello ").await;
    assert!(b.wait_for(|c| c.text() == "hello ", T).await, "b saw {:?}", b.text());
    b.insert("world").await;
    assert!(a.wait_for(|c| c.text() == "hello world", T).await);
    let late = f.join("notes", &f.m2m).await;
    assert_eq!(late.text(), "hello world");
    // Two apps may both have a doc named `notes`: they are separate.
    let other = f.app.create_app(&f.owner, "pro", &[]).await;
    let other_token = f.app.m2m_token(&other).await;
    let c = f.join("notes", &other_token).await;
    assert_eq!(c.text(), "");
}

#[tokio::test]
async fn awareness_is_relayed_to_everyone_and_removed_on_disconnect() {
    let f = fixture("starter", &[]).await;
    let mut a = f.join("room", &f.m2m).await;
    let mut b = f.join("room", &f.m2m).await;
    a.set_awareness(r#"{"user":"ada"}"#).await;
    let a_id = a.doc.client_id().get();
    assert!(b.wait_for(|c| c.awareness.contains_key(&a_id), T).await);
    // The sender gets its own state back (keeps idle stock clients alive).
    assert!(a.wait_for(|c| c.awareness.contains_key(&a_id), T).await);
    // A newcomer receives the current states on connect.
    let mut c = connect(&f.app.url, "room", &f.m2m, None).await.unwrap();
    assert!(c.wait_for(|c| c.awareness.contains_key(&a_id), T).await);
    a.close().await;
    assert!(
        b.wait_for(|c| !c.awareness.contains_key(&a_id), Duration::from_secs(2)).await,
        "removal broadcast within 1 s"
    );
}

#[tokio::test]
async fn documents_with_slashes_and_rest_round_trip() {
    let f = fixture("starter", &[]).await;
    let mut ws = f.join("team/a b/ü", &f.m2m).await;
    // REST write: persisted, then broadcast to the socket.
    let doc = yrs::Doc::new();
    let update = {
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, "from rest");
        txn.encode_update_v1()
    };
    let path = "team%2Fa%20b%2F%C3%BC";
    let r = f
        .app
        .post(&format!("/v1/docs/{path}/update"))
        .bearer_auth(&f.m2m)
        .header("content-type", "application/octet-stream")
        .body(update.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(ws.wait_for(|c| c.text() == "from rest", T).await);
    let r = f.rest_state(path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(text_of(&r.bytes().await.unwrap()), "from rest");

    let list: Value = f.app.get("/v1/docs").bearer_auth(&f.m2m).send().await.unwrap().json().await.unwrap();
    let item = &list["items"][0];
    assert_eq!(item["name"], "team/a b/ü");
    assert!(item["size_bytes"].as_i64().unwrap() > 0);
    assert_eq!(item["connections"], 1);
    assert!(list["next_cursor"].is_null());

    // Already-known updates are accepted and change nothing.
    let r = f.app.post(&format!("/v1/docs/{path}/update")).bearer_auth(&f.m2m).body(update).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = f
        .app
        .post(&format!("/v1/docs/{path}/update"))
        .bearer_auth(&f.m2m)
        .body(vec![0xff, 0x01, 0x02])
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_update").await;

    assert_error(f.rest_state("never-written").await, 404, "not_found").await;
    assert_error(f.rest_state("bad%01name").await, 400, "invalid_document_name").await;

    let r = f.app.delete(&format!("/v1/docs/{path}")).bearer_auth(&f.m2m).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(ws.closed_with(T).await, Some(4404));
    assert_error(f.rest_state(path).await, 404, "not_found").await;
    assert_error(f.app.delete(&format!("/v1/docs/{path}")).bearer_auth(&f.m2m).send().await.unwrap(), 404, "not_found")
        .await;
}

#[tokio::test]
async fn rest_needs_an_m2m_token() {
    let f = fixture("starter", &[]).await;
    let client = f.client_token(json!({"docs": ["*"]})).await;
    assert_error(f.app.get("/v1/docs").bearer_auth(&client).send().await.unwrap(), 403, "forbidden").await;
    assert_error(f.app.get("/v1/docs").bearer_auth(&f.owner.session).send().await.unwrap(), 401, "unauthorized").await;
    assert_error(f.app.get("/v1/docs").send().await.unwrap(), 401, "unauthorized").await;
}

#[tokio::test]
async fn discovery_answers_the_provider_url() {
    let f = fixture("starter", &[]).await;
    let d: Value = f.app.get("/v1/discovery/a%2Fb").bearer_auth(&f.m2m).send().await.unwrap().json().await.unwrap();
    assert_eq!(d["url"], format!("{}/v1/sync", f.app.url.replacen("http://", "ws://", 1)));
    assert_eq!(d["region"], "eu-central-1");
    assert!(d["node_id"].as_str().unwrap().starts_with("node-"));
    let narrow = f.client_token(json!({"docs": ["notes/*"]})).await;
    assert_eq!(f.app.get("/v1/discovery/notes%2F1").bearer_auth(&narrow).send().await.unwrap().status(), 200);
    assert_error(f.app.get("/v1/discovery/board").bearer_auth(&narrow).send().await.unwrap(), 403, "forbidden").await;
    assert_error(
        f.app.get("/v1/discovery/board").bearer_auth(&f.owner.session).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
}

#[tokio::test]
async fn refusals_happen_before_the_upgrade() {
    let f = fixture("starter", &["myapp.com", "localhost:3000"]).await;
    let url = f.app.url.clone();
    assert_eq!(connect(&url, "d", "", Some("https://myapp.com")).await.err(), Some(401));
    assert_eq!(connect(&url, "d", "garbage", Some("https://myapp.com")).await.err(), Some(401));
    // Origin: allowed host and port; missing or other refused.
    assert!(connect(&url, "d", &f.m2m, Some("https://myapp.com")).await.is_ok());
    assert!(connect(&url, "d", &f.m2m, Some("http://localhost:3000")).await.is_ok());
    assert_eq!(connect(&url, "d", &f.m2m, None).await.err(), Some(403));
    assert_eq!(connect(&url, "d", &f.m2m, Some("https://evil.com")).await.err(), Some(403));
    assert_eq!(connect(&url, "d", &f.m2m, Some("http://localhost:3001")).await.err(), Some(403));
    // docs claim.
    let narrow = f.client_token(json!({"docs": ["notes/*"]})).await;
    assert!(connect(&url, "notes/1", &narrow, Some("https://myapp.com")).await.is_ok());
    assert_eq!(connect(&url, "board", &narrow, Some("https://myapp.com")).await.err(), Some(403));
    assert_eq!(connect(&url, "notes", &narrow, Some("https://myapp.com")).await.err(), Some(403));
    // Expired token.
    let short = f.client_token(json!({"docs": ["*"], "ttl_seconds": 60})).await;
    f.app.clock.advance(time::Duration::seconds(61));
    assert_eq!(connect(&url, "d", &short, Some("https://myapp.com")).await.err(), Some(401));
    // A human session never opens a socket.
    assert_eq!(connect(&url, "d", &f.owner.session, Some("https://myapp.com")).await.err(), Some(401));
}

#[tokio::test]
async fn plan_connection_limit_is_429_before_upgrade() {
    let f = fixture("free", &[]).await;
    let mut open = Vec::new();
    for _ in 0..20 {
        open.push(connect(&f.app.url, "d", &f.m2m, None).await.unwrap());
    }
    assert_eq!(connect(&f.app.url, "d", &f.m2m, None).await.err(), Some(429));
    let gone = open.pop().unwrap();
    gone.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(connect(&f.app.url, "other", &f.m2m, None).await.is_ok());
}

#[tokio::test]
async fn read_only_clients_receive_but_cannot_write() {
    let f = fixture("starter", &[]).await;
    let ro = f.client_token(json!({"docs": ["*"], "access": "r"})).await;
    let mut writer = f.join("d", &f.m2m).await;
    let mut reader = f.join("d", &ro).await;
    writer.insert("abc").await;
    assert!(reader.wait_for(|c| c.text() == "abc", T).await);
    reader.set_awareness(r#"{"ro":true}"#).await;
    let rid = reader.doc.client_id().get();
    assert!(writer.wait_for(|c| c.awareness.contains_key(&rid), T).await, "read-only presence is relayed");
    reader.insert("!").await;
    assert_eq!(reader.closed_with(T).await, Some(4403));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(text_of(&f.rest_state("d").await.bytes().await.unwrap()), "abc");
}

#[tokio::test]
async fn token_expiry_closes_with_4401_unless_refreshed_in_band() {
    // Expiry follows the server's clock (the test's manual one), checked
    // every second by the registry's supervisor.
    let f = fixture("starter", &[]).await;
    let short = f.client_token(json!({"docs": ["d"], "ttl_seconds": 60})).await;
    let mut c = f.join("d", &short).await;
    assert!(!c.wait_for(|c| c.closed.is_some(), Duration::from_millis(1500)).await, "open until it expires");
    f.app.clock.advance(time::Duration::seconds(60));
    assert_eq!(c.closed_with(Duration::from_secs(4)).await, Some(4401));

    let short = f.client_token(json!({"docs": ["d"], "ttl_seconds": 60})).await;
    let mut c = f.join("d", &short).await;
    let fresh = f.client_token(json!({"docs": ["d"], "ttl_seconds": 600})).await;
    c.send_text(&json!({"type": "refresh", "token": fresh}).to_string()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.app.clock.advance(time::Duration::seconds(120));
    assert!(!c.wait_for(|c| c.closed.is_some(), Duration::from_secs(3)).await, "refreshed connection stays open");
    c.insert("still here").await;
    let mut d = f.join("d", &f.m2m).await;
    assert!(d.wait_for(|c| c.text() == "still here", T).await);

    // A refresh with a token for another document is refused.
    let other = f.client_token(json!({"docs": ["other"]})).await;
    c.send_text(&json!({"type": "refresh", "token": other}).to_string()).await;
    assert_eq!(c.closed_with(T).await, Some(4401));
}

#[tokio::test]
async fn revocations_close_sockets_within_a_second() {
    let f = fixture("starter", &[]).await;
    // Revoking the token.
    let mut c = f.join("d", &f.m2m).await;
    let r = f
        .app
        .post("/oauth/revoke")
        .basic_auth(&f.creds.client_id, Some(&f.creds.client_secret))
        .form(&[("token", f.m2m.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.closed_with(Duration::from_secs(1)).await, Some(4401));
    // Revoking the key.
    let m2m = f.app.m2m_token(&f.creds).await;
    let mut c = f.join("d", &m2m).await;
    let keys: Value = f
        .app
        .get(&format!("/v1/tenants/{}/keys", f.owner.tenant_id))
        .bearer_auth(&f.owner.session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = keys["items"][0]["kid"].as_str().unwrap();
    f.app
        .post(&format!("/v1/tenants/{}/keys/{kid}/revoke", f.owner.tenant_id))
        .bearer_auth(&f.owner.session)
        .send()
        .await
        .unwrap();
    assert_eq!(c.closed_with(Duration::from_secs(1)).await, Some(4401));
    // Deleting the app.
    let m2m = f.app.m2m_token(&f.creds).await;
    let mut c = f.join("d", &m2m).await;
    f.app
        .delete(&format!("/v1/tenants/{}/apps/{}", f.owner.tenant_id, f.creds.id))
        .bearer_auth(&f.owner.session)
        .send()
        .await
        .unwrap();
    assert_eq!(c.closed_with(Duration::from_secs(1)).await, Some(4401));
}

#[tokio::test]
async fn secret_rotation_closes_sockets_opened_before_it() {
    let f = fixture("starter", &[]).await;
    let mut c = f.join("d", &f.m2m).await;
    f.app.clock.advance(time::Duration::seconds(1));
    f.app
        .post(&format!("/v1/tenants/{}/apps/{}/secret/rotate", f.owner.tenant_id, f.creds.id))
        .bearer_auth(&f.owner.session)
        .send()
        .await
        .unwrap();
    assert_eq!(c.closed_with(Duration::from_secs(1)).await, Some(4401));
}

#[tokio::test]
async fn malformed_frames_close_only_that_connection() {
    let f = fixture("starter", &[]).await;
    let mut good = f.join("d", &f.m2m).await;
    let mut bad = f.join("d", &f.m2m).await;
    bad.send_raw(vec![0, 2, 0xff, 0xff, 0xff]).await;
    assert_eq!(bad.closed_with(T).await, Some(1007));
    good.insert("fine").await;
    let mut other = f.join("d", &f.m2m).await;
    assert!(other.wait_for(|c| c.text() == "fine", T).await);
    assert!(good.closed.is_none());
}

#[tokio::test]
async fn oversized_messages_close_with_4413() {
    let dir = temp_dir();
    let mut config = test_config(&dir);
    config.max_message_bytes = 64 * 1024;
    let app = spawn_with(config).await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let m2m = app.m2m_token(&creds).await;
    let mut c = connect(&app.url, "d", &m2m, None).await.unwrap();
    c.sync().await;
    c.insert(&"x".repeat(100 * 1024)).await;
    assert_eq!(c.closed_with(T).await, Some(4413));
    // Just under the limit is fine.
    let mut c = connect(&app.url, "d", &m2m, None).await.unwrap();
    c.sync().await;
    c.insert(&"y".repeat(60 * 1024)).await;
    let mut d = connect(&app.url, "d", &m2m, None).await.unwrap();
    d.sync().await;
    assert!(d.wait_for(|c| c.text().len() == 60 * 1024, T).await);
    assert!(c.closed.is_none());
}

#[tokio::test]
async fn operations_per_minute_close_with_4429_and_follow_plan_changes() {
    let f = fixture("free", &[]).await;
    let mut c = f.join("d", &f.m2m).await;
    // GCRA: a burst of 1000, then about 17 more per second. Write until refused.
    let started = std::time::Instant::now();
    let mut sent = 0u32;
    while c.closed.is_none() && sent < 3000 {
        c.insert(&format!("{sent},")).await;
        sent += 1;
        if sent.is_multiple_of(100) {
            c.step(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(c.closed_with(Duration::from_secs(20)).await, Some(4429));
    // What counts is what the server accepted: the persisted writes.
    let allowed = 1000.0 + started.elapsed().as_secs_f64() * 1000.0 / 60.0 + 2.0;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stored = text_of(&f.rest_state("d").await.bytes().await.unwrap()).matches(',').count();
    assert!(
        stored >= 1000 && (stored as f64) <= allowed,
        "{stored} writes accepted (sent {sent}, allowed {allowed:.0})"
    );
    // Upgrading lifts the limit at once, without a restart.
    let r = f
        .app
        .post(&format!("/v1/tenants/{}/apps/{}/plan", f.owner.tenant_id, f.creds.id))
        .bearer_auth(&f.owner.session)
        .json(&json!({"plan": "starter"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut c = f.join("d", &f.m2m).await;
    c.insert("after upgrade").await;
    let mut d = f.join("d", &f.m2m).await;
    assert!(d.wait_for(|c| c.text().ends_with("after upgrade"), T).await);
}

#[tokio::test]
async fn the_document_limit_refuses_one_more() {
    let f = fixture("free", &[]).await;
    let update = |s: &str| {
        let doc = yrs::Doc::new();
        let t = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, s);
        txn.encode_update_v1()
    };
    for i in 0..100 {
        let r =
            f.app.post(&format!("/v1/docs/doc-{i}/update")).bearer_auth(&f.m2m).body(update("x")).send().await.unwrap();
        assert_eq!(r.status(), 204, "doc {i}");
    }
    let r = f.app.post("/v1/docs/doc-100/update").bearer_auth(&f.m2m).body(update("x")).send().await.unwrap();
    assert_error(r, 429, "plan_limit").await;
    // Over the socket: 4429.
    let mut c = f.join("doc-101", &f.m2m).await;
    c.insert("no room").await;
    assert_eq!(c.closed_with(T).await, Some(4429));
    // Existing documents still take writes.
    let r = f.app.post("/v1/docs/doc-5/update").bearer_auth(&f.m2m).body(update("more")).send().await.unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn what_a_client_has_seen_survives_a_restart() {
    let dir = temp_dir();
    let mut config = test_config(&dir);
    config.public_url = Some("http://ws.example.test".into());
    let app = spawn_with(config.clone()).await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let m2m = app.m2m_token(&creds).await;
    let mut a = connect(&app.url, "d", &m2m, None).await.unwrap();
    a.sync().await;
    let mut b = connect(&app.url, "d", &m2m, None).await.unwrap();
    b.sync().await;
    for i in 0..50 {
        a.insert(&format!("{i};")).await;
    }
    assert!(b.wait_for(|c| c.text().ends_with("49;"), T).await);
    let seen = b.text();
    app.stop().await;
    let app = spawn_with(config).await;
    let mut c = connect(&app.url, "d", &m2m, None).await.unwrap();
    c.sync().await;
    assert_eq!(c.text(), seen);
}

#[tokio::test]
async fn data_plane_metrics_are_exported() {
    let f = fixture("starter", &[]).await;
    let mut a = f.join("m", &f.m2m).await;
    let mut b = f.join("m", &f.m2m).await;
    a.insert("metrics").await;
    assert!(b.wait_for(|c| c.text() == "metrics", T).await);
    let _ = crate::yclient::connect(&f.app.url, "m", "garbage", None).await;
    let text = f.app.get("/metrics").send().await.unwrap().text().await.unwrap();
    for name in [
        "wiresocket_connections_open",
        "wiresocket_messages_in_total",
        "wiresocket_messages_out_total",
        "wiresocket_bytes_in_total",
        "wiresocket_bytes_out_total",
        "wiresocket_fanout_seconds_bucket",
        "wiresocket_persist_batch_seconds_bucket",
        "wiresocket_sync_refusals_total{reason=\"bad_token\"}",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn idle_documents_unload_and_reload_from_the_store() {
    let dir = temp_dir();
    let mut config = test_config(&dir);
    config.doc_idle_unload = Duration::from_millis(500);
    let app = spawn_with(config).await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let m2m = app.m2m_token(&creds).await;
    let mut a = connect(&app.url, "idle", &m2m, None).await.unwrap();
    a.sync().await;
    a.insert("kept").await;
    let mut b = connect(&app.url, "idle", &m2m, None).await.unwrap();
    b.sync().await;
    assert!(b.wait_for(|c| c.text() == "kept", T).await);
    assert_eq!(app.state.docs.loaded_count(), 1);
    a.close().await;
    b.close().await;
    let mut unloaded = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if app.state.docs.loaded_count() == 0 {
            unloaded = true;
            break;
        }
    }
    assert!(unloaded, "an idle document is unloaded");
    let mut c = connect(&app.url, "idle", &m2m, None).await.unwrap();
    c.sync().await;
    assert_eq!(c.text(), "kept", "and loads again from the store");
}

#[tokio::test]
async fn long_logs_are_compacted_in_the_background() {
    let f = fixture("starter", &[]).await;
    let mut a = f.join("long", &f.m2m).await;
    for i in 0..600 {
        a.insert(&format!("{i},")).await;
    }
    let mut b = f.join("long", &f.m2m).await;
    assert!(b.wait_for(|c| c.text().ends_with("599,"), Duration::from_secs(20)).await);
    let key = f.compacted("long").await;
    let state = f.app.state.store.load_doc(&key).await.unwrap().unwrap();
    assert!(state.snapshot.is_some());
    assert_eq!(text_of(&f.rest_state("long").await.bytes().await.unwrap()), b.text());
    // Small: encoded from its room.
    let metrics = f.app.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wiresocket_doc_compactions_total{from=\"room\"}"), "not compacted from the room");
    // The writes went through the SQLite journal and were folded from it.
    let folded = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wiresocket_doc_journal_folded_entries_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(folded.is_some_and(|n| n >= 600.0), "journal folds in /metrics: {folded:?}");
    assert!(metrics.contains("wiresocket_doc_journal_folds_total "), "{metrics}");
}

/// A document over 1 MiB is compacted from the store, on a blocking
/// thread, not by encoding its room (which would hold the room meanwhile);
/// the snapshot holds everything all the same.
#[tokio::test]
async fn large_documents_compact_from_the_store() {
    let f = fixture("starter", &[]).await;
    let mut a = f.join("large", &f.m2m).await;
    let big = "0123456789abcdef".repeat(80 * 1024);
    a.insert(&big).await;
    for i in 0..520 {
        a.insert(&format!("{i},")).await;
    }
    let mut b = f.join("large", &f.m2m).await;
    assert!(b.wait_for(|c| c.text().ends_with("519,"), Duration::from_secs(20)).await);
    let key = f.compacted("large").await;
    let metrics = f.app.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wiresocket_doc_compactions_total{from=\"store\"}"), "not compacted from the store");
    let state = f.app.state.store.load_doc(&key).await.unwrap().unwrap();
    assert!(state.snapshot.is_some_and(|s| s.len() > big.len()));
    assert_eq!(text_of(&f.rest_state("large").await.bytes().await.unwrap()), b.text());
    assert!(b.text().starts_with(&big));
}

#[tokio::test]
async fn the_socket_answers_pings_joins_fragments_and_echoes_closes() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
    use tokio_tungstenite::tungstenite::{Bytes, Message};
    use yrs::updates::encoder::Encode;

    let f = fixture("starter", &[]).await;
    let url = crate::yclient::sync_url(&f.app.url, "frames", &f.m2m);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // The next frame that is not one of the server's sync/awareness messages.
    async fn next_control(
        ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        keep_binary: bool,
    ) -> Message {
        loop {
            let msg = tokio::time::timeout(T, ws.next()).await.unwrap().unwrap().unwrap();
            if keep_binary || !msg.is_binary() {
                return msg;
            }
        }
    }

    ws.send(Message::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
    assert_eq!(next_control(&mut ws, false).await, Message::Pong(Bytes::from_static(b"are you there")));

    // A sync step 1 in two fragments, with a ping between them, is one message.
    let step1 = yrs::sync::Message::Sync(yrs::sync::SyncMessage::SyncStep1(yrs::StateVector::default())).encode_v1();
    let (a, b) = step1.split_at(1);
    ws.send(Message::Frame(Frame::message(a.to_vec(), OpCode::Data(Data::Binary), false))).await.unwrap();
    ws.send(Message::Ping(Bytes::from_static(b"between"))).await.unwrap();
    ws.send(Message::Frame(Frame::message(b.to_vec(), OpCode::Data(Data::Continue), true))).await.unwrap();
    let mut saw_pong = false;
    loop {
        match next_control(&mut ws, true).await {
            Message::Pong(p) => {
                assert_eq!(p, Bytes::from_static(b"between"));
                saw_pong = true;
            }
            // Sync (0), step 2 (1): the answer to the joined message.
            Message::Binary(m) if m.starts_with(&[0, 1]) => break,
            Message::Binary(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_pong, "the ping between fragments was answered");

    // The client's close is echoed with its code, then the server ends the stream.
    ws.send(Message::Close(Some(CloseFrame { code: CloseCode::from(4000), reason: "bye".into() }))).await.unwrap();
    match next_control(&mut ws, false).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4000),
        other => panic!("expected the close echoed, got {other:?}"),
    }
    assert!(tokio::time::timeout(T, ws.next()).await.unwrap().is_none_or(|r| r.is_err()), "the stream ends");
}

#[tokio::test]
async fn protocol_errors_close_with_1002() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let f = fixture("starter", &[]).await;
    let mut c = f.join("p", &f.m2m).await;
    let mut other = f.join("p", &f.m2m).await;
    // A continuation frame with no message open.
    c.send_frame(Frame::message(vec![0u8], OpCode::Data(Data::Continue), true)).await;
    assert_eq!(c.closed_with(T).await, Some(1002));
    // The other connection is unaffected.
    other.insert("fine").await;
    let mut late = f.join("p", &f.m2m).await;
    assert!(late.wait_for(|c| c.text() == "fine", T).await);
}

#[tokio::test]
async fn shutting_down_tells_clients_to_reconnect_with_4503() {
    let f = fixture("starter", &[]).await;
    let mut c = f.join("bye", &f.m2m).await;
    let Fixture { app, .. } = f;
    app.stop().await;
    assert_eq!(c.closed_with(T).await, Some(4503));
}

include!("../../../sync/tests/data/damaging_updates.rs");

impl Fixture {
    async fn post_update(&self, doc: &str, update: &[u8]) -> reqwest::Response {
        self.app
            .post(&format!("/v1/docs/{doc}/update"))
            .bearer_auth(&self.m2m)
            .header("content-type", "application/octet-stream")
            .body(update.to_vec())
            .send()
            .await
            .unwrap()
    }
}

/// The update that set yrs up to panic (it reuses ids the document already
/// has, with other content) is refused before it is persisted: 409 on
/// REST, close 4409 on a socket (final for the stock provider, so it is not
/// resent in a loop), and the document goes on taking the honest updates
/// after it, with no reload. Before, it damaged the room: every client was
/// closed with 1013 and the document reloaded, again at every resend.
#[tokio::test]
async fn an_update_reusing_known_ids_is_refused_and_the_document_goes_on() {
    let f = fixture("starter", &[]).await;
    let [snapshot, forged, later @ ..] = DAMAGING_UPDATES;
    assert_eq!(f.post_update("forge", snapshot).await.status(), 204);
    let r = f.post_update("forge", forged).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "update_conflict");
    let mut c = connect(&f.app.url, "forge", &f.m2m, None).await.unwrap();
    c.send_raw(yrs::updates::encoder::Encode::encode_v1(&yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(
        forged.to_vec(),
    ))))
    .await;
    assert_eq!(c.closed_with(T).await, Some(4409));
    for u in later {
        assert!([204, 409].contains(&f.post_update("forge", u).await.status().as_u16()));
    }
    // The room that took them is still the loaded one, and undamaged (the
    // reload metric is process-wide, so it cannot tell).
    let key = store::DocKey { app_id: domain::ids::AppId::parse(&f.creds.id).unwrap(), name: "forge".into() };
    let slot = f.app.state.docs.loaded(&key).expect("the room was retired");
    assert!(!slot.room().unwrap().is_damaged());
    assert_eq!(f.rest_state("forge").await.status(), 200);
}

/// A room that yrs damages (an apply panicking half way through; injected
/// with `sync::fault`, since the guard refuses every input known to do it)
/// is retired: its clients are told to reconnect (1013), and reconnecting
/// finds the document reloaded from the store, taking writes again. Before,
/// the damaged room stayed loaded and its clients silently got nothing more.
#[tokio::test]
async fn a_damaged_room_is_reloaded_and_its_clients_reconnect() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let f = fixture("starter", &[]).await;
    let url = crate::yclient::sync_url(&f.app.url, "fragile", &f.m2m);
    let (mut watcher, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let author = yrs::Doc::with_client_id(77);
    let edit = |s: &str| {
        let t = author.get_or_insert_text("t");
        let mut txn = author.transact_mut();
        t.push(&mut txn, s);
        txn.encode_update_v1()
    };
    let (first, bad) = (edit("kept"), edit(" and lost"));
    sync::fault::poison(&bad);
    assert_eq!(f.post_update("fragile", &first).await.status(), 204);
    // Persisted, then its apply panics: the room is retired.
    assert_eq!(f.post_update("fragile", &bad).await.status(), 204);
    let code = loop {
        match tokio::time::timeout(T, watcher.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(1013));

    // Reconnecting (as a provider does) reaches the reloaded room, which
    // takes writes and fans them out again.
    let deadline = std::time::Instant::now() + T;
    let mut a = loop {
        let mut c = connect(&f.app.url, "fragile", &f.m2m, None).await.unwrap();
        c.send(yrs::sync::Message::Sync(yrs::sync::SyncMessage::SyncStep1(c.state_vector()))).await;
        if c.wait_for(|c| c.closed.is_some() || c.synced, T).await && c.closed.is_none() {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "the document did not reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let metrics = f.app.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wiresocket_doc_reloads_total 1"), "the room was not reloaded");
    // The reload left the poisoned update out and kept the rest.
    assert_eq!(a.text(), "kept");
    let r = f.rest_state("fragile").await;
    assert_eq!(r.status(), 200);
    let mut b = f.join("fragile", &f.m2m).await;
    a.insert("after the reload").await;
    assert!(b.wait_for(|c| c.text() == "keptafter the reload", T).await, "b saw {:?}", b.text());
}
