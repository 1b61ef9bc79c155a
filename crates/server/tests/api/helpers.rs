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
    let url = format!("http://127.0.0.1:{}", app.port());
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
