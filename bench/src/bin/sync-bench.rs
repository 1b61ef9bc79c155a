//! Sync load generator: the same y-websocket scenarios, in the same run,
//! against WireSocket, y-sweet and the reference `@y/websocket-server`,
//! printed side by side.
//!
//! `bench/run-sync-bench` builds and installs everything, then runs
//! `sync-bench [--peers wiresocket,y-sweet,reference] [--docs N] [--subs M]
//! [--rate R] [--secs S] [--storm N] [--storm-concurrency C] [--idle K]
//! [--rounds N]`.
//!
//! Scenarios, each on a freshly started server:
//! - **fan-out**: N docs × (1 writer + M subscribers); each writer sends R
//!   small text inserts per second for S seconds. Reports delivery latency
//!   (writer send → subscriber receive) p50/p99/max, delivered updates/s,
//!   losses, and the server's CPU seconds (utime+stime from /proc) per
//!   delivered update — the load generator shares the cores, so wall-clock
//!   throughput alone would flatter nobody.
//! - **connect storm**: N clients connect with C in flight at a time; a
//!   connect is TCP + WebSocket upgrade (+ JWT verification on WireSocket) +
//!   the server's sync step 2 arriving. Reports p50/p99 and connects/s.
//! - **idle**: K connections spread over 100 docs, held open; reports the
//!   server's RSS growth per connection (/proc VmRSS).
//!
//! With `--rounds N` every peer runs every scenario N times, the peers
//! taking turns (each round starts with the next peer, so none always runs
//! first on a cold or a warm machine). The table then shows each metric's
//! median over the rounds, and the WireSocket/y-sweet ratio of each round
//! for the metrics with goals: on a shared two-core machine one run's
//! tail latency says little.
//!
//! WireSocket persists every update before broadcasting it; y-sweet
//! checkpoints every 10 s; the reference server keeps documents in memory
//! only. The table says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use yrs::sync::{Message as YMessage, SyncMessage};
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact};

// ---- options ---------------------------------------------------------------

#[derive(Debug, Clone)]
struct Opts {
    peers: Vec<String>,
    docs: usize,
    subs: usize,
    rate: u64,
    secs: u64,
    storm: usize,
    storm_concurrency: usize,
    idle: usize,
    rounds: usize,
    wiresocket_bin: PathBuf,
    ysweet_bin: PathBuf,
    reference_script: PathBuf,
}

