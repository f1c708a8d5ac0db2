//! Token verification, as a pure function: [`verify`] takes the token, the
//! keys and the time, and returns the [`Principal`] or the [`Rejection`].
//!
//! The token is parsed here, strictly, rather than by a library that might be
//! lenient: a compact JWS of exactly three base64url segments (no padding, no
//! `+`/`/`, no whitespace, canonical trailing bits) with a JSON object
//! header. Then, in this order:
//!
//! 1. `alg` must name a supported algorithm (`none`, in any casing, never does);
//! 2. an unknown `crit` entry rejects (none are supported); `jku`, `x5u`,
//!    `jwk` and `x5c` are never followed: keys come only from the gateway's
//!    own config and its trusted issuers' JWKS;
//! 3. the key is chosen by `kid` (without `kid`, only when exactly one key
//!    uses the token's algorithm), and the token's `alg` must be the key's;
//! 4. the signature must verify (jsonwebtoken with the aws-lc-rs provider);
//! 5. only then are the claims read: `exp` is required, and `exp`, `nbf`,
//!    `iat` must be numbers (a string `exp` is malformed, not absent:
//!    CVE-2026-25537), checked with `leeway`; `iss` must be the key's issuer;
//!    `aud` must hold one of that issuer's audiences.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::alg::parse_algorithm;

/// Why a request was not let through. Each has a stable code, used in
/// metrics, logs and audit events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// Two or more `Authorization` headers.
    DuplicateAuthorization,
    /// Not a well-formed compact JWS / JWT.
    Malformed,
    /// Longer than `validation.max_token_bytes`.
    TokenTooLarge,
    /// `alg` is `none`, unknown, or not the selected key's algorithm.
    AlgNotAllowed,
    /// No key matches the token's `kid`.
    UnknownKid,
    /// A `crit` header parameter the gateway does not understand.
    CritUnsupported,
    /// The signature does not verify.
    SignatureInvalid,
    /// `exp` is past.
    TokenExpired,
    /// `nbf` or `iat` is in the future.
    TokenNotYetValid,
    /// `exp` lies further than `max_token_lifetime` after `iat` (or now).
    LifetimeTooLong,
    /// `iss` is not the issuer the key belongs to.
    IssuerMismatch,
    /// `aud` holds none of the issuer's audiences.
    AudienceMismatch,
    /// The token's `jti` has been revoked.
    TokenRevoked,
    /// A scope the route requires is missing.
    InsufficientScope,
    /// A claim the route requires is missing or has another value.
    ClaimMismatch,
    /// An encrypted token (JWE) could not be decrypted: one reason for
    /// every cause, so that no answer tells one failure from another.
    DecryptFailed,
    /// An encrypted token whose content is not a signed JWT.
    NotSigned,
    /// The route's rate limit refused the request (the limit's own 429,
    /// not an auth refusal; audited like one when a token was presented).
    RateLimited,
}

impl Reason {
    /// The stable reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::DuplicateAuthorization => "duplicate_authorization",
            Reason::Malformed => "malformed",
            Reason::TokenTooLarge => "token_too_large",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::UnknownKid => "unknown_kid",
            Reason::CritUnsupported => "crit_unsupported",
            Reason::DecryptFailed => "decrypt_failed",
            Reason::NotSigned => "not_signed",
            Reason::SignatureInvalid => "signature_invalid",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::LifetimeTooLong => "lifetime_too_long",
            Reason::IssuerMismatch => "issuer_mismatch",
            Reason::AudienceMismatch => "audience_mismatch",
            Reason::TokenRevoked => "token_revoked",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::ClaimMismatch => "claim_mismatch",
            Reason::RateLimited => "rate_limited",
        }
    }
}

/// A rejected token: the reason and a description that is safe to show
/// (it never holds the token, a claim value or a key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The stable reason.
    pub reason: Reason,
    /// For people.
    pub description: &'static str,
}

fn reject(reason: Reason, description: &'static str) -> Rejection {
    Rejection {
        reason,
        description,
    }
}

/// The issuer a key belongs to, and what its tokens must say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerPolicy {
    /// The required `iss`.
    pub iss: String,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Let through ES256/ES384 signatures with a high `s` (see
    /// [`super::ecdsa`]): for trusted issuers whose signers do not
    /// normalise. Never for the gateway's own keys.
    pub accept_high_s: bool,
}

