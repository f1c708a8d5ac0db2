//! Distributed tracing (SPEC §15): W3C Trace Context continued or started
//! for every request, and its span exported over OTLP when `[log]
//! otlp_endpoint` is set.
//!
//! [`TraceLayer`] sits just inside the execution-key layer. It reads a
//! valid `traceparent` (and its `tracestate`), keeps the trace id and makes
//! a new span id (the gateway's span, whose parent is the client's); a
//! missing or malformed `traceparent` starts a new trace. It sets the
//! request's `traceparent` to the gateway's span, for the upstream, and
//! names the trace id in the request's [`ExecutionKey`], so every log line
//! and audit event that carries the key carries `trace_id` beside it.
//!
//! With an [`Exporter`], the span is a real OpenTelemetry span (kind
//! server), ended by the access log when the response is done, with the
//! route, the status and the execution key; spans go out in batches over
//! OTLP HTTP/protobuf through an [`opentelemetry_http::HttpClient`] the
//! caller supplies (the server's, on the gateway's hyper client).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request};
use opentelemetry::KeyValue;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use tower::{Layer, Service};

use crate::execution_key::ExecutionKey;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `[log] otlp_endpoint` and `otlp_service_name`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The collector's OTLP/HTTP traces URL (`…/v1/traces`).
    pub traces_url: String,
    /// `service.name` of the spans.
    pub service_name: String,
}

/// A `traceparent` the client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Parses `traceparent` (W3C Trace Context §3.2): version `00` exactly as
/// long as it is, a later version possibly longer; lowercase hex only; no
/// all-zero trace or parent id; version `ff` is invalid.
fn parse_traceparent(value: &HeaderValue) -> Option<Parent> {
    let text = value.to_str().ok()?;
    let version = hex_bytes::<1>(text.get(0..2)?)?[0];
    if version == 0xff || (version == 0 && text.len() != 55) {
        return None;
    }
    if text.len() > 55 && text.as_bytes().get(55) != Some(&b'-') {
        return None;
    }
    let mut fields = text.get(..55)?.split('-');
    let (Some(_), Some(trace), Some(span), Some(flags), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return None;
    };
    let parent = Parent {
        trace_id: hex_bytes::<16>(trace)?,
        span_id: hex_bytes::<8>(span)?,
        flags: hex_bytes::<1>(flags)?[0],
    };
    (parent.trace_id != [0; 16] && parent.span_id != [0; 8]).then_some(parent)
}

/// Lowercase hex of `bytes` into `out`, which is twice as long.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// The length of a version-00 `traceparent`.
const TRACEPARENT_LEN: usize = 55;

/// Where the trace id's hex digits stand in a `traceparent`.
const TRACE_ID_HEX: std::ops::Range<usize> = 3..35;

/// `00-{trace id}-{span id}-{flags}`, written in place: no formatting
/// machinery and no allocation on the request path.
fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], flags: u8) -> [u8; TRACEPARENT_LEN] {
    let mut out = [b'-'; TRACEPARENT_LEN];
    out[..2].copy_from_slice(b"00");
    hex_into(trace_id, &mut out[TRACE_ID_HEX]);
    hex_into(span_id, &mut out[36..52]);
    hex_into(&[flags], &mut out[53..]);
    out
}

/// A trace or span id: random, never all zeros (which W3C forbids).
fn random<const N: usize>() -> [u8; N] {
    let mut out = crate::execution_key::random_id::<N>();
    if out.iter().all(|b| *b == 0) {
        out[N - 1] = 1;
    }
    out
}

/// The OTLP exporter: a tracer whose spans go out in batches.
pub struct Exporter {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// Exports to `settings.traces_url` through `client`.
    pub fn start(
        settings: &OtlpSettings,
        client: impl opentelemetry_http::HttpClient + 'static,
    ) -> Result<Self, String> {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(settings.traces_url.clone())
            .with_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(settings.service_name.clone())
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("warden");
        Ok(Self { provider, tracer })
    }

    /// Sends the spans still queued and stops (blocks: call it off the
    /// async workers).
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!(error = %err, "the OTLP exporter did not shut down cleanly");
        }
    }
}

/// A request's exported span, ended by the access log.
#[derive(Clone, Debug)]
pub struct RequestSpan(Arc<Mutex<Option<opentelemetry_sdk::trace::Span>>>);

