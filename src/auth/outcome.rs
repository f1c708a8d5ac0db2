//! What auth decided about a request: [`AuthOutcome`], in the response
//! extensions.
//!
//! Written by the JWT layer on every answer of a jwt route (the upstream's
//! and its own refusals alike), and by the revocation endpoint; read by the
//! observers (`crate::token_use`), which count the decision and write the
//! `token_use` audit event. Auth itself writes neither.

use std::sync::Arc;

use super::jwt::{Principal, Reason};

/// The access log names a verified token by its `sub`.
impl crate::access_log::Subject for Principal {
    fn sub(&self) -> Option<&str> {
        self.sub.as_deref()
    }
}

/// A token's verdict, and what is known of it.
#[derive(Clone, Debug)]
pub struct AuthOutcome {
    /// The verified claims, when the signature verified (a revoked or
    /// under-scoped token has them too, and the audit names them).
    pub principal: Option<Arc<Principal>>,
    /// Why the request was refused; `None` when it was let through.
    pub denied: Option<Reason>,
}

impl AuthOutcome {
    /// A token that was accepted.
    pub fn allowed(principal: Arc<Principal>) -> Self {
        Self {
            principal: Some(principal),
            denied: None,
        }
    }

    /// A request refused for `reason`; `principal` when its claims verified.
    pub fn denied(reason: Reason, principal: Option<Arc<Principal>>) -> Self {
        Self {
            principal,
            denied: Some(reason),
        }
    }

    /// Whether the request presented a token at all: one that did not has
    /// no token use to audit.
    pub fn presented_token(&self) -> bool {
        self.denied != Some(Reason::MissingToken)
    }
}
