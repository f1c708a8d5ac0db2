//! The admin listener: `/healthz`, `/readyz`, `/metrics`.
//!
//! It runs on `server.admin_listen`, apart from client traffic, so it can be
//! kept off the public network.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use hyper::body::Incoming;

use crate::audit::AuditLog;
use crate::auth::state::AuthState;
use crate::auth::{Authenticator, Principal, Reason, Rejection, bearer_token, rejection_response};
use crate::body::{self, Body};
use crate::error::json_error;
use crate::execution_key::{EXECUTION_KEY_HEADER, ExecutionKey};
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

/// What the operator endpoints (`/admin/*`) need: they require a bearer
/// token with the scope [`ADMIN_SCOPE`].
#[derive(Clone, Debug)]
pub struct AdminAuth {
    /// Verifies the operator's token.
    pub authenticator: Arc<Authenticator>,
    /// Where revocations go.
    pub state: Arc<dyn AuthState>,
    /// The audit log.
    pub audit: AuditLog,
    /// The gateway's own `iss`: only its own tokens may operate it, never a
    /// trusted issuer's.
    pub own_iss: Option<String>,
}

/// The scope an operator's token needs for `/admin/*`.
pub const ADMIN_SCOPE: &str = "warden:admin";

/// The admin endpoints.
#[derive(Clone, Debug)]
pub struct Admin {
    metrics: Metrics,
    readiness: Readiness,
    auth: AdminAuth,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    jti: String,
    exp: i64,
    /// The issuer of the token to revoke; the gateway's own by default.
    iss: Option<String>,
}

impl Admin {
    /// Serves `metrics` and `readiness`, and the operator endpoints.
    pub fn new(metrics: Metrics, readiness: Readiness, auth: AdminAuth) -> Self {
        Self {
            metrics,
            readiness,
            auth,
        }
    }

    /// The readiness conditions `/readyz` reports.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// `POST /admin/revoke {"jti", "exp"}`, for operators.
    /// `/admin/revoke`: an operator's token of the gateway's own issuer with
    /// `warden:admin`, audited as a `token_use` like any request presenting
    /// a token; every answer carries the execution key and `no-store`.
    async fn revoke_endpoint(&self, request: Request<Incoming>) -> Response<Body> {
        let started = std::time::Instant::now();
        let key = ExecutionKey::generate();
        let (parts, body) = request.into_parts();
        let verified = match bearer_token(&parts.headers) {
            Ok(token) => Some(self.auth.authenticator.authenticate_detailed(token).await),
            Err(_) => None,
        };
        let (mut response, principal, denied) = match verified {
            None => {
                let rejection = Rejection {
                    reason: Reason::MissingToken,
                    description: "a bearer token is required",
                };
                (
                    rejection_response(rejection, None, Some(&key)),
                    None,
                    Some(rejection),
                )
            }
            Some(Err((rejection, known))) => (
                rejection_response(rejection, None, Some(&key)),
                known,
                Some(rejection),
            ),
            Some(Ok(principal)) => {
                let own_token = self.auth.own_iss.as_deref() == Some(principal.iss.as_str());
                if own_token && principal.scopes.iter().any(|s| s == ADMIN_SCOPE) {
                    (
                        self.revoke(&principal, body, &key).await,
                        Some(principal),
                        None,
                    )
                } else {
                    let rejection = Rejection {
                        reason: Reason::InsufficientScope,
                        description: "the token lacks a required scope",
                    };
                    let response = rejection_response(rejection, Some(ADMIN_SCOPE), Some(&key));
                    (response, Some(principal), Some(rejection))
                }
            }
        };
        if denied.is_none_or(|r| r.reason != Reason::MissingToken) {
            let usage = crate::auth::TokenUse {
                route: "warden-admin-revoke",
                method: &parts.method,
                path: parts.uri.path(),
                client_ip: None,
                principal: principal.as_deref(),
                status: response.status(),
                reason: denied.map_or(Reason::MissingToken, |r| r.reason),
                allowed: denied.is_none(),
                started,
            };
            usage.audit(&self.auth.audit, Some(&key));
        }
        let headers = response.headers_mut();
        headers.insert(EXECUTION_KEY_HEADER.clone(), key.header_value().clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// Revokes what the operator's request body names.
    async fn revoke(
        &self,
        principal: &Principal,
        body: Incoming,
        key: &ExecutionKey,
    ) -> Response<Body> {
        let body = body::read_to_limit(body, 4096).await;
        let parsed = body
            .ok()
            .and_then(|b| serde_json::from_slice::<RevokeRequest>(&b).ok());
        let Some(revoke) = parsed.filter(|r| !r.jti.is_empty()) else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be {\"jti\": \"...\", \"exp\": <seconds since the epoch>}",
                Some(key),
            );
        };
        let iss = revoke.iss.clone().unwrap_or_else(|| principal.iss.clone());
        self.auth.state.revoke(&iss, &revoke.jti, revoke.exp);
        self.auth
            .audit
            .event("token_revoked", Some(key))
            .field("jti", revoke.jti.clone())
            .field("iss", iss)
            .field("exp", revoke.exp)
            .field("by", principal.sub.clone())
            .send();
        let body = serde_json::json!({ "revoked": true, "jti": revoke.jti, "execution_key": key.as_str() });
        let mut response = Response::new(body::full(body.to_string()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }

    /// Answers one admin request.
    pub async fn handle(&self, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        if request.uri().path() == "/admin/revoke" {
            if request.method() != Method::POST {
                let mut response = json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use POST",
                    None,
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                return Ok(response);
            }
            return Ok(self.revoke_endpoint(request).await);
        }
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