/// A key that verifies tokens of one issuer with one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    /// Key id; `None` for a key published without one.
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub alg: Algorithm,
    /// The key.
    pub key: DecodingKey,
    /// Whose tokens it verifies.
    pub issuer: Arc<IssuerPolicy>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("iss", &self.issuer.iss)
            .finish_non_exhaustive()
    }
}

/// A set of keys, indexed by `kid`.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
    by_kid: HashMap<String, Arc<VerifyingKey>>,
}

impl KeySet {
    /// Indexes `keys`; on a duplicate `kid`, the first key wins.
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        let keys: Vec<Arc<VerifyingKey>> = keys.into_iter().map(Arc::new).collect();
        let mut by_kid = HashMap::new();
        for key in &keys {
            if let Some(kid) = &key.kid {
                by_kid.entry(kid.clone()).or_insert_with(|| key.clone());
            }
        }
        Self { keys, by_kid }
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key has this `kid`.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}

/// A verified token: who it names and what it allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    /// `sub`, when present.
    pub sub: Option<String>,
    /// `iss`.
    pub iss: String,
    /// `jti`, when present.
    pub jti: Option<String>,
    /// `exp`, seconds since the epoch.
    pub exp: i64,
    /// `nbf`, when present.
    pub nbf: Option<i64>,
    /// `iat`, when present.
    pub iat: Option<i64>,
    /// Scopes from `scope` (space-separated), `scp` and `scopes`.
    pub scopes: Vec<String>,
    /// Every claim, for `require_claims` and `forward_claims`.
    pub claims: Map<String, Value>,
    /// The kid of the key that decrypted the token, when it came encrypted
    /// (a nested JWT, SPEC §12).
    pub decrypted_with: Option<String>,
}

impl Principal {
    /// Whether the token is within its lifetime at `now`, give or take `leeway`.
    pub fn check_time(&self, now: i64, leeway: i64) -> Result<(), Rejection> {
        if now >= self.exp.saturating_add(leeway) {
            return Err(reject(Reason::TokenExpired, "token expired"));
        }
        if self.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(reject(Reason::TokenNotYetValid, "token not yet valid"));
        }
        if self.iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(reject(
                Reason::TokenNotYetValid,
                "token issued in the future",
            ));
        }
        Ok(())
    }

    /// Whether the token's lifetime is at most `max` seconds (SPEC §15):
    /// `exp` minus `iat`, or minus `now` for a token without `iat`. An
    /// `exp` of `1e300` (read as the largest time) never passes.
    pub fn check_lifetime(&self, now: i64, max: i64) -> Result<(), Rejection> {
        let from = self.iat.unwrap_or(now);
        if self.exp.saturating_sub(from) > max {
            return Err(reject(Reason::LifetimeTooLong, "token lifetime too long"));
        }
        Ok(())
    }
}

/// What verification found out about the token before it failed: the
/// unverified `kid` and `iss`, for deciding whether to refetch a trusted
/// issuer's keys; and, when the signature verified but a claim check failed
/// (expired, wrong audience), the signed claims, for the audit log only.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unverified {
    /// The `kid` header, when present.
    pub kid: Option<String>,
    /// The unverified `iss` claim, when readable.
    pub iss: Option<String>,
    /// The claims of a token whose signature verified and whose claims did not.
    pub signed: Option<Box<Principal>>,
}

fn decode_segment(segment: &str) -> Result<Vec<u8>, Rejection> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| reject(Reason::Malformed, "token is not base64url"))
}

fn json_object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, Rejection> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(reject(Reason::Malformed, what)),
    }
}

/// The parts of a compact JWS, after strict syntax checks.
#[derive(Debug)]
pub struct ParsedToken<'a> {
    /// The JOSE header.
    pub header: Map<String, Value>,
    /// `alg`, already checked to be a supported algorithm.
    pub alg: Algorithm,
    /// `kid`, when present.
    pub kid: Option<String>,
    /// `header.payload`, the signing input.
    pub signing_input: &'a str,
    /// The signature segment, still base64url.
    pub signature: &'a str,
    /// The payload segment, still base64url.
    pub payload: &'a str,
}

