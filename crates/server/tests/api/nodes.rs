//! The node registry in `--role all`: the one node is listed, drains (its
//! clients told to move with 4503, new connections and discovery refused)
//! and undrains; only the platform operator may touch it.

use crate::helpers::*;
use crate::yclient::connect;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

async fn nodes(app: &TestApp, session: &str) -> Value {
    let r = app.get("/v1/nodes").bearer_auth(session).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The first heartbeat runs as the server starts; wait for the row.
async fn the_node(app: &TestApp, session: &str) -> Value {
    for _ in 0..100 {
        let list = nodes(app, session).await;
        if let Some(n) = list["items"].as_array().unwrap().first() {
            return n.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no node registered");
}

#[tokio::test]
async fn the_node_is_listed_and_drain_moves_its_clients() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let m2m = app.m2m_token(&creds).await;
    let node = the_node(&app, &owner.session).await;
    assert_eq!(node["status"], "up");
    assert_eq!(node["region"], "all");
    assert_eq!(node["url"], app.url);
    assert!(node["id"].as_str().unwrap().starts_with("node-"));
    assert!(node["last_heartbeat_at"].as_str().unwrap().ends_with('Z'));
    let list = nodes(&app, &owner.session).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["next_cursor"].is_null());
    let id = node["id"].as_str().unwrap().to_owned();
    // And in the metrics, as the control plane sees it.
    let up = format!("wiresocket_node_up{{node=\"{id}\",region=\"all\"}} 1");
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = app.get("/metrics").send().await.unwrap().text().await.unwrap();
        if metrics.contains(&up) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics.contains(&up), "{up} not in the metrics");
    assert!(metrics.contains(&format!("wiresocket_node_connections{{node=\"{id}\",region=\"all\"}}")));
    let d = app.get("/v1/discovery/notes").bearer_auth(&m2m).send().await.unwrap();
    assert_eq!(d.json::<Value>().await.unwrap()["node_id"], id.as_str());

    let mut c = connect(&app.url, "notes", &m2m, None).await.unwrap();
    c.sync().await;
    let r = app.post(&format!("/v1/nodes/{id}/drain")).bearer_auth(&owner.session).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "draining");
    assert_eq!(c.closed_with(T).await, Some(4503));
    // No new connections, and discovery has no node to name.
    assert_eq!(connect(&app.url, "notes", &m2m, None).await.err(), Some(503));
    let d = app.get("/v1/discovery/notes").bearer_auth(&m2m).send().await.unwrap();
    assert_error(d, 503, "no_node_available").await;
    assert_eq!(the_node(&app, &owner.session).await["status"], "draining");
    // The heartbeat keeps the drain (the registry says so).
    app.state.node.heartbeat(app.state.store.as_ref(), 0, app.clock_now()).await.unwrap();
    assert!(app.state.node.is_draining());

    let r = app.post(&format!("/v1/nodes/{id}/undrain")).bearer_auth(&owner.session).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "up");
    let mut c = connect(&app.url, "notes", &m2m, None).await.unwrap();
    c.sync().await;
    let d = app.get("/v1/discovery/notes").bearer_auth(&m2m).send().await.unwrap();
    assert_eq!(d.status(), 200);
    let audit = app.audit_actions(None).await;
    assert!(audit.contains(&"node.drained".to_owned()) && audit.contains(&"node.undrained".to_owned()), "{audit:?}");
}

#[tokio::test]
async fn a_node_without_heartbeats_is_down() {
    let dir = temp_dir();
    let mut config = test_config(&dir);
    // One heartbeat at start, then none for the length of the test.
    config.heartbeat_interval = Duration::from_secs(3600);
    config.node_timeout = Duration::from_secs(15);
    let app = spawn_with(config).await;
    let owner = app.setup().await;
    assert_eq!(the_node(&app, &owner.session).await["status"], "up");
    app.clock.advance(time::Duration::seconds(16));
    assert_eq!(the_node(&app, &owner.session).await["status"], "down");
    // A heartbeat brings it back.
    app.state.node.heartbeat(app.state.store.as_ref(), 0, app.clock_now()).await.unwrap();
    assert_eq!(the_node(&app, &owner.session).await["status"], "up");
}

