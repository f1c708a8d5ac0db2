//! Listeners, connections and graceful shutdown.
//!
//! [`Gateway::bind`] binds both listeners (so a test or a supervisor learns
//! the real ports before any request), then [`Gateway::serve`] starts the
//! workers ([`workers`]: one thread and runtime per core, each accepting on
//! its own socket) and serves until the shutdown future resolves: it stops
//! accepting, lets in-flight requests finish for up to `shutdown_grace`,
//! and returns. Each connection is served by hyper-util's auto builder
//! (HTTP/1.1 and h2c on one port) with the header limits and the header
//! read timeout ([`accept`]).

mod accept;
pub mod admin;
pub mod client_address;
mod connections;
mod deadline;
pub mod framing;
pub mod generation;
pub mod limits;
pub mod operator;
mod otlp;
pub mod request_deadline;
pub mod stack;
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::Registry;
use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::config::{Config, ServerSettings};
use crate::metrics::Metrics;
use crate::shared_state::{AuthState, SharedState};
use accept::{Acceptor, accepted_or_log, serve_connection};
use admin::Admin;
use connections::Connections;
use deadline::FirstByteDeadline;
use generation::{Live, Persistent, Reloader};
use workers::Workers;

/// What [`Gateway::bind_with`] may be given besides the config.
#[derive(Debug, Default)]
pub struct StartOptions {
    /// The registry the metrics are registered into.
    pub registry: Registry,
    /// Where audit events go instead of `[audit]`'s sink.
    pub audit_writer: Option<AuditWriter>,
    /// Revocations and login-failure counters instead of those of
    /// `[shared_state]` (a test's state, or an embedder's own backend).
    pub auth_state: Option<Arc<dyn AuthState>>,
    /// The config file, for reloads (SIGHUP, `POST /admin/reload`).
    pub config_path: Option<std::path::PathBuf>,
}

/// An audit sink supplied by an embedder or a test.
pub struct AuditWriter {
    /// Receives one JSON line per event.
    pub writer: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    /// How many events may wait for the writer before new ones are dropped.
    pub capacity: usize,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The metrics could not be registered (a name clash in the registry).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The TLS client for upstreams could not be built.
    #[error("cannot set up TLS for upstreams: {0}")]
    Tls(#[from] rustls::Error),
    /// An upstream client could not be built (a bad `ca_file`).
    #[error("upstream client: {0}")]
    Upstream(crate::http_client::ClientError),
    /// An internal invariant failed.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The credential store could not be opened.
    #[error("credential store: {0}")]
    Credentials(crate::credentials::store::StoreError),
    /// The OTLP exporter could not be set up.
    #[error("OTLP export ([log] otlp_endpoint): {0}")]
    Otlp(String),
    /// The OAuth connections could not be set up.
    #[error("oauth connections: {0}")]
    Connections(crate::oauth_connections::SetupError),
    /// The audit log file could not be opened.
    #[error("cannot open the audit log: {0}")]
    Audit(std::io::Error),
    /// `[shared_state]` could not be set up (never shows the Redis URL).
    #[error("shared state: {0}")]
    SharedState(crate::shared_state::StartError),
    /// A trusted issuer's JWKS client could not be built.
    #[error("trusted issuer {iss}: {reason}")]
    Issuer {
        /// The issuer.
        iss: String,
        /// Why.
        reason: String,
    },
}

/// A gateway with its listeners bound, ready to serve.
#[derive(Debug)]
pub struct Gateway {
    settings: ServerSettings,
    /// The main listener's address, and one socket per worker bound to it.
    listen: SocketAddr,
    listeners: Vec<std::net::TcpListener>,
    admin_listener: TcpListener,
    persistent: Arc<Persistent>,
    live: Arc<Live>,
    reloader: Option<Arc<Reloader>>,
}

impl Gateway {
    /// Builds the stacks from `config`, registers metrics into `registry`,
    /// and binds both listeners.
    pub async fn bind(config: Config, registry: Registry) -> Result<Gateway, StartError> {
        Self::bind_with(
            config,
            StartOptions {
                registry,
                ..StartOptions::default()
            },
        )
        .await
    }

