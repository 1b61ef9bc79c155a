//! The client commands against a running server: the real binary serves on
//! a free port with its own data directory, and the same binary runs each
//! command as a user would, with its own settings file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::zombie_processes)]

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use yrs::{GetString, ReadTxn, Text, Transact};

const BIN: &str = env!("CARGO_BIN_EXE_wiresocket");
const PASSWORD: &str = "correct horse battery staple";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wiresocket-cli-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(dir: &Path) -> Server {
    let port = free_port();
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.join("data"))
        .env("WIRESOCKET_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            return Server { child, url };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not become ready");
}

/// One CLI run, as a user's shell would start it.
struct Cli {
    server: String,
    config: PathBuf,
    env: Vec<(String, String)>,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    bytes: Vec<u8>,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

impl Cli {
    fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut child = Command::new(BIN)
            .args(args)
            .env("WIRESOCKET_SERVER", &self.server)
            .env("WIRESOCKET_CLI_CONFIG", &self.config)
            .env_remove("WIRESOCKET_TENANT")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let Output { status, stdout, stderr } = child.wait_with_output().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            bytes: stdout,
        }
    }

    fn with_app(&self, client_id: &str, secret: &str) -> Cli {
        let mut env = self.env.clone();
        env.push(("WIRESOCKET_CLIENT_ID".into(), client_id.into()));
        env.push(("WIRESOCKET_CLIENT_SECRET".into(), secret.into()));
        Cli { server: self.server.clone(), config: self.config.clone(), env }
    }
}

fn update_with(text: &str) -> Vec<u8> {
    let doc = yrs::Doc::new();
    let t = doc.get_or_insert_text("t");
    t.insert(&mut doc.transact_mut(), 0, text);
    doc.transact().encode_state_as_update_v1(&yrs::StateVector::default())
}

fn text_of(update: &[u8]) -> String {
    let doc = yrs::Doc::new();
    let t = doc.get_or_insert_text("t");
    let u = <yrs::Update as yrs::updates::decoder::Decode>::decode_v1(update).unwrap();
    doc.transact_mut().apply_update(u).unwrap();
    t.get_string(&doc.transact())
}

