//! warden: an API gateway that validates JWTs, forwards good requests through
//! a tower middleware stack to upstream services, and logs every request
//! against a per-request execution key.
//!
//! The request path, outermost first (see [`server::stack`], the one place
//! that knows the order):
//!
//! ```text
//! accept → execution key → access log + metrics → catch panic → size limits
//!   → router (normalise, match) → [auth] → header policy → upstream
//! ```
//!
//! [`config::Config`] is parsed once into typed settings;
//! [`server::Gateway`] binds and serves it.

pub mod audit;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod error;
pub mod execution_key;
pub mod metrics;
pub mod observe;
pub mod outbound;
pub mod proxy;
pub mod router;
pub mod routes;
pub mod secret;
pub mod server;
pub mod telemetry;

pub use config::Config;
pub use server::{AuditWriter, Gateway, StartOptions};

/// Installs aws-lc-rs as the process-wide crypto provider of rustls and
/// jsonwebtoken (one provider everywhere). Safe to call more than once.
pub fn install_crypto_providers() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