#[tokio::test]
async fn only_the_platform_operator_manages_nodes() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let id = the_node(&app, &owner.session).await["id"].as_str().unwrap().to_owned();
    // A super_admin of a tenant who is not the operator.
    let (admin, _) = add_member(&app, &owner.tenant_id, "admin@example.com", "super_admin").await;
    assert_error(app.get("/v1/nodes").bearer_auth(&admin).send().await.unwrap(), 403, "forbidden").await;
    let r = app.post(&format!("/v1/nodes/{id}/drain")).bearer_auth(&admin).send().await.unwrap();
    assert_error(r, 403, "forbidden").await;
    assert_error(app.get("/v1/nodes").send().await.unwrap(), 401, "unauthorized").await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let m2m = app.m2m_token(&creds).await;
    assert_error(app.get("/v1/nodes").bearer_auth(&m2m).send().await.unwrap(), 403, "forbidden").await;
    let r = app.post("/v1/nodes/no-such-node/drain").bearer_auth(&owner.session).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    let r = app.post("/v1/nodes/no-such-node/undrain").bearer_auth(&owner.session).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    assert!(!app.state.node.is_draining());
}

/// Discovery picks by rendezvous hashing over the up nodes of the app's
/// region: the same node for every client of a document, documents spread
/// over the nodes, and a node going down (or draining) moves only its own.
#[tokio::test]
async fn discovery_spreads_documents_and_a_lost_node_moves_only_its_own() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "pro", &[]).await;
    assert_eq!(creds.body["region"], "eu-central-1");
    let m2m = app.m2m_token(&creds).await;
    let now = app.clock_now();
    // Two more nodes of the app's region and one of another region.
    for (id, region) in [("eu-a", "eu-central-1"), ("eu-b", "eu-central-1"), ("us-a", "aws-us-east-1")] {
        let beat = store::NodeHeartbeat {
            id: id.into(),
            region: region.into(),
            url: format!("https://{id}.example.com"),
            instance: "one".into(),
            started_at: now,
            connections: 0,
            documents: 0,
        };
        app.state.store.node_heartbeat(&beat, now).await.unwrap();
    }
    server::routes::nodes::beat(&app.state).await;
    let discover = |doc: String| {
        let m2m = m2m.clone();
        let app = &app;
        async move {
            let r = app.get(&format!("/v1/discovery/{doc}")).bearer_auth(&m2m).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let docs: Vec<String> = (0..60).map(|i| format!("doc-{i}")).collect();
    let mut before = Vec::new();
    for d in &docs {
        let a = discover(d.clone()).await;
        assert_eq!(discover(d.clone()).await, a, "two clients of {d} got different nodes");
        before.push(a["node_id"].as_str().unwrap().to_owned());
        if a["node_id"] == "eu-a" {
            assert_eq!(a["url"], "wss://eu-a.example.com/v1/sync");
        }
    }
    let used: std::collections::HashSet<&str> = before.iter().map(String::as_str).collect();
    assert!(used.contains("eu-a") && used.contains("eu-b"), "not spread: {used:?}");
    assert!(!used.contains("us-a"), "a node of another region was named");
    // eu-b stops heartbeating: past the timeout only its documents move.
    app.clock.advance(time::Duration::seconds(16));
    for id in ["eu-a", "us-a"] {
        let beat = store::NodeHeartbeat {
            id: id.into(),
            region: if id == "eu-a" { "eu-central-1" } else { "aws-us-east-1" }.into(),
            url: format!("https://{id}.example.com"),
            instance: "one".into(),
            started_at: now,
            connections: 0,
            documents: 0,
        };
        app.state.store.node_heartbeat(&beat, app.clock_now()).await.unwrap();
    }
    server::routes::nodes::beat(&app.state).await;
    for (d, b) in docs.iter().zip(&before) {
        let now = discover(d.clone()).await["node_id"].as_str().unwrap().to_owned();
        if b == "eu-b" {
            assert_ne!(now, "eu-b");
        } else {
            assert_eq!(&now, b, "{d} moved although its node stayed up");
        }
    }
}
