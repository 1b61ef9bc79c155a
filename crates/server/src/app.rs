//! Building and running the server: `Application::build` binds (port 0 in
//! tests), `run_until` serves until the shutdown future resolves.

use crate::config::Config;
use crate::error::ApiError;
use crate::keys::KeyService;
use crate::masterkey;
use crate::state::{AppState, Inner};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::get;
use domain::clock::{Clock, SystemClock};
use secrecy::ExposeSecret;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot create data dir {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("cannot open the database: {0}")]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    MasterKey(#[from] masterkey::MasterKeyError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Management request bodies are small; the data plane sets its own limits.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Opens the configured store: PostgreSQL for `postgres://…`, else SQLite in the data dir.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartupError> {
    open_store_as(config, false).await
}

/// The configured store for an administration command that may run while
/// a server has it open (`audit verify`, the master-key commands): on
/// SQLite, without the document journal the server owns (document writes
/// are refused); PostgreSQL as for a server.
pub async fn open_admin_store(config: &Config) -> Result<Arc<dyn Store>, StartupError> {
    open_store_as(config, true).await
}

async fn open_store_as(config: &Config, beside_server: bool) -> Result<Arc<dyn Store>, StartupError> {
    let sqlite = |path: std::path::PathBuf| async move {
        let store = if beside_server {
            store::sql::SqliteStore::open_beside_server(&path).await?
        } else {
            store::sql::SqliteStore::open(&path).await?
        };
        Ok::<Arc<dyn Store>, StartupError>(Arc::new(store))
    };
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartupError::DataDir(config.data_dir.display().to_string(), e))?;
    if let Some(ca) = &config.ca_file {
        crate::backends::read_ca_file(ca).map_err(StartupError::Other)?;
    }
    match &config.database_url {
        Some(url) if crate::backends::is_postgres_url(url.expose_secret()) => {
            match crate::backends::connect_postgres(url, config.ca_file.as_deref()).await {
                Ok(store) => Ok(Arc::new(store)),
                Err(e) => {
                    let e = e.to_string();
                    Err(StartupError::Other(format!("cannot open the database: {e}{}", crate::backends::ca_hint(&e))))
                }
            }
        }
        Some(url) => {
            let path = url.expose_secret().trim_start_matches("sqlite://").trim_start_matches("sqlite:");
            sqlite(std::path::PathBuf::from(path)).await
        }
        None => sqlite(config.data_dir.join("wiresocket.db")).await,
    }
}

