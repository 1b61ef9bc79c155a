//! `spawn_app()` starts the real server on port 0 with a temp data dir, a
//! manual clock and the fast password policy; `TestApp` has typed helpers.

use auth::password::PasswordPolicy;
use domain::clock::ManualClock;
use reqwest::{Client, RequestBuilder, Response};
use serde_json::{Value, json};
use server::{Application, Config};
use std::path::PathBuf;
use std::sync::{Arc, Once};
use time::OffsetDateTime;

pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub url: String,
    pub client: Client,
    pub clock: Arc<ManualClock>,
    pub data_dir: PathBuf,
    /// The data dir this app owns (removed with it), when `spawn_app` made it.
    pub owned_dir: Option<TempDir>,
    pub state: server::state::AppState,
    /// The listener's TLS, when the config has `--tls-cert` (the URL is then `https://`).
    pub tls: Option<server::tls::TlsListener>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
        }
    });
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("wiresocket-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config::for_data_dir(data_dir).unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.password_policy = PasswordPolicy::danger_test_minimum();
    // Every test client is 127.0.0.1 and the clock stands still: the
    // per-IP limit would otherwise fire in tests that log in a lot. The
    // rate-limit tests set their own.
    config.rate_limits.auth_per_ip = server::config::per_minute(1_000_000);
    config
}

pub async fn spawn_app() -> TestApp {
    let dir = temp_dir();
    let mut app = spawn_with(test_config(&dir)).await;
    app.owned_dir = Some(dir);
    app
}

