//! Nothing a client sends logs above WARN: the real binary, its log on a
//! pipe, driven with bad input on every route family; any ERROR line fails.
//! On a pipe the log has no ANSI colour codes either.

use crate::crash::{binary, free_port, wait_ready};
use crate::helpers::*;
use crate::yclient::{connect, sync_url};
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Reads a child's stream to the end on a thread.
pub(crate) fn capture(
    mut stream: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

#[tokio::test]
async fn bad_input_never_logs_an_error_and_the_piped_log_has_no_colour() {
    let dir = temp_dir();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&*dir)
        .args(["--max-message-size", "4096", "--rate-limit-auth-per-ip", "0"])
        .env("WIRESOCKET_LOG", "info")
        .env("WIRESOCKET_CORS_ORIGINS", "https://a.example, https://b.example")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let readers =
        [capture(server.stdout.take().unwrap(), log.clone()), capture(server.stderr.take().unwrap(), log.clone())];
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;
    let url = |path: &str| format!("{base}{path}");

    // A tenant, a session, an app and its token, to be wrong with.
    let body = json!({"email": "logs@example.com", "password": PASSWORD, "tenant_name": "Logs"});
    let setup: Value = http.post(url("/v1/setup")).json(&body).send().await.unwrap().json().await.unwrap();
    let tid = setup["tenant_id"].as_str().unwrap().to_owned();
    let body = json!({"email": "logs@example.com", "password": PASSWORD});
    let login: Value = http.post(url("/v1/auth/login")).json(&body).send().await.unwrap().json().await.unwrap();
    let session = login["session_token"].as_str().unwrap().to_owned();
    let body = json!({"name": "logs", "region": "eu-central-1", "plan": "enterprise"});
    let r = http.post(url(&format!("/v1/tenants/{tid}/apps"))).bearer_auth(&session).json(&body).send().await;
    let created: Value = r.unwrap().json().await.unwrap();
    let (client_id, secret) = (created["client_id"].as_str().unwrap(), created["client_secret"].as_str().unwrap());
    let form = [("grant_type", "client_credentials")];
    let r = http.post(url("/oauth/token")).basic_auth(client_id, Some(secret)).form(&form).send().await;
    let token: Value = r.unwrap().json().await.unwrap();
    let m2m = token["access_token"].as_str().unwrap().to_owned();

    // The env's origin list reached the binary.
    let r = http.get(url("/v1/plans")).header("origin", "https://b.example").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://b.example");

    // Every route and method of the API, with path values that name
    // nothing or are not UTF-8, with each kind of credential and body.
    let doc: Value = http.get(url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let forged = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im5vcGUifQ.eyJzdWIiOiJ4In0.c2ln";
    let oversized = vec![b' '; 2 * 1024 * 1024];
    let once = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mut requests = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if template == "/v1/auth/logout" {
                // Would end the session the rest of the loop is wrong with.
                continue;
            }
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for value in ["%FF%FE", "not-a-uuid", "00000000-0000-0000-0000-000000000000", "%00"] {
                let mut path = template.clone();
                for param in ["{tid}", "{aid}", "{kid}", "{uid}", "{name}", "{id}", "{wid}", "{doc}"] {
                    path = path.replace(param, value);
                }
                // A real tenant with a bad rest, too.
                let in_tenant = template.replace("{tid}", &tid);
                let in_tenant = ["{aid}", "{kid}", "{uid}", "{name}", "{id}", "{wid}", "{doc}"]
                    .iter()
                    .fold(in_tenant, |p, param| p.replace(param, value));
                for path in [&path, &in_tenant] {
                    for auth in [Some(session.as_str()), Some(m2m.as_str()), Some(forged), None] {
                        for (ctype, body) in [
                            ("application/json", br#"["x"]"#.to_vec()),
                            ("application/json", b"{\"name\": ".to_vec()),
                            ("application/x-www-form-urlencoded", b"grant_type=%ZZ&&==".to_vec()),
                        ] {
                            let mut req =
                                http.request(method.clone(), url(path)).header("content-type", ctype).body(body);
                            if let Some(a) = auth {
                                req = req.bearer_auth(a);
                            }
                            req.send().await.unwrap();
                            requests += 1;
                        }
                    }
                    // The server may answer before reading it all and close: a
                    // client of its own, so no pooled connection is left broken.
                    let req = once.request(method.clone(), url(path)).bearer_auth(&session);
                    let _ = req.header("content-type", "application/json").body(oversized.clone()).send().await;
                }
            }
        }
    }
    assert!(requests > 1000, "{requests}");
    eprintln!("{requests} route × value × credential × body requests");
    // Still a live session: the loop was wrong with a valid one throughout.
    assert_eq!(http.get(url("/v1/me")).bearer_auth(&session).send().await.unwrap().status(), 200);

    // Credentials that are not credentials.
    for value in
        [&b"Bearer \xff\xfe"[..], b"Bearer ", b"Basic !!!", b"Bearer a.b.c", b"Bearer ey.ey.ey", forged.as_bytes()]
    {
        for path in ["/v1/me", "/v1/docs", "/oauth/token", "/oauth/introspect", "/v1/client-tokens"] {
            let auth = HeaderValue::from_bytes(value).unwrap();
            http.post(url(path)).header("authorization", auth.clone()).form(&form).send().await.unwrap();
            http.get(url(path)).header("authorization", auth).send().await.unwrap();
        }
    }
    let bad_oauth: [&[(&str, &str)]; 5] = [
        &[("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", "wrong")],
        &[("grant_type", "password"), ("username", "logs@example.com"), ("password", "wrong password")],
        &[("grant_type", "refresh_token"), ("refresh_token", "rt_nope")],
        &[("grant_type", "urn:nope")],
        &[("grant_type", "client_credentials"), ("scope", "\u{1}")],
    ];
    for form in bad_oauth {
        http.post(url("/oauth/token")).form(form).send().await.unwrap();
    }
    // Refresh-token reuse: a security event, but the client's doing.
    let rt = token["refresh_token"].as_str().unwrap();
    let refresh = [("grant_type", "refresh_token"), ("refresh_token", rt)];
    for _ in 0..2 {
        http.post(url("/oauth/token")).basic_auth(client_id, Some(secret)).form(&refresh).send().await.unwrap();
    }
    for _ in 0..8 {
        let body = json!({"email": "logs@example.com", "password": "not the password"});
        http.post(url("/v1/auth/login")).json(&body).send().await.unwrap();
    }
    for (path, body) in [
        ("/v1/auth/password-reset", json!({"email": "nobody@example.com"})),
        ("/v1/auth/password-reset/confirm", json!({"token": "prt_nope", "password": PASSWORD})),
        ("/v1/invites/accept", json!({"token": "inv_nope", "password": PASSWORD})),
        ("/v1/me/mfa/verify", json!({"code": "000000"})),
        ("/v1/setup", json!({"email": "again@example.com", "password": PASSWORD, "tenant_name": "x"})),
        ("/v1/client-tokens", json!({"docs": ["\u{0}"], "ttl_seconds": -1})),
    ] {
        http.post(url(path)).bearer_auth(&session).json(&body).send().await.unwrap();
        http.post(url(path)).bearer_auth(&m2m).json(&body).send().await.unwrap();
    }

    // Document names and updates the data plane refuses.
    let long = "d".repeat(300);
    for name in ["%FF%FE", "%01", long.as_str(), "a%2F%FF"] {
        http.get(url(&format!("/v1/docs/{name}"))).bearer_auth(&m2m).send().await.unwrap();
        http.get(url(&format!("/v1/discovery/{name}"))).bearer_auth(&m2m).send().await.unwrap();
    }
    for update in [vec![0xff, 0xff, 0xff], vec![], vec![1u8; 5000]] {
        http.post(url("/v1/docs/logs/update")).bearer_auth(&m2m).body(update).send().await.unwrap();
    }

    // Sync: no upgrade, bad upgrades, then a live socket fed garbage.
    let plain = url(&format!("/v1/sync/logs?token={m2m}"));
    http.get(&plain).send().await.unwrap();
    http.get(&plain)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "7")
        .header("sec-websocket-key", "nope")
        .send()
        .await
        .unwrap();
    for (doc, token) in [("logs", "a.b.c"), ("logs", ""), ("logs", forged), ("%FF%FE", m2m.as_str())] {
        let url = sync_url(&base, "x", token).replacen("/v1/sync/x?", &format!("/v1/sync/{doc}?"), 1);
        assert!(tokio_tungstenite::connect_async(url).await.is_err(), "{doc} {token}");
    }
    for garbage in [vec![0u8, 2, 0xff, 0xff, 0xff, 0xff], vec![9, 9, 9], vec![1, 0xff], vec![0u8; 6000]] {
        let mut client = connect(&base, "logs", &m2m, None).await.unwrap();
        client.sync().await;
        client.send_raw(garbage).await;
        client.closed_with(Duration::from_secs(2)).await;
    }
    let mut client = connect(&base, "logs", &m2m, Some("https://evil.example")).await.unwrap();
    client.send_text("{\"type\": \"refresh\", \"token\": \"a.b.c\"}").await;
    client.send_text("not json").await;
    client.closed_with(Duration::from_secs(2)).await;

    // Let the last refusals be logged, then stop the server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill().unwrap();
    server.wait().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
    let log = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(log.contains("wiresocket listening"), "the log was not captured:\n{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in a piped log:\n{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "client input logged at ERROR:\n{}", errors.join("\n"));
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    eprintln!("{} WARN lines from bad input:\n{}", warnings.len(), warnings.join("\n"));
}
