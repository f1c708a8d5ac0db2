//! warden: an API gateway that validates JWTs, forwards good requests through
//! a tower middleware stack to upstream services, and logs every request
//! against a per-request execution key.
//!
//! The request path, outermost first (see [`server::stack`], the one place
//! that knows the order):
//!
//! ```text
//! accept → execution key → trace → [client address] → access log + metrics → catch panic → size limits
//!   → dispatcher (authority, normalise, match) → request deadline
//!   → [token-use observer → JWT auth] → header policy → [credential] → upstream
//! ```
//!
//! Modules are layered and import one way (`docs/architecture.md` has the
//! map; `tests/architecture.rs` keeps it so): the leaves below are used by
//! all, the request concerns use the leaves, and `config`, `server` and `cli`
//! sit on top.
//!
//! [`config::Config`] is parsed once into typed settings;
//! [`server::Gateway`] binds and serves it.

// Leaves: imported by many, importing none of the concerns below.
pub mod body;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod execution_key;
pub mod extensions;
pub mod grpc;
pub mod percent;
pub mod readiness;
pub mod secret;
pub mod tls;

// Observability: metrics, the access log and the audit log.
pub mod access_log;
pub mod audit;
pub mod metrics;
pub mod telemetry;
pub mod trace;

// The state every replica must decide the same way (memory or Redis).
pub mod shared_state;

// The concerns of a request.
pub mod auth;
pub mod credentials;
pub mod http_client;
pub mod oauth_connections;
pub mod proxy;
pub mod rate_limit;
pub mod routes;

// The observers of auth: they read the outcome auth leaves on a response.
pub mod token_use;

// Configuration, the server that runs it, the command line.
pub mod cli;
pub mod config;
pub mod server;

pub use config::Config;
pub use server::{AuditWriter, Gateway, StartOptions};
