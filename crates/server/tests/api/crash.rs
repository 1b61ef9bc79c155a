//! Crash durability with the real binary: kill -9 the server during a stream
//! of writes, restart it on the same data dir, and every update that any
//! client had received is still there.

use crate::helpers::*;
use crate::yclient::connect;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `target/<profile>/wiresocket`, built by `cargo test --workspace` alongside this test binary.
pub(crate) fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("wiresocket");
    assert!(bin.exists(), "{} is missing: run `cargo build -p wiresocket` (scripts/test does)", bin.display());
    bin
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(data_dir: &Path, port: u16) -> Child {
    Command::new(binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .args(["--public-url", "http://crash.test"])
        .env("WIRESOCKET_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

pub(crate) async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become ready");
}

#[tokio::test]
async fn kill_9_mid_stream_loses_nothing_anyone_saw() {
    let dir = temp_dir();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut server = start(&dir, port);
    wait_ready(&http, &base).await;

    let setup: Value = http
        .post(format!("{base}/v1/setup"))
        .json(&json!({"email": "crash@example.com", "password": PASSWORD, "tenant_name": "Crash"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let login: Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": "crash@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created: Value = http
        .post(format!("{base}/v1/tenants/{}/apps", setup["tenant_id"].as_str().unwrap()))
        .bearer_auth(login["session_token"].as_str().unwrap())
        .json(&json!({"name": "crash", "region": "eu-central-1", "plan": "enterprise"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token: Value = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(created["client_id"].as_str().unwrap(), created["client_secret"].as_str())
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();

    let mut writer = connect(&base, "crash", &token, None).await.unwrap();
    writer.sync().await;
    let writer_id = writer.doc.client_id();
    let mut observer = connect(&base, "crash", &token, None).await.unwrap();
    observer.sync().await;

    // Stream writes without waiting for anything.
    let stream = tokio::spawn(async move {
        for i in 0..100_000u32 {
            writer.insert(&format!("{i};")).await;
            if writer.closed.is_some() {
                break;
            }
            if i.is_multiple_of(50) {
                tokio::task::yield_now().await;
            }
        }
    });
    // Once the observer has seen a good part of the stream, pull the plug.
    assert!(observer.wait_for(|c| c.updates_received >= 300, Duration::from_secs(20)).await, "stream too slow");
    server.kill().unwrap();
    server.wait().unwrap();
    // Drain what the observer had already been sent before the kill.
    while observer.step(Duration::from_millis(200)).await {}
    stream.abort();
    let seen = observer.state_vector().get(&writer_id);
    let seen_text = observer.text();
    assert!(seen >= 300, "observer saw {seen} items");

    let mut server = start(&dir, port);
    wait_ready(&http, &base).await;
    let mut late = connect(&base, "crash", &token, None).await.unwrap();
    late.sync().await;
    let stored = late.state_vector().get(&writer_id);
    assert!(stored >= seen, "stored {stored} < seen {seen}: an update someone had received was lost");
    assert!(late.text().starts_with(&seen_text), "the text the observer saw is a prefix of what survived");
    server.kill().unwrap();
    server.wait().unwrap();
}
