//! What the operator endpoints (`/admin/*`) are checked against, per
//! generation.
//!
//! Each config generation carries its own [`AdminAuth`] (its authenticator,
//! its `iss`, its credential store); the admin listener reads the one in
//! force for every operator request.

use std::sync::Arc;

use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::credentials::Credentials;
use crate::shared_state::AuthState;

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
    /// `[audit] on_failure`: operator tokens are refused like any other
    /// while the audit log cannot be written.
    pub on_failure: crate::audit::OnFailure,
    /// The gateway's own `iss`: only its own tokens may operate it, never a
    /// trusted issuer's.
    pub own_iss: Option<String>,
    /// The upstream credentials the admin API manages.
    pub credentials: Arc<Credentials>,
    /// The users' OAuth connections the admin API lists, when configured.
    pub connections: Option<Arc<crate::oauth_connections::OauthConnections>>,
}

/// The scope an operator's token needs for `/admin/*`.
pub const ADMIN_SCOPE: &str = "warden:admin";
