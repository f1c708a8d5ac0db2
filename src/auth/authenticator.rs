//! The [`Authenticator`]: verifies a bearer token against the gateway's own
//! keys and its trusted issuers, with a cache of verified tokens, and checks
//! that it is not revoked.
//!
//! Shared by every jwt route, the revocation endpoint and the admin
//! listener. Verification itself is the pure [`jwt::verify`]; this adds the
//! cache (keyed by the token's SHA-256, admitted at a token's second
//! verification, entries living no longer than the token nor 5 minutes), a
//! JWKS refetch for an unknown `kid` of a trusted issuer, and the revocation
//! lookup.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;

use super::cache_admission::CacheAdmission;
use super::jwe::{
    DECRYPT_ERROR_DESCRIPTION, DecryptFailure, DecryptionKey, decrypt, is_compact_jwe,
};
use super::jwks::TrustedIssuer;
use super::jwt::{self, Principal, Reason, Rejection};
use crate::clock::unix_now;
use crate::metrics::Metrics;
use crate::shared_state::AuthState;

/// `[validation]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationSettings {
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Longer tokens are refused before any parsing.
    pub max_token_bytes: usize,
    /// Entries in the verified-token cache.
    pub cache_entries: u64,
    /// The longest lifetime a token may claim, `exp` after `iat` (or
    /// after now, without `iat`): SPEC §15.
    pub max_token_lifetime: Duration,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        Self {
            leeway: Duration::from_secs(30),
            max_token_bytes: 8192,
            // About 15 MiB at most: enough for the clients in flight, bounded
            // when every request brings a new token.
            cache_entries: 10_000,
            max_token_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// The longest `validation.leeway` a config may set, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// How long past `exp` a revocation is kept: the longest `leeway` a config
/// may set, and a minute more, so leeway can never revive a revoked token.
pub const REVOCATION_MARGIN_SECS: i64 = MAX_LEEWAY_SECS as i64 + 60;

/// A token's verdict: its principal, or the refusal (with the principal
/// when the signature verified, for the audit log).
pub type Verdict = Result<Arc<Principal>, (Rejection, Option<Arc<Principal>>)>;

/// What [`Authenticator::authenticate_now`] found.
#[derive(Debug)]
pub enum Now {
    /// The verdict.
    Verdict(Verdict),
    /// The token's `kid` is unknown to the trusted issuer it names: its
    /// JWKS is fetched again, then the token is tried once more; if the
    /// refetch is refused (too soon) or finds nothing, `rejection` stands.
    Refetch {
        /// The issuer.
        issuer: Arc<TrustedIssuer>,
        /// The unknown key id.
        kid: String,
        /// The refusal if the refetch does not help.
        rejection: Rejection,
    },
}

/// Until when a token that expires at `exp` stays revoked.
pub fn revoked_until(exp: i64) -> i64 {
    exp.saturating_add(REVOCATION_MARGIN_SECS)
}

/// The longest a verified token stays cached (less if it expires sooner),
/// so a key removed from a JWKS stops working within this time.
const MAX_CACHE_LIFETIME: Duration = Duration::from_secs(300);

struct CacheExpiry;

impl moka::Expiry<[u8; 32], Arc<Principal>> for CacheExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Principal>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let remaining = u64::try_from(value.exp.saturating_sub(unix_now())).unwrap_or(0);
        Some(Duration::from_secs(remaining).min(MAX_CACHE_LIFETIME))
    }
}

/// Verifies tokens against the gateway's keys and its trusted issuers,
/// with a cache of verified tokens. Shared by every route.
pub struct Authenticator {
    state: Arc<dyn AuthState>,
    own: Arc<jwt::KeySet>,
    issuers: Vec<Arc<TrustedIssuer>>,
    /// Keys that decrypt encrypted tokens (nested JWTs).
    decryption: Arc<[Arc<DecryptionKey>]>,
    cache: moka::sync::Cache<[u8; 32], Arc<Principal>>,
    /// Which verified tokens go into the cache.
    admission: CacheAdmission,
    leeway: i64,
    max_token_bytes: usize,
    /// `max_token_lifetime`, in seconds.
    max_lifetime: i64,
    cache_hit: IntCounter,
    cache_miss: IntCounter,
}

