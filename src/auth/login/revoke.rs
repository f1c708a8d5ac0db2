//! `POST {login.path}/revoke`: the holder of a valid token revokes it.
//!
//! The bearer token is verified like any other (so an expired or already
//! revoked token cannot be revoked), then its `jti` is put in the shared
//! [`AuthState`] until the token's `exp`. Every call is audited as a
//! `token_use`, and a revocation also as `token_revoked`.
//!
//! Answers 200 `{"revoked": true, "jti", "execution_key"}`, 400
//! `invalid_request` for a token without `jti`, and the gateway's usual 401
//! rejections for a missing or invalid token. Reads the `ConnectInfo`
//! extension for the audited client address; the execution key is passed in.

use std::sync::Arc;

use http::{Request, Response, StatusCode};

use super::request::client_ip;
use crate::audit::AuditLog;
use crate::auth::state::AuthState;
use crate::auth::{Authenticator, Principal, Reason, TokenUse, bearer_token, rejection_response};
use crate::body::Body;
use crate::error::{json_error, json_response};
use crate::execution_key::ExecutionKey;

/// `POST {login.path}/revoke`.
#[derive(Debug)]
pub(super) struct Revoke {
    /// The route label this endpoint is audited under.
    route: &'static str,
    authenticator: Arc<Authenticator>,
    state: Arc<dyn AuthState>,
    audit: AuditLog,
}

impl Revoke {
    pub(super) fn new(
        route: &'static str,
        authenticator: Arc<Authenticator>,
        state: Arc<dyn AuthState>,
        audit: AuditLog,
    ) -> Self {
        Self {
            route,
            authenticator,
            state,
            audit,
        }
    }

    /// Answers a revocation request, audited as a `token_use` like any
    /// request that presents a token.
    pub(super) async fn answer(
        &self,
        request: Request<Body>,
        key: Option<&ExecutionKey>,
    ) -> Response<Body> {
        let started = std::time::Instant::now();
        let token = match bearer_token(request.headers()) {
            Ok(token) => token.to_owned(),
            Err(rejection) => return rejection_response(rejection, None, key),
        };
        let (response, principal, denied) =
            match self.authenticator.authenticate_detailed(&token).await {
                Ok(principal) => (self.revoke_token(&principal, key), Some(principal), None),
                Err((rejection, known)) => (
                    rejection_response(rejection, None, key),
                    known,
                    Some(rejection),
                ),
            };
        let usage = TokenUse {
            route: self.route,
            method: request.method(),
            path: request.uri().path(),
            client_ip: client_ip(&request),
            principal: principal.as_deref(),
            status: response.status(),
            reason: denied.map_or(Reason::MissingToken, |r| r.reason),
            allowed: denied.is_none(),
            started,
        };
        usage.audit(&self.audit, key);
        response
    }

    fn revoke_token(&self, principal: &Principal, key: Option<&ExecutionKey>) -> Response<Body> {
        let Some(jti) = principal.jti.clone() else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the token has no jti, so it cannot be revoked",
                key,
            );
        };
        self.state.revoke(&principal.iss, &jti, principal.exp);
        self.audit
            .event("token_revoked", key)
            .field("jti", jti.clone())
            .field("iss", principal.iss.clone())
            .field("sub", principal.sub.clone())
            .field("exp", principal.exp)
            .field("by", "token_holder")
            .send();
        let body = serde_json::json!({ "revoked": true, "jti": jti, "execution_key": key.map(ExecutionKey::as_str) });
        json_response(StatusCode::OK, &body)
    }
}