    /// [`Gateway::bind`], with the parts an embedder or a test may supply.
    pub async fn bind_with(config: Config, options: StartOptions) -> Result<Gateway, StartError> {
        crate::crypto::install_providers();
        let metrics = Metrics::new(options.registry)?;
        let mut shared_tasks = Vec::new();
        let shared = match options.auth_state {
            Some(state) => {
                SharedState::in_memory(state, crate::shared_state::health::Health::new(&metrics))
            }
            None => SharedState::start(&config.shared_state, &metrics, &mut shared_tasks)
                .map_err(StartError::SharedState)?,
        };
        let audit = match options.audit_writer {
            Some(AuditWriter { writer, capacity }) => {
                AuditLog::with_writer(writer, capacity, metrics.audit_dropped.clone())
            }
            None => AuditLog::start(&config.audit, metrics.audit_dropped.clone())
                .await
                .map_err(StartError::Audit)?,
        };
        let persistent = Arc::new(Persistent::new(metrics, shared, audit));
        if let Some(otlp) = &config.log.otlp {
            let exporter = otlp::start(otlp).map_err(StartError::Otlp)?;
            let _ = persistent.exporter.set(Arc::new(exporter));
        }
        persistent.hold_tasks(shared_tasks);
        let hash = options
            .config_path
            .as_ref()
            .and_then(|path| std::fs::read(path).ok())
            .map(|text| crate::crypto::sha256_hex(&text))
            .unwrap_or_default();
        let live = Arc::new(Live::new(persistent.build(&config, hash)?));
        let settings = config.server.clone();
        let (listen, listeners) =
            workers::bind(settings.listen, settings.workers).map_err(|source| {
                StartError::Bind {
                    what: "server.listen",
                    addr: settings.listen,
                    source,
                }
            })?;
        let admin_listener = TcpListener::bind(settings.admin_listen)
            .await
            .map_err(|source| StartError::Bind {
                what: "server.admin_listen",
                addr: settings.admin_listen,
                source,
            })?;
        let reloader = options.config_path.map(|path| {
            Arc::new(Reloader::new(
                path,
                persistent.clone(),
                live.clone(),
                (settings.listen, settings.admin_listen, settings.workers),
                config.shared_state.clone(),
            ))
        });
        for demo in config
            .login
            .as_ref()
            .map(crate::auth::login::demo_credentials)
            .unwrap_or_default()
        {
            tracing::warn!("demo credentials: {demo}; remove them before real use");
        }
        for kid in &config.generated_decryption_keys {
            tracing::warn!(
                kid = %kid,
                "decryption key generated at start-up: tokens encrypted to it stop decrypting when the gateway restarts (demo only)"
            );
        }
        for key in config.keys.iter().filter(|k| k.ephemeral) {
            tracing::warn!(
                kid = %key.kid,
                "key generated at start-up: tokens it signs stop verifying when the gateway restarts (demo only)"
            );
        }
        Ok(Gateway {
            settings,
            listen,
            listeners,
            admin_listener,
            persistent,
            live,
            reloader,
        })
    }

    /// The bound address of the main listener.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.listen)
    }

