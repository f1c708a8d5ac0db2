//! Building what a config makes, and swapping it in on reload.
//!
//! A [`Generation`] is everything built from one config: the client-facing
//! service (route table and per-route stacks), the admin context, the TLS
//! acceptor and the route health checks. [`Persistent`] is what outlives
//! generations: metrics, readiness, the audit log, revocations and login
//! counters, upstream clients, and trusted issuers whose settings did not
//! change (so their keys and readiness survive a reload).
//!
//! [`Live`] holds the generation in force behind `ArcSwap`s: a connection
//! checks it per request, so keep-alive connections follow a reload at their
//! next request, while requests in flight finish on the old one. A
//! connection keeps its copy of the stack between requests, so an old
//! generation is freed once every connection that used it has sent another
//! request or closed (idle HTTP/1.1 connections close after
//! `header_read_timeout`; HTTP/2 connections have no idle timeout).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::task::AbortHandle;

use super::StartError;
use super::operator::AdminAuth;
use super::stack;
use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::auth::issue::TokenIssuer;
use crate::auth::jwks::{TrustedIssuer, TrustedIssuerSettings};
use crate::auth::login::{Endpoints, EndpointsConfig};
use crate::body::HttpService;
use crate::config::Config;
use crate::credentials::Credentials;
use crate::metrics::Metrics;
use crate::proxy::{ConnectionSettings, UpstreamClient};
use crate::readiness::Readiness;
use crate::shared_state::{AuthState, RateLimiter, SharedState};

/// A trusted issuer kept across reloads: its settings, itself, its task.
type HeldIssuer = (TrustedIssuerSettings, Arc<TrustedIssuer>, AbortHandle);

/// What outlives a reload.
pub struct Persistent {
    /// Metric families.
    pub metrics: Metrics,
    /// What `/readyz` waits for.
    pub readiness: Readiness,
    /// Revocations and login counters (the auth part of `shared`).
    pub state: Arc<dyn AuthState>,
    /// The state shared across replicas: auth's, and rate-limit counters.
    pub shared: SharedState,
    /// Rate-limit counters by route and limit, kept across reloads that
    /// leave a route's limit as it was.
    limiters: Mutex<HashMap<(String, crate::rate_limit::RateLimitSettings), RateLimiter>>,
    /// Background tasks that live as long as the process (the shared
    /// state's revocation mirror).
    tasks: Mutex<Vec<AbortHandle>>,
    /// The audit log.
    pub audit: AuditLog,
    /// Trusted issuers by `iss`, with their settings and refresh task.
    issuers: Mutex<HashMap<String, HeldIssuer>>,
    /// Upstream clients by connection settings (and connect timeout).
    clients: Mutex<HashMap<(ConnectionSettings, std::time::Duration), UpstreamClient>>,
    /// The OAuth connections' vault and users' tokens in use.
    connections: crate::oauth_connections::lasting::LastingConnections,
    /// Upgraded connections (WebSocket tunnels), which outlive the
    /// generation whose route opened them.
    pub tunnels: Arc<crate::proxy::tunnel::Tunnels>,
    /// The OTLP exporter of request spans (`[log] otlp_endpoint`), set at
    /// start; a reload does not change it.
    pub exporter: std::sync::OnceLock<Arc<crate::trace::Exporter>>,
}

impl std::fmt::Debug for Persistent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistent").finish_non_exhaustive()
    }
}

/// Everything one config makes.
pub struct Generation {
    /// The client-facing service.
    pub service: HttpService,
    /// What the operator endpoints use.
    pub admin: AdminAuth,
    /// TLS on the main listener, when configured.
    pub tls: Option<Arc<tokio_rustls::TlsAcceptor>>,
    /// Background tasks that end with the generation (health checks).
    pub tasks: Vec<AbortHandle>,
    /// SHA-256 of the config text, shown by `/readyz`.
    pub config_sha256: String,
    /// Its `warden_upstream_up` series.
    pub upstream_labels: Vec<(String, String)>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("config_sha256", &self.config_sha256)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The generation in force.
pub struct Live {
    /// The client-facing service.
    pub service: ArcSwap<HttpService>,
    /// The operator endpoints' context.
    pub admin: ArcSwap<AdminAuth>,
    /// TLS on the main listener.
    pub tls: ArcSwapOption<tokio_rustls::TlsAcceptor>,
    /// The generation's background tasks.
    tasks: Mutex<Vec<AbortHandle>>,
    /// SHA-256 of the config in force.
    pub config_sha256: ArcSwap<String>,
    /// The generation's `warden_upstream_up` series.
    upstream_labels: Mutex<Vec<(String, String)>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("config_sha256", &self.config_sha256.load())
            .finish_non_exhaustive()
    }
}

