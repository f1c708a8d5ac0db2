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

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod execution_key;
pub mod metrics;
pub mod observe;
pub mod proxy;
pub mod router;
pub mod routes;
pub mod server;
pub mod telemetry;

pub use config::Config;
pub use server::Gateway;