pub struct Application {
    listener: TcpListener,
    /// `--tls-cert`/`--tls-key`: every connection is TLS.
    tls: Option<crate::tls::TlsListener>,
    addr: SocketAddr,
    router: Router,
    state: AppState,
    /// The webhook dispatcher's HTTP client (built here so a TLS setup
    /// failure stops start-up instead of every delivery).
    webhook_client: reqwest::Client,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        let store = open_store(&config).await?;
        let ring = masterkey::load_or_generate(&config).await?;
        masterkey::check_ring_matches_store(&ring, store.as_ref()).await?;
        let rate_limits = match &config.redis_url {
            Some(url) => {
                let conn = crate::backends::connect_redis(url, config.ca_file.as_deref())
                    .await
                    .map_err(StartupError::Other)?;
                tracing::info!("auth rate limits are counted in Redis, shared by every node using it");
                crate::ratelimit::AuthLimits::redis(conn, config.rate_limits.clone())
            }
            None => crate::ratelimit::AuthLimits::in_memory(config.rate_limits.clone()),
        };
        let tls = match &config.tls {
            Some(files) => Some(crate::tls::TlsListener::new(&files.cert, &files.key).map_err(StartupError::Other)?),
            None => None,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(|e| StartupError::Bind(config.listen, e))?;
        let addr = listener.local_addr().map_err(|e| StartupError::Bind(config.listen, e))?;
        if tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "listening without TLS on a non-loopback address: tokens, sessions and secrets cross the network \
                 in clear unless a TLS-terminating proxy is in front (see --tls-cert and --tls-key)"
            );
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = config.public_url.clone().unwrap_or_else(|| format!("{scheme}://{addr}"));
        let metrics = crate::observe::recorder().map_err(StartupError::Other)?;
        // A bad SMTP URL or an unwritable outbox is a start-up error, not a
        // surprise at the first invite.
        let mailer = crate::mail::from_config(&config).map_err(|e| StartupError::Other(format!("mail: {e}")))?;
        tracing::info!(mail = %mailer.describe(), "outgoing mail");
        let docs = crate::dataplane::docs::Docs::start(store.clone(), clock.clone(), config.doc_idle_unload);
        let targets = crate::webhooks::TargetPolicy::new(&config);
        let events =
            crate::webhooks::events::Events::start(store.clone(), clock.clone(), targets, config.webhook_debounce);
        docs.observe(events.clone());
        let webhook_client = crate::webhooks::dispatch::http_client(targets)
            .map_err(|e| StartupError::Other(format!("cannot build the webhook HTTP client: {e}")))?;
        if !targets.allows_private() {
            tracing::info!("webhooks to loopback and private addresses are refused (see --allow-private-webhooks)");
        }
        let node_id = crate::dataplane::node::resolve_id(config.node_id.as_deref(), &config.data_dir)
            .map_err(|e| StartupError::Other(format!("node id: {e}")))?;
        let registry = crate::dataplane::registry::Registry::shared();
        let node = crate::dataplane::node::LocalNode::new(
            node_id,
            crate::dataplane::node::ALL_REGIONS.to_owned(),
            public_url.clone(),
            clock.now(),
            &registry,
        );
        let state = AppState::new(Inner {
            node,
            directory: crate::fleet::NodeDirectory::default(),
            docs,
            registry,
            limits: crate::dataplane::limits::Limits::default(),
            apps: crate::cache::AppCache::default(),
            denied: crate::cache::DenyList::default(),
            rate_limits,
            events,
            mailer,
            keys: KeyService::new(ring, store.clone(), &config),
            password_policy: config.password_policy,
            config,
            public_url,
            store,
            clock,
            metrics,
        });
        // A damaged room's clients reconnect, to the room reloaded from the store.
        let registry = Arc::downgrade(&state.registry);
        state.docs.on_damaged(Box::new(move |key| {
            let reloading = crate::dataplane::CloseReason {
                code: crate::dataplane::close::TRY_AGAIN,
                reason: "document reloading",
            };
            if let Some(registry) = registry.upgrade() {
                registry.close_where(reloading, |c| &c.doc == key);
            }
        }));
        // Registered before the first request: discovery can name this node.
        crate::routes::nodes::beat(&state).await;
        let router = router(state.clone());
        Ok(Self { listener, tls, addr, router, state, webhook_client })
    }

    /// The listener's TLS, when `--tls-cert` is set (tests reload it directly).
    pub fn tls(&self) -> Option<&crate::tls::TlsListener> {
        self.tls.as_ref()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let state = self.state.clone();
        let purge = tokio::spawn(purge_loop(state.clone()));
        let caches = tokio::spawn(crate::cache::refresh_loop(state.downgrade()));
        let heartbeat = tokio::spawn(crate::routes::nodes::heartbeat_loop(state.downgrade()));
        let supervisor = tokio::spawn(crate::dataplane::registry::Registry::supervise(
            Arc::downgrade(&state.registry),
            state.clock.clone(),
        ));
        let (stop_webhooks, stopped) = tokio::sync::watch::channel(false);
        let dispatcher = crate::webhooks::dispatch::Dispatcher::new(state.clone(), self.webhook_client);
        let dispatcher = tokio::spawn(dispatcher.run(stopped));
        let reload = self.tls.clone().map(|tls| tokio::spawn(crate::tls::reload_on_sighup(tls)));
        tracing::info!(addr = %self.addr, public_url = %self.state.public_url, tls = self.tls.is_some(), "wiresocket listening");
        // Accepting on a runtime worker (not the thread that called us):
        // a connection's task then starts on that worker's own queue,
        // without waking another thread for it. In a JoinSet, so dropping
        // this future still stops the accept loop.
        let mut accepting = tokio::task::JoinSet::new();
        accepting.spawn(serve_http1(self.listener, self.tls, self.router, shutdown));
        let result = match accepting.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(std::io::Error::other(e)),
            None => Ok(()),
        };
        purge.abort();
        if let Some(reload) = reload {
            reload.abort();
        }
        caches.abort();
        heartbeat.abort();
        supervisor.abort();
        // Open sockets are not part of axum's graceful shutdown: tell their
        // clients to reconnect (to another node, or to this one restarted).
        let draining =
            crate::dataplane::CloseReason { code: crate::dataplane::close::DRAINING, reason: "server shutting down" };
        if state.registry.close_where(draining, |_| true) > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Open `document.updated` windows go to the outbox now rather than
        // being lost; the dispatcher finishes what it has in flight.
        state.events.flush_pending().await;
        let _ = stop_webhooks.send(true);
        if let Err(e) = dispatcher.await {
            tracing::error!(error = %e, "the webhook dispatcher ended abnormally");
        }
        result
    }
}