impl Live {
    /// The generation `first` in force.
    pub fn new(first: Generation) -> Self {
        Self {
            service: ArcSwap::from_pointee(first.service),
            admin: ArcSwap::from_pointee(first.admin),
            tls: ArcSwapOption::new(first.tls),
            tasks: Mutex::new(first.tasks),
            config_sha256: ArcSwap::from_pointee(first.config_sha256),
            upstream_labels: Mutex::new(first.upstream_labels),
        }
    }

    /// Puts `next` in force; the previous generation's tasks end, and the
    /// `warden_upstream_up` series of targets it no longer has go away.
    pub fn swap(&self, next: Generation, up: &prometheus::IntGaugeVec) {
        if let Ok(mut labels) = self.upstream_labels.lock() {
            for (route, target) in labels.iter() {
                let kept = next
                    .upstream_labels
                    .iter()
                    .any(|(r, t)| r == route && t == target);
                if !kept {
                    let _ = up.remove_label_values(&[route, target]);
                }
            }
            *labels = next.upstream_labels.clone();
        }
        self.service.store(Arc::new(next.service));
        self.admin.store(Arc::new(next.admin));
        self.tls.store(next.tls);
        self.config_sha256.store(Arc::new(next.config_sha256));
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
            *tasks = next.tasks;
        }
    }

    /// Ends every background task (at shutdown).
    pub fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

impl Persistent {
    /// What outlives reloads.
    pub fn new(metrics: Metrics, shared: SharedState, audit: AuditLog) -> Self {
        let tunnels = Arc::new(crate::proxy::tunnel::Tunnels::new(
            metrics.tunnels_active.clone(),
            metrics.tunnels_total.clone(),
        ));
        Self {
            metrics,
            readiness: Readiness::default(),
            state: shared.auth(),
            shared,
            limiters: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            audit,
            issuers: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            connections: Default::default(),
            tunnels,
            exporter: std::sync::OnceLock::new(),
        }
    }

    /// Keeps `tasks` until [`Persistent::stop`].
    pub fn hold_tasks(&self, tasks: Vec<AbortHandle>) {
        if let Ok(mut held) = self.tasks.lock() {
            held.extend(tasks);
        }
    }

    /// Ends the trusted issuers' refresh tasks and the shared state's
    /// tasks (at shutdown).
    pub fn stop(&self) {
        if let Ok(issuers) = self.issuers.lock() {
            for (_, _, task) in issuers.values() {
                task.abort();
            }
        }
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }

    /// The rate-limit counters of every limited route of `config`: a route
    /// whose limit did not change keeps its counters.
    fn rate_limiters(&self, config: &Config) -> Result<HashMap<String, RateLimiter>, StartError> {
        let mut held = self
            .limiters
            .lock()
            .map_err(|_| StartError::Internal("the rate-limit registry is poisoned"))?;
        let mut next = HashMap::new();
        let mut by_route = HashMap::new();
        for route in &config.routes {
            let Some(limit) = &route.rate_limit else {
                continue;
            };
            let key = (route.name.clone(), limit.clone());
            let limiter = held
                .remove(&key)
                .unwrap_or_else(|| self.shared.rate_limiter(&route.name, limit.policy.clone()));
            by_route.insert(route.name.clone(), limiter.clone());
            next.insert(key, limiter);
        }
        *held = next;
        Ok(by_route)
    }

    /// The trusted issuers of `config`: unchanged ones are kept (with their
    /// keys), new ones start fetching, removed ones stop.
    fn trusted_issuers(&self, config: &Config) -> Result<Vec<Arc<TrustedIssuer>>, StartError> {
        let mut held = self
            .issuers
            .lock()
            .map_err(|_| StartError::Internal("the issuer registry is poisoned"))?;
        let mut next = HashMap::new();
        let mut issuers = Vec::new();
        for settings in &config.trusted_issuers {
            let kept = match held.remove(&settings.iss) {
                Some(entry) if entry.0 == *settings => Some(entry),
                // Changed settings: the old fetcher stops before the new starts.
                Some((_, _, task)) => {
                    task.abort();
                    None
                }
                None => None,
            };
            let entry = match kept {
                Some(entry) => entry,
                None => {
                    let issuer = TrustedIssuer::new(
                        settings.clone(),
                        &self.metrics.jwks_refresh,
                        self.readiness.clone(),
                    )
                    .map_err(|err| StartError::Issuer {
                        iss: settings.iss.clone(),
                        reason: err.to_string(),
                    })?;
                    let task = issuer.spawn_refresh().abort_handle();
                    (settings.clone(), issuer, task)
                }
            };
            issuers.push(entry.1.clone());
            next.insert(settings.iss.clone(), entry);
        }
        for (iss, (_, _, task)) in held.drain() {
            task.abort();
            self.readiness.done(&format!("jwks {iss}"));
        }
        *held = next;
        Ok(issuers)
    }