/// Whether `text` has the shape of a compact JWS: three base64url segments
/// whose first decodes to a JSON object. Claims that happen to hold two dots
/// (`"iss": "https://a.b.c"`) do not: they are "not signed", not malformed.
fn looks_like_jws(text: &str) -> bool {
    use base64::Engine;
    let mut segments = text.split('.');
    let (Some(header), Some(_), Some(_), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return false;
    };
    let base64url = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.';
    text.bytes().all(base64url)
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .is_some_and(|value| value.is_object())
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("own_keys", &self.own.len())
            .field("issuers", &self.issuers)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over `own` keys and `issuers`; `state` holds the
    /// revoked token ids.
    pub fn new(
        own: jwt::KeySet,
        issuers: Vec<Arc<TrustedIssuer>>,
        state: Arc<dyn AuthState>,
        settings: &ValidationSettings,
        metrics: &Metrics,
    ) -> Self {
        Self {
            state,
            own: Arc::new(own),
            issuers,
            decryption: Arc::new([]),
            cache: moka::sync::Cache::builder()
                .max_capacity(settings.cache_entries)
                .expire_after(CacheExpiry)
                .build(),
            admission: CacheAdmission::new(settings.cache_entries),
            leeway: i64::try_from(settings.leeway.as_secs()).unwrap_or(i64::MAX),
            max_token_bytes: settings.max_token_bytes,
            max_lifetime: i64::try_from(settings.max_token_lifetime.as_secs()).unwrap_or(i64::MAX),
            cache_hit: metrics.token_cache_requests.with_label_values(&["hit"]),
            cache_miss: metrics.token_cache_requests.with_label_values(&["miss"]),
        }
    }

    /// The authenticator, also accepting tokens encrypted to `keys`.
    #[must_use]
    pub fn with_decryption_keys(mut self, keys: &[Arc<DecryptionKey>]) -> Self {
        self.decryption = keys.into();
        self
    }

    fn verify_now(&self, token: &str) -> Result<Principal, (Rejection, jwt::Unverified)> {
        let guards: Vec<_> = self.issuers.iter().map(|i| i.keys()).collect();
        let mut sets: Vec<&jwt::KeySet> = Vec::with_capacity(1 + guards.len());
        sets.push(&self.own);
        sets.extend(guards.iter().map(|g| &***g));
        jwt::verify(token, &sets, unix_now(), self.leeway)
    }

    /// Verifies `token` (cache first) and checks that it is not revoked.
    /// An unknown `kid` of a trusted issuer may trigger one refetch of its
    /// JWKS, then one more try.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, Rejection> {
        self.authenticate_detailed(token).await.map_err(|(r, _)| r)
    }

    /// [`Authenticator::authenticate`], also returning the verified
    /// principal of a token refused after verification (revoked), for the
    /// audit log.
    pub async fn authenticate_detailed(&self, token: &str) -> Verdict {
        match self.authenticate_now(token) {
            Now::Verdict(verdict) => verdict,
            Now::Refetch {
                issuer,
                kid,
                rejection,
            } => {
                if issuer.refetch_for_unknown_kid(&kid).await
                    && let Now::Verdict(verdict) = self.authenticate_now(token)
                {
                    return verdict;
                }
                Err((rejection, None))
            }
        }
    }

    /// [`Authenticator::authenticate_detailed`] without waiting: the
    /// verdict, or the trusted issuer whose JWKS must be fetched again first
    /// (a token with a `kid` it does not know yet). Every other token,
    /// cached or not, is decided here, so the JWT layer needs no future of
    /// its own for it.
    pub fn authenticate_now(&self, token: &str) -> Now {
        let principal = match self.verify(token) {
            Now::Verdict(Ok(principal)) => principal,
            other => return other,
        };
        Now::Verdict(self.unless_revoked(principal))
    }

    fn unless_revoked(&self, principal: Arc<Principal>) -> Verdict {
        if principal
            .jti
            .as_deref()
            .is_some_and(|jti| self.state.is_revoked(&principal.iss, jti))
        {
            let rejection = Rejection {
                reason: Reason::TokenRevoked,
                description: "token revoked",
            };
            return Err((rejection, Some(principal)));
        }
        Ok(principal)
    }

    /// Verifies a compact JWS. An unknown `kid` of a trusted issuer asks
    /// for one refetch of its JWKS (then one more try).
    fn verify_signed(&self, token: &str) -> Result<Principal, Now> {
        let signed = |(rejection, unverified): (Rejection, jwt::Unverified)| {
            Now::Verdict(Err((rejection, unverified.signed.map(|p| Arc::new(*p)))))
        };
        match self.verify_now(token) {
            Err((rejection, unverified)) if rejection.reason == Reason::UnknownKid => {
                Err(match self.issuer_to_refetch(&unverified) {
                    Some((issuer, kid)) => Now::Refetch {
                        issuer,
                        kid,
                        rejection,
                    },
                    None => Now::Verdict(Err((rejection, None))),
                })
            }
            other => other.map_err(signed),
        }
    }

    /// Decrypts an encrypted token to the JWS it must hold (SPEC §12):
    /// the JWS and the kid of the key that decrypted it. Every failure to
    /// decrypt is one answer; the cause goes to the log only.
    fn decrypt(&self, token: &str) -> Result<(String, String), Rejection> {
        let decrypted = decrypt(token, self.decryption.iter().map(Arc::as_ref)).map_err(|err| {
            let cause = err.reason();
            tracing::info!(cause = cause.as_str(), "encrypted token refused");
            // Algorithms refused by name are refused before any key is
            // used: telling them apart is no oracle, and the metric says so.
            let reason = match cause {
                DecryptFailure::Rsa15Refused
                | DecryptFailure::Pbes2Refused
                | DecryptFailure::AlgNotAllowed
                | DecryptFailure::EncNotAllowed => Reason::AlgNotAllowed,
                _ => Reason::DecryptFailed,
            };
            Rejection {
                reason,
                description: DECRYPT_ERROR_DESCRIPTION,
            }
        })?;
        let not_signed = Rejection {
            reason: Reason::NotSigned,
            description: "token not signed",
        };
        // A nested JWT says so (RFC 7519 §5.2); an absent cty is read as
        // one only if the content is a compact JWS.
        let cty_ok = decrypted
            .cty
            .as_deref()
            .is_none_or(|cty| cty.eq_ignore_ascii_case("JWT"));
        let inner = std::str::from_utf8(&decrypted.plaintext)
            .ok()
            .filter(|text| cty_ok && looks_like_jws(text))
            .ok_or(not_signed)?;
        Ok((inner.to_owned(), decrypted.key.kid().to_owned()))
    }

    /// The trusted issuer a token with an unknown `kid` claims to be from.
    fn issuer_to_refetch(
        &self,
        unverified: &jwt::Unverified,
    ) -> Option<(Arc<TrustedIssuer>, String)> {
        let iss = unverified.iss.as_deref()?;
        let kid = unverified.kid.clone()?;
        for issuer in &self.issuers {
            if issuer.iss() == iss {
                return Some((issuer.clone(), kid));
            }
        }
        None
    }

    /// Verifies `token`, cache first. On failure, also returns the signed
    /// claims when the signature verified (for the audit log).
    fn verify(&self, token: &str) -> Now {
        if token.len() > self.max_token_bytes {
            let rejection = Rejection {
                reason: Reason::TokenTooLarge,
                description: "token too large",
            };
            return Now::Verdict(Err((rejection, None)));
        }
        let cache_key = crate::crypto::sha256(token.as_bytes());
        if let Some(principal) = self.cache.get(&cache_key) {
            self.cache_hit.inc();
            return Now::Verdict(match principal.check_time(unix_now(), self.leeway) {
                Ok(()) => Ok(principal),
                Err(rejection) => Err((rejection, Some(principal))),
            });
        }
        self.cache_miss.inc();
        // The cache is keyed on the token as presented: a repeated
        // encrypted token costs a hash, not a decryption.
        let verified = if is_compact_jwe(token) {
            let (inner, kid) = match self.decrypt(token) {
                Ok(decrypted) => decrypted,
                Err(rejection) => return Now::Verdict(Err((rejection, None))),
            };
            // The audit names the decryption key whether or not the JWS
            // inside is then accepted.
            let mark = |mut principal: Principal| {
                principal.decrypted_with = Some(kid.clone());
                principal
            };
            self.verify_signed(&inner)
                .map(mark)
                .map_err(|now| match now {
                    Now::Verdict(Err((rejection, signed))) => Now::Verdict(Err((
                        rejection,
                        signed.map(|p| Arc::new(mark((*p).clone()))),
                    ))),
                    other => other,
                })
        } else {
            self.verify_signed(token)
        };
        let principal = match verified {
            Ok(principal) => Arc::new(principal),
            Err(now) => return now,
        };
        // Own and trusted tokens alike, encrypted or not; checked once,
        // before the cache: a lifetime does not grow while it is cached.
        if let Err(rejection) = principal.check_lifetime(unix_now(), self.max_lifetime) {
            return Now::Verdict(Err((rejection, Some(principal))));
        }
        if self.admission.admit(&cache_key) {
            self.cache.insert(cache_key, principal.clone());
        }
        Now::Verdict(Ok(principal))
    }
}
