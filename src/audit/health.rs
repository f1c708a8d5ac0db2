//! Whether audit events are being written: the outage tracker that the
//! senders and the writer share.
//!
//! An outage starts at the first lost event (a failed write, or a full
//! channel because the writer is stuck on a slow sink) and ends at the
//! first write during which no event was lost. Each start and each end is
//! logged once, so a full disk under load is two log lines, not one per
//! event; every lost event is still counted in
//! `warden_audit_events_dropped_total` by the caller. `[audit] on_failure
//! = "refuse"` reads [`Health::is_healthy`] on every request that presents
//! a token, so it is one relaxed atomic load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Why events were lost.
#[derive(Clone, Copy, Debug)]
pub(super) enum Cause<'a> {
    /// The channel to the writer was full: the sink is slow or blocked.
    Behind,
    /// The sink refused the write (its error is logged with it).
    WriteFailed(&'a std::io::Error),
}

/// What one call changed, for the caller's tests; the log line is already written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transition {
    /// Nothing: still healthy, or still in the same outage.
    None,
    /// An outage began.
    Began,
    /// The outage ended; this many events were lost in it.
    Ended(u64),
}

/// The shared outage state.
#[derive(Debug)]
pub(super) struct Health {
    healthy: AtomicBool,
    /// Events lost since start: an outage ends only after a write during
    /// which this did not move, so a writer that keeps up with some writes
    /// while the channel overflows does not flap between states.
    lost_total: AtomicU64,
    /// Events lost in the current outage, for the line that ends it.
    lost_in_outage: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            lost_total: AtomicU64::new(0),
            lost_in_outage: AtomicU64::new(0),
        }
    }
}

impl Health {
    /// Whether the last writes succeeded and nothing has been lost since.
    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Marks the start of a write: what [`Health::written`] compares with.
    pub(super) fn mark(&self) -> u64 {
        self.lost_total.load(Ordering::Acquire)
    }

    /// `events` were lost; the first loss of an outage logs an error.
    pub(super) fn lost(&self, events: u64, cause: Cause<'_>) -> Transition {
        self.lost_total.fetch_add(events, Ordering::AcqRel);
        self.lost_in_outage.fetch_add(events, Ordering::AcqRel);
        if !self.healthy.swap(false, Ordering::AcqRel) {
            return Transition::None;
        }
        match cause {
            Cause::WriteFailed(error) => tracing::error!(
                error = %error,
                "cannot write the audit log; audit events are being lost until it can be written again (logged once per outage; see warden_audit_events_dropped_total)"
            ),
            Cause::Behind => tracing::error!(
                "the audit writer is behind (a slow or blocked sink); audit events are being lost until it catches up (logged once per outage; see warden_audit_events_dropped_total)"
            ),
        }
        Transition::Began
    }

    /// A write that started at `mark` succeeded; ends the outage when no
    /// event was lost meanwhile.
    pub(super) fn written(&self, mark: u64) -> Transition {
        if self.healthy.load(Ordering::Acquire) || self.lost_total.load(Ordering::Acquire) != mark {
            return Transition::None;
        }
        if self
            .healthy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Transition::None;
        }
        let lost = self.lost_in_outage.swap(0, Ordering::AcqRel);
        tracing::warn!(lost_events = lost, "the audit log is being written again");
        Transition::Ended(lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> std::io::Error {
        std::io::Error::from_raw_os_error(28)
    }

    #[test]
    fn an_outage_begins_once_and_ends_once_with_the_events_lost_in_it() {
        let health = Health::default();
        assert!(health.is_healthy());
        let mark = health.mark();
        assert_eq!(
            health.written(mark),
            Transition::None,
            "healthy stays healthy"
        );

        let began: Vec<_> = (0..100)
            .map(|_| health.lost(3, Cause::WriteFailed(&failed())))
            .collect();
        assert_eq!(began[0], Transition::Began);
        assert!(began[1..].iter().all(|t| *t == Transition::None));
        assert!(!health.is_healthy());

        let mark = health.mark();
        assert_eq!(health.written(mark), Transition::Ended(300));
        assert!(health.is_healthy());
        assert_eq!(health.written(health.mark()), Transition::None);
    }

    #[test]
    fn a_write_during_which_events_were_lost_does_not_end_the_outage() {
        let health = Health::default();
        assert_eq!(health.lost(1, Cause::Behind), Transition::Began);
        let mark = health.mark();
        // The channel overflows again while the writer writes.
        assert_eq!(health.lost(1, Cause::Behind), Transition::None);
        assert_eq!(health.written(mark), Transition::None);
        assert!(!health.is_healthy());
        assert_eq!(health.written(health.mark()), Transition::Ended(2));
    }

    #[test]
    fn a_second_outage_is_logged_again() {
        let health = Health::default();
        assert_eq!(
            health.lost(1, Cause::WriteFailed(&failed())),
            Transition::Began
        );
        assert_eq!(health.written(health.mark()), Transition::Ended(1));
        assert_eq!(health.lost(2, Cause::Behind), Transition::Began);
        assert_eq!(health.written(health.mark()), Transition::Ended(2));
    }

    /// The log lines themselves: one error when the outage begins, one
    /// warning when it ends, however many events were lost.
    #[test]
    fn an_outage_of_many_events_is_two_log_lines() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::Error::other("poisoned"))?
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let health = Health::default();
            for _ in 0..1000 {
                health.lost(1, Cause::WriteFailed(&failed()));
            }
            health.written(health.mark());
        });
        let text = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
        let logged: Vec<&str> = text.lines().collect();
        assert_eq!(logged.len(), 2, "{text}");
        assert!(logged[0].contains("ERROR") && logged[0].contains("cannot write the audit log"));
        assert!(logged[1].contains("WARN") && logged[1].contains("lost_events=1000"));
    }
}
