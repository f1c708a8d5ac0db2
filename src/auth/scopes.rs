//! What a route requires of a verified token: scopes (for every method, and
//! per method) and claim values. A pure check, [`RouteAuthz::check`].
//!
//! Scopes match whole words: `admin` never matches `superadmin` or
//! `admin:read`. A required claim matches when the token's value (a string,
//! number or boolean, or any element of an array) equals one of the allowed
//! values.

use http::Method;
use serde_json::Value;

use super::jwt::{Principal, Reason};

/// A route's authorization rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteAuthz {
    /// Required for every method.
    pub scopes: Vec<String>,
    /// Further scopes per method.
    pub method_scopes: Vec<(Method, Vec<String>)>,
    /// Claim name → allowed values.
    pub require_claims: Vec<(String, Vec<String>)>,
}

/// Why a verified token may not use a route: the reason (insufficient scope
/// or claim mismatch) and the scopes the route needs for this method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// `InsufficientScope` or `ClaimMismatch`.
    pub reason: Reason,
    /// Every scope the route requires for the method, space-separated.
    pub needed: String,
    /// The `require_claims` claim that failed, for a claim mismatch.
    pub claim: Option<String>,
}

impl RouteAuthz {
    /// The scopes required for `method`.
    pub fn required_scopes<'a>(&'a self, method: &Method) -> impl Iterator<Item = &'a String> {
        let per_method = self
            .method_scopes
            .iter()
            .filter(move |(m, _)| m == method)
            .flat_map(|(_, scopes)| scopes);
        self.scopes.iter().chain(per_method)
    }

    /// Checks `principal` against the rules for `method`.
    pub fn check(&self, principal: &Principal, method: &Method) -> Result<(), Denied> {
        let missing = self
            .required_scopes(method)
            .any(|needed| !principal.scopes.iter().any(|held| held == needed));
        let denied = |reason, claim: Option<&String>| Denied {
            reason,
            claim: claim.cloned(),
            needed: self
                .required_scopes(method)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        };
        if missing {
            return Err(denied(Reason::InsufficientScope, None));
        }
        for (claim, allowed) in &self.require_claims {
            if !claim_matches(principal.claims.get(claim), allowed) {
                return Err(denied(Reason::ClaimMismatch, Some(claim)));
            }
        }
        Ok(())
    }
}

fn claim_matches(value: Option<&Value>, allowed: &[String]) -> bool {
    match value {
        Some(Value::String(s)) => allowed.iter().any(|a| a == s),
        Some(Value::Number(n)) => allowed.iter().any(|a| *a == n.to_string()),
        Some(Value::Bool(b)) => allowed.iter().any(|a| *a == b.to_string()),
        Some(Value::Array(items)) => items.iter().any(|item| claim_matches(Some(item), allowed)),
        Some(Value::Null | Value::Object(_)) | None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(claims: Value) -> Principal {
        let claims = match claims {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        Principal {
            sub: None,
            iss: "i".into(),
            jti: None,
            exp: 0,
            nbf: None,
            iat: None,
            scopes: super::super::jwt::scopes_of(&claims),
            claims,
            decrypted_with: None,
        }
    }

    fn authz() -> RouteAuthz {
        RouteAuthz {
            scopes: vec!["orders:read".into()],
            method_scopes: vec![(Method::POST, vec!["orders:write".into()])],
            require_claims: vec![("tenant".into(), vec!["acme".into(), "globex".into()])],
        }
    }

    #[test]
    fn scopes_match_whole_words_only() {
        let p =
            principal(serde_json::json!({"scope": "superadmin orders:readonly", "tenant": "acme"}));
        let rules = RouteAuthz {
            scopes: vec!["admin".into()],
            ..RouteAuthz::default()
        };
        assert_eq!(
            rules.check(&p, &Method::GET).map_err(|d| d.reason),
            Err(Reason::InsufficientScope)
        );
        let p = principal(serde_json::json!({"scp": ["admin"]}));
        assert_eq!(rules.check(&p, &Method::GET), Ok(()));
    }

    #[test]
    fn method_scopes_add_to_route_scopes() {
        let p = principal(serde_json::json!({"scope": "orders:read", "tenant": "acme"}));
        assert_eq!(authz().check(&p, &Method::GET), Ok(()));
        let denied = authz().check(&p, &Method::POST);
        assert_eq!(
            denied,
            Err(Denied {
                reason: Reason::InsufficientScope,
                needed: "orders:read orders:write".into(),
                claim: None,
            })
        );
    }

    #[test]
    fn required_claims_must_hold_one_allowed_value() {
        let ok = principal(serde_json::json!({"scope": "orders:read", "tenant": ["x", "globex"]}));
        assert_eq!(authz().check(&ok, &Method::GET), Ok(()));
        for tenant in [
            serde_json::json!("initech"),
            serde_json::json!(null),
            serde_json::json!({"a": "acme"}),
        ] {
            let p = principal(serde_json::json!({"scope": "orders:read", "tenant": tenant}));
            assert_eq!(
                authz().check(&p, &Method::GET),
                Err(Denied {
                    reason: Reason::ClaimMismatch,
                    needed: "orders:read".into(),
                    claim: Some("tenant".into()),
                })
            );
        }
    }
}
