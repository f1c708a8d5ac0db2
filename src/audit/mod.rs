//! The audit log: one JSON line per security event (SPEC §7), each with
//! `ts`, `event` and `execution_key`.
//!
//! Events go through a bounded channel to one writer, so a slow sink (a
//! full disk, a blocked pipe) never blocks a request: when the channel is
//! full the event is dropped and counted in
//! `warden_audit_events_dropped_total`, never silently. The sink is standard
//! output or a file opened for appending ([`sink`]: it follows its path
//! through log rotation and reopens it on reload), written by a thread of
//! its own with plain blocking writes; the writer takes every event waiting
//! and writes them in one call, so under load the cost of a write is shared
//! by many events. A failed write counts its events as dropped.
//!
//! Lost events make an outage ([`health`]): logged once when it begins and
//! once when it ends, and visible to requests through
//! [`AuditLog::is_healthy`], which `[audit] on_failure = "refuse"` reads.
//!
//! No event ever holds a token, a password, a key or a secret: only ids
//! (`jti`, `sub`, the identity that exists), decisions and reasons.

mod health;
mod sink;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::execution_key::ExecutionKey;
use health::{Cause, Health};
use sink::{FollowedFile, Sink};

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

/// What the gateway does while audit events cannot be written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Keep serving; the lost events are counted (the default).
    #[default]
    Drop,
    /// Answer 503 `audit_unavailable` to every request that presents a
    /// token, so no token is used without a record of it.
    Refuse,
}

/// `[audit]`, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditSettings {
    /// The sink.
    pub sink: AuditSink,
    /// What a sink failure does to requests.
    pub on_failure: OnFailure,
}

/// Sends audit events to the writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    sender: Sender,
    dropped: IntCounter,
    shared: Arc<Shared>,
}

/// What the senders and the writer both see.
#[derive(Debug, Default)]
struct Shared {
    health: Health,
    /// Set by [`AuditLog::reopen`]; the writer reopens a file sink before
    /// its next write.
    reopen: AtomicBool,
}

/// The channel to the writer: a thread for stdout and files, a task for an
/// async writer handed in by an embedder or a test.
#[derive(Clone, Debug)]
enum Sender {
    Thread(std::sync::mpsc::SyncSender<Message>),
    Task(mpsc::Sender<Vec<u8>>),
}

/// What the writer thread receives.
#[derive(Debug)]
enum Message {
    /// One JSON line.
    Line(Vec<u8>),
    /// Write everything queued, then say so.
    Flush(std::sync::mpsc::Sender<()>),
}

impl Sender {
    /// Queues `line`; `false` when the writer is behind (or gone).
    fn try_send(&self, line: Vec<u8>) -> bool {
        match self {
            Sender::Thread(sender) => sender.try_send(Message::Line(line)).is_ok(),
            Sender::Task(sender) => sender.try_send(line).is_ok(),
        }
    }
}

/// How long the writer thread gathers events before writing them: it
/// wakes at most this often under load, instead of once per event.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// The most bytes written in one call.
const MAX_BATCH: usize = 256 * 1024;

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
        self.log.queue(line);
    }
}

/// Bytes reserved for one serialized event.
const EVENT_CAPACITY: usize = 512;

/// The `ts` of an event: RFC 3339 with milliseconds, UTC.
pub fn timestamp() -> String {
    now_rfc3339().to_string()
}

/// Serializes a value as the string its `Display` writes, with no
/// intermediate `String` (for `#[serde(serialize_with)]`).
pub fn as_text<T: std::fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// [`timestamp`], formatted where it is written.
pub fn now_rfc3339() -> humantime::Rfc3339Timestamp {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    humantime::format_rfc3339_millis(UNIX_EPOCH + now)
}