pub async fn spawn_with(config: Config) -> TestApp {
    init_tracing();
    let data_dir = config.data_dir.clone();
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = Application::build_with_clock(config, clock.clone()).await.unwrap();
    let tls = app.tls().cloned();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        app.run_until(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestApp {
        url,
        client: Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        clock,
        data_dir,
        owned_dir: None,
        state,
        tls,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

/// A tenant set up through `/v1/setup`, with its owner's session.
pub struct Owner {
    pub email: String,
    pub session: String,
    pub user_id: String,
    pub tenant_id: String,
}

/// A created app with its one-time secret.
pub struct TestAppCreds {
    pub id: String,
    pub client_id: String,
    pub client_secret: String,
    pub body: Value,
}

impl TestApp {
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(format!("{}{path}", self.url))
    }
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(format!("{}{path}", self.url))
    }
    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.client.patch(format!("{}{path}", self.url))
    }
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.client.delete(format!("{}{path}", self.url))
    }

    pub async fn setup(&self) -> Owner {
        let email = format!("owner-{}@example.com", uuid::Uuid::new_v4().simple());
        let r = self
            .post("/v1/setup")
            .json(&json!({"email": email, "password": PASSWORD, "tenant_name": "Acme"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let body: Value = r.json().await.unwrap();
        let session = self.login(&email, PASSWORD).await;
        Owner {
            email,
            session,
            user_id: body["user_id"].as_str().unwrap().to_owned(),
            tenant_id: body["tenant_id"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let r = self.post("/v1/auth/login").json(&json!({"email": email, "password": password})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        body["session_token"].as_str().unwrap().to_owned()
    }

    pub async fn create_app(&self, owner: &Owner, plan: &str, domains: &[&str]) -> TestAppCreds {
        let r = self
            .post(&format!("/v1/tenants/{}/apps", owner.tenant_id))
            .bearer_auth(&owner.session)
            .json(&json!({"name": "My app", "region": "eu-central-1", "plan": plan, "allowed_domains": domains}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let body: Value = r.json().await.unwrap();
        TestAppCreds {
            id: body["id"].as_str().unwrap().to_owned(),
            client_id: body["client_id"].as_str().unwrap().to_owned(),
            client_secret: body["client_secret"].as_str().unwrap().to_owned(),
            body,
        }
    }

    /// `grant_type=client_credentials` with HTTP Basic.
    pub async fn client_credentials(&self, app: &TestAppCreds) -> Value {
        let r = self.token_request(app, &[("grant_type", "client_credentials")]).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn token_request(&self, app: &TestAppCreds, form: &[(&str, &str)]) -> Response {
        self.post("/oauth/token").basic_auth(&app.client_id, Some(&app.client_secret)).form(form).send().await.unwrap()
    }

    pub async fn m2m_token(&self, app: &TestAppCreds) -> String {
        self.client_credentials(app).await["access_token"].as_str().unwrap().to_owned()
    }
}

/// Asserts the status and the stable error code of a JSON error answer.
pub async fn assert_error(r: Response, status: u16, code: &str) -> Value {
    let actual = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(actual, status, "body: {body}");
    assert_eq!(body["error"], code, "body: {body}");
    body
}

impl TestApp {
    /// A second human, created directly in the store (invites come later).
    pub async fn create_user(&self, email: &str) -> String {
        let user = store::UserRecord {
            id: domain::ids::UserId::new(),
            email: email.to_owned(),
            password_hash: PasswordPolicy::danger_test_minimum().hash(PASSWORD).unwrap(),
            is_operator: false,
            created_at: self.clock_now(),
            name: None,
        };
        self.state.store.create_user(&user).await.unwrap();
        self.login(email, PASSWORD).await
    }

    pub fn clock_now(&self) -> OffsetDateTime {
        use domain::clock::Clock;
        self.clock.now()
    }

    /// Audit actions recorded for a tenant (None: platform-level), newest first.
    pub async fn audit_actions(&self, tenant: Option<&str>) -> Vec<String> {
        let tenant = tenant.map(|t| domain::ids::TenantId::parse(t).unwrap());
        self.state.store.list_audit(tenant, 500).await.unwrap().into_iter().map(|e| e.action).collect()
    }
}

/// A fresh user made a member of `tenant` with `role` straight in the
/// store; answers (session, user id).
pub async fn add_member(app: &TestApp, tenant: &str, email: &str, role: &str) -> (String, String) {
    let session = app.create_user(email).await;
    let user = app.state.store.get_user_by_email(email).await.unwrap().unwrap();
    let tid = domain::ids::TenantId::parse(tenant).unwrap();
    app.state.store.add_membership(tid, user.id, role, app.clock_now()).await.unwrap();
    (session, user.id.to_string())
}

/// RFC 4648 base32 (no padding), as authenticator apps read the secret.
pub fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut buf, mut bits) = (Vec::new(), 0u64, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|&a| a == c.to_ascii_uppercase()).expect("base32 character") as u64;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

/// What an authenticator app holding `secret` (base32) shows at the app's clock time.
pub fn totp_now(app: &TestApp, secret: &str) -> String {
    let secret = auth::totp::TotpSecret::from_base32(secret).unwrap();
    secret.code_at(app.clock_now().unix_timestamp() as u64)
}

/// One `.eml` of the outbox: its headers and its decoded body.
pub struct OutboxMail {
    pub headers: String,
    pub body: String,
}

/// Decodes a quoted-printable body (RFC 2045 §6.7), as a mail client would;
/// an `=` not followed by two hex digits stays as it is.
pub fn decode_quoted_printable(s: &str) -> String {
    let joined = s.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) if bytes[i] == b'=' => {
                out.push(b);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

impl TestApp {
    pub fn outbox(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    /// Every message written to the outbox for `to`.
    pub fn mails_to(&self, to: &str) -> Vec<OutboxMail> {
        let Ok(dir) = std::fs::read_dir(self.outbox()) else {
            return Vec::new();
        };
        let mut mails = Vec::new();
        for entry in dir {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "eml") {
                continue;
            }
            let raw = std::fs::read_to_string(&path).unwrap();
            let Some((headers, body)) = raw.split_once("\r\n\r\n") else { continue };
            if !headers.lines().any(|l| l.eq_ignore_ascii_case(&format!("To: {to}"))) {
                continue;
            }
            let body = if headers.to_ascii_lowercase().contains("content-transfer-encoding: quoted-printable") {
                decode_quoted_printable(body)
            } else {
                body.to_owned()
            };
            mails.push(OutboxMail { headers: headers.to_owned(), body });
        }
        mails
    }

    /// Waits (mail is sent in the background) until `count` messages to `to`
    /// exist, and answers the tokens with `prefix` found in links of them.
    pub async fn tokens_mailed_to(&self, to: &str, prefix: &str, count: usize) -> Vec<String> {
        for _ in 0..200 {
            let mails = self.mails_to(to);
            if mails.len() >= count {
                assert_eq!(mails.len(), count, "more mail to {to} than expected");
                return mails.iter().map(|m| token_in(&m.body, prefix)).collect();
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("no mail to {to} in the outbox {}", self.outbox().display());
    }
}

/// The `#token=<prefix>…` of the link in a mail body.
pub fn token_in(body: &str, prefix: &str) -> String {
    let marker = format!("#token={prefix}");
    let start = body.find(&marker).unwrap_or_else(|| panic!("no {marker} link in {body}")) + "#token=".len();
    body[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
}
