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

/// How long tunnels may live, and how many may be open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelLimits {
    /// Closed after this long without a byte either way.
    pub idle_timeout: Duration,
    /// Closed after this long in any case.
    pub max_duration: Duration,
    /// Open at once at most (`[server] max_connections`): each holds a
    /// client socket and an upstream socket; beyond it, 503.
    pub max_open: usize,
}

impl Default for TunnelLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            max_duration: Duration::from_secs(24 * 3600),
            max_open: 10_000,
        }
    }
}

/// How long both sides may take to hand their connections over after the
/// 101.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol a request asks to upgrade to, when the route allows it:
/// `Connection` names `upgrade` and `Upgrade`'s first protocol is one of
/// `allowed` (compared without case, version ignored). It is that one
/// protocol, as the route spells it, that goes upstream: never the
/// client's other offers.
pub fn requested_upgrade(headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    // Most requests carry no Upgrade: one lookup decides for them.
    let value = headers.get(header::UPGRADE)?;
    if allowed.is_empty() {
        return None;
    }
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    let first = value.to_str().ok()?.split(',').next()?.trim();
    let name = first.split('/').next().unwrap_or(first);
    let protocol = allowed.iter().find(|p| p.eq_ignore_ascii_case(name))?;
    HeaderValue::from_str(protocol).ok()
}

/// The upgrade a request asked for, left by the header policy for the proxy.
#[derive(Clone, Debug)]
pub struct UpgradeRequested(pub HeaderValue);

/// What a tunnel is, for its limits and its log line.
#[derive(Debug)]
pub struct Tunnel {
    /// The route that opened it.
    pub route: Arc<str>,
    /// The handshake's execution key (and trace id).
    pub key: Option<ExecutionKey>,
    /// When the handshake's token expires (seconds since the epoch).
    pub until: Option<i64>,
}

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
    /// Tunnels reserved or open.
    open: std::sync::atomic::AtomicUsize,
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

/// A place among the tunnels, taken before the upgrade; given back on drop.
#[derive(Debug)]
pub struct Reservation(Arc<Tunnels>);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Tunnels {
    /// The registry, reporting into `active` and `total`.
    pub fn new(active: prometheus::IntGauge, total: prometheus::IntCounterVec) -> Self {
        Self {
            limits: std::sync::RwLock::new(TunnelLimits::default()),
            open: std::sync::atomic::AtomicUsize::new(0),
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

    /// How many tunnels are open (or being opened).
    pub fn active(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A place for one more tunnel, unless `max_open` are open.
    pub fn reserve(self: &Arc<Self>) -> Option<Reservation> {
        let max = self.limits.read().map(|l| l.max_open).unwrap_or(0);
        let taken = self.open.fetch_add(1, Ordering::AcqRel);
        let reservation = Reservation(self.clone());
        (taken < max).then_some(reservation)
    }

    /// Ends every tunnel (at the end of the shutdown grace), waiting up
    /// to `patience` for them to close.
    pub async fn close_all(&self, patience: Duration) {
        self.shutdown.send_replace(true);
        let _ = tokio::time::timeout(patience, self.all_closed()).await;
    }

    /// Returns once no tunnel is open.
    pub async fn all_closed(&self) {
        while self.active() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Joins `client` and `upstream` once both upgrades complete, in a task
    /// of its own, holding `place` until it ends.
    pub fn open(
        self: &Arc<Self>,
        place: Reservation,
        tunnel: Tunnel,
        client: OnUpgrade,
        upstream: OnUpgrade,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            this.run(&tunnel, client, upstream).await;
            drop(place);
        });
    }

    async fn run(&self, tunnel: &Tunnel, client: OnUpgrade, upstream: OnUpgrade) {
        let route = &*tunnel.route;
        let key = tunnel.key.as_ref();
        let limits = self.limits.read().map(|l| *l).unwrap_or_default();
        let mut shutdown = self.shutdown.subscribe();
        let handover = tokio::select! {
            both = tokio::time::timeout(UPGRADE_TIMEOUT, async { tokio::try_join!(client, upstream) }) => both,
            _ = shutdown.wait_for(|closing| *closing) => return,
        };
        let (client, upstream) = match handover {
            Ok(Ok(both)) => both,
            Ok(Err(err)) => {
                tracing::debug!(%route, error = %err, "the upgrade did not complete");
                self.total
                    .with_label_values(&[route, End::Failed.as_str()])
                    .inc();
                return;
            }
            Err(_) => {
                tracing::debug!(%route, "the upgrade did not complete in time");
                self.total
                    .with_label_values(&[route, End::Failed.as_str()])
                    .inc();
                return;
            }
        };
        // The tunnel ends when the handshake's token would have expired.
        let token_left = tunnel.until.map(|exp| {
            Duration::from_secs(u64::try_from(exp - crate::clock::unix_now()).unwrap_or(0))
        });
        let max_duration =
            token_left.map_or(limits.max_duration, |left| left.min(limits.max_duration));
        self.active.inc();
        let _counted = Counted(&self.active);
        let started = Instant::now();
        let last = AtomicU64::new(0);
        let (from_client, from_upstream) = (AtomicU64::new(0), AtomicU64::new(0));
        let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
        let (upstream_read, upstream_write) = tokio::io::split(TokioIo::new(upstream));
        // Both directions run until each has ended cleanly (a half-close
        // is passed on); a failure of either ends the tunnel.
        let relay = async {
            let up = pump(client_read, upstream_write, &from_client, &last, started);
            let down = pump(upstream_read, client_write, &from_upstream, &last, started);
            tokio::pin!(up, down);
            let (mut up_done, mut down_done) = (false, false);
            while !(up_done && down_done) {
                tokio::select! {
                    ended = &mut up, if !up_done => {
                        ended?;
                        up_done = true;
                    }
                    ended = &mut down, if !down_done => {
                        ended?;
                        down_done = true;
                    }
                }
            }
            Ok::<(), std::io::Error>(())
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
            relayed = relay => if relayed.is_ok() { End::Closed } else { End::Failed },
            () = idle => End::Idle,
            () = tokio::time::sleep(max_duration) => End::MaxDuration,
            _ = shutdown.wait_for(|closing| *closing) => End::Shutdown,
        };
        self.total.with_label_values(&[route, end.as_str()]).inc();
        tracing::info!(
            %route,
            execution_key = key.map(ExecutionKey::as_str).unwrap_or(""),
            trace_id = key.and_then(ExecutionKey::trace_id),
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
        // A TLS writer may keep what it was given: send it now.
        to.flush().await?;
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