/// Checks the token's syntax and header (steps 1–2).
pub fn parse(token: &str) -> Result<ParsedToken<'_>, Rejection> {
    let valid_chars = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid_chars {
        return Err(reject(Reason::Malformed, "token is not a compact JWS"));
    }
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(reject(Reason::Malformed, "token is not a compact JWS"));
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(reject(Reason::Malformed, "token has an empty segment"));
    }
    let header_map = json_object(
        &decode_segment(header)?,
        "token header is not a JSON object",
    )?;

    let alg = match header_map.get("alg") {
        Some(Value::String(name)) => parse_algorithm(name)
            .ok_or_else(|| reject(Reason::AlgNotAllowed, "algorithm not allowed"))?,
        _ => return Err(reject(Reason::Malformed, "token header has no alg")),
    };
    if let Some(crit) = header_map.get("crit") {
        return Err(match crit {
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
                reject(
                    Reason::CritUnsupported,
                    "unsupported critical header parameter",
                )
            }
            _ => reject(Reason::Malformed, "token header has an invalid crit"),
        });
    }
    if header_map.contains_key("b64")
        || header_map.contains_key("enc")
        || header_map.contains_key("zip")
    {
        return Err(reject(
            Reason::Malformed,
            "token header is not that of a JWS",
        ));
    }
    let kid = match header_map.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(reject(Reason::Malformed, "token header has an invalid kid")),
    };
    let signing_input = &token[..header.len() + 1 + payload.len()];
    Ok(ParsedToken {
        header: header_map,
        alg,
        kid,
        signing_input,
        signature,
        payload,
    })
}

/// Selects the key (step 3). Keys of the issuer named by `iss_hint` are
/// preferred when two sets share a `kid`.
fn select_key(
    sets: &[&KeySet],
    parsed: &ParsedToken<'_>,
    iss_hint: Option<&str>,
) -> Result<Arc<VerifyingKey>, Rejection> {
    let key = match &parsed.kid {
        Some(kid) => {
            let mut found: Option<&Arc<VerifyingKey>> = None;
            for set in sets {
                if let Some(key) = set.by_kid.get(kid)
                    && (found.is_none() || iss_hint == Some(key.issuer.iss.as_str()))
                {
                    found = Some(key);
                }
            }
            found
                .cloned()
                .ok_or_else(|| reject(Reason::UnknownKid, "unknown key"))?
        }
        None => {
            let mut candidates = sets
                .iter()
                .flat_map(|set| set.keys.iter())
                .filter(|key| key.alg == parsed.alg);
            match (candidates.next(), candidates.next()) {
                (Some(key), None) => key.clone(),
                (None, _) => return Err(reject(Reason::UnknownKid, "no key for this algorithm")),
                (Some(_), Some(_)) => {
                    return Err(reject(
                        Reason::UnknownKid,
                        "token has no kid and several keys could verify it",
                    ));
                }
            }
        }
    };
    if key.alg != parsed.alg {
        return Err(reject(
            Reason::AlgNotAllowed,
            "algorithm not allowed for this key",
        ));
    }
    Ok(key)
}

/// Checks the signature only (steps 1–4), with one given key. For
/// `warden verify` and the JOSE test vectors.
pub fn verify_signature(
    parsed: &ParsedToken<'_>,
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<(), Rejection> {
    check_signature(parsed, key, alg, false)
}

/// [`verify_signature`], with the key's issuer's policy on high-`s` ECDSA.
fn check_signature(
    parsed: &ParsedToken<'_>,
    key: &DecodingKey,
    alg: Algorithm,
    accept_high_s: bool,
) -> Result<(), Rejection> {
    if parsed.alg != alg {
        return Err(reject(
            Reason::AlgNotAllowed,
            "algorithm not allowed for this key",
        ));
    }
    // Strictness: payload and signature must be canonical base64url before
    // anything is checked, so no two encodings of one token both verify.
    decode_segment(parsed.payload)?;
    let signature = decode_segment(parsed.signature)?;
    if !accept_high_s && super::ecdsa::has_high_s(alg, &signature) {
        return Err(reject(
            Reason::SignatureInvalid,
            "ECDSA signature with a high s (only the low-s form is accepted)",
        ));
    }
    match jsonwebtoken::crypto::verify(parsed.signature, parsed.signing_input.as_bytes(), key, alg)
    {
        Ok(true) => Ok(()),
        Ok(false) | Err(_) => Err(reject(Reason::SignatureInvalid, "signature invalid")),
    }
}

/// Selects the key in `set` and checks the signature with it (steps 1–4),
/// without reading any claim. For `warden verify` and the JOSE vectors.
pub fn verify_signature_in(
    parsed: &ParsedToken<'_>,
    set: &KeySet,
) -> Result<Arc<VerifyingKey>, Rejection> {
    let key = select_key(&[set], parsed, None)?;
    check_signature(parsed, &key.key, key.alg, key.issuer.accept_high_s)?;
    Ok(key)
}

/// The payload as a JSON object.
pub fn payload(parsed: &ParsedToken<'_>) -> Result<Map<String, Value>, Rejection> {
    json_object(
        &decode_segment(parsed.payload)?,
        "token payload is not a JSON object",
    )
}

fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() => Ok(Some(f.floor() as i64)),
                    _ => Err(reject(
                        Reason::Malformed,
                        "a time claim is not a NumericDate",
                    )),
                }
            }
        }
        Some(_) => Err(reject(
            Reason::Malformed,
            "a time claim is not a NumericDate",
        )),
    }
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(reject(Reason::Malformed, "a string claim has another type")),
    }
}