impl RequestSpan {
    /// Ends the span with what the response was.
    pub fn finish(&self, status: u16, route: &str) {
        let Ok(mut held) = self.0.lock() else {
            return;
        };
        let Some(mut span) = held.take() else {
            return;
        };
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.set_attribute(KeyValue::new("http.route", route.to_owned()));
        if status >= 500 {
            span.set_status(Status::error(format!("HTTP {status}")));
        }
        span.end();
    }
}

/// Continues or starts each request's trace.
#[derive(Clone, Debug, Default)]
pub struct TraceLayer {
    exporter: Option<Arc<Exporter>>,
}

impl TraceLayer {
    /// The layer; spans are exported when `exporter` is given.
    pub fn new(exporter: Option<Arc<Exporter>>) -> Self {
        Self { exporter }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            exporter: self.exporter.clone(),
        }
    }
}

/// The service made by [`TraceLayer`].
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
    exporter: Option<Arc<Exporter>>,
}

impl<S, B> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Exactly one traceparent: several are no parent at all (W3C §3.2).
        let mut given = request.headers().get_all(&TRACEPARENT).iter();
        let parent = match (given.next(), given.next()) {
            (Some(one), None) => parse_traceparent(one),
            _ => None,
        };
        let (trace_id, span_id, flags) = match &self.exporter {
            Some(exporter) => {
                let span = start_span(exporter, parent, &request);
                let context = span.span_context().clone();
                request
                    .extensions_mut()
                    .insert(RequestSpan(Arc::new(Mutex::new(Some(span)))));
                (
                    context.trace_id().to_bytes(),
                    context.span_id().to_bytes(),
                    context.trace_flags().to_u8(),
                )
            }
            // Version 00 defines one flag, `sampled`; the others go.
            None => match parent {
                Some(parent) => (parent.trace_id, random::<8>(), parent.flags & 0x01),
                None => (random::<16>(), random::<8>(), 0x01),
            },
        };
        let value = traceparent(&trace_id, &span_id, flags);
        let headers = request.headers_mut();
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            headers.insert(TRACEPARENT.clone(), value);
        }
        if parent.is_none() {
            // A tracestate belongs to the trace it came with.
            headers.remove(&TRACESTATE);
        }
        if let Some(key) = request.extensions_mut().get_mut::<ExecutionKey>()
            && let Ok(trace_hex) = std::str::from_utf8(&value[TRACE_ID_HEX])
        {
            key.set_trace_id(trace_hex.into());
        }
        self.inner.call(request)
    }
}

fn start_span<B>(
    exporter: &Exporter,
    parent: Option<Parent>,
    request: &Request<B>,
) -> opentelemetry_sdk::trace::Span {
    let cx = match parent {
        Some(parent) => {
            let state = request
                .headers()
                .get(&TRACESTATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<TraceState>().ok())
                .unwrap_or_default();
            opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(parent.trace_id),
                SpanId::from_bytes(parent.span_id),
                TraceFlags::new(parent.flags),
                true,
                state,
            ))
        }
        None => opentelemetry::Context::new(),
    };
    // A method the client made up is `_OTHER`, as the OpenTelemetry
    // conventions say: span names stay a bounded set.
    let method = match *request.method() {
        http::Method::GET
        | http::Method::HEAD
        | http::Method::POST
        | http::Method::PUT
        | http::Method::DELETE
        | http::Method::CONNECT
        | http::Method::OPTIONS
        | http::Method::TRACE
        | http::Method::PATCH => request.method().as_str(),
        _ => "_OTHER",
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.to_owned()),
        KeyValue::new("url.path", request.uri().path().to_owned()),
    ];
    if let Some(key) = request.extensions().get::<ExecutionKey>() {
        attributes.push(KeyValue::new(
            "warden.execution_key",
            key.as_str().to_owned(),
        ));
    }
    let builder = exporter
        .tracer
        .span_builder(method.to_owned())
        .with_kind(SpanKind::Server)
        .with_attributes(attributes);
    exporter.tracer.build_with_context(builder, &cx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_read_as_the_w3c_spec_says() {
        let ok = |s: &'static str| parse_traceparent(&HeaderValue::from_static(s));
        let parent = ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        let written = traceparent(&parent.trace_id, &parent.span_id, parent.flags);
        assert_eq!(
            &written[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "written back as it was read"
        );
        assert_eq!(parent.flags, 1);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "",
        ] {
            assert!(ok(bad).is_none(), "{bad}");
        }
        // A later version may carry more, after a dash.
        assert!(ok("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
    }
}
