//! Rate limits per route (SPEC §11): `requests` per `per` with `burst`,
//! counted per key by the GCRA of [`crate::shared_state::gcra`], in this
//! process or fleet-wide in Redis.
//!
//! Keys that need no token (`client_ip`, `header:NAME`, `route`) are
//! counted before the token is verified, so a flood costs no signature
//! check; keys taken from the token (`sub`, `claim:NAME`) after, so a forged
//! token cannot drain someone else's bucket. [`RateLimitLayer`] is placed
//! by the composition root accordingly.

mod layer;

use http::HeaderName;

pub use layer::{RateLimit, RateLimitLayer};

use crate::shared_state::gcra::Policy;

/// What a route's requests are counted by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// The token's `sub` (jwt routes).
    Subject,
    /// The client's address.
    ClientIp,
    /// A claim of the token (jwt routes).
    Claim(String),
    /// A request header.
    Header(HeaderName),
    /// One bucket for the whole route.
    Route,
}

impl LimitKey {
    /// Parses the `key` of a route's `rate_limit`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "sub" => Some(LimitKey::Subject),
            "client_ip" => Some(LimitKey::ClientIp),
            "route" => Some(LimitKey::Route),
            _ => {
                if let Some(claim) = text.strip_prefix("claim:") {
                    return (!claim.is_empty()).then(|| LimitKey::Claim(claim.to_owned()));
                }
                let header = text.strip_prefix("header:")?;
                HeaderName::from_bytes(header.as_bytes())
                    .ok()
                    .map(LimitKey::Header)
            }
        }
    }

    /// Whether the key is read from the verified token.
    pub fn needs_token(&self) -> bool {
        matches!(self, LimitKey::Subject | LimitKey::Claim(_))
    }
}

/// A route's `rate_limit`, validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateLimitSettings {
    /// How many, how often, how many more at once.
    pub policy: Policy,
    /// What requests are counted by.
    pub key: LimitKey,
}
