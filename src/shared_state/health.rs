//! Whether the shared backend answers: `warden_shared_state_up`,
//! `warden_shared_state_errors_total{operation}`, and one log line when an
//! outage begins and one when it ends (not one per failed operation).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::{IntCounterVec, IntGauge};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// The backend's health, shared by everything that talks to it.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    up_gauge: IntGauge,
    errors: IntCounterVec,
    up: AtomicBool,
    /// Woken when an outage ends, so the revocation mirror resynchronises.
    recovered: Notify,
}

impl Health {
    /// Reporting into `metrics`; up until an operation fails.
    pub fn new(metrics: &Metrics) -> Self {
        metrics.shared_state_up.set(1);
        Self {
            inner: Arc::new(Inner {
                up_gauge: metrics.shared_state_up.clone(),
                errors: metrics.shared_state_errors.clone(),
                up: AtomicBool::new(true),
                recovered: Notify::new(),
            }),
        }
    }

    /// Whether the last operation succeeded.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// An operation succeeded: ends an outage if there was one.
    pub fn set_up(&self) {
        if !self.inner.up.swap(true, Ordering::AcqRel) {
            self.inner.up_gauge.set(1);
            tracing::info!(
                "shared state (Redis) reachable again; resynchronising revocations, fleet-wide counters resume"
            );
            self.inner.recovered.notify_waiters();
        }
    }

    /// `operation` failed for `why` (a category, never a URL or a
    /// password): counted, and logged if it begins an outage.
    pub fn failed(&self, operation: &'static str, why: &str) {
        self.inner.errors.with_label_values(&[operation]).inc();
        if self.inner.up.swap(false, Ordering::AcqRel) {
            self.inner.up_gauge.set(0);
            tracing::warn!(
                operation,
                error = why,
                "shared state (Redis) unreachable: tokens keep verifying against the revocations held here, login throttling and rate limits count on this replica only, revocations answer 503 until it is back"
            );
        }
    }

    /// Resolves at the end of the next outage.
    pub async fn recovered(&self) {
        self.inner.recovered.notified().await;
    }
}
