//! Upgraded connections (WebSocket, RFC 6455; SPEC §15): once the upstream
//! answers an allowed `Upgrade` with 101, the client's and the upstream's
//! connections are joined and bytes go both ways until either side closes,
//! the tunnel has been idle for `tunnel_idle_timeout`, it has lasted
//! `tunnel_max_duration`, or the gateway shuts down (at the end of its
//! grace period).
//!
//! The handshake is an ordinary request: it went through the route's whole
//! stack (auth, rate limit, header policy, credential), and the access log
//! and the audit saw its 101. [`Tunnels`] counts the tunnels
//! (`warden_tunnels_active`, `warden_tunnels_total{route,end}`) and logs one
//! line when each ends, with its byte counts. Only bytes are relayed: the
//! gateway never parses WebSocket frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::execution_key::ExecutionKey;

/// How long tunnels may live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelLimits {
    /// Closed after this long without a byte either way.
    pub idle_timeout: Duration,
    /// Closed after this long in any case.
    pub max_duration: Duration,
}

impl Default for TunnelLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            max_duration: Duration::from_secs(24 * 3600),
        }
    }
}

/// The protocol a request asks to upgrade to, when the route allows it:
/// `Connection` names `upgrade` and `Upgrade`'s first protocol is one of
/// `allowed` (compared without case, version ignored).
pub fn requested_upgrade(headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    if allowed.is_empty() {
        return None;
    }
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let value = headers.get(header::UPGRADE)?;
    let first = value.to_str().ok()?.split(',').next()?.trim();
    let name = first.split('/').next().unwrap_or(first);
    (connection_upgrade && allowed.iter().any(|p| p.eq_ignore_ascii_case(name)))
        .then(|| value.clone())
}

/// The upgrade a request asked for, left by the header policy for the proxy.
#[derive(Clone, Debug)]
pub struct UpgradeRequested(pub HeaderValue);

/// Why a tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Closed,
    Idle,
    MaxDuration,
    Shutdown,
    Failed,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle",
            End::MaxDuration => "max_duration",
            End::Shutdown => "shutdown",
            End::Failed => "error",
        }
    }
}

/// Every tunnel of the process: their limits, their count, and the signal
/// that ends them at shutdown. Outlives reloads.
#[derive(Debug)]
pub struct Tunnels {
    limits: std::sync::RwLock<TunnelLimits>,
    active: prometheus::IntGauge,
    total: prometheus::IntCounterVec,
    shutdown: tokio::sync::watch::Sender<bool>,
}

struct Counted<'a>(&'a prometheus::IntGauge);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Tunnels {
    /// The registry, reporting into `active` and `total`.
    pub fn new(active: prometheus::IntGauge, total: prometheus::IntCounterVec) -> Self {
        Self {
            limits: std::sync::RwLock::new(TunnelLimits::default()),
            active,
            total,
            shutdown: tokio::sync::watch::channel(false).0,
        }
    }

    /// The limits of tunnels opened from now on (at start and reload).
    pub fn set_limits(&self, limits: TunnelLimits) {
        if let Ok(mut current) = self.limits.write() {
            *current = limits;
        }
    }

    /// How many tunnels are open.
    pub fn active(&self) -> i64 {
        self.active.get()
    }

    /// Ends every tunnel (at the end of the shutdown grace).
    pub fn close_all(&self) {
        self.shutdown.send_replace(true);
    }

    /// Joins `client` and `upstream` once both upgrades complete, in a task
    /// of its own.
    pub fn open(
        self: &Arc<Self>,
        route: Arc<str>,
        key: Option<ExecutionKey>,
        client: OnUpgrade,
        upstream: OnUpgrade,
    ) {
        let this = self.clone();
        tokio::spawn(async move { this.run(&route, key.as_ref(), client, upstream).await });
    }

    async fn run(
        &self,
        route: &str,
        key: Option<&ExecutionKey>,
        client: OnUpgrade,
        upstream: OnUpgrade,
    ) {
        let limits = self.limits.read().map(|l| *l).unwrap_or_default();
        let mut shutdown = self.shutdown.subscribe();
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(err) => {
                tracing::debug!(%route, error = %err, "the upgrade did not complete");
                self.total
                    .with_label_values(&[route, End::Failed.as_str()])
                    .inc();
                return;
            }
        };
        self.active.inc();
        let _counted = Counted(&self.active);
        let started = Instant::now();
        let last = AtomicU64::new(0);
        let (from_client, from_upstream) = (AtomicU64::new(0), AtomicU64::new(0));
        let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
        let (upstream_read, upstream_write) = tokio::io::split(TokioIo::new(upstream));
        let relay = async {
            tokio::join!(
                pump(client_read, upstream_write, &from_client, &last, started),
                pump(upstream_read, client_write, &from_upstream, &last, started),
            )
        };
        let idle = async {
            loop {
                let since = Duration::from_millis(last.load(Ordering::Relaxed));
                let quiet = started.elapsed().saturating_sub(since);
                if quiet >= limits.idle_timeout {
                    return;
                }
                tokio::time::sleep(limits.idle_timeout - quiet).await;
            }
        };
        let end = tokio::select! {
            (up, down) = relay => if up.is_ok() && down.is_ok() { End::Closed } else { End::Failed },
            () = idle => End::Idle,
            () = tokio::time::sleep(limits.max_duration) => End::MaxDuration,
            _ = shutdown.wait_for(|closing| *closing) => End::Shutdown,
        };
        self.total.with_label_values(&[route, end.as_str()]).inc();
        tracing::info!(
            %route,
            execution_key = key.map(ExecutionKey::as_str).unwrap_or(""),
            end = end.as_str(),
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_from_client = from_client.load(Ordering::Relaxed),
            bytes_from_upstream = from_upstream.load(Ordering::Relaxed),
            "tunnel closed"
        );
    }
}

/// Copies `from` to `to` until `from` ends (then half-closes `to`),
/// counting bytes and noting the time of the last.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    bytes: &AtomicU64,
    last: &AtomicU64,
    started: Instant,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buffer[..n]).await?;
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        let at = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(at, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_allowed_protocol_with_connection_upgrade_is_an_upgrade() {
        let allowed = vec!["websocket".to_owned()];
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(
            requested_upgrade(&headers, &allowed).is_none(),
            "no Connection: upgrade"
        );
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(requested_upgrade(&headers, &allowed).is_some());
        assert!(requested_upgrade(&headers, &[]).is_none());
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(requested_upgrade(&headers, &allowed).is_none());
    }
}