    /// The bound address of the admin listener.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin_listener.local_addr()
    }

    /// Reloads the config file (SIGHUP); `None` when started without one.
    pub fn reloader(&self) -> Option<Arc<Reloader>> {
        self.reloader.clone()
    }

    /// Serves until `shutdown` resolves, then drains for up to `shutdown_grace`.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let builder = Arc::new(connection_builder(&self.settings));
        let admin = Admin::new(
            self.persistent.metrics.clone(),
            self.persistent.readiness.clone(),
            self.live.clone(),
            self.reloader.clone(),
        );
        tracing::info!(
            listen = %self.listen,
            workers = self.settings.workers,
            admin_listen = %display_addr(self.admin_addr().ok()),
            tls = self.settings.tls.is_some(),
            "listening"
        );
        // The admin listener has its own task and its own connection limit,
        // so it keeps answering (with /readyz at 503) while client
        // connections drain, and client connections cannot crowd it out.
        let admin_task = tokio::spawn(serve_admin(
            self.admin_listener,
            admin.clone(),
            builder.clone(),
            Connections::new(ADMIN_MAX_CONNECTIONS, self.settings.idle_timeout),
            self.settings.header_read_timeout,
        ));
        // At max_connections the connection idle the longest makes room;
        // when all are busy, new ones wait in the listen queue. The limit
        // holds across the workers.
        let connections =
            Connections::new(self.settings.max_connections, self.settings.idle_timeout);
        let acceptor = Arc::new(Acceptor {
            builder,
            connections: connections.clone(),
            live: self.live.clone(),
            local: self.listen,
            handshake_timeout: self.settings.header_read_timeout,
        });
        let mut workers = Workers::start(self.listeners, acceptor);
        shutdown.await;
        admin.readiness().wait_for("shutting down");
        workers.stop_accepting().await;
        let open = connections.count();
        tracing::info!(
            open_connections = open,
            grace_ms = self.settings.shutdown_grace.as_millis() as u64,
            "shutting down: no new connections; draining in-flight requests"
        );
        connections.close_all();
        let tunnels = self.persistent.tunnels.clone();
        // Tunnels have no requests to finish: they run on until the grace
        // period ends (or they end on their own), then are closed.
        let drained = async {
            connections.drained().await;
            tunnels.all_closed().await;
        };
        match tokio::time::timeout(self.settings.shutdown_grace, drained).await {
            Ok(()) => tracing::info!("all connections drained"),
            Err(_) => {
                tracing::warn!(
                    open_tunnels = tunnels.active(),
                    "shutdown grace period over; closing the remaining connections and tunnels"
                )
            }
        }
        // Their ends are logged and counted as they close.
        tunnels.close_all(Duration::from_secs(1)).await;
        // What still runs on the workers (connections past the grace
        // period) ends with their runtimes.
        workers.finish().await;
        admin_task.abort();
        self.live.stop();
        self.persistent.stop();
        // Spans still queued are sent before the process ends.
        if let Some(exporter) = self.persistent.exporter.get().cloned() {
            let _ = tokio::task::spawn_blocking(move || exporter.shutdown()).await;
        }
        // Audit events still queued are written before the process ends.
        let audit = self.persistent.audit.clone();
        let _ = tokio::task::spawn_blocking(move || audit.flush(Duration::from_secs(2))).await;
    }
}

/// Accepts admin connections until the task is aborted.
async fn serve_admin(
    listener: TcpListener,
    admin: Admin,
    builder: Arc<auto::Builder<TokioExecutor>>,
    connections: Connections,
    first_byte: Duration,
) {
    loop {
        let Some((stream, _)) = accepted_or_log(listener.accept().await).await else {
            continue;
        };
        let admission = connections.admit().await;
        let stream = FirstByteDeadline::new(stream, first_byte);
        let admin = admin.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let admin = admin.clone();
            async move { admin.handle(request).await }
        });
        serve_connection(&builder, &connections, admission, stream, service);
    }
}

/// Open connections the admin listener serves at once: operators and
/// scrapers need a few, and idle ones make room for a probe.
const ADMIN_MAX_CONNECTIONS: usize = 64;

fn display_addr(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "?".into(), |a| a.to_string())
}

fn connection_builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        // hyper refuses buffers under 8 KiB; the limits layer enforces smaller limits exactly.
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        // Pings find HTTP/2 peers that are gone without closing.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    builder
}
