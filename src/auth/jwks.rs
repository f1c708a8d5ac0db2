//! Trusted identity providers: their JWKS, fetched, checked and refreshed.
//!
//! Each `[[trusted_issuers]]` entry becomes a [`TrustedIssuer`] whose key set
//! sits behind an `ArcSwap`: the request path only loads it, a background
//! task refreshes it every `refresh`, and a token naming an unknown `kid`
//! may trigger one extra fetch — one at a time, and at most once per 10 s
//! per issuer, so a flood of made-up kids cannot become a flood of fetches.
//! A failed fetch keeps the keys already held.
//!
//! JWKS are fetched over HTTPS (rustls with the aws-lc-rs provider, webpki
//! roots, plus the issuer's `ca_file`); plain `http://` is allowed only to a
//! loopback address. Every key in a fetched set is checked before use
//! ([`parse_jwks`]); a bad key is skipped with a log line, not the whole set.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use aws_lc_rs::signature as lc_sig;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use prometheus::IntCounter;
use serde_json::Value;

use super::jwt::{IssuerPolicy, KeySet, VerifyingKey};
use super::keys::{alg_name, parse_algorithm};
use crate::readiness::Readiness;

/// The shortest wait between two fetches triggered by unknown kids.
pub const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One `[[trusted_issuers]]` entry, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedIssuerSettings {
    /// The `iss` its tokens carry.
    pub iss: String,
    /// Where its JWKS is published.
    pub jwks_url: Uri,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// The algorithms its keys may use.
    pub algs: Vec<Algorithm>,
    /// How often the JWKS is fetched again.
    pub refresh: Duration,
    /// An extra trust root (PEM) for a private identity provider.
    pub ca_file: Option<PathBuf>,
}

/// Why a JWKS could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The TLS set-up failed (a bad `ca_file`).
    #[error("TLS set-up: {0}")]
    Tls(String),
    /// The request failed.
    #[error("request failed: {0}")]
    Request(String),
    /// The fetch took too long.
    #[error("timed out after {}s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    /// Not a 200.
    #[error("answered {0}")]
    Status(StatusCode),
    /// Not a JWKS, or no usable key in it.
    #[error("{0}")]
    Document(String),
}

type JwksClient = crate::http_client::HttpsClient<Empty<Bytes>>;

/// A trusted issuer and the keys currently held for it.
pub struct TrustedIssuer {
    settings: TrustedIssuerSettings,
    policy: Arc<IssuerPolicy>,
    keys: ArcSwap<KeySet>,
    client: JwksClient,
    /// Held while fetching; holds when the last fetch started.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    refresh_ok: IntCounter,
    refresh_error: IntCounter,
    readiness: Readiness,
}

impl std::fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedIssuer")
            .field("iss", &self.settings.iss)
            .field("keys", &self.keys.load().len())
            .finish_non_exhaustive()
    }
}

impl TrustedIssuer {
    /// An issuer with no keys yet; `/readyz` waits for its first fetch.
    pub fn new(
        settings: TrustedIssuerSettings,
        refresh_total: &prometheus::IntCounterVec,
        readiness: Readiness,
    ) -> Result<Arc<Self>, FetchError> {
        let client = crate::http_client::https_client(settings.ca_file.as_deref())
            .map_err(FetchError::Tls)?;
        readiness.wait_for(readiness_name(&settings.iss));
        Ok(Arc::new(Self {
            policy: Arc::new(IssuerPolicy {
                iss: settings.iss.clone(),
                audiences: settings.audiences.clone(),
            }),
            keys: ArcSwap::from_pointee(KeySet::default()),
            client,
            last_fetch: tokio::sync::Mutex::new(None),
            refresh_ok: refresh_total.with_label_values(&[&settings.iss, "ok"]),
            refresh_error: refresh_total.with_label_values(&[&settings.iss, "error"]),
            readiness,
            settings,
        }))
    }

    /// The issuer's `iss`.
    pub fn iss(&self) -> &str {
        &self.settings.iss
    }

