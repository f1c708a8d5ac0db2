//! `POST {login.path}/revoke`: the holder of a valid token revokes it.
//!
//! The bearer token is verified like any other (so an expired or already
//! revoked token cannot be revoked), then its `jti` is put in the shared
//! [`AuthState`] until the token's `exp`. Every call that presents a
//! token leaves an [`AuthOutcome`] for the `token_use` audit, and a
//! revocation is also audited as `token_revoked`.
//!
//! Answers 200 `{"revoked": true, "jti", "execution_key"}` once the
//! revocation is stored where every replica sees it (503
//! `shared_state_unavailable` when it cannot be), 400
//! `invalid_request` for a token without `jti`, and the gateway's usual 401
//! rejections for a missing or invalid token; the execution key is passed in.

use std::sync::Arc;

use http::{Request, Response, StatusCode};

use crate::audit::AuditLog;
use crate::auth::{
    AuthOutcome, Authenticator, Principal, Reason, bearer_token, rejection_response, revoked_until,
};
use crate::body::Body;
use crate::error::{ErrorCode, GatewayError, json_error, json_response};
use crate::execution_key::ExecutionKey;
use crate::shared_state::AuthState;

/// `POST {login.path}/revoke`.
#[derive(Debug)]
pub(super) struct Revoke {
    authenticator: Arc<Authenticator>,
    state: Arc<dyn AuthState>,
    audit: AuditLog,
}

impl Revoke {
    pub(super) fn new(
        authenticator: Arc<Authenticator>,
        state: Arc<dyn AuthState>,
        audit: AuditLog,
    ) -> Self {
        Self {
            authenticator,
            state,
            audit,
        }
    }

    /// Answers a revocation request. The answer carries an [`AuthOutcome`],
    /// so it is audited as a `token_use` like any request that presents a
    /// token.
    pub(super) async fn answer(
        &self,
        request: Request<Body>,
        key: Option<&ExecutionKey>,
    ) -> Response<Body> {
        let token = match bearer_token(request.headers()) {
            Ok(token) => token.to_owned(),
            Err(rejection) => {
                let mut response = rejection_response(rejection, None, key);
                // Two Authorization headers, or one that is not text, still
                // present a token: audited like any refused one.
                if rejection.reason != Reason::MissingToken {
                    let outcome = AuthOutcome::denied(rejection.reason, None);
                    response.extensions_mut().insert(outcome);
                }
                return response;
            }
        };
        let (response, principal, denied) =
            match self.authenticator.authenticate_detailed(&token).await {
                Ok(principal) => (
                    self.revoke_token(&principal, key).await,
                    Some(principal),
                    None,
                ),
                Err((rejection, known)) => (
                    rejection_response(rejection, None, key),
                    known,
                    Some(rejection),
                ),
            };
        let mut response = response;
        let outcome = match denied {
            None => principal.map(AuthOutcome::allowed),
            Some(rejection) => Some(AuthOutcome::denied(rejection.reason, principal)),
        };
        // The token-use observer in front of the endpoint audits it from this.
        if let Some(outcome) = outcome {
            response.extensions_mut().insert(outcome);
        }
        response
    }

    async fn revoke_token(
        &self,
        principal: &Principal,
        key: Option<&ExecutionKey>,
    ) -> Response<Body> {
        let Some(jti) = principal.jti.clone() else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the token has no jti, so it cannot be revoked",
                key,
            );
        };
        let until = revoked_until(principal.exp);
        if self
            .state
            .revoke(&principal.iss, &jti, until)
            .await
            .is_err()
        {
            // Refused on this replica already; the others would not know.
            return GatewayError::new(
                ErrorCode::SharedStateUnavailable,
                "the revocation could not be stored where every replica sees it; retry",
            )
            .into_response(key);
        }
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
