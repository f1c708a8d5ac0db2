//! The admin listener: `/healthz`, `/readyz`, `/metrics`.
//!
//! It runs on `server.admin_listen`, apart from client traffic, so it can be
//! kept off the public network.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use crate::body::{self, Body};
use crate::metrics::Metrics;

/// What `/readyz` waits for: a set of named conditions that parts of the
/// gateway register at start-up and clear when met.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    pending: Arc<Mutex<BTreeSet<String>>>,
}

impl Readiness {
    /// Adds a condition that must be met before the gateway is ready.
    pub fn wait_for(&self, what: impl Into<String>) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(what.into());
        }
    }

    /// Marks a condition as met.
    pub fn done(&self, what: &str) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(what);
        }
    }

    /// The conditions not met yet; empty when ready.
    pub fn waiting_for(&self) -> Vec<String> {
        self.pending
            .lock()
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_else(|_| vec!["readiness state".into()])
    }
}

/// The admin endpoints.
#[derive(Clone, Debug)]
pub struct Admin {
    metrics: Metrics,
    readiness: Readiness,
}

impl Admin {
    /// Serves `metrics` and `readiness`.
    pub fn new(metrics: Metrics, readiness: Readiness) -> Self {
        Self { metrics, readiness }
    }

    /// Answers one admin request.
    pub async fn handle<B>(&self, request: Request<B>) -> Result<Response<Body>, Infallible> {
        let (status, content_type, body) = match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", body::full("ok\n")),
            (&Method::GET, "/readyz") => {
                let waiting = self.readiness.waiting_for();
                let status = if waiting.is_empty() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let json =
                    serde_json::json!({ "ready": waiting.is_empty(), "waiting_for": waiting });
                (status, "application/json", body::full(json.to_string()))
            }
            (&Method::GET, "/metrics") => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                body::full(self.metrics.encode()),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                body::full("not found\n"),
            ),
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Ok(response)
    }
}