impl AuditLog {
    /// Starts the writer for `settings` and returns the handle to send
    /// events with. `dropped` counts events lost to a full channel or a
    /// failed write.
    pub async fn start(settings: &AuditSettings, dropped: IntCounter) -> std::io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(CHANNEL_CAPACITY);
        let sink = match &settings.sink {
            AuditSink::Stdout => Sink::Stdout(std::io::stdout()),
            AuditSink::File(path) => Sink::File(FollowedFile::open(path)?),
        };
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            sink,
            shared: shared.clone(),
            dropped: dropped.clone(),
        };
        std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || writer.write_batches(&receiver))?;
        Ok(Self {
            sender: Sender::Thread(sender),
            dropped,
            shared,
        })
    }

    /// A log whose events go to `writer` through a channel of `capacity`;
    /// for embedders, and tests of a slow or blocked sink.
    pub fn with_writer<W>(writer: W, capacity: usize, dropped: IntCounter) -> Self
    where
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let shared = Arc::new(Shared::default());
        tokio::spawn(write_batches_async(
            receiver,
            writer,
            dropped.clone(),
            shared.clone(),
        ));
        Self {
            sender: Sender::Task(sender),
            dropped,
            shared,
        }
    }

    /// Whether events are being written: `false` from the first lost event
    /// of an outage until a write succeeds with none lost meanwhile. One
    /// atomic load, cheap enough for every request.
    pub fn is_healthy(&self) -> bool {
        self.shared.health.is_healthy()
    }

    /// Reopens a file sink's path before the next write (on reload, so
    /// `postrotate` can send SIGHUP); nothing for other sinks.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
    }

    /// Queues one line; drops and counts it when the writer is behind,
    /// which begins an outage.
    fn queue(&self, line: Vec<u8>) {
        if !self.sender.try_send(line) {
            self.dropped.inc();
            self.shared.health.lost(1, Cause::Behind);
        }
    }

    /// Writes every event queued so far (at shutdown), waiting at most
    /// `patience`. Events sent to an async writer are written as they come.
    pub fn flush(&self, patience: std::time::Duration) {
        if let Sender::Thread(sender) = &self.sender {
            let (done, written) = std::sync::mpsc::channel();
            if sender.send(Message::Flush(done)).is_ok() {
                let _ = written.recv_timeout(patience);
            }
        }
    }

    /// Queues an event that serializes itself (the per-request events, which
    /// avoid building a map); drops and counts it when the writer is behind.
    pub fn send<T: serde::Serialize>(&self, event: &T) {
        // Room for a typical event, so the line is not regrown as it is written.
        let mut line = Vec::with_capacity(EVENT_CAPACITY);
        if serde_json::to_writer(&mut line, event).is_err() {
            self.dropped.inc();
            return;
        }
        line.push(b'\n');
        self.queue(line);
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
        if let Some(trace_id) = key.and_then(ExecutionKey::trace_id) {
            fields.insert("trace_id".into(), trace_id.into());
        }
        AuditEvent { log: self, fields }
    }
}

/// The writer thread's state.
struct Writer {
    sink: Sink,
    shared: Arc<Shared>,
    dropped: IntCounter,
}

impl Writer {
    /// The writer thread: waits for an event, gathers what else arrives for
    /// a few milliseconds (senders do not wake it meanwhile), writes it all
    /// in one call and flushes. Ends when every sender is gone.
    fn write_batches(mut self, receiver: &std::sync::mpsc::Receiver<Message>) {
        let mut batch = Vec::with_capacity(64 * 1024);
        while let Ok(first) = receiver.recv() {
            // Before the batch is gathered: an event lost while it is being
            // gathered or written keeps the outage open.
            let mark = self.shared.health.mark();
            let mut flushed = Vec::new();
            let mut events = 0u64;
            let mut next = Some(first);
            let mut waited = false;
            while let Some(message) = next.take() {
                match message {
                    Message::Line(line) => {
                        batch.extend_from_slice(&line);
                        events += 1;
                    }
                    Message::Flush(done) => flushed.push(done),
                }
                if batch.len() >= MAX_BATCH {
                    break;
                }
                next = receiver.try_recv().ok();
                if next.is_none() && !waited && flushed.is_empty() {
                    // Gather for a moment; senders do not wake this thread.
                    waited = true;
                    std::thread::sleep(GATHER);
                    next = receiver.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.write(&batch, events, mark);
            }
            batch.clear();
            for done in flushed {
                let _ = done.send(());
            }
        }
    }

    /// Writes one batch of `events`, counting them as lost when it fails.
    fn write(&mut self, batch: &[u8], events: u64, mark: u64) {
        if self.shared.reopen.swap(false, Ordering::AcqRel) {
            self.sink.reopen();
        }
        match self.sink.write_batch(batch) {
            Ok(()) => {
                self.shared.health.written(mark);
            }
            Err(err) => {
                self.dropped.inc_by(events);
                self.shared.health.lost(events, Cause::WriteFailed(&err));
            }
        }
    }
}

/// The writer task for an async writer: the same batching.
async fn write_batches_async<W>(
    mut receiver: mpsc::Receiver<Vec<u8>>,
    mut writer: W,
    dropped: IntCounter,
    shared: Arc<Shared>,
) where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut lines = Vec::with_capacity(256);
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        let mark = shared.health.mark();
        if receiver.recv_many(&mut lines, 256).await == 0 {
            break;
        }
        for line in lines.drain(..) {
            batch.extend_from_slice(&line);
        }
        let events = batch.iter().filter(|b| **b == b'\n').count() as u64;
        let written = writer.write_all(&batch).await;
        match written.and(writer.flush().await) {
            Ok(()) => {
                shared.health.written(mark);
            }
            Err(err) => {
                dropped.inc_by(events);
                shared.health.lost(events, Cause::WriteFailed(&err));
            }
        }
        batch.clear();
    }
}
