//! The audit log: one JSON line per security event (SPEC §7), each with
//! `ts`, `event` and `execution_key`.
//!
//! Events go through a bounded channel to one writer task, so a slow sink
//! (a full disk, a blocked pipe) never blocks a request: when the channel is
//! full the event is dropped and counted in
//! `warden_audit_events_dropped_total`, never silently. The sink is standard
//! output or a file opened for appending.
//!
//! No event ever holds a token, a password, a key or a secret: only ids
//! (`jti`, `sub`, the identity that exists), decisions and reasons.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::execution_key::ExecutionKey;

/// How many events may wait for the writer.
const CHANNEL_CAPACITY: usize = 8192;

/// Where audit events go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AuditSink {
    /// Standard output (the default).
    #[default]
    Stdout,
    /// A file, opened for appending.
    File(PathBuf),
}

/// `[audit]`, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditSettings {
    /// The sink.
    pub sink: AuditSink,
}

/// Sends audit events to the writer task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    sender: mpsc::Sender<Vec<u8>>,
    dropped: IntCounter,
}

/// One event being built: `AuditLog::event(...)`, fields, then `send`.
#[derive(Debug)]
pub struct AuditEvent<'a> {
    log: &'a AuditLog,
    fields: Map<String, Value>,
}

impl AuditEvent<'_> {
    /// Adds a field (`null` values are kept: a missing `jti` is information).
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// Queues the event; drops and counts it when the writer is behind.
    pub fn send(self) {
        let mut line = Value::Object(self.fields).to_string().into_bytes();
        line.push(b'\n');
        if self.log.sender.try_send(line).is_err() {
            self.log.dropped.inc();
        }
    }
}

/// The `ts` of an event: RFC 3339 with milliseconds, UTC.
pub fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    humantime::format_rfc3339_millis(UNIX_EPOCH + now).to_string()
}

impl AuditLog {
    /// Starts the writer task for `settings` and returns the handle to send
    /// events with. `dropped` counts events lost to a full channel.
    pub async fn start(settings: &AuditSettings, dropped: IntCounter) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        match &settings.sink {
            AuditSink::Stdout => {
                tokio::spawn(write_all(receiver, tokio::io::stdout(), dropped.clone()));
            }
            AuditSink::File(path) => {
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?;
                tokio::spawn(write_all(receiver, file, dropped.clone()));
            }
        }
        Ok(Self { sender, dropped })
    }

    /// A log whose events go to `writer` through a channel of `capacity`;
    /// for tests of a slow or blocked sink.
    pub fn with_writer<W>(writer: W, capacity: usize, dropped: IntCounter) -> Self
    where
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        tokio::spawn(write_all(receiver, writer, dropped.clone()));
        Self { sender, dropped }
    }

    /// Queues an event that serializes itself (the per-request events, which
    /// avoid building a map); drops and counts it when the writer is behind.
    pub fn send<T: serde::Serialize>(&self, event: &T) {
        let Ok(mut line) = serde_json::to_vec(event) else {
            self.dropped.inc();
            return;
        };
        line.push(b'\n');
        if self.sender.try_send(line).is_err() {
            self.dropped.inc();
        }
    }

    /// Starts an event of kind `event` for the request with `key`.
    pub fn event(&self, event: &str, key: Option<&ExecutionKey>) -> AuditEvent<'_> {
        let mut fields = Map::new();
        fields.insert("ts".into(), timestamp().into());
        fields.insert("event".into(), event.into());
        fields.insert(
            "execution_key".into(),
            key.map_or(Value::Null, |k| k.as_str().into()),
        );
        AuditEvent { log: self, fields }
    }
}

async fn write_all<W>(mut receiver: mpsc::Receiver<Vec<u8>>, mut writer: W, dropped: IntCounter)
where
    W: tokio::io::AsyncWrite + Unpin,
{
    while let Some(line) = receiver.recv().await {
        let written = writer.write_all(&line).await;
        // Flush per event: an audit line must not sit in a buffer when the
        // process stops.
        if let Err(err) = written.and(writer.flush().await) {
            dropped.inc();
            tracing::error!(error = %err, "cannot write the audit log; events are being lost");
        }
    }
}
