//! What the login endpoint answers: the token response on success, and the
//! OAuth2 error answers of RFC 6749 §5.2 on failure.
//!
//! A [`Failure`] is a rejection that is also a record: its `reason` and
//! `identity` feed `warden_login_failures_total{reason}` and the
//! `login_failed` audit event, while the client sees only `error` and
//! `description`. Responses produced here:
//!
//! - 200 with `access_token`, `token_type`, `expires_in` and `scope`, plus
//!   `Pragma: no-cache`, `Authorization: Bearer …` and
//!   `Access-Control-Expose-Headers`;
//! - 400 `invalid_request` / `invalid_scope` / `unsupported_grant_type`;
//! - 401 `invalid_client` with `WWW-Authenticate: Basic realm="warden"`;
//! - 429 `slow_down` with `Retry-After`;
//! - 500 `server_error` when signing fails.
//!
//! Reads no extensions; the execution key is passed in by the caller.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::auth::issue::Issued;
use crate::body::Body;
use crate::error::{json_error, json_response};
use crate::execution_key::ExecutionKey;

/// An OAuth2-style failure (RFC 6749 §5.2).
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) status: StatusCode,
    pub(super) error: &'static str,
    pub(super) description: &'static str,
    /// For the metric and the audit event; never shown to the client.
    pub(super) reason: &'static str,
    /// The identity, only when it exists (for the audit event).
    pub(super) identity: Option<String>,
    /// Counts towards throttling.
    pub(super) counts: bool,
    pub(super) retry_after: Option<Duration>,
}

impl Failure {
    /// 401: the credentials did not prove an identity. One description for
    /// every `reason`, so the answer does not tell which part was wrong.
    pub(super) fn invalid_client(reason: &'static str, identity: Option<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: "invalid credentials",
            reason,
            identity,
            counts: true,
            retry_after: None,
        }
    }

    /// 400: the request itself is wrong; it does not count as a guess.
    pub(super) fn bad_request(error: &'static str, description: &'static str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description,
            reason: error,
            identity: None,
            counts: false,
            retry_after: None,
        }
    }

    /// 429: too many failures for a client address or identity.
    pub(super) fn throttled(wait: Duration) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "slow_down",
            description: "too many failed attempts; try again later",
            reason: "throttled",
            identity: None,
            counts: false,
            retry_after: Some(wait),
        }
    }

    /// 500: the credentials were good but no token could be signed.
    pub(super) fn signing_failed() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: "the token could not be signed",
            reason: "signing_failed",
            identity: None,
            counts: false,
            retry_after: None,
        }
    }
}

/// The successful answer (RFC 6749 §5.1). The token is also in
/// `Authorization` for clients that read headers, marked sensitive so no
/// layer logs it.
pub(super) fn token_response(issued: &Issued) -> Response<Body> {
    let body = serde_json::json!({
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    });
    let mut response = json_response(StatusCode::OK, &body);
    let headers = response.headers_mut();
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Authorization, X-Execution-Key"),
    );
    if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", issued.token)) {
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    response
}

/// The error answer for `failure` (RFC 6749 §5.2).
pub(super) fn failure_response(failure: &Failure, key: Option<&ExecutionKey>) -> Response<Body> {
    let mut response = json_error(failure.status, failure.error, failure.description, key);
    let headers = response.headers_mut();
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if failure.status == StatusCode::UNAUTHORIZED {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"warden\""),
        );
    }
    if let Some(wait) = failure.retry_after {
        // Retry-After counts whole seconds; 0 would invite an instant retry.
        let seconds = wait.as_secs().max(1).to_string();
        if let Ok(value) = HeaderValue::from_str(&seconds) {
            headers.insert(header::RETRY_AFTER, value);
        }
    }
    response
}
