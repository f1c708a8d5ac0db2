//! Logging: one JSON object a line (or human-friendly text), via `tracing`.
//!
//! Every line logged while a request is handled sits inside that request's
//! span, which carries its `execution_key`.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line, for machines.
    Json,
    /// Coloured text, for people.
    Pretty,
}

/// `[log]`, validated.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// A level or `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
    /// The line format.
    pub format: LogFormat,
    /// Where request spans are exported (OTLP over HTTP), if anywhere.
    pub otlp: Option<crate::trace::OtlpSettings>,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
            otlp: None,
        }
    }
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // `try_init`: a second call (tests) keeps the first subscriber.
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