/// What `axum::serve` does (HTTP/1.1 with upgrades, `ConnectInfo`, graceful
/// shutdown), on hyper's own HTTP/1 connection instead of hyper-util's
/// auto-detecting one: that one wraps every socket in a private type, and
/// the sync endpoint needs the upgraded socket back as the `TcpStream` (or
/// TLS stream over one) it is (see [`crate::dataplane::ws`]). With `tls`,
/// each connection's handshake runs in its own task, bounded by
/// [`crate::tls::HANDSHAKE_TIMEOUT`]. It also bounds how long a client may
/// take to send its request head.
async fn serve_http1(
    listener: TcpListener,
    tls: Option<crate::tls::TlsListener>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Dropping `stop` tells every connection to finish its request and
    // close; `done` is closed once every connection has.
    let (stop, stopping) = tokio::sync::watch::channel(());
    let (done, finished) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                ) => continue,
                Err(e) => {
                    // E.g. out of file descriptors: back off rather than spin.
                    tracing::error!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small frames must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let stopping = stopping.clone();
        let finished = finished.clone();
        match &tls {
            None => {
                tokio::spawn(serve_connection(tcp, remote, router, stopping, finished));
            }
            Some(tls) => {
                let acceptor = tls.acceptor().clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_connection(stream, remote, router, stopping, finished).await,
                        // A client's failed handshake (a plain-HTTP request,
                        // an unknown CA) is the client's problem.
                        Ok(Err(e)) => tracing::debug!(error = %e, %remote, "a TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "a TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    drop(stop);
    drop(finished);
    done.closed().await;
    Ok(())
}

/// One HTTP/1.1 connection (with upgrades) until it ends or `stopping`
/// says to finish; `finished` is dropped at the end.
async fn serve_connection<I>(
    io: I,
    remote: SocketAddr,
    router: Router,
    mut stopping: tokio::sync::watch::Receiver<()>,
    finished: tokio::sync::watch::Receiver<()>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(axum::extract::ConnectInfo(remote));
        tower::ServiceExt::oneshot(router.clone(), req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stopping.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::trace!(error = %e, "an HTTP connection ended with an error");
    }
    drop(finished);
}

/// How long what is shown after it stopped mattering is kept: expired and
/// accepted invites (the invite list), finished webhook jobs and delivery
/// attempts (the delivery log).
pub const PURGE_RETENTION: time::Duration = time::Duration::days(30);

/// Every `--purge-interval`: [`purge_once`], and rate-limit state that has
/// run out.
async fn purge_loop(state: AppState) {
    let mut tick = tokio::time::interval(state.config.purge_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = purge_once(&state).await;
        state.rate_limits.sweep(state.now()).await;
    }
}

/// Drops what expired or aged out (see `Store::purge_expired`) and counts
/// it in `wiresocket_purged_total{kind}`. Answers the report (also for tests).
pub async fn purge_once(state: &AppState) -> Option<store::PurgeReport> {
    match state.store.purge_expired(state.now(), PURGE_RETENTION).await {
        Ok(report) => {
            for (kind, rows) in report.by_kind() {
                metrics::counter!("wiresocket_purged_total", "kind" => kind).increment(rows);
            }
            if report.total() > 0 {
                tracing::debug!(?report, "purged expired rows");
            }
            Some(report)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the purge of expired rows failed; trying again next time");
            None
        }
    }
}

async fn not_found() -> impl IntoResponse {
    ApiError::not_found()
}

async fn method_not_allowed() -> impl IntoResponse {
    ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this path")
}

pub fn router(state: AppState) -> Router {
    let (api, openapi) = crate::routes::api(state.config.max_message_bytes);
    let openapi = Arc::new(openapi);
    api.route(
        "/openapi.json",
        get(move || {
            let doc = openapi.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    // After routing, before any handler: the one permission guard.
    .route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::routes::policy::guard))
    // After the guard's layer, so outside it: static files, no principal.
    .route("/dashboard", get(crate::routes::dashboard::shell))
    .route("/dashboard/", get(crate::routes::dashboard::shell))
    .route("/dashboard/{*path}", get(crate::routes::dashboard::asset))
    .fallback(not_found)
    .method_not_allowed_fallback(method_not_allowed)
    // Inside `track`, so refusals show in the request metrics too.
    .layer(axum::middleware::from_fn_with_state(state.clone(), crate::ratelimit::limit_auth_requests))
    .layer(axum::middleware::from_fn(crate::observe::track))
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    .layer(CatchPanicLayer::custom(|_| ApiError::internal("handler panicked").into_response()))
    // Outside everything that answers, so refusals and panics carry them too.
    .layer(axum::middleware::from_fn_with_state(
        crate::headers::Cors::new(&state.config.cors_origins),
        crate::headers::cors,
    ))
    .layer(axum::middleware::from_fn_with_state(
        crate::headers::SecurityHeaders { hsts: state.config.tls.is_some() },
        crate::headers::security_headers,
    ))
    // A 5xx is WARN here: a real fault is logged at ERROR with its cause
    // where it happens (`ApiError::Internal`); a 503 while a document
    // reloads, which a client's update can bring about, needs no operator.
    .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)))
    .with_state(state)
}
