//! The admin listener: `/healthz`, `/readyz`, `/metrics`.
//!
//! It runs on `server.admin_listen`, apart from client traffic, so it can be
//! kept off the public network.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use hyper::body::Incoming;

use super::generation::{Live, Reloader};
use super::operator::{ADMIN_SCOPE, AdminAuth};
use crate::auth::{Principal, Reason, Rejection, bearer_token, rejection_response};
use crate::body::{self, Body};
use crate::credentials::CredentialInput;
use crate::error::{json_error, json_response};
use crate::execution_key::{EXECUTION_KEY_HEADER, ExecutionKey};
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// What an operator request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    /// `POST /admin/revoke`.
    Revoke,
    /// `POST /admin/reload`.
    Reload,
    /// `GET /admin/credentials`.
    ListCredentials,
    /// `PUT /admin/credentials/{name}`.
    PutCredential(String),
    /// `DELETE /admin/credentials/{name}`.
    DeleteCredential(String),
    /// `GET /admin/connections`.
    ListConnections,
    /// `DELETE /admin/connections/{name}/{sub}` (`sub` percent-encoded).
    DeleteConnection(String, String),
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take this method",
        None,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// A credential name: 1-64 of letters, digits, `-`, `_`, `.`.
pub fn is_credential_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Action {
    /// The action, or the methods the path takes (`None`: no such path).
    fn of(method: &Method, path: &str) -> Result<Action, Option<&'static str>> {
        match path {
            "/admin/revoke" if method == Method::POST => Ok(Action::Revoke),
            "/admin/revoke" => Err(Some("POST")),
            "/admin/reload" if method == Method::POST => Ok(Action::Reload),
            "/admin/reload" => Err(Some("POST")),
            "/admin/credentials" if method == Method::GET => Ok(Action::ListCredentials),
            "/admin/credentials" => Err(Some("GET")),
            "/admin/connections" if method == Method::GET => Ok(Action::ListConnections),
            "/admin/connections" => Err(Some("GET")),
            _ if path.starts_with("/admin/connections/") => {
                let rest = &path["/admin/connections/".len()..];
                let (name, sub) = rest.split_once('/').ok_or(None)?;
                let sub = String::from_utf8(crate::percent::path_decode(sub)).map_err(|_| None)?;
                if name.is_empty() || sub.is_empty() {
                    return Err(None);
                }
                match *method {
                    Method::DELETE => Ok(Action::DeleteConnection(name.to_owned(), sub)),
                    _ => Err(Some("DELETE")),
                }
            }
            _ => match path.strip_prefix("/admin/credentials/") {
                Some(name) if is_credential_name(name) => match *method {
                    Method::PUT => Ok(Action::PutCredential(name.to_owned())),
                    Method::DELETE => Ok(Action::DeleteCredential(name.to_owned())),
                    _ => Err(Some("PUT, DELETE")),
                },
                _ => Err(None),
            },
        }
    }

    fn route_name(&self) -> &'static str {
        match self {
            Action::Revoke => "warden-admin-revoke",
            Action::Reload => "warden-admin-reload",
            Action::ListCredentials | Action::PutCredential(_) | Action::DeleteCredential(_) => {
                "warden-admin-credentials"
            }
            Action::ListConnections | Action::DeleteConnection(..) => "warden-admin-connections",
        }
    }
}

/// The admin endpoints.
#[derive(Clone, Debug)]
pub struct Admin {
    metrics: Metrics,
    readiness: Readiness,
    live: Arc<Live>,
    reloader: Option<Arc<Reloader>>,
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
    /// Serves `metrics` and `readiness`, and the operator endpoints of the
    /// generation in force; `reloader` serves `POST /admin/reload`.
    pub fn new(
        metrics: Metrics,
        readiness: Readiness,
        live: Arc<Live>,
        reloader: Option<Arc<Reloader>>,
    ) -> Self {
        Self {
            metrics,
            readiness,
            live,
            reloader,
        }
    }