    /// The keys held now.
    pub fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    /// Fetches the JWKS and swaps it in. The caller holds `last_fetch`.
    async fn fetch(&self) -> Result<usize, FetchError> {
        let result = tokio::time::timeout(FETCH_TIMEOUT, self.download())
            .await
            .map_err(|_| FetchError::Timeout)
            .and_then(|r| r)
            .and_then(|bytes| {
                let (set, skipped) = parse_jwks(&bytes, &self.policy, &self.settings.algs);
                for reason in skipped {
                    tracing::warn!(issuer = %self.settings.iss, %reason, "skipped a key in the JWKS");
                }
                if set.is_empty() {
                    Err(FetchError::Document("the JWKS holds no usable key".into()))
                } else {
                    Ok(set)
                }
            });
        match result {
            Ok(set) => {
                let count = set.len();
                self.keys.store(Arc::new(set));
                self.refresh_ok.inc();
                self.readiness.done(&readiness_name(&self.settings.iss));
                tracing::info!(issuer = %self.settings.iss, keys = count, "JWKS fetched");
                Ok(count)
            }
            Err(err) => {
                self.refresh_error.inc();
                tracing::warn!(
                    issuer = %self.settings.iss,
                    error = %err,
                    keys_held = self.keys.load().len(),
                    "JWKS fetch failed; keeping the keys held"
                );
                Err(err)
            }
        }
    }

    async fn download(&self) -> Result<Bytes, FetchError> {
        let request = Request::get(self.settings.jwks_url.clone())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .header(
                header::USER_AGENT,
                concat!("warden/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| FetchError::Request(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| FetchError::Request(e.to_string()))?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Request(format!("reading the body: {e}")))?;
        Ok(body.to_bytes())
    }

    /// A fetch on the background schedule.
    pub async fn scheduled_fetch(&self) -> Result<usize, FetchError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch().await
    }

    /// Called when a token of this issuer names `kid` and no held key has
    /// it. Fetches at most once per [`UNKNOWN_KID_REFETCH_INTERVAL`]; callers
    /// that arrive during a fetch wait for it rather than starting another.
    /// Returns whether `kid` is known afterwards.
    pub async fn refetch_for_unknown_kid(&self, kid: &str) -> bool {
        let mut last = self.last_fetch.lock().await;
        if self.keys.load().contains_kid(kid) {
            return true;
        }
        if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFETCH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        tracing::info!(issuer = %self.settings.iss, "unknown kid; fetching the JWKS again");
        self.fetch().await.is_ok() && self.keys.load().contains_kid(kid)
    }

    /// Starts the refresh loop: fetch now, then every `refresh`; after a
    /// failure, retry sooner (1 s, doubling, up to `refresh`).
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let issuer = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let wait = match issuer.scheduled_fetch().await {
                    Ok(_) => {
                        backoff = Duration::from_secs(1);
                        issuer.settings.refresh
                    }
                    Err(_) => {
                        let wait = backoff.min(issuer.settings.refresh);
                        backoff = (backoff * 2).min(issuer.settings.refresh);
                        wait
                    }
                };
                tokio::time::sleep(wait).await;
            }
        })
    }
}

fn readiness_name(iss: &str) -> String {
    format!("jwks {iss}")
}

/// Whether `alg` fits a key of type `kty` (and curve `crv`).
fn alg_fits(alg: Algorithm, kty: &str, crv: Option<&str>) -> bool {
    match (kty, crv) {
        ("RSA", _) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        ("EC", Some("P-256")) => alg == Algorithm::ES256,
        ("EC", Some("P-384")) => alg == Algorithm::ES384,
        ("OKP", Some("Ed25519")) => alg == Algorithm::EdDSA,
        _ => false,
    }
}

fn b64_len(value: Option<&Value>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value?.as_str()?).ok()
}