/// Scopes from `scope` (space-separated string), `scp` (array, or a
/// space-separated string as some providers send it) and `scopes` (array).
pub fn scopes_of(claims: &Map<String, Value>) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::new();
    for name in ["scope", "scp", "scopes"] {
        match claims.get(name) {
            Some(Value::String(s)) => scopes.extend(s.split_ascii_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => {
                scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            _ => {}
        }
    }
    scopes.sort_unstable();
    scopes.dedup();
    scopes
}

/// Verifies `token` against `sets` at time `now` (seconds since the epoch).
/// On failure, also returns what was learned before it failed.
pub fn verify(
    token: &str,
    sets: &[&KeySet],
    now: i64,
    leeway: i64,
) -> Result<Principal, (Rejection, Unverified)> {
    let parsed = parse(token).map_err(|r| (r, Unverified::default()))?;
    // The unverified iss only picks among keys sharing a kid, and the
    // issuer to refetch; it is checked against the key after verification.
    let unverified_claims = payload(&parsed).ok();
    let unverified = Unverified {
        kid: parsed.kid.clone(),
        iss: unverified_claims
            .as_ref()
            .and_then(|c| c.get("iss"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        signed: None,
    };
    let fail = |r: Rejection| (r, unverified.clone());
    let key = select_key(sets, &parsed, unverified.iss.as_deref()).map_err(fail)?;
    check_signature(&parsed, &key.key, key.alg, key.issuer.accept_high_s).map_err(fail)?;
    let claims = match unverified_claims {
        Some(claims) => claims,
        None => {
            return Err(fail(reject(
                Reason::Malformed,
                "token payload is not a JSON object",
            )));
        }
    };
    let principal = principal_from(claims).map_err(fail)?;
    match check_claims(&principal, &key.issuer, now, leeway) {
        Ok(()) => Ok(principal),
        Err(rejection) => Err((
            rejection,
            Unverified {
                signed: Some(Box::new(principal)),
                ..unverified
            },
        )),
    }
}

/// The claims as a principal, if their types are right (`exp` required).
fn principal_from(claims: Map<String, Value>) -> Result<Principal, Rejection> {
    let exp = numeric_date(&claims, "exp")?
        .ok_or_else(|| reject(Reason::Malformed, "token has no exp"))?;
    let principal = Principal {
        exp,
        nbf: numeric_date(&claims, "nbf")?,
        iat: numeric_date(&claims, "iat")?,
        sub: string_claim(&claims, "sub")?,
        jti: string_claim(&claims, "jti")?,
        iss: string_claim(&claims, "iss")?.unwrap_or_default(),
        scopes: scopes_of(&claims),
        claims,
        decrypted_with: None,
    };
    Ok(principal)
}

/// Time, issuer and audience, against the policy of the key that verified.
fn check_claims(
    principal: &Principal,
    issuer: &IssuerPolicy,
    now: i64,
    leeway: i64,
) -> Result<(), Rejection> {
    principal.check_time(now, leeway)?;
    if principal.iss != issuer.iss {
        return Err(reject(Reason::IssuerMismatch, "issuer not accepted"));
    }
    let audience_ok = match principal.claims.get("aud") {
        Some(Value::String(aud)) => issuer.audiences.iter().any(|a| a == aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| issuer.audiences.iter().any(|a| a == aud)),
        _ => false,
    };
    if !audience_ok {
        return Err(reject(Reason::AudienceMismatch, "audience not accepted"));
    }
    Ok(())
}