#[tokio::test]
async fn every_command_against_a_running_server() {
    let dir = scratch("all");
    let server = serve(&dir).await;
    let cli = Cli { server: server.url.clone(), config: dir.join("home").join("cli.toml"), env: Vec::new() };
    let pw = format!("{PASSWORD}\n");

    // Not logged in yet: a usage error that says what to run.
    let r = cli.run(&["apps", "list"], b"");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("wiresocket login"), "{}", r.stderr);

    // setup: the first user and tenant, logged in, the tenant chosen.
    let setup = cli
        .run(
            &["setup", "--email", "ops@example.com", "--tenant-name", "Acme", "--password-stdin", "--json"],
            pw.as_bytes(),
        )
        .ok()
        .json();
    let tid = setup["tenant_id"].as_str().unwrap().to_owned();
    let saved = std::fs::read_to_string(&cli.config).unwrap();
    assert!(!saved.contains(PASSWORD), "the password is never stored");
    assert!(saved.contains("session = "), "{saved}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&cli.config).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let me = cli.run(&["whoami", "--json"], b"").ok().json();
    assert_eq!(me["email"], "ops@example.com");
    let tenants = cli.run(&["tenants", "list"], b"").ok();
    assert!(tenants.stdout.lines().any(|l| l.starts_with('*') && l.contains(&tid)), "{}", tenants.stdout);

    // apps: create (secret once), list, show, update, plan.
    let created = cli
        .run(
            &[
                "apps",
                "create",
                "web",
                "--region",
                "eu-central-1",
                "--plan",
                "starter",
                "--domain",
                "app.example.com",
                "--json",
            ],
            b"",
        )
        .ok()
        .json();
    let aid = created["id"].as_str().unwrap().to_owned();
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let human = cli.run(&["apps", "create", "second", "--region", "eu-central-1"], b"").ok();
    assert!(human.stdout.contains("client_secret"), "{}", human.stdout);
    assert!(human.stderr.contains("shown only now"), "{}", human.stderr);
    let list = cli.run(&["apps", "list"], b"").ok();
    assert!(list.stdout.starts_with("ID "), "{}", list.stdout);
    assert!(list.stdout.contains("web") && list.stdout.contains("app.example.com"), "{}", list.stdout);
    assert_eq!(cli.run(&["apps", "list", "--json"], b"").ok().json().as_array().unwrap().len(), 2);
    let shown = cli.run(&["apps", "show", &aid, "--json"], b"").ok().json();
    assert_eq!(shown["name"], "web");
    assert!(shown.get("client_secret").is_none());
    let updated =
        cli.run(&["apps", "update", &aid, "--name", "web-2", "--domain", "a.example.com", "--json"], b"").ok().json();
    assert_eq!(
        (updated["name"].as_str(), updated["allowed_domains"][0].as_str()),
        (Some("web-2"), Some("a.example.com"))
    );
    let bad = cli.run(&["apps", "update", &aid, "--domain", "not a domain"], b"");
    assert_eq!(bad.code, 7, "a refused input: {}", bad.stderr);
    let plan = cli.run(&["apps", "set-plan", &aid, "pro"], b"").ok();
    assert!(plan.stdout.contains("Plan changed to pro") && plan.stdout.contains("Total:"), "{}", plan.stdout);
    let conflict = cli.run(&["apps", "create", "third", "--region", "eu-central-1", "--plan", "free"], b"");
    assert_eq!(conflict.code, 6, "a second free app: {}", conflict.stderr);
    assert!(conflict.stderr.contains("free_plan_limit"), "{}", conflict.stderr);

    // token and docs with the app's credentials.
    let app = cli.with_app(&client_id, &secret);
    let token = app.run(&["token"], b"").ok();
    assert_eq!(token.stdout.trim().split('.').count(), 3, "a JWT: {}", token.stdout);
    let file = dir.join("update.bin");
    std::fs::write(&file, update_with("hello from the CLI")).unwrap();
    app.run(&["docs", "put", "notes/today", file.to_str().unwrap()], b"").ok();
    app.run(&["docs", "put", "piped", "-"], &update_with("from stdin")).ok();
    let docs = app.run(&["docs", "list"], b"").ok();
    assert!(docs.stdout.contains("notes/today") && docs.stdout.contains("piped"), "{}", docs.stdout);
    let out = dir.join("state.bin");
    app.run(&["docs", "get", "notes/today", "-o", out.to_str().unwrap()], b"").ok();
    assert_eq!(text_of(&std::fs::read(&out).unwrap()), "hello from the CLI");
    assert_eq!(text_of(&app.run(&["docs", "get", "piped"], b"").ok().bytes), "from stdin");
    assert_eq!(app.run(&["docs", "delete", "piped"], b"").code, 2, "no --yes, no terminal: not deleted");
    app.run(&["docs", "delete", "piped", "--yes"], b"").ok();
    let gone = app.run(&["docs", "get", "piped"], b"");
    assert_eq!(gone.code, 5, "{}", gone.stderr);

    // A rotated secret: the old one is refused with a hint.
    let rotated = cli.run(&["apps", "rotate-secret", &aid, "--json"], b"").ok().json();
    assert_ne!(rotated["client_secret"], secret.as_str());
    let stale = app.run(&["token"], b"");
    assert_eq!(stale.code, 3, "{}", stale.stderr);
    assert!(stale.stderr.contains("--client-secret"), "{}", stale.stderr);
    let json_err = app.run(&["token", "--json"], b"");
    let err: Value = serde_json::from_str(json_err.stderr.trim()).unwrap();
    assert_eq!((err["error"].as_str(), err["exit"].as_u64()), (Some("invalid_client"), Some(3)));

    // keys: list, rotate, revoke (confirmed).
    let keys = cli.run(&["keys", "list", "--json"], b"").ok().json();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    let new_key = cli.run(&["keys", "rotate", "--grace", "0", "--json"], b"").ok().json();
    assert_eq!(new_key["status"], "active");
    let kid = new_key["kid"].as_str().unwrap();
    let unconfirmed = cli.run(&["keys", "revoke", kid], b"");
    assert_eq!(unconfirmed.code, 2);
    assert!(unconfirmed.stderr.contains("every connection"), "names the consequence: {}", unconfirmed.stderr);
    let revoked = cli.run(&["keys", "revoke", kid, "--yes", "--json"], b"").ok().json();
    assert_eq!(revoked["status"], "revoked");
    let table = cli.run(&["keys", "list"], b"").ok();
    assert!(table.stdout.contains("revoked") && table.stdout.contains("active"), "{}", table.stdout);

    // members and nodes.
    let members = cli.run(&["members", "list"], b"").ok();
    assert!(members.stdout.contains("ops@example.com") && members.stdout.contains("super_admin"), "{}", members.stdout);
    // The only super_admin can be neither demoted nor removed (409, exit 6).
    let uid = me["id"].as_str().unwrap();
    let demote = cli.run(&["members", "set-role", uid, "viewer"], b"");
    assert_eq!(demote.code, 6, "{}", demote.stderr);
    assert!(demote.stderr.contains("last_super_admin"), "{}", demote.stderr);
    assert_eq!(cli.run(&["members", "remove", uid], b"").code, 2, "no --yes, no terminal");
    assert_eq!(cli.run(&["members", "remove", uid, "--yes"], b"").code, 6);
    let nodes = cli.run(&["nodes", "list", "--json"], b"").ok().json();
    let node = nodes[0]["id"].as_str().unwrap().to_owned();
    let drained = cli.run(&["nodes", "drain", &node], b"").ok();
    assert!(drained.stdout.contains("draining"), "{}", drained.stdout);
    assert_eq!(cli.run(&["nodes", "list", "--json"], b"").ok().json()[0]["status"], "draining");
    cli.run(&["nodes", "undrain", &node], b"").ok();
    assert_eq!(cli.run(&["nodes", "list", "--json"], b"").ok().json()[0]["status"], "up");

    // tenants: create and switch.
    let t2 = cli.run(&["tenants", "create", "Beta", "--json"], b"").ok().json();
    let t2 = t2["id"].as_str().unwrap().to_owned();
    assert_eq!(cli.run(&["tenants", "use", "00000000-0000-0000-0000-000000000000"], b"").code, 5);
    cli.run(&["tenants", "use", &t2], b"").ok();
    assert_eq!(cli.run(&["apps", "list", "--json"], b"").ok().json(), serde_json::json!([]));
    assert_eq!(cli.run(&["apps", "list", "--json", "--tenant", &tid], b"").ok().json().as_array().unwrap().len(), 2);
    cli.run(&["tenants", "use", &tid], b"").ok();

    // delete: confirmed only.
    assert_eq!(cli.run(&["apps", "delete", &aid], b"").code, 2);
    cli.run(&["apps", "delete", &aid, "--yes"], b"").ok();
    assert_eq!(cli.run(&["apps", "show", &aid], b"").code, 5);

    // logout ends the session on the server too.
    let session = std::fs::read_to_string(&cli.config).unwrap();
    let token = session.lines().find_map(|l| l.strip_prefix("session = ")).unwrap().trim_matches('"').to_owned();
    cli.run(&["logout"], b"").ok();
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/v1/me", server.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 401, "the old session is dead server-side");
    assert_eq!(cli.run(&["whoami"], b"").code, 2);
    let wrong = cli.run(&["login", "--email", "ops@example.com", "--password-stdin"], b"wrong password here\n");
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    let back = cli.run(&["login", "--email", "ops@example.com", "--password-stdin"], pw.as_bytes()).ok();
    assert!(back.stdout.contains("Logged in"), "{}", back.stdout);
    cli.run(&["whoami"], b"").ok();

    // completions cover the whole binary.
    let bash = cli.run(&["completions", "bash"], b"").ok();
    assert!(bash.stdout.contains("wiresocket") && bash.stdout.contains("rotate-secret"), "{}", &bash.stdout[..200]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_server_that_is_not_there_is_exit_10_with_a_hint() {
    let dir = scratch("unreachable");
    let cli =
        Cli { server: format!("http://127.0.0.1:{}", free_port()), config: dir.join("cli.toml"), env: Vec::new() };
    let r = cli.run(&["login", "--email", "a@example.com", "--password-stdin"], b"whatever it is\n");
    assert_eq!(r.code, 10, "{}", r.stderr);
    assert!(r.stderr.contains("cannot reach") && r.stderr.contains("--server"), "{}", r.stderr);
    let bad = cli.run(&["--server", "ftp://x", "whoami"], b"");
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn post_json(http: &reqwest::Client, url: String, session: &str, body: Value) -> Value {
    http.post(url).bearer_auth(session).json(&body).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn login_with_mfa_takes_a_totp_code_or_a_recovery_code() {
    let dir = scratch("mfa");
    let server = serve(&dir).await;
    let cli = Cli { server: server.url.clone(), config: dir.join("cli.toml"), env: Vec::new() };
    let pw = format!("{PASSWORD}\n");
    cli.run(&["setup", "--email", "mfa@example.com", "--tenant-name", "M", "--password-stdin"], pw.as_bytes()).ok();

    // Enrol as the dashboard would, confirming with the code of one step
    // back (inside the allowed skew), so the login below has a fresh one.
    let http = reqwest::Client::new();
    let body = serde_json::json!({"email": "mfa@example.com", "password": PASSWORD});
    let login = post_json(&http, format!("{}/v1/auth/login", server.url), "", body).await;
    let session = login["session_token"].as_str().unwrap();
    let setup = post_json(&http, format!("{}/v1/me/mfa/setup", server.url), session, serde_json::json!({})).await;
    let secret = auth::totp::TotpSecret::from_base32(setup["secret"].as_str().unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let confirm = serde_json::json!({"code": secret.code_at(now - 30)});
    let enabled = post_json(&http, format!("{}/v1/me/mfa/verify", server.url), session, confirm).await;
    let recovery = enabled["recovery_codes"][0].as_str().unwrap_or_else(|| panic!("{enabled}")).to_owned();

    let login = ["login", "--email", "mfa@example.com", "--password-stdin"];
    let missing = cli.run(&login, pw.as_bytes());
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    assert!(missing.stderr.contains("--totp"), "says how to give the code: {}", missing.stderr);
    let code = secret.code_at(now);
    cli.run(&[&login[..], &["--totp", &code]].concat(), pw.as_bytes()).ok();
    assert_eq!(cli.run(&["whoami", "--json"], b"").ok().json()["mfa_enabled"], true);
    cli.run(&["logout"], b"").ok();
    cli.run(&[&login[..], &["--recovery-code", &recovery]].concat(), pw.as_bytes()).ok();
    cli.run(&["logout"], b"").ok();
    let reused = cli.run(&[&login[..], &["--recovery-code", &recovery]].concat(), pw.as_bytes());
    assert_eq!(reused.code, 3, "a recovery code works once: {}", reused.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
