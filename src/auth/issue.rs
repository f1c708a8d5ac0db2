//! Token issuing: the gateway's own tokens, signed with `issuer.signing_kid`.
//!
//! Used by the login route and by `warden token`. A token carries `iss`,
//! `sub`, `aud`, `iat`, `nbf`, `exp`, `jti` (a UUIDv7), `scope`, `role`, the
//! identity's extra claims, and `txn` (the execution key of the request
//! that obtained it). Its header names the `kid`. No password, key or hash
//! ever enters a token.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value};

use super::jwe::DecryptionKey;
use super::keys::LoadedKey;
use crate::clock::unix_now;

/// `[issuer]`, validated: the gateway's own tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerSettings {
    /// `iss` of the gateway's tokens, and required of tokens its keys verify.
    pub iss: String,
    /// `aud` of its tokens; tokens its keys verify must hold one of them.
    pub audiences: Vec<String>,
    /// The key that signs issued tokens.
    pub signing_kid: Option<String>,
    /// The default lifetime of issued tokens.
    pub ttl: Duration,
    /// The longest lifetime of issued tokens.
    pub max_ttl: Duration,
}

/// Claims an identity's extra `claims` may not set: the issuer sets them,
/// or (`scp`, `scopes`) the validator reads scopes from them.
pub const RESERVED_CLAIMS: [&str; 12] = [
    "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope", "scp", "scopes", "role", "txn",
];

/// Signs the gateway's tokens.
pub struct TokenIssuer {
    iss: String,
    audiences: Vec<String>,
    kid: String,
    header: Header,
    key: EncodingKey,
    ttl: Duration,
    max_ttl: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("iss", &self.iss)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a token is issued for.
#[derive(Clone, Debug, Default)]
pub struct Grant<'a> {
    /// `sub`.
    pub sub: &'a str,
    /// `role`, when the identity has one.
    pub role: Option<&'a str>,
    /// The granted scopes.
    pub scopes: &'a [String],
    /// Extra claims (never one of [`RESERVED_CLAIMS`]).
    pub claims: Option<&'a Map<String, Value>>,
    /// The execution key of the request that obtained the token.
    pub txn: Option<&'a str>,
    /// A lifetime other than `issuer.ttl` (capped by `max_ttl`).
    pub ttl: Option<Duration>,
}

/// An issued token.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The compact JWS.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`.
    pub exp: i64,
    /// Seconds until `exp`.
    pub expires_in: u64,
    /// The granted scopes, space-separated.
    pub scope: String,
}

/// Signing failed (a key that does not fit its algorithm).
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the token: {0}")]
pub struct IssueError(String);

impl TokenIssuer {
    /// The issuer for `settings`, signing with `key` (which must be able to sign).
    pub fn new(settings: &IssuerSettings, key: &Arc<LoadedKey>) -> Option<Self> {
        let encoding = key.encoding.clone()?;
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".into());
        Some(Self {
            iss: settings.iss.clone(),
            audiences: settings.audiences.clone(),
            kid: key.kid.clone(),
            header,
            key: encoding,
            ttl: settings.ttl,
            max_ttl: settings.max_ttl,
        })
    }

    /// The gateway's `iss`.
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// Signs `claims` as they are (a token for an upstream: its caller
    /// sets every claim).
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, IssueError> {
        let token = jsonwebtoken::encode(&self.header, claims, &self.key)
            .map_err(|e| IssueError(e.to_string()))?;
        Ok(super::ecdsa::low_s_token(self.header.alg, &token))
    }

    /// Signs a token for `grant`.
    pub fn issue(&self, grant: &Grant<'_>) -> Result<Issued, IssueError> {
        let now = unix_now();
        let ttl = grant.ttl.unwrap_or(self.ttl).min(self.max_ttl);
        let lifetime = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let exp = now.saturating_add(lifetime);
        let jti = uuid::Uuid::now_v7().hyphenated().to_string();
        let scope = grant.scopes.join(" ");

        let mut claims = Map::new();
        for (name, value) in grant.claims.into_iter().flatten() {
            if !RESERVED_CLAIMS.contains(&name.as_str()) {
                claims.insert(name.clone(), value.clone());
            }
        }
        claims.insert("iss".into(), self.iss.clone().into());
        claims.insert("sub".into(), grant.sub.into());
        claims.insert(
            "aud".into(),
            match self.audiences.as_slice() {
                [one] => one.clone().into(),
                many => many.to_vec().into(),
            },
        );
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert("exp".into(), exp.into());
        claims.insert("jti".into(), jti.clone().into());
        claims.insert("scope".into(), scope.clone().into());
        if let Some(role) = grant.role {
            claims.insert("role".into(), role.into());
        }
        if let Some(txn) = grant.txn {
            claims.insert("txn".into(), txn.into());
        }
        let token = jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|e| IssueError(e.to_string()))?;
        // The verifier accepts only the low-s form of an ECDSA signature.
        let token = super::ecdsa::low_s_token(self.header.alg, &token);
        Ok(Issued {
            token,
            jti,
            exp,
            expires_in: u64::try_from(lifetime).unwrap_or(0),
            scope,
        })
    }
}

/// The public JWKS of `keys`: the public half of every asymmetric key with
/// `kid`, `kty`, `alg`, `use: "sig"` and its public parameters only; then
/// the public half of every asymmetric decryption key, with `use: "enc"`,
/// so clients can encrypt to the gateway (never a shared secret).
pub fn public_jwks(keys: &[Arc<LoadedKey>], decryption: &[Arc<DecryptionKey>]) -> Value {
    const PUBLIC_PARAMETERS: [&str; 6] = ["kty", "crv", "x", "y", "n", "e"];
    let published: Vec<Value> = keys
        .iter()
        .filter_map(|key| {
            let jwk = serde_json::to_value(key.public_jwk.as_ref()?).ok()?;
            let mut out = Map::new();
            for name in PUBLIC_PARAMETERS {
                if let Some(value) = jwk.get(name) {
                    out.insert(name.into(), value.clone());
                }
            }
            out.insert("kid".into(), key.kid.clone().into());
            out.insert("alg".into(), super::keys::alg_name(key.alg).into());
            out.insert("use".into(), "sig".into());
            Some(Value::Object(out))
        })
        .chain(decryption.iter().filter_map(|key| key.public_jwk()))
        .collect();
    serde_json::json!({ "keys": published })
}
