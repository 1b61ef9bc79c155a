//! TLS on the listener (`--tls-cert`, `--tls-key`): HTTPS and WSS only,
//! HSTS, TLS 1.2 and 1.3, and a reload that swaps the certificate for new
//! handshakes while open connections go on. The certificates come from a
//! private CA made with `openssl` for the test ([`TestCa`]).

use crate::backends::TestCa;
use crate::crash::{binary, free_port};
use crate::helpers::*;
use crate::logs::capture;
use crate::yclient::{YClient, connect_tls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A TLS client trusting only `ca`, speaking only `versions`.
fn client_config(ca: &Path, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn trusting(ca: &Path) -> Arc<rustls::ClientConfig> {
    client_config(ca, rustls::DEFAULT_VERSIONS)
}

fn https_client(ca: &Path) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder().tls_certs_only([cert]).timeout(Duration::from_secs(10)).build().unwrap()
}

/// A handshake with the listener: the certificate it served and the
/// session's protocol and ALPN, or why it failed.
async fn handshake(
    app: &TestApp,
    config: Arc<rustls::ClientConfig>,
) -> Result<(CertificateDer<'static>, rustls::ProtocolVersion, Option<Vec<u8>>), String> {
    handshake_at(app.url.rsplit(':').next().unwrap().parse().unwrap(), config).await
}

async fn handshake_at(
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> Result<(CertificateDer<'static>, rustls::ProtocolVersion, Option<Vec<u8>>), String> {
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let cert = session.peer_certificates().unwrap()[0].clone().into_owned();
    Ok((cert, session.protocol_version().unwrap(), session.alpn_protocol().map(<[u8]>::to_vec)))
}

/// An app served with TLS from `cert`/`key`; its `client` trusts `ca`.
async fn spawn_tls(dir: &Path, cert: PathBuf, key: PathBuf, ca: &Path) -> TestApp {
    let mut config = test_config(dir);
    config.tls = Some(server::config::TlsFiles { cert, key });
    let mut app = spawn_with(config).await;
    app.client = https_client(ca);
    app
}

fn subdir(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).unwrap();
    path
}

async fn joined(app: &TestApp, doc: &str, token: &str, tls: Arc<rustls::ClientConfig>) -> YClient {
    let mut c = connect_tls(&app.url, doc, token, tls).await.unwrap();
    c.sync().await;
    c
}

#[tokio::test]
async fn with_tls_the_listener_speaks_https_and_wss_only() {
    let dir = temp_dir();
    let ca = TestCa::new(&dir);
    let app = spawn_tls(&dir.join("data"), ca.server_cert.clone(), ca.server_key.clone(), &ca.ca_cert).await;
    assert!(app.url.starts_with("https://"), "{}", app.url);

    // HTTPS, with HSTS beside the other security headers.
    let r = app.get("/healthz").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // Discovery and token issuers name the https:// URL.
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "free", &[]).await;
    let m2m = app.m2m_token(&creds).await;

    // Plain HTTP on the TLS port gets no answer.
    let plain = app.url.replacen("https://", "http://", 1);
    assert!(reqwest::Client::new().get(format!("{plain}/healthz")).send().await.is_err());

    // TLS 1.2 and 1.3 both work; ALPN settles on HTTP/1.1 (WebSocket needs it).
    for (versions, expect) in [
        (&[&rustls::version::TLS12][..], rustls::ProtocolVersion::TLSv1_2),
        (&[&rustls::version::TLS13][..], rustls::ProtocolVersion::TLSv1_3),
    ] {
        let (_, version, alpn) = handshake(&app, client_config(&ca.ca_cert, versions)).await.unwrap();
        assert_eq!(version, expect);
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    }

    // WSS: two clients of one document, small and large updates (1 MiB is
    // far beyond what rustls buffers at once, so records wait for the
    // socket and go out as it drains).
    let mut a = joined(&app, "notes", &m2m, trusting(&ca.ca_cert)).await;
    let mut b = joined(&app, "notes", &m2m, trusting(&ca.ca_cert)).await;
    a.insert("hello over TLS").await;
    assert!(b.wait_for(|c| c.text() == "hello over TLS", Duration::from_secs(5)).await, "{}", b.text());
    let big = "x".repeat(1024 * 1024);
    b.insert(&big).await;
    let want = format!("hello over TLS{big}");
    assert!(a.wait_for(|c| c.text() == want, Duration::from_secs(20)).await, "{} bytes", a.text().len());
    for i in 0..200 {
        a.insert(&i.to_string()).await;
    }
    let want: String = format!("hello over TLS{big}{}", (0..200).map(|i| i.to_string()).collect::<String>());
    assert!(b.wait_for(|c| c.text() == want, Duration::from_secs(20)).await);

    // What the clients wrote is what the REST API reads back.
    let r = app.get("/v1/docs/notes").bearer_auth(&m2m).send().await.unwrap();
    assert_eq!(r.status(), 200);
    a.close().await;
    b.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_reload_serves_the_new_pair_to_new_handshakes_and_keeps_open_connections() {
    let dir = temp_dir();
    let old = TestCa::new(&subdir(&dir, "old"));
    let new = TestCa::new(&subdir(&dir, "new"));
    let live = subdir(&dir, "live");
    let (cert, key) = (live.join("tls.crt"), live.join("tls.key"));
    std::fs::copy(&old.server_cert, &cert).unwrap();
    std::fs::copy(&old.server_key, &key).unwrap();
    let mut app = spawn_tls(&dir.join("data"), cert.clone(), key.clone(), &old.ca_cert).await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "free", &[]).await;
    let m2m = app.m2m_token(&creds).await;
    let mut before = joined(&app, "shared", &m2m, trusting(&old.ca_cert)).await;
    before.insert("a").await;
    let served = handshake(&app, trusting(&old.ca_cert)).await.unwrap().0;
    assert_eq!(served.as_ref(), CertificateDer::from_pem_file(&old.server_cert).unwrap().as_ref());

    // The new pair in place, then the reload (what SIGHUP does).
    std::fs::copy(&new.server_cert, &cert).unwrap();
    std::fs::copy(&new.server_key, &key).unwrap();
    let tls = app.tls.clone().unwrap();
    tls.reload().unwrap();
    let err = handshake(&app, trusting(&old.ca_cert)).await.unwrap_err();
    assert!(err.contains("UnknownIssuer") || err.contains("invalid peer certificate"), "{err}");
    let served = handshake(&app, trusting(&new.ca_cert)).await.unwrap().0;
    assert_eq!(served.as_ref(), CertificateDer::from_pem_file(&new.server_cert).unwrap().as_ref());
    app.client = https_client(&new.ca_cert);
    assert_eq!(app.get("/healthz").send().await.unwrap().status(), 200);

    // The connection opened before the reload goes on, both ways.
    let mut after = joined(&app, "shared", &m2m, trusting(&new.ca_cert)).await;
    assert_eq!(after.text(), "a");
    before.insert("b").await;
    assert!(after.wait_for(|c| c.text() == "ab", Duration::from_secs(5)).await, "{}", after.text());
    after.insert("c").await;
    assert!(before.wait_for(|c| c.text() == "abc", Duration::from_secs(5)).await, "{}", before.text());

    // A pair that does not match, a key file that is no key, a missing
    // file: refused, naming the file, and the last good pair stays.
    std::fs::copy(&old.server_key, &key).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(err.contains("does not belong to the certificate"), "{err}");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGJ5dGVz\n-----END PRIVATE KEY-----\n").unwrap();
    let err = tls.reload().unwrap_err();
    assert!(err.contains("tls.key"), "{err}");
    assert!(!err.contains("c2VjcmV0"), "the key file's content is in the error: {err}");
    std::fs::remove_file(&cert).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(err.contains("tls.crt"), "{err}");
    let served = handshake(&app, trusting(&new.ca_cert)).await.unwrap().0;
    assert_eq!(served.as_ref(), CertificateDer::from_pem_file(&new.server_cert).unwrap().as_ref());
    before.insert("d").await;
    assert!(after.wait_for(|c| c.text() == "abcd", Duration::from_secs(5)).await);
    before.close().await;
    after.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_bad_pair_or_half_a_pair_stops_the_start_with_the_reason() {
    let dir = temp_dir();
    let one = TestCa::new(&subdir(&dir, "one"));
    let two = TestCa::new(&subdir(&dir, "two"));
    let mut config = test_config(&dir.join("data"));
    config.tls = Some(server::config::TlsFiles { cert: one.server_cert.clone(), key: two.server_key.clone() });
    let err = server::Application::build(config).await.err().unwrap().to_string();
    assert!(err.contains("does not belong to the certificate"), "{err}");

    // One of the two flags alone is a configuration error, flags or file.
    let layer = server::config::ConfigLayer {
        data_dir: Some(dir.join("data")),
        tls_cert: Some(one.server_cert.clone()),
        ..Default::default()
    };
    let err = server::Config::resolve(layer, None).unwrap_err().to_string();
    assert!(err.contains("--tls-cert and --tls-key go together"), "{err}");
}

fn pem_of(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

/// The real binary: SIGHUP reloads the pair (a bad one is logged and the
/// old one kept) while a WSS connection stays open; on a non-loopback
/// address it warns at start when it has no TLS, and only then.
#[tokio::test]
async fn the_binary_reloads_its_certificate_on_sighup_and_warns_without_tls() {
    let dir = temp_dir();
    let (old, new) = (TestCa::new(&subdir(&dir, "old")), TestCa::new(&subdir(&dir, "new")));
    let live = subdir(&dir, "live");
    let (cert, key) = (live.join("tls.crt"), live.join("tls.key"));
    std::fs::copy(&old.server_cert, &cert).unwrap();
    std::fs::copy(&old.server_key, &key).unwrap();
    let start = |data: &str, port: u16, tls: bool| {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--listen", &format!("0.0.0.0:{port}"), "--data-dir"])
            .arg(subdir(&dir, data))
            .env("WIRESOCKET_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if tls {
            cmd.env("WIRESOCKET_TLS_CERT", &cert).env("WIRESOCKET_TLS_KEY", &key);
        }
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        capture(child.stdout.take().unwrap(), log.clone());
        capture(child.stderr.take().unwrap(), log.clone());
        (child, log)
    };
    let text = |log: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    // Without TLS on 0.0.0.0: the warning.
    let port = free_port();
    let (mut plain, plain_log) = start("plain", port, false);
    let http = reqwest::Client::new();
    eventually("the plain server", async || {
        http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    plain.kill().unwrap();
    plain.wait().unwrap();
    assert!(text(&plain_log).contains("listening without TLS on a non-loopback address"), "{}", text(&plain_log));

    // With TLS: no warning, and the old pair served.
    let port = free_port();
    let (mut child, log) = start("tls", port, true);
    let base = format!("https://127.0.0.1:{port}");
    let https = https_client(&old.ca_cert);
    eventually("the TLS server", async || {
        https.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(!text(&log).contains("without TLS"), "{}", text(&log));
    assert_eq!(handshake_at(port, trusting(&old.ca_cert)).await.unwrap().0, pem_of(&old.server_cert));
    let url = |p: &str| format!("{base}{p}");
    let body = serde_json::json!({"email": "tls@example.com", "password": PASSWORD, "tenant_name": "TLS"});
    let setup: serde_json::Value = https.post(url("/v1/setup")).json(&body).send().await.unwrap().json().await.unwrap();
    let tid = setup["tenant_id"].as_str().unwrap();
    let login: serde_json::Value = https
        .post(url("/v1/auth/login"))
        .json(&serde_json::json!({"email": "tls@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = login["session_token"].as_str().unwrap();
    let body = serde_json::json!({"name": "tls", "region": "eu-central-1", "plan": "starter"});
    let r = https.post(url(&format!("/v1/tenants/{tid}/apps"))).bearer_auth(session).json(&body).send().await;
    let created: serde_json::Value = r.unwrap().json().await.unwrap();
    let r = https
        .post(url("/oauth/token"))
        .basic_auth(created["client_id"].as_str().unwrap(), created["client_secret"].as_str())
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let token: serde_json::Value = r.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();
    let mut open = connect_tls(&base, "d", token, trusting(&old.ca_cert)).await.unwrap();
    open.sync().await;
    open.insert("before").await;

    // SIGHUP with the new pair in place: new handshakes get it.
    std::fs::copy(&new.server_cert, &cert).unwrap();
    std::fs::copy(&new.server_key, &key).unwrap();
    let hup = |child: &std::process::Child| {
        assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    };
    hup(&child);
    eventually("the new certificate", async || {
        handshake_at(port, trusting(&new.ca_cert)).await.is_ok_and(|(c, ..)| c == pem_of(&new.server_cert))
    })
    .await;
    assert!(text(&log).contains("TLS certificate reloaded"), "{}", text(&log));

    // A bad pair: logged, and the last good one still served.
    std::fs::copy(&old.server_key, &key).unwrap();
    hup(&child);
    eventually("the refusal in the log", async || text(&log).contains("TLS certificate not reloaded")).await;
    assert!(text(&log).contains("does not belong to the certificate"), "{}", text(&log));
    assert_eq!(handshake_at(port, trusting(&new.ca_cert)).await.unwrap().0, pem_of(&new.server_cert));

    // The connection opened before both reloads is still there, both ways.
    let mut late = connect_tls(&base, "d", token, trusting(&new.ca_cert)).await.unwrap();
    late.sync().await;
    assert_eq!(late.text(), "before");
    open.insert(" and after").await;
    assert!(late.wait_for(|c| c.text() == "before and after", Duration::from_secs(5)).await, "{}", late.text());
    open.close().await;
    late.close().await;
    child.kill().unwrap();
    child.wait().unwrap();
}
