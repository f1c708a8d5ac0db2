//! Trusted identity providers: their JWKS, fetched, checked and refreshed.
//!
//! Each `[[trusted_issuers]]` entry becomes a [`TrustedIssuer`] whose key set
//! sits behind an `ArcSwap`: the request path only loads it, a background
//! task refreshes it every `refresh`, and a token naming an unknown `kid`
//! may trigger one extra fetch — one at a time, and at most once per 10 s
//! per issuer, so a flood of made-up kids cannot become a flood of fetches.
//! A failed fetch keeps the keys already held.
//!
//! With `discovery = true`, every fetch first reads the issuer's OpenID
//! Connect discovery document (`{iss}/.well-known/openid-configuration`),
//! whose `issuer` must equal `iss` exactly, and takes the JWKS from its
//! `jwks_uri`: the URL follows the provider, on the same schedule.
//!
//! JWKS are fetched over HTTPS (rustls with the aws-lc-rs provider, webpki
//! roots, plus the issuer's `ca_file`); plain `http://` is allowed only to a
//! loopback address, for the discovery document and its `jwks_uri` too. Every key in a fetched set is checked before use
//! ([`parse_jwks`](super::jwk::parse_jwks)); a bad key is skipped with a log line, not the whole set.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::Algorithm;
use prometheus::IntCounter;

use super::jwk::parse_jwks;
use super::jwt::{IssuerPolicy, KeySet};
use crate::readiness::Readiness;

/// The shortest wait between two fetches triggered by unknown kids.
pub const UNKNOWN_KID_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// The largest JWKS (or discovery) document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where an issuer's keys are read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// `jwks_url`: the JWKS itself.
    Url(Uri),
    /// `discovery = true`: the OpenID Connect discovery document at this
    /// URL, whose `jwks_uri` names the JWKS.
    Discovery(Uri),
}

/// `{iss}/.well-known/openid-configuration`, when `iss` is a URL.
pub fn discovery_url(iss: &str) -> Option<Uri> {
    format!(
        "{}/.well-known/openid-configuration",
        iss.trim_end_matches('/')
    )
    .parse()
    .ok()
}

/// Whether keys may be fetched from `uri`: https with a host, or plain
/// http to a loopback address (tests, sidecars). The error says why not.
pub fn usable_url(uri: &Uri) -> Result<(), &'static str> {
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if is_loopback_host(host) => Ok(()),
        Some("http") => Err("is plain http://, which is allowed only to a loopback address"),
        _ => Err("is not an https URL"),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One `[[trusted_issuers]]` entry, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedIssuerSettings {
    /// The `iss` its tokens carry.
    pub iss: String,
    /// Where its JWKS is published, or its discovery document.
    pub jwks: JwksSource,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// The algorithms its keys may use.
    pub algs: Vec<Algorithm>,
    /// How often the JWKS is fetched again.
    pub refresh: Duration,
    /// An extra trust root (PEM) for a private identity provider.
    pub ca_file: Option<PathBuf>,
    /// Let through ECDSA signatures with a high `s`, for a signer that does
    /// not normalise them (see [`super::ecdsa`]).
    pub accept_high_s: bool,
}

/// Why a JWKS could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The TLS set-up failed (a bad `ca_file`).
    #[error("TLS set-up: {0}")]
    Tls(crate::http_client::ClientError),
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
                accept_high_s: settings.accept_high_s,
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

    /// The JWKS, through the discovery document when there is one.
    async fn download(&self) -> Result<Bytes, FetchError> {
        let jwks_url = match &self.settings.jwks {
            JwksSource::Url(url) => url.clone(),
            JwksSource::Discovery(document) => self.discover(document).await?,
        };
        self.get(&jwks_url, "application/jwk-set+json, application/json")
            .await
    }

    /// The `jwks_uri` of the discovery document at `document`, once its
    /// `issuer` is this issuer's `iss`, exactly (OpenID Connect Discovery
    /// §4.3: no normalising, no trailing-slash leniency).
    async fn discover(&self, document: &Uri) -> Result<Uri, FetchError> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: Option<String>,
            jwks_uri: Option<String>,
        }
        let bytes = self.get(document, "application/json").await?;
        let parsed: Discovery = serde_json::from_slice(&bytes).map_err(|_| {
            FetchError::Document("the discovery document is not a JSON object".into())
        })?;
        if parsed.issuer.as_deref() != Some(self.settings.iss.as_str()) {
            return Err(FetchError::Document(format!(
                "the discovery document's issuer {:?} is not {:?}",
                parsed.issuer.unwrap_or_default(),
                self.settings.iss
            )));
        }
        let jwks_uri = parsed
            .jwks_uri
            .ok_or_else(|| FetchError::Document("the discovery document has no jwks_uri".into()))?;
        let uri: Uri = jwks_uri.parse().map_err(|_| {
            FetchError::Document(format!(
                "the discovery document's jwks_uri {jwks_uri:?} is not a URL"
            ))
        })?;
        usable_url(&uri).map_err(|why| {
            FetchError::Document(format!(
                "the discovery document's jwks_uri {jwks_uri:?} {why}"
            ))
        })?;
        Ok(uri)
    }

    async fn get(&self, url: &Uri, accept: &'static str) -> Result<Bytes, FetchError> {
        let request = Request::get(url.clone())
            .header(header::ACCEPT, accept)
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