fn parse_opts() -> Opts {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut o = Opts {
        peers: vec!["wiresocket".into(), "y-sweet".into(), "reference".into()],
        docs: 20,
        subs: 10,
        rate: 20,
        secs: 10,
        storm: 2000,
        storm_concurrency: 64,
        idle: 10_000,
        rounds: 1,
        wiresocket_bin: root.join("../target/release/wiresocket"),
        ysweet_bin: root.join("peers/bin/y-sweet"),
        reference_script: root.join("peers/node_modules/@y/websocket-server/src/server.js"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--peers" => o.peers = v.split(',').map(str::to_owned).collect(),
            "--docs" => o.docs = v.parse().expect("--docs N"),
            "--subs" => o.subs = v.parse().expect("--subs M"),
            "--rate" => o.rate = v.parse().expect("--rate R"),
            "--secs" => o.secs = v.parse().expect("--secs S"),
            "--storm" => o.storm = v.parse().expect("--storm N"),
            "--storm-concurrency" => o.storm_concurrency = v.parse().expect("--storm-concurrency C"),
            "--idle" => o.idle = v.parse().expect("--idle K"),
            "--rounds" => o.rounds = v.parse::<usize>().expect("--rounds N").max(1),
            "--wiresocket-bin" => o.wiresocket_bin = v.into(),
            "--ysweet-bin" => o.ysweet_bin = v.into(),
            "--reference-script" => o.reference_script = v.into(),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

// ---- the servers -------------------------------------------------------------

struct Server {
    peer: String,
    child: Child,
    base: String,
    /// WireSocket: the app's access token (JWT verified on every connect).
    token: Option<String>,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_listening(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not listen on {port}");
}

impl Server {
    async fn start(peer: &str, o: &Opts) -> Server {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sync-bench-{peer}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = match peer {
            "wiresocket" => {
                let mut c = Command::new(&o.wiresocket_bin);
                c.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
                    .arg(&dir)
                    .env("WIRESOCKET_LOG", "warn");
                c
            }
            "y-sweet" => {
                let mut c = Command::new(&o.ysweet_bin);
                c.args(["serve", "--port", &port.to_string(), "--host", "127.0.0.1"]).arg(&dir);
                c
            }
            "reference" => {
                let mut c = Command::new("node");
                c.arg(&o.reference_script).env("HOST", "127.0.0.1").env("PORT", port.to_string());
                c
            }
            other => panic!("unknown peer {other}"),
        };
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {peer}: {e} (bench/run-sync-bench installs the peers)"));
        wait_listening(port, &mut child).await;
        let base = format!("127.0.0.1:{port}");
        let token = if peer == "wiresocket" { Some(wiresocket_token(&base).await) } else { None };
        Server { peer: peer.to_owned(), child, base, token, dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Makes the doc exist where the server wants that before a socket opens.
    async fn prepare_doc(&self, http: &reqwest::Client, doc: &str) {
        if self.peer == "y-sweet" {
            let r =
                http.post(format!("http://{}/doc/new", self.base)).json(&json!({"docId": doc})).send().await.unwrap();
            assert!(r.status().is_success(), "y-sweet /doc/new: {}", r.status());
        }
    }

    fn ws_url(&self, doc: &str) -> String {
        match self.peer.as_str() {
            "wiresocket" => {
                format!("ws://{}/v1/sync/{doc}?token={}", self.base, self.token.as_deref().unwrap_or_default())
            }
            "y-sweet" => format!("ws://{}/d/{doc}/ws/{doc}", self.base),
            _ => format!("ws://{}/{doc}", self.base),
        }
    }

    fn stop(self) {}
}

impl Drop for Server {
    /// Also on a panic, so no server outlives the bench.
    fn drop(&mut self) {
        // SIGTERM first, so a server run under a profiler (`--wiresocket-bin`
        // pointing at a `perf record` or `heaptrack` wrapper) can write its
        // data; SIGKILL if it has not ended within 10 s.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Setup → enterprise app → client_credentials token: what a customer's
/// backend does, so connects pay for real JWT verification.
async fn wiresocket_token(base: &str) -> String {
    let http = reqwest::Client::new();
    let url = format!("http://{base}");
    let (client_id, client_secret) = wiresocket_bench::enterprise_app(&http, &url).await;
    let token: Value = http
        .post(format!("{url}/oauth/token"))
        .basic_auth(client_id, Some(client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    token["access_token"].as_str().unwrap().to_owned()
}

// ---- /proc -----------------------------------------------------------------

/// utime + stime of the process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

// ---- the client ------------------------------------------------------------

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects with TCP_NODELAY, sends sync step 1 (empty state vector) and
/// answers the server's step 1, until the server's step 2 has arrived.
async fn connect_synced(url: &str) -> Result<Ws, String> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, None, true).await.map_err(|e| format!("{e}"))?;
    let step1 = YMessage::Sync(SyncMessage::SyncStep1(StateVector::default())).encode_v1();
    ws.send(Message::Binary(Bytes::from(step1))).await.map_err(|e| format!("{e}"))?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .map_err(|_| "no sync step 2 within 60 s".to_string())?;
        match msg {
            Some(Ok(Message::Binary(b))) if b.len() >= 2 && b[0] == 0 => match b[1] {
                // The server's step 1: answer with our (empty) state.
                0 => {
                    let empty = Doc::new().transact().encode_state_as_update_v1(&StateVector::default());
                    let step2 = YMessage::Sync(SyncMessage::SyncStep2(empty)).encode_v1();
                    ws.send(Message::Binary(Bytes::from(step2))).await.map_err(|e| format!("{e}"))?;
                }
                1 => return Ok(ws),
                _ => {}
            },
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("{e}")),
            None => return Err("closed before sync".into()),
        }
    }
}

/// The sequence number a writer embeds as `@@0000000042@@` in its inserted
/// text; the update's bytes carry the string verbatim.
fn find_seq(b: &[u8]) -> Option<usize> {
    let at = b.windows(2).position(|w| w == b"@@")?;
    let digits = b.get(at + 2..at + 12)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles { p50: f64::NAN, p99: f64::NAN, max: f64::NAN };
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Percentiles { p50: at(0.50), p99: at(0.99), max: v[v.len() - 1] }
}

// ---- scenarios -------------------------------------------------------------

type Row = BTreeMap<&'static str, String>;

async fn fan_out(server: &Server, o: &Opts, row: &mut Row) {
    let http = reqwest::Client::new();
    let epoch = Instant::now();
    let per_doc = (o.rate * o.secs) as usize;
    let sent: Arc<Vec<Vec<AtomicU64>>> =
        Arc::new((0..o.docs).map(|_| (0..per_doc).map(|_| AtomicU64::new(0)).collect()).collect());
    let mut subscribers = Vec::new();
    let mut writers = Vec::new();
    for d in 0..o.docs {
        let doc = format!("fanout-{d}");
        server.prepare_doc(&http, &doc).await;
        writers.push(connect_synced(&server.ws_url(&doc)).await.unwrap());
        for _ in 0..o.subs {
            subscribers.push((d, connect_synced(&server.ws_url(&doc)).await.unwrap()));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let delivered = Arc::new(AtomicU64::new(0));
    let expected = (o.docs * o.subs * per_doc) as u64;
    let mut sub_tasks = Vec::new();
    for (d, mut ws) in subscribers {
        let (sent, delivered, epoch) = (sent.clone(), delivered.clone(), epoch);
        sub_tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_doc);
            let mut seen = 0usize;
            while seen < per_doc {
                let msg = match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
                    Ok(Some(Ok(m))) => m,
                    _ => break,
                };
                if let Message::Binary(b) = msg
                    && b.len() > 2
                    && b[0] == 0
                    && b[1] == 2
                    && let Some(seq) = find_seq(&b)
                {
                    let now = epoch.elapsed().as_nanos() as u64;
                    let at = sent[d][seq].load(Ordering::Acquire);
                    lat.push((now.saturating_sub(at)) as f64 / 1e6);
                    seen += 1;
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = ws.close(None).await;
            lat
        }));
    }

    let cpu0 = cpu_seconds(server.pid());
    let start = Instant::now();
    let mut writer_tasks = Vec::new();
    for (d, ws) in writers.into_iter().enumerate() {
        let (sent, epoch, rate) = (sent.clone(), epoch, o.rate);
        writer_tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            // Drain whatever the server sends the writer (echoes, awareness).
            let drain = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
            let doc = Doc::with_client_id(1000 + d as u64);
            let text = doc.get_or_insert_text("t");
            let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for seq in 0..per_doc {
                tick.tick().await;
                let update = {
                    let mut txn = doc.transact_mut();
                    let len = text.get_string(&txn).len() as u32;
                    text.insert(&mut txn, len, &format!("@@{seq:010}@@"));
                    txn.encode_update_v1()
                };
                let msg = YMessage::Sync(SyncMessage::Update(update)).encode_v1();
                sent[d][seq].store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
                if tx.send(Message::Binary(Bytes::from(msg))).await.is_err() {
                    break;
                }
            }
            (tx, drain)
        }));
    }
    let mut keep = Vec::new();
    for w in writer_tasks {
        keep.push(w.await.unwrap());
    }
    let mut lat = Vec::with_capacity(expected as usize);
    for s in sub_tasks {
        lat.extend(s.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server.pid()) - cpu0;
    for (mut tx, drain) in keep {
        let _ = tx.close().await;
        drain.abort();
    }
    let got = delivered.load(Ordering::Relaxed);
    let p = percentiles(lat);
    row.insert("fan-out p50 (ms)", format!("{:.2}", p.p50));
    row.insert("fan-out p99 (ms)", format!("{:.2}", p.p99));
    row.insert("fan-out max (ms)", format!("{:.2}", p.max));
    row.insert("delivered updates/s", format!("{:.0}", got as f64 / elapsed));
    row.insert("delivered / expected", format!("{got} / {expected}"));
    row.insert("server CPU s (fan-out)", format!("{cpu:.2}"));
    row.insert("server CPU µs / delivered update", format!("{:.2}", cpu * 1e6 / got.max(1) as f64));
    if server.peer == "wiresocket" {
        // The server's own share: receipt → persisted → broadcast, from its
        // `wiresocket_fanout_seconds` histogram (bucket upper bounds).
        let text = http.get(format!("http://{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
        if let Some((p50, p99)) = histogram_quantiles(&text, "wiresocket_fanout_seconds") {
            row.insert("server receipt→broadcast p50 / p99 (ms, ≤)", format!("{p50} / {p99}"));
        }
        if let Some((p50, p99)) = histogram_quantiles(&text, "wiresocket_persist_batch_seconds") {
            row.insert("server commit p50 / p99 (ms, ≤)", format!("{p50} / {p99}"));
        }
    }
}

/// p50 and p99 of a Prometheus histogram, as the upper bounds (in ms) of the
/// buckets they fall in.
fn histogram_quantiles(text: &str, name: &str) -> Option<(String, String)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.to_owned(), count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    let at = |q: f64| {
        buckets.iter().find(|(_, c)| *c >= q * total).map(|(le, _)| match le.parse::<f64>() {
            Ok(secs) => format!("{}", secs * 1e3),
            Err(_) => le.clone(),
        })
    };
    Some((at(0.5)?, at(0.99)?))
}

async fn connect_storm(server: &Server, o: &Opts, row: &mut Row) {
    let http = reqwest::Client::new();
    let docs = 10;
    for d in 0..docs {
        server.prepare_doc(&http, &format!("storm-{d}")).await;
    }
    let urls: Arc<Vec<String>> = Arc::new((0..docs).map(|d| server.ws_url(&format!("storm-{d}"))).collect());
    let gate = Arc::new(Semaphore::new(o.storm_concurrency));
    let failed = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu_seconds(server.pid());
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(o.storm);
    for i in 0..o.storm {
        let (urls, gate, failed) = (urls.clone(), gate.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let t = Instant::now();
            match connect_synced(&urls[i % urls.len()]).await {
                Ok(ws) => Some((t.elapsed().as_secs_f64() * 1e3, ws)),
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        }));
    }
    let mut lat = Vec::with_capacity(o.storm);
    let mut open = Vec::with_capacity(o.storm);
    for t in tasks {
        if let Some((ms, ws)) = t.await.unwrap() {
            lat.push(ms);
            open.push(ws);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server.pid()) - cpu0;
    let ok = lat.len();
    let p = percentiles(lat);
    row.insert("connect p50 (ms)", format!("{:.2}", p.p50));
    row.insert("connect p99 (ms)", format!("{:.2}", p.p99));
    row.insert("connects/s", format!("{:.0}", ok as f64 / elapsed));
    row.insert("connect failures", format!("{}", failed.load(Ordering::Relaxed)));
    row.insert("server CPU ms / connect", format!("{:.3}", cpu * 1e3 / ok.max(1) as f64));
    drop(open);
}

async fn idle(server: &Server, o: &Opts, row: &mut Row) {
    let http = reqwest::Client::new();
    let docs = 100;
    let mut warm = Vec::new();
    for d in 0..docs {
        let doc = format!("idle-{d}");
        server.prepare_doc(&http, &doc).await;
        warm.push(connect_synced(&server.ws_url(&doc)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = rss_kib(server.pid());
    let gate = Arc::new(Semaphore::new(64));
    let urls: Arc<Vec<String>> = Arc::new((0..docs).map(|d| server.ws_url(&format!("idle-{d}"))).collect());
    let mut tasks = Vec::with_capacity(o.idle);
    for i in 0..o.idle {
        let (urls, gate) = (urls.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let ws = connect_synced(&urls[i % urls.len()]).await.ok()?;
            drop(permit);
            // Keep reading so pings are answered, like a real idle client.
            let (tx, mut rx) = ws.split();
            let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
            Some((tx, reader))
        }));
    }
    let mut open = Vec::with_capacity(o.idle);
    for t in tasks {
        if let Some(c) = t.await.unwrap() {
            open.push(c);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still_open = open.iter().filter(|(_, r)| !r.is_finished()).count();
    let rss1 = rss_kib(server.pid());
    row.insert("idle conns held", format!("{still_open} / {}", o.idle));
    row.insert("server RSS (MiB, idle)", format!("{:.1}", rss1 as f64 / 1024.0));
    row.insert("RSS KiB / idle conn", format!("{:.2}", (rss1.saturating_sub(rss0)) as f64 / still_open.max(1) as f64));
    for (_, r) in open {
        r.abort();
    }
    drop(warm);
}

const ORDER: &[&str] = &[
    "persists every update",
    "fan-out p50 (ms)",
    "fan-out p99 (ms)",
    "fan-out max (ms)",
    "delivered updates/s",
    "delivered / expected",
    "server CPU s (fan-out)",
    "server CPU µs / delivered update",
    "server receipt→broadcast p50 / p99 (ms, ≤)",
    "server commit p50 / p99 (ms, ≤)",
    "connect p50 (ms)",
    "connect p99 (ms)",
    "connects/s",
    "connect failures",
    "server CPU ms / connect",
    "idle conns held",
    "server RSS (MiB, idle)",
    "RSS KiB / idle conn",
];

fn print_table(o: &Opts, rows: &[(String, Row)]) {
    println!();
    println!(
        "fan-out: {} docs x ({} subscribers + 1 writer) x {} updates/s for {} s; storm: {} connects, {} in flight; idle: {} conns",
        o.docs, o.subs, o.rate, o.secs, o.storm, o.storm_concurrency, o.idle
    );
    if o.rounds > 1 {
        println!("medians over {} rounds (delivery counts summed)", o.rounds);
    }
    let ratio = rows.iter().any(|(p, _)| p == "wiresocket") && rows.iter().any(|(p, _)| p == "y-sweet");
    print!("| {:<34} |", "metric");
    for (peer, _) in rows {
        print!(" {peer:>14} |");
    }
    if ratio {
        print!(" {:>18} |", "wiresocket/y-sweet");
    }
    println!();
    print!("|{}|", "-".repeat(36));
    for _ in rows {
        print!("{}|", "-".repeat(16));
    }
    if ratio {
        print!("{}|", "-".repeat(20));
    }
    println!();
    for key in ORDER {
        print!("| {key:<34} |");
        for (_, row) in rows {
            print!(" {:>14} |", row.get(key).map_or("-", String::as_str));
        }
        if ratio {
            let num = |p: &str| {
                rows.iter().find(|(n, _)| n == p).and_then(|(_, r)| r.get(key)).and_then(|v| v.parse::<f64>().ok())
            };
            match (num("wiresocket"), num("y-sweet")) {
                (Some(a), Some(b)) if b != 0.0 => print!(" {:>18} |", format!("{:.2}", a / b)),
                _ => print!(" {:>18} |", ""),
            }
        }
        println!();
    }
}

#[tokio::main]
async fn main() {
    let o = parse_opts();
    let mut rounds: Vec<Vec<(String, Row)>> = Vec::new();
    for round in 0..o.rounds {
        let mut rows = Vec::new();
        if o.rounds > 1 {
            eprintln!("== round {} of {}", round + 1, o.rounds);
        }
        for i in 0..o.peers.len() {
            let peer = &o.peers[(round + i) % o.peers.len()];
            rows.push((peer.clone(), run_peer(peer, &o).await));
        }
        rows.sort_by_key(|(peer, _)| o.peers.iter().position(|p| p == peer));
        rounds.push(rows);
    }
    let merged: Vec<(String, Row)> = o
        .peers
        .iter()
        .map(|peer| {
            let runs: Vec<&Row> =
                rounds.iter().filter_map(|r| r.iter().find(|(p, _)| p == peer).map(|(_, row)| row)).collect();
            (peer.clone(), merge_rounds(&runs))
        })
        .collect();
    print_table(&o, &merged);
    if o.rounds > 1 {
        print_round_ratios(&rounds);
    }
}

/// Every scenario once against `peer`, each on a freshly started server.
async fn run_peer(peer: &str, o: &Opts) -> Row {
    let mut row = Row::new();
    row.insert(
        "persists every update",
        match peer {
            "wiresocket" => "yes".into(),
            "y-sweet" => "10 s ckpt".into(),
            _ => "no (memory)".into(),
        },
    );
    eprintln!("== {peer}: fan-out");
    let s = Server::start(peer, o).await;
    fan_out(&s, o, &mut row).await;
    s.stop();
    eprintln!("== {peer}: connect storm");
    let s = Server::start(peer, o).await;
    connect_storm(&s, o, &mut row).await;
    s.stop();
    if o.idle > 0 {
        eprintln!("== {peer}: {} idle connections", o.idle);
        let s = Server::start(peer, o).await;
        idle(&s, o, &mut row).await;
        s.stop();
    }
    row
}

/// One row from a peer's rounds: the median of a number; of an `a / b`
/// pair, the sums for delivery counts and the largest of each side for
/// the rest (histogram bounds); anything else as the first round had it.
fn merge_rounds(runs: &[&Row]) -> Row {
    let mut merged = Row::new();
    let Some(first) = runs.first() else { return merged };
    for (&key, value) in first.iter() {
        let values: Vec<&str> = runs.iter().filter_map(|r| r.get(key).map(String::as_str)).collect();
        let numbers: Option<Vec<f64>> = values.iter().map(|v| v.parse::<f64>().ok()).collect();
        let pairs: Option<Vec<(f64, f64)>> = values
            .iter()
            .map(|v| {
                let (a, b) = v.split_once(" / ")?;
                Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
            })
            .collect();
        let out = if let Some(mut numbers) = numbers.filter(|n| !n.is_empty()) {
            numbers.sort_by(f64::total_cmp);
            let n = numbers.len();
            let median = if n % 2 == 1 { numbers[n / 2] } else { (numbers[n / 2 - 1] + numbers[n / 2]) / 2.0 };
            let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
            format!("{median:.decimals$}")
        } else if let Some(pairs) = pairs.filter(|p| !p.is_empty()) {
            let (a, b) = if key.contains("delivered") || key.contains("held") {
                pairs.iter().fold((0.0, 0.0), |(x, y), (a, b)| (x + a, y + b))
            } else {
                pairs.iter().fold((f64::MIN, f64::MIN), |(x, y), (a, b)| (x.max(*a), y.max(*b)))
            };
            format!("{a} / {b}")
        } else {
            value.clone()
        };
        merged.insert(key, out);
    }
    merged
}

/// The metrics with goals, as the WireSocket/y-sweet ratio of each round.
const GOAL_METRICS: &[&str] = &[
    "fan-out p99 (ms)",
    "fan-out max (ms)",
    "server CPU µs / delivered update",
    "connects/s",
    "server CPU ms / connect",
    "RSS KiB / idle conn",
];

fn print_round_ratios(rounds: &[Vec<(String, Row)>]) {
    let value = |rows: &[(String, Row)], peer: &str, key: &str| {
        rows.iter().find(|(p, _)| p == peer).and_then(|(_, r)| r.get(key)).and_then(|v| v.parse::<f64>().ok())
    };
    println!();
    println!("per round (WireSocket value, then WireSocket/y-sweet):");
    for key in GOAL_METRICS {
        let cells: Vec<String> = rounds
            .iter()
            .filter_map(|rows| {
                let ws = value(rows, "wiresocket", key)?;
                let ys = value(rows, "y-sweet", key).filter(|v| *v != 0.0);
                Some(match ys {
                    Some(ys) => format!("{ws} ({:.2})", ws / ys),
                    None => format!("{ws}"),
                })
            })
            .collect();
        if !cells.is_empty() {
            println!("| {key:<34} | {} |", cells.join(" | "));
        }
    }
}
