//! PostgreSQL and Redis over TLS with a private CA (`--ca-file`), and the
//! auth rate limits shared through Redis. Every service here is the test's
//! own (a PostgreSQL cluster from `initdb`, `redis-server` processes on free
//! ports), stopped and removed when the test ends, also when it fails.

use crate::crash::free_port;
use crate::helpers::*;
use secrecy::SecretString;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate it signed, for `localhost` and 127.0.0.1.
pub struct TestCa {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let p = |name: &str| dir.join(name);
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        run(Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt"))
            .args(["-days", "2", "-subj", "/CN=WireSocket test CA"])
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]));
        run(Command::new("openssl")
            .arg("req")
            .args(ec)
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr"))
            .args(["-subj", "/CN=localhost"]));
        std::fs::write(
            p("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-in"])
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .args(["-CAcreateserial", "-days", "2", "-extfile"])
            .arg(p("server.ext"))
            .arg("-out")
            .arg(p("server.crt")));
        TestCa { ca_cert: p("ca.crt"), server_cert: p("server.crt"), server_key: p("server.key") }
    }
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// PostgreSQL refuses to run as root: as root the cluster belongs to the
/// `postgres` user, otherwise to whoever runs the tests.
fn as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn pg_command(bin: &str) -> Command {
    let path = Path::new(PG_BIN).join(bin);
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn give_to_postgres(path: &Path) {
    if as_root() {
        run(Command::new("chown").arg("postgres:postgres").arg(path));
    }
}

/// A PostgreSQL 15 cluster of the test's own, TLS only (`hostssl` is the
/// one TCP rule), run as the `postgres` user. Dropping it stops it and
/// removes its directory.
struct PrivatePostgres {
    dir: TempDir,
    port: u16,
}

impl PrivatePostgres {
    fn start(ca: &TestCa) -> PrivatePostgres {
        let dir = temp_dir();
        let data = dir.join("data");
        give_to_postgres(&dir);
        run(pg_command("initdb").arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ]));
        for (from, to) in [(&ca.server_cert, "server.crt"), (&ca.server_key, "server.key")] {
            std::fs::copy(from, data.join(to)).unwrap();
            give_to_postgres(&data.join(to));
            run(Command::new("chmod").arg("600").arg(data.join(to)));
        }
        let port = free_port();
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\n\
             ssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nfsync = off\nshared_buffers = 16MB\n",
            dir.display()
        );
        let mut pg_conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        pg_conf.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), pg_conf).unwrap();
        std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n").unwrap();
        let pg = PrivatePostgres { dir, port };
        run(pg_command("pg_ctl").arg("-D").arg(&data).arg("-l").arg(pg.dir.join("log")).args(["-w", "start"]));
        pg
    }

    fn url(&self, query: &str) -> String {
        format!("postgres://postgres@localhost:{}/postgres?{query}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn pg_config(data_dir: &Path, url: String, ca_file: Option<&Path>) -> server::Config {
    let mut config = test_config(data_dir);
    config.database_url = Some(SecretString::from(url));
    config.ca_file = ca_file.map(Path::to_path_buf);
    config
}

#[tokio::test]
async fn postgres_over_tls_with_a_private_ca() {
    let certs = temp_dir();
    let ca = TestCa::new(&certs);
    let pg = PrivatePostgres::start(&ca);
    let data_dir = temp_dir();

    // verify-full: the certificate chains to --ca-file and names localhost.
    let app = spawn_with(pg_config(&data_dir, pg.url("sslmode=verify-full"), Some(&ca.ca_cert))).await;
    let owner = app.setup().await;
    app.create_app(&owner, "starter", &[]).await;
    app.stop().await;

    // require: encrypted, certificate not checked.
    let app = spawn_with(pg_config(&data_dir, pg.url("sslmode=require"), None)).await;
    app.login(&owner.email, PASSWORD).await;
    app.stop().await;

    // verify-full without the CA: the start stops and says why.
    let err = server::Application::build(pg_config(&data_dir, pg.url("sslmode=verify-full"), None))
        .await
        .err()
        .expect("an unknown CA must stop the start")
        .to_string();
    assert!(err.contains("cannot open the database") && err.contains("UnknownIssuer"), "{err}");

    // Plain TCP: the server itself refuses (hostssl only).
    let err = server::Application::build(pg_config(&data_dir, pg.url("sslmode=disable"), Some(&ca.ca_cert)))
        .await
        .err()
        .expect("a plain connection must be refused")
        .to_string();
    assert!(err.contains("no encryption"), "{err}");

    // A CA file that is not one stops the start before any connection.
    let bogus = certs.join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let err = server::Application::build(pg_config(&data_dir, pg.url("sslmode=verify-full"), Some(&bogus)))
        .await
        .err()
        .expect("a bad CA file must stop the start")
        .to_string();
    assert!(err.contains("no certificate in it"), "{err}");
}

/// A `redis-server` of the test's own; killed when dropped.
struct PrivateRedis {
    child: Child,
    port: u16,
    args: Vec<String>,
    /// The CA's PEM, for a TLS one.
    ca_pem: Option<Vec<u8>>,
}

impl PrivateRedis {
    fn plain() -> PrivateRedis {
        Self::spawn(free_port(), Vec::new())
    }

    fn tls(ca: &TestCa) -> PrivateRedis {
        let args = vec![
            "--tls-cert-file".into(),
            ca.server_cert.display().to_string(),
            "--tls-key-file".into(),
            ca.server_key.display().to_string(),
            "--tls-ca-cert-file".into(),
            ca.ca_cert.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let mut redis = Self::spawn(free_port(), args);
        redis.ca_pem = Some(std::fs::read(&ca.ca_cert).unwrap());
        redis
    }

    fn spawn(port: u16, args: Vec<String>) -> PrivateRedis {
        let tls = !args.is_empty();
        let mut cmd = Command::new("redis-server");
        if tls {
            cmd.args(["--port", "0", "--tls-port", &port.to_string()]);
        } else {
            cmd.args(["--port", &port.to_string()]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        PrivateRedis { child, port, args, ca_pem: None }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    fn restart(&mut self) {
        self.stop();
        *self = Self::spawn(self.port, std::mem::take(&mut self.args));
    }

    fn url(&self) -> String {
        let scheme = if self.args.is_empty() { "redis" } else { "rediss" };
        format!("{scheme}://localhost:{}", self.port)
    }

    async fn rate_limit_keys(&self) -> Vec<String> {
        let client = match &self.ca_pem {
            None => redis::Client::open(self.url()).unwrap(),
            Some(pem) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
            )
            .unwrap(),
        };
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("rl:*").query_async(&mut conn).await.unwrap();
        keys.sort();
        keys
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_config(data_dir: &Path, url: String, ca_file: Option<&Path>) -> server::Config {
    let mut config = test_config(data_dir);
    config.redis_url = Some(SecretString::from(url));
    config.ca_file = ca_file.map(Path::to_path_buf);
    config
}

async fn bad_login(app: &TestApp, email: &str) -> u16 {
    let r = app.post("/v1/auth/login").json(&json!({"email": email, "password": "wrong"})).send().await.unwrap();
    r.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_sharing_redis_share_one_limit_under_parallel_requests() {
    let redis = PrivateRedis::plain();
    let (dir_a, dir_b) = (temp_dir(), temp_dir());
    let a = Arc::new(spawn_with(redis_config(&dir_a, redis.url(), None)).await);
    let b = Arc::new(spawn_with(redis_config(&dir_b, redis.url(), None)).await);
    // 5 failed logins per account per minute (the default): 24 guesses at
    // one account, half through each node, all at once.
    let email = "shared-limit@example.com";
    let start = Arc::new(tokio::sync::Barrier::new(24));
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let app = if i % 2 == 0 { a.clone() } else { b.clone() };
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                bad_login(&app, email).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let passed = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((passed, refused), (5, 19), "{statuses:?}");
    // Both nodes see the account as locked, whichever counted the failures.
    assert_eq!(bad_login(&a, email).await, 429);
    assert_eq!(bad_login(&b, email).await, 429);
    assert!(redis.rate_limit_keys().await.iter().any(|k| k.starts_with("rl:{login:")), "counted in Redis");
    for app in [a, b] {
        Arc::into_inner(app).unwrap().stop().await;
    }
}

/// Log lines of everything run on this thread, for the current-thread runtime.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap()).matches(needle).count()
    }
}

#[tokio::test]
async fn redis_down_falls_back_to_local_limits_and_recovers() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("wiresocket_server=info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut redis = PrivateRedis::plain();
    let dir = temp_dir();
    let app = spawn_with(redis_config(&dir, redis.url(), None)).await;
    assert_eq!(bad_login(&app, "before@example.com").await, 401);
    assert_eq!(redis.rate_limit_keys().await.len(), 1);

    redis.stop();
    // The limit still holds, counted on this node; one WARN for the outage.
    let email = "during@example.com";
    let statuses: Vec<u16> = futures::future::join_all((0..8).map(|_| bad_login(&app, email))).await;
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 3, "{statuses:?}");
    let warned = "Redis is failing: rate limits fall back";
    assert_eq!(logs.count(warned), 1);

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = "Redis answers again";
    while logs.count(again) == 0 {
        assert!(Instant::now() < deadline, "never went back to Redis");
        bad_login(&app, "after@example.com").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(redis.rate_limit_keys().await.iter().any(|k| k.contains("login:")), "counted in Redis again");
    assert_eq!(logs.count(warned), 1, "one WARN per outage");
    app.stop().await;
}

#[tokio::test]
async fn rediss_with_the_private_ca_works_and_without_it_stops_the_start() {
    let certs = temp_dir();
    let ca = TestCa::new(&certs);
    let redis = PrivateRedis::tls(&ca);
    let dir = temp_dir();
    let app = spawn_with(redis_config(&dir, redis.url(), Some(&ca.ca_cert))).await;
    let email = "tls@example.com";
    for _ in 0..5 {
        assert_eq!(bad_login(&app, email).await, 401);
    }
    assert_eq!(bad_login(&app, email).await, 429);
    assert!(redis.rate_limit_keys().await.iter().any(|k| k.starts_with("rl:{login:")), "counted in Redis");
    app.stop().await;

    let err = server::Application::build(redis_config(&dir, redis.url(), None))
        .await
        .err()
        .expect("an unknown CA must stop the start")
        .to_string();
    assert!(err.contains("cannot connect to Redis over TLS") && err.contains("UnknownIssuer"), "{err}");
}

/// The scripts are the in-memory limiter's arithmetic: same passes, same
/// Retry-After, refunds, and keys that expire at their TAT.
#[tokio::test]
async fn the_redis_limiter_decides_exactly_like_the_in_memory_one() {
    use server::ratelimit::{InMemoryRateLimiter, RateLimiter, RedisRateLimiter};
    let redis = PrivateRedis::plain();
    let conn = server::backends::connect_redis(&SecretString::from(redis.url()), None).await.unwrap();
    let shared = RedisRateLimiter::new(conn, 1000);
    let local = InMemoryRateLimiter::new(1000);
    let quota = domain::ratelimit::Quota::new(5, Duration::from_secs(60)).unwrap();
    let t0 = time::OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let steps: [(i64, bool); 9] = [
        (0, false),
        (0, false),
        (0, false),
        (1, true),
        (0, false),
        (0, false),
        (11_500, false),
        (12_000, false),
        (12_000, false),
    ];
    for (i, (ms, refund)) in steps.into_iter().enumerate() {
        let at = t0 + time::Duration::milliseconds(ms);
        for _ in 0..2 {
            let (a, b) = (shared.check("k", &quota, at).await, local.check("k", &quota, at).await);
            assert_eq!(a, b, "step {i}");
        }
        if refund {
            shared.refund("k", &quota, at).await;
            local.refund("k", &quota, at).await;
        }
    }
    assert!(!shared.is_degraded());
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // Expiry is relative to Redis's clock: the TAT minus "now", at most a minute.
    let ttl: i64 = redis::cmd("PTTL").arg("rl:{k}").query_async(&mut conn).await.unwrap();
    assert!((1..=60_000).contains(&ttl), "{ttl}");
    // A refund of the last request deletes a key whose TAT would be past.
    let once = domain::ratelimit::Quota::new(1, Duration::from_secs(60)).unwrap();
    shared.check("one", &once, t0).await.unwrap();
    assert!(shared.check("one", &once, t0).await.is_err());
    shared.refund("one", &once, t0).await;
    let exists: bool = redis::cmd("EXISTS").arg("rl:{one}").query_async(&mut conn).await.unwrap();
    assert!(!exists);
    shared.check("one", &once, t0).await.unwrap();
}

/// A Redis that hangs (SIGSTOP) instead of refusing: one request in each
/// probe interval waits for the response timeout, the rest count locally
/// at once; when it resumes, the counts go back to it.
#[tokio::test]
async fn a_hanging_redis_costs_one_request_per_probe_not_every_request() {
    let redis = PrivateRedis::plain();
    let dir = temp_dir();
    let app = spawn_with(redis_config(&dir, redis.url(), None)).await;
    assert_eq!(bad_login(&app, "warm@example.com").await, 401);
    let pid = redis.child.id().to_string();
    run(Command::new("kill").args(["-STOP", &pid]));
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(bad_login(&app, "hang@example.com").await);
    }
    let took = started.elapsed();
    run(Command::new("kill").args(["-CONT", &pid]));
    // 5 failures, then locked: the local counts held the limit meanwhile.
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 5, "{statuses:?}");
    // Without the probe interval each of the 12 would wait 500 ms (6 s).
    assert!(took < Duration::from_millis(2500), "{took:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let key = format!("rl:{{login:{}}}", auth::token::hash_token("after-hang@example.com"));
    while !redis.rate_limit_keys().await.contains(&key) {
        assert!(Instant::now() < deadline, "never went back to Redis");
        bad_login(&app, "after-hang@example.com").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}

/// The same with two real server processes: the limit is one across them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_binaries_sharing_redis_enforce_one_limit() {
    let redis = PrivateRedis::plain();
    let dirs = [temp_dir(), temp_dir()];
    let ports = [free_port(), free_port()];
    let mut servers: Vec<_> = dirs
        .iter()
        .zip(ports)
        .map(|(dir, port)| {
            Command::new(crate::crash::binary())
                .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
                .arg(&**dir)
                .args(["--redis-url", &redis.url()])
                .env("WIRESOCKET_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    struct KillOnDrop<'a>(&'a mut Vec<Child>);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            for child in self.0.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    let _kill = KillOnDrop(&mut servers);
    let http = reqwest::Client::new();
    let bases: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    for base in &bases {
        crate::crash::wait_ready(&http, base).await;
    }
    let attempts = (0..20).map(|i| {
        let (http, url) = (http.clone(), format!("{}/v1/auth/login", bases[i % 2]));
        async move {
            let body = json!({"email": "two-binaries@example.com", "password": "wrong"});
            http.post(url).json(&body).send().await.unwrap().status().as_u16()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    let passed = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!((passed, statuses.len() - passed), (5, 15), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
}
