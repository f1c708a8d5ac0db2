//! Authentication and authorization of requests on `auth = "jwt"` routes.
//!
//! - [`alg`]: JOSE algorithm names;
//! - [`keys`]: the gateway's own key material;
//! - [`jwk`]: JSON Web Keys checked before use;
//! - [`jwks`]: trusted issuers and their remote key sets;
//! - [`jwt`]: the pure verification function;
//! - [`jwe`]: encrypted tokens (compact JWE): decryption, encryption, keys;
//! - [`ecdsa`]: one encoding per ECDSA signature (low `s`);
//! - [`authenticator`]: verification with a cache, revocation, JWKS refetch;
//! - [`layer`]: the JWT layer of jwt routes;
//! - [`rejection`]: the bearer token read, and the RFC 6750 answers;
//! - [`outcome`]: what auth decided, left on the response for the observers;
//! - [`scopes`]: what a route requires of a verified token;
//! - [`forward`]: claims towards the upstream, the token away from it;
//! - [`issue`] and [`login`]: the gateway's own tokens and endpoints;
//! - [`state`]: revocations and login-failure counters.
//!
//! [`JwtAuthLayer`] sits first in a route's stack: nothing reaches the header
//! policy or the upstream without passing it. It reads the one
//! `Authorization: Bearer` header, verifies the token through the shared
//! [`Authenticator`] (which caches verified tokens), checks the route's
//! scopes and claims, and puts the [`Principal`] (as `Arc<Principal>`) into
//! the request extensions, and leaves an [`AuthOutcome`] on every response:
//! metrics and the audit log are written from it by `crate::token_use`, not
//! from inside auth. Rejections follow RFC 6750 (SPEC §4): 401
//! without an error code for a missing token, 400 `invalid_request` for two
//! `Authorization` headers, 401 `invalid_token` for a bad token, 403
//! `insufficient_scope` for a token that may not use the route; each carries
//! the execution key and a reason code that metrics count.

pub mod alg;
pub mod authenticator;
mod cache_admission;
pub mod ecdsa;
pub mod forward;
pub mod issue;
pub mod jwe;
pub mod jwk;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod layer;
pub mod login;
pub mod outcome;
pub mod rejection;
pub mod scopes;
pub mod upstream_token;

pub use authenticator::{
    Authenticator, MAX_LEEWAY_SECS, REVOCATION_MARGIN_SECS, ValidationSettings, revoked_until,
};
pub use jwt::{Principal, Reason, Rejection};
pub use layer::JwtAuthLayer;
pub use outcome::AuthOutcome;
pub use rejection::{bearer_token, rejection_response};
pub use scopes::RouteAuthz;