/// Checks one JWK and builds its verifying key. Also used for public keys
/// read from a JWK file, which get the same checks.
pub(crate) fn check_key(
    jwk: &Value,
    policy: &Arc<IssuerPolicy>,
    allowed: &[Algorithm],
) -> Result<VerifyingKey, String> {
    let obj = jwk.as_object().ok_or("not a JSON object")?;
    let kty = obj.get("kty").and_then(Value::as_str).ok_or("no kty")?;
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("kid is not a string".into()),
    };
    if kty == "oct" {
        return Err("symmetric keys are never taken from a JWKS".into());
    }
    match obj.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err("`use` is not \"sig\"".into()),
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("key_ops does not include \"verify\"".into());
        }
    }
    let crv = obj.get("crv").and_then(Value::as_str);
    let alg = match obj.get("alg") {
        Some(Value::String(name)) => {
            let alg =
                parse_algorithm(name).ok_or_else(|| format!("alg {name:?} is not supported"))?;
            if !alg_fits(alg, kty, crv) {
                return Err(format!("alg {name} does not fit kty {kty}"));
            }
            alg
        }
        Some(_) => return Err("alg is not a string".into()),
        None => {
            let mut fitting = allowed.iter().filter(|a| alg_fits(**a, kty, crv));
            match (fitting.next(), fitting.next()) {
                (Some(alg), None) => *alg,
                _ => return Err("no alg, and the issuer's algs do not settle it".into()),
            }
        }
    };
    if !allowed.contains(&alg) {
        return Err(format!("alg {} is not in the issuer's algs", alg_name(alg)));
    }
    match kty {
        "RSA" => {
            let n = b64_len(obj.get("n")).ok_or("bad n")?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!(
                    "RSA key of about {bits} bits; at least 2048 are required"
                ));
            }
            if has_roca_fingerprint(&n) {
                return Err(
                    "RSA key with the ROCA weakness (CVE-2017-15361): its private key can be recovered".into(),
                );
            }
            b64_len(obj.get("e")).ok_or("bad e")?;
        }
        "EC" => {
            let size = if crv == Some("P-384") { 48 } else { 32 };
            let x = b64_len(obj.get("x")).ok_or("bad x")?;
            let y = b64_len(obj.get("y")).ok_or("bad y")?;
            if x.len() != size || y.len() != size {
                return Err("EC coordinates of the wrong size".into());
            }
        }
        "OKP" => {
            let x = b64_len(obj.get("x")).ok_or("bad x")?;
            if x.len() != 32 {
                return Err("Ed25519 key of the wrong size".into());
            }
        }
        other => return Err(format!("kty {other:?} is not supported")),
    }
    let parsed: Jwk =
        serde_json::from_value(jwk.clone()).map_err(|e| format!("not a JWK ({e})"))?;
    let key = DecodingKey::from_jwk(&parsed).map_err(|e| format!("unusable ({e})"))?;
    // Refuse points that are not on the curve now, not at the first token.
    let point_check: Option<&'static lc_sig::EcdsaVerificationAlgorithm> = match alg {
        Algorithm::ES256 => Some(&lc_sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Some(&lc_sig::ECDSA_P384_SHA384_FIXED),
        _ => None,
    };
    if let Some(algorithm) = point_check {
        let bytes = key.try_get_as_bytes().map_err(|e| e.to_string())?;
        lc_sig::ParsedPublicKey::new(algorithm, bytes)
            .map_err(|_| "the EC point is not on the curve")?;
    }
    Ok(VerifyingKey {
        kid,
        alg,
        key,
        issuer: policy.clone(),
    })
}

/// Whether an RSA modulus has the ROCA fingerprint (CVE-2017-15361: keys
/// made by some Infineon chips, whose private key can be computed from the
/// public one): for every small prime p, n mod p lies in the subgroup that
/// 65537 generates mod p (Nemec et al., CCS 2017). A random modulus passes
/// this for all 38 primes with negligible probability.
pub fn has_roca_fingerprint(modulus: &[u8]) -> bool {
    const PRIMES: [u64; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let residue = modulus
            .iter()
            .fold(0u64, |acc, byte| (acc * 256 + u64::from(*byte)) % p);
        let generator = 65537 % p;
        let mut power = 1;
        (0..p).any(|_| {
            let hit = power == residue;
            power = power * generator % p;
            hit
        })
    })
}

/// Reads a JWKS document. Returns the usable keys and, for each skipped
/// key, why (with its kid, never key material).
pub fn parse_jwks(
    bytes: &[u8],
    policy: &Arc<IssuerPolicy>,
    allowed: &[Algorithm],
) -> (KeySet, Vec<String>) {
    let mut skipped = Vec::new();
    let keys = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(doc)) => match doc.get("keys") {
            Some(Value::Array(keys)) => keys.clone(),
            _ => {
                skipped.push("the document has no \"keys\" array".to_owned());
                Vec::new()
            }
        },
        _ => {
            skipped.push("the document is not a JSON object".to_owned());
            Vec::new()
        }
    };
    let mut usable: Vec<VerifyingKey> = Vec::new();
    for jwk in &keys {
        let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("(no kid)");
        match check_key(jwk, policy, allowed) {
            Ok(key) => {
                if key.kid.is_some() && usable.iter().any(|k| k.kid == key.kid) {
                    skipped.push(format!("kid {kid:?}: a second key with the same kid"));
                } else {
                    usable.push(key);
                }
            }
            Err(reason) => skipped.push(format!("kid {kid:?}: {reason}")),
        }
    }
    (KeySet::new(usable), skipped)
}