    /// `POST /admin/reload`.
    async fn reload(&self, key: &ExecutionKey) -> Response<Body> {
        let Some(reloader) = &self.reloader else {
            return json_error(
                StatusCode::CONFLICT,
                "no_config_file",
                "this gateway was started without a config file to reload",
                Some(key),
            );
        };
        match reloader.reload().await {
            Ok(hash) => json_response(
                StatusCode::OK,
                &serde_json::json!({ "reloaded": true, "config_sha256": hash, "execution_key": key.as_str() }),
            ),
            Err(err) => {
                let problems: Vec<String> = match &err {
                    super::generation::ReloadError::Invalid(config) => {
                        config.problems.iter().map(ToString::to_string).collect()
                    }
                    super::generation::ReloadError::Build(start) => vec![start.to_string()],
                };
                json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &serde_json::json!({
                        "error": "invalid_config",
                        "error_description": "the new config was refused; the old one keeps serving",
                        "problems": problems,
                        "execution_key": key.as_str(),
                    }),
                )
            }
        }
    }

    fn list_credentials(auth: &AdminAuth, key: &ExecutionKey) -> Response<Body> {
        let list = auth.credentials.list();
        json_response(
            StatusCode::OK,
            &serde_json::json!({ "credentials": list, "execution_key": key.as_str() }),
        )
    }

    async fn list_connections(auth: &AdminAuth, key: &ExecutionKey) -> Response<Body> {
        let list = match &auth.connections {
            Some(connections) => match connections.summaries().await {
                Ok(list) => list,
                Err(err) => return Self::vault_failed(&err, key),
            },
            None => Vec::new(),
        };
        json_response(
            StatusCode::OK,
            &serde_json::json!({ "connections": list, "execution_key": key.as_str() }),
        )
    }

    async fn delete_connection(
        auth: &AdminAuth,
        name: &str,
        sub: &str,
        key: &ExecutionKey,
    ) -> Response<Body> {
        // Records of a connection no longer configured can be removed too.
        let Some(connections) = auth.connections.as_ref() else {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such connection",
                Some(key),
            );
        };
        match connections
            .remove_subject(name, sub, "admin", Some(key))
            .await
        {
            Ok(0) => json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "the subject has no record at this connection",
                Some(key),
            ),
            Ok(removed) => json_response(
                StatusCode::OK,
                &serde_json::json!({ "connection": name, "removed": removed, "execution_key": key.as_str() }),
            ),
            Err(err) => Self::vault_failed(&err, key),
        }
    }

    fn vault_failed(
        err: &crate::oauth_connections::vault::VaultError,
        key: &ExecutionKey,
    ) -> Response<Body> {
        tracing::error!(error = %err, "the connection vault cannot be used");
        json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection_store_unavailable",
            "the connection store cannot be read",
            Some(key),
        )
    }

    fn no_store(key: &ExecutionKey) -> Response<Body> {
        json_error(
            StatusCode::CONFLICT,
            "no_credential_store",
            "no [credentials] store is configured",
            Some(key),
        )
    }

    fn store_failed(
        err: &crate::credentials::store::StoreError,
        key: &ExecutionKey,
    ) -> Response<Body> {
        tracing::error!(error = %err, "the credential store could not be updated");
        json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the credential store could not be updated",
            Some(key),
        )
    }

    async fn put_credential(
        auth: &AdminAuth,
        name: &str,
        body: Incoming,
        principal: &Principal,
        key: &ExecutionKey,
    ) -> Response<Body> {
        let Some(store) = auth.credentials.store() else {
            return Self::no_store(key);
        };
        let input = body::read_to_limit(body, 64 * 1024)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<CredentialInput>(&b).ok());
        let Some(input) = input else {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be a JSON credential: {\"kind\": \"api_key\", \"value\": \"...\"} (see docs/credentials.md)",
                Some(key),
            );
        };
        let existing = auth.credentials.get(name);
        let credential = match input.build(existing.as_deref()) {
            Ok(credential) => credential,
            Err(why) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &why.to_string(),
                    Some(key),
                );
            }
        };
        let kind = credential.kind.name();
        let summary = credential.summary(name);
        let stored =
            store.update(|contents| contents.credentials.insert(name.to_owned(), credential));
        if let Err(err) = stored.and_then(|_| auth.credentials.reload()) {
            return Self::store_failed(&err, key);
        }
        let action = if existing.is_some() {
            "updated"
        } else {
            "created"
        };
        auth.audit
            .event("credential_changed", Some(key))
            .field("name", name)
            .field("kind", kind)
            .field("action", action)
            .field("by", principal.sub.clone())
            .send();
        let status = if existing.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        json_response(status, &summary)
    }

    fn delete_credential(
        auth: &AdminAuth,
        name: &str,
        principal: &Principal,
        key: &ExecutionKey,
    ) -> Response<Body> {
        let Some(store) = auth.credentials.store() else {
            return Self::no_store(key);
        };
        let removed = store.update(|contents| contents.credentials.remove(name));
        let removed = match removed {
            Ok(removed) => removed,
            Err(err) => return Self::store_failed(&err, key),
        };
        if let Err(err) = auth.credentials.reload() {
            return Self::store_failed(&err, key);
        }
        let Some(removed) = removed else {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such credential",
                Some(key),
            );
        };
        auth.audit
            .event("credential_changed", Some(key))
            .field("name", name)
            .field("kind", removed.kind.name())
            .field("action", "deleted")
            .field("by", principal.sub.clone())
            .send();
        json_response(
            StatusCode::OK,
            &serde_json::json!({ "deleted": name, "execution_key": key.as_str() }),
        )
    }

    /// The readiness conditions `/readyz` reports.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// `POST /admin/revoke {"jti", "exp"}`, for operators.
    /// `/admin/revoke`: an operator's token of the gateway's own issuer with
    /// `warden:admin`, audited as a `token_use` like any request presenting
    /// a token; every answer carries the execution key and `no-store`.
    async fn operator(&self, request: Request<Incoming>, action: Action) -> Response<Body> {
        let started = std::time::Instant::now();
        let key = ExecutionKey::generate();
        let (parts, body) = request.into_parts();
        let auth = self.live.admin.load_full();
        if crate::token_use::refuse_unaudited(auth.on_failure, &auth.audit, &parts.headers) {
            // Before the token is checked, as on the main listener.
            let mut response = crate::token_use::audit_unavailable(Some(&key));
            let usage = crate::token_use::TokenUse {
                route: action.route_name(),
                method: &parts.method,
                path: parts.uri.path(),
                client_ip: None,
                principal: None,
                status: response.status(),
                denied: Some(crate::token_use::Refusal::AuditUnavailable),
                started,
            };
            usage.audit(&auth.audit, Some(&key));
            response
                .headers_mut()
                .insert(EXECUTION_KEY_HEADER.clone(), key.header_value().clone());
            return response;
        }
        let verified = match bearer_token(&parts.headers) {
            Ok(token) => Some(auth.authenticator.authenticate_detailed(token).await),
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
                let own_token = auth.own_iss.as_deref() == Some(principal.iss.as_str());
                if own_token && principal.scopes.iter().any(|s| s == ADMIN_SCOPE) {
                    let response = match &action {
                        Action::Revoke => Self::revoke(&auth, &principal, body, &key).await,
                        Action::Reload => self.reload(&key).await,
                        Action::ListCredentials => Self::list_credentials(&auth, &key),
                        Action::PutCredential(name) => {
                            Self::put_credential(&auth, name, body, &principal, &key).await
                        }
                        Action::DeleteCredential(name) => {
                            Self::delete_credential(&auth, name, &principal, &key)
                        }
                        Action::ListConnections => Self::list_connections(&auth, &key).await,
                        Action::DeleteConnection(name, sub) => {
                            Self::delete_connection(&auth, name, sub, &key).await
                        }
                    };
                    (response, Some(principal), None)
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
            let usage = crate::token_use::TokenUse {
                route: action.route_name(),
                method: &parts.method,
                path: parts.uri.path(),
                client_ip: None,
                principal: principal.as_deref(),
                status: response.status(),
                denied: denied.map(|r| r.reason.into()),
                started,
            };
            usage.audit(&auth.audit, Some(&key));
        }
        let headers = response.headers_mut();
        headers.insert(EXECUTION_KEY_HEADER.clone(), key.header_value().clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// Revokes what the operator's request body names.
    async fn revoke(
        auth: &AdminAuth,
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
        let until = crate::auth::revoked_until(revoke.exp);
        if auth.state.revoke(&iss, &revoke.jti, until).await.is_err() {
            return crate::error::GatewayError::new(
                crate::error::ErrorCode::SharedStateUnavailable,
                "the revocation could not be stored where every replica sees it; retry",
            )
            .into_response(Some(key));
        }
        auth.audit
            .event("token_revoked", Some(key))
            .field("jti", revoke.jti.clone())
            .field("iss", iss)
            .field("exp", revoke.exp)
            .field("by", principal.sub.clone())
            .send();
        let body = serde_json::json!({ "revoked": true, "jti": revoke.jti, "execution_key": key.as_str() });
        json_response(StatusCode::OK, &body)
    }

    /// Answers one admin request.
    pub async fn handle(&self, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        if request.uri().path().starts_with("/admin/") {
            return Ok(match Action::of(request.method(), request.uri().path()) {
                Ok(action) => self.operator(request, action).await,
                Err(Some(allow)) => method_not_allowed(allow),
                Err(None) => json_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such admin endpoint",
                    None,
                ),
            });
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
                let json = serde_json::json!({
                    "ready": waiting.is_empty(),
                    "waiting_for": waiting,
                    "config_sha256": **self.live.config_sha256.load(),
                });
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
