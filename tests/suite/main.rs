//! The integration tests: one test binary, one module per concern.
//!
//! Each module starts the real gateway (in this process, or the `warden`
//! binary) in front of a real upstream and talks HTTP to it; the harness
//! they share is `tests/common`. They are one binary rather than one per
//! file because each test binary links the whole gateway: thirty of them
//! took 2.2 GB of disk and most of the build's link time.
//!
//! Three tests stay binaries of their own, because they measure the
//! process they run in and other tests would disturb the measure:
//! `tests/abuse.rs` (opens as many sockets as the fd limit allows),
//! `tests/login_flood.rs` (resident memory) and `tests/jwe_timing.rs`
//! (time). `tests/architecture.rs` reads the source tree, not the gateway.
//!
//! Run one concern with `cargo test --test suite fleet::`.

#[path = "../common/mod.rs"]
mod common;

mod audit_sink;
mod cli_jwe;
mod config_cli;
mod config_reference;
mod connections;
mod credentials_http;
mod desync;
mod edges;
mod fleet;
mod gateway;
mod hardening;
mod jwe_http;
mod jwe_vectors;
mod jwt_attacks;
mod jwt_http;
mod login_http;
mod logs;
mod properties;
mod rate_limit;
mod tls_reload;
mod tracing;
mod upstream_pool;
mod upstream_token;
mod vectors;
mod websocket;
