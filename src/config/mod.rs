//! Configuration: `gateway.toml` parsed once into typed, validated settings.
//!
//! Loading has two passes. The file is parsed into a spanned TOML tree; each
//! section (and each `[[routes]]` entry) is deserialized on its own into the
//! serde structs of `file.rs`, so structural problems in different sections
//! are all reported. Then `validate/` checks the values and the rules between
//! them, one file per section (`validate/mod.rs` lists them), collecting every
//! problem. Each [`Problem`] names the file, line and column, the key path
//! (`routes[2].upstream`), what is wrong and how to fix it, and never echoes
//! more of the file than the offending value.
//!
//! A new section needs a `*File` struct in `file.rs`, a file in `validate/`
//! that builds its settings, and a field in [`Config`]; `validate/mod.rs`
//! says where each piece is wired in.
//!
//! Only this module knows serde and TOML: the rest of the gateway sees plain
//! `*Settings` structs owned by the modules that use them.

mod file;
pub mod reference;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditSettings;
use crate::auth::ValidationSettings;
use crate::auth::issue::IssuerSettings;
use crate::auth::jwks::TrustedIssuerSettings;
use crate::auth::keys::LoadedKey;
use crate::auth::login::LoginSettings;
use crate::credentials::CredentialsSettings;
use crate::routes::RouteSettings;
use crate::telemetry::LogSettings;

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it was read from (for messages).
    pub origin: String,
    /// `[server]`.
    pub server: ServerSettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `[[keys]]`, loaded.
    pub keys: Vec<Arc<LoadedKey>>,
    /// `[issuer]`: what the gateway's own tokens carry.
    pub issuer: Option<IssuerSettings>,
    /// `[validation]`.
    pub validation: ValidationSettings,
    /// `[[trusted_issuers]]`.
    pub trusted_issuers: Vec<TrustedIssuerSettings>,
    /// `[login]`, when the login route is enabled.
    pub login: Option<LoginSettings>,
    /// `[audit]`.
    pub audit: AuditSettings,
    /// `[credentials]`, when upstream credentials are stored.
    pub credentials: Option<CredentialsSettings>,
    /// `[[oauth_connections]]`: the providers of users' own tokens.
    pub oauth_connections: Vec<crate::oauth_connections::OauthConnectionSettings>,
    /// `[shared_state]`: where revocations, login counters and rate-limit
    /// counters live.
    pub shared_state: crate::shared_state::SharedStateSettings,
    /// `[[keys]]` that decrypt encrypted tokens (JWE), private halves held.
    pub decryption_keys: Vec<Arc<crate::auth::jwe::DecryptionKey>>,
    /// `[[keys]]` holding upstreams' public keys, for `encrypt_to`.
    pub encryption_keys: Vec<Arc<crate::auth::jwe::EncryptionKey>>,
    /// The kids of decryption keys made at start-up (`generate = true`).
    pub generated_decryption_keys: Vec<String>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<RouteSettings>,
}

impl Config {
    /// Reads and validates the file at `path`; relative paths in it start at
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (text, origin) = Self::read(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        validate::parse(&text, &origin, base)
    }

    /// [`Config::load`], and every environment variable (`*_env`) and file
    /// (`*_file`) the config names must exist: what `warden check` and
    /// `warden run` load, so that `check` fails wherever `run` would.
    pub fn load_with_references(path: &Path) -> Result<Config, ConfigError> {
        let (text, origin) = Self::read(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        validate::parse_with_references(&text, &origin, base)
    }

    fn read(path: &Path) -> Result<(String, String), ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            problems: vec![Problem {
                origin: origin.clone(),
                location: None,
                key: String::new(),
                message: format!("cannot read the file: {err}"),
                fix: "check the path given with --config (or WARDEN_CONFIG) and its permissions"
                    .into(),
            }],
        })?;
        Ok((text, origin))
    }

    /// Validates `text`; `origin` names it in messages (a path, or "test");
    /// relative paths in it start at the current directory.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        validate::parse(text, origin, Path::new("."))
    }
}

/// `[server]`, validated.
///
/// The one settings struct defined here rather than by the concern that
/// uses it: the server sits above `config` (it reloads the file), so its
/// settings cannot live in `server` without an import running back up.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// The main listener: routes, login, JWKS.
    pub listen: SocketAddr,
    /// The admin listener: health, readiness, metrics.
    pub admin_listen: SocketAddr,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// The longest any upstream may take to answer (routes may set less).
    pub request_timeout: Duration,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight
    /// (HTTP/2 pings are not requests).
    pub idle_timeout: Duration,
    /// How long connecting to an upstream may take.
    pub connect_timeout: Duration,
    /// The largest request header section accepted (431 above).
    pub max_header_bytes: usize,
    /// The largest request body accepted (413 above).
    pub max_body_bytes: u64,
    /// Reuse a valid inbound `X-Execution-Key`.
    pub trust_execution_key_header: bool,
    /// Peers whose `X-Forwarded-For` names the client (load balancers,
    /// ingress controllers); empty: the peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Open client connections beyond which new ones wait to be accepted.
    pub max_connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Serving threads, each with its own runtime, listener and upstream
    /// connections, so a request never crosses threads.
    pub workers: usize,
    /// How long upgraded connections (WebSocket tunnels) may live.
    pub tunnels: crate::proxy::tunnel::TunnelLimits,
    /// `[server.tls]`: TLS on the main listener.
    pub tls: Option<crate::tls::TlsSettings>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            shutdown_grace: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            trust_execution_key_header: false,
            trusted_proxies: Vec::new(),
            max_connections: 10_000,
            max_concurrent_streams: 128,
            workers: default_workers(),
            tunnels: crate::proxy::tunnel::TunnelLimits::default(),
            tls: None,
        }
    }
}

/// One worker per core the process may run on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The default config path: `WARDEN_CONFIG`, else `./gateway.toml`.
pub fn default_path() -> PathBuf {
    std::env::var_os("WARDEN_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("gateway.toml"))
}

/// A line and column (both 1-based) in the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// One thing wrong with the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file (or other origin) it is in.
    pub origin: String,
    /// Where in the file, when known.
    pub location: Option<Location>,
    /// The key path, e.g. `routes[2].upstream`; empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(at) = self.location {
            write!(f, ":{}:{}", at.line, at.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Every problem found in a config; never empty.
#[derive(Clone, Debug)]
pub struct ConfigError {
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            writeln!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}