    fn client(
        &self,
        config: &Config,
        settings: &ConnectionSettings,
    ) -> Result<UpstreamClient, StartError> {
        let key = (settings.clone(), config.server.connect_timeout);
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| StartError::Internal("the client cache is poisoned"))?;
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = UpstreamClient::new(
            config.server.connect_timeout,
            settings,
            config.server.workers,
        )
        .map_err(StartError::Upstream)?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Builds everything `config` makes. Nothing is swapped in here.
    pub fn build(&self, config: &Config, config_sha256: String) -> Result<Generation, StartError> {
        use crate::auth::jwt::{IssuerPolicy, KeySet, VerifyingKey};
        let own: Vec<VerifyingKey> = match &config.issuer {
            Some(issuer) => {
                let policy = Arc::new(IssuerPolicy {
                    iss: issuer.iss.clone(),
                    audiences: issuer.audiences.clone(),
                    // The gateway signs its own tokens with the low s.
                    accept_high_s: false,
                });
                config
                    .keys
                    .iter()
                    .map(|key| VerifyingKey {
                        kid: Some(key.kid.clone()),
                        alg: key.alg,
                        key: key.decoding.clone(),
                        issuer: policy.clone(),
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let issuers = self.trusted_issuers(config)?;
        let authenticator = Arc::new(
            Authenticator::new(
                KeySet::new(own),
                issuers,
                self.state.clone(),
                &config.validation,
                &self.metrics,
            )
            .with_decryption_keys(&config.decryption_keys),
        );
        let token_issuer = signing_issuer(config);
        let endpoints = Endpoints::new(EndpointsConfig {
            login: config.login.as_ref(),
            issuer: token_issuer,
            keys: &config.keys,
            decryption_keys: &config.decryption_keys,
            authenticator: authenticator.clone(),
            state: self.state.clone(),
            audit: self.audit.clone(),
            tokens_issued: self.metrics.tokens_issued.clone(),
            login_failures: self.metrics.login_failures.clone(),
        });
        let credentials = Arc::new(
            Credentials::open(
                config.credentials.as_ref(),
                self.metrics.credential_refresh.clone(),
            )
            .map_err(StartError::Credentials)?,
        );
        for route in &config.routes {
            if let Some(inject) = &route.inject
                && credentials.get(&inject.credential).is_none()
            {
                tracing::warn!(
                    route = %route.name,
                    credential = %inject.credential,
                    "the route's credential is not in the store; its requests get 502 until it is added"
                );
            }
        }
        let connections = self
            .connections
            .build(
                &config.oauth_connections,
                config.credentials.as_ref(),
                &self.shared,
                self.audit.clone(),
                self.metrics.connection_refresh.clone(),
            )
            .map_err(StartError::Connections)?;
        if connections.is_none() && config.routes.iter().any(|r| r.inject_connection.is_some()) {
            // The config check refuses this; never proxy without the token.
            return Err(StartError::Internal(
                "a route injects a connection, but no connections are set up",
            ));
        }
        let mut clients = HashMap::new();
        for route in &config.routes {
            if !clients.contains_key(&route.connection) {
                clients.insert(
                    route.connection.clone(),
                    self.client(config, &route.connection)?,
                );
            }
        }
        let parts = stack::Components {
            metrics: self.metrics.clone(),
            clients,
            authenticator: authenticator.clone(),
            audit: self.audit.clone(),
            endpoints,
            credentials: credentials.clone(),
            connections: connections.clone(),
            tunnels: self.tunnels.clone(),
            exporter: self.exporter.get().cloned(),
            rate_limiters: self.rate_limiters(config)?,
            token_issuer: signing_issuer(config).map(Arc::new),
        };
        let built = stack::build(config, &parts);
        // Nothing fails past this point: a reload that does not build
        // leaves the limits in force as they were.
        self.tunnels.set_limits(config.server.tunnels);
        let tls = config
            .server
            .tls
            .as_ref()
            .map(|tls| Arc::new(tokio_rustls::TlsAcceptor::from(tls.config.clone())));
        Ok(Generation {
            service: built.service,
            admin: AdminAuth {
                authenticator,
                state: self.state.clone(),
                audit: self.audit.clone(),
                on_failure: config.audit.on_failure,
                own_iss: config.issuer.as_ref().map(|i| i.iss.clone()),
                credentials,
                connections,
            },
            tls,
            tasks: built.tasks,
            upstream_labels: built.upstream_labels,
            config_sha256,
        })
    }
}

/// The issuer that signs with `issuer.signing_kid`, when there is one.
fn signing_issuer(config: &Config) -> Option<TokenIssuer> {
    let settings = config.issuer.as_ref()?;
    let kid = settings.signing_kid.as_ref()?;
    let key = config.keys.iter().find(|k| &k.kid == kid)?;
    TokenIssuer::new(settings, key)
}

/// Reloads the config file and swaps the result in.
pub struct Reloader {
    path: PathBuf,
    persistent: Arc<Persistent>,
    live: Arc<Live>,
    /// The addresses bound and the workers started at start-up; a reload
    /// cannot change them.
    bound: (std::net::SocketAddr, std::net::SocketAddr, usize),
    /// `[shared_state]` at start-up; a reload cannot change the backend.
    shared_state: crate::shared_state::SharedStateSettings,
    ok: prometheus::IntCounter,
    error: prometheus::IntCounter,
    /// One reload at a time.
    lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why a reload was refused; the old config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config is invalid.
    #[error("{0}")]
    Invalid(crate::config::ConfigError),
    /// The new config is valid but could not be put in force.
    #[error("{0}")]
    Build(StartError),
}

impl Reloader {
    /// A reloader of the config at `path`.
    pub fn new(
        path: PathBuf,
        persistent: Arc<Persistent>,
        live: Arc<Live>,
        bound: (std::net::SocketAddr, std::net::SocketAddr, usize),
        shared_state: crate::shared_state::SharedStateSettings,
    ) -> Self {
        let reloads = &persistent.metrics.config_reloads;
        Self {
            ok: reloads.with_label_values(&["ok"]),
            error: reloads.with_label_values(&["error"]),
            path,
            persistent,
            live,
            bound,
            shared_state,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the config file again; when valid, swaps it in for new requests.
    /// An invalid one is logged with every problem and the old one keeps serving.
    /// Either way, a file audit sink reopens its path before its next write.
    pub async fn reload(&self) -> Result<String, ReloadError> {
        let _one_at_a_time = self.lock.lock().await;
        // Whatever the new config holds: logrotate's postrotate sends
        // SIGHUP to have the audit file's path opened again.
        self.persistent.audit.reopen();
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let text = std::fs::read(&path).unwrap_or_default();
            (crate::Config::load(&path), crate::crypto::sha256_hex(&text))
        })
        .await;
        let (config, hash) = match loaded {
            Ok((Ok(config), hash)) => (config, hash),
            Ok((Err(err), _)) => {
                self.error.inc();
                tracing::error!(problems = %err, "config reload refused; the old config keeps serving");
                return Err(ReloadError::Invalid(err));
            }
            Err(_) => {
                self.error.inc();
                return Err(ReloadError::Build(StartError::Internal(
                    "the config reader failed",
                )));
            }
        };
        let (listen, admin_listen, workers) = self.bound;
        if (config.server.listen, config.server.admin_listen) != (listen, admin_listen) {
            tracing::warn!(
                "server.listen and server.admin_listen change only with a restart; the bound addresses stay"
            );
        }
        if config.server.workers != workers {
            tracing::warn!(
                workers,
                "server.workers changes only with a restart; the running workers stay"
            );
        }
        if config.shared_state != self.shared_state {
            tracing::warn!("[shared_state] changes only with a restart; the backend in use stays");
        }
        match self.persistent.build(&config, hash.clone()) {
            Ok(generation) => {
                self.live
                    .swap(generation, &self.persistent.metrics.upstream_up);
                self.ok.inc();
                tracing::info!(config_sha256 = %hash, routes = config.routes.len(), "config reloaded");
                // `generate = true` makes a new key at every load.
                for key in config.keys.iter().filter(|k| k.ephemeral) {
                    tracing::warn!(
                        kid = %key.kid,
                        "the reload replaced the generated key: every token the previous one signed stops verifying (use private_key_file to keep tokens across reloads)"
                    );
                }
                Ok(hash)
            }
            Err(err) => {
                self.error.inc();
                tracing::error!(error = %err, "config reload failed; the old config keeps serving");
                Err(ReloadError::Build(err))
            }
        }
    }
}
