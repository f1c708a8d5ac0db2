//! `builtin:echo`: an upstream inside the gateway that answers with the
//! request it received, as JSON (method, path, query, headers, body length),
//! so a user of the demo sees what a real upstream would get.

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;

use crate::body::{self, Body, BodyTooLarge, ClientBodyError};
use crate::error::{ErrorCode, GatewayError};
use crate::execution_key::ExecutionKey;

/// Answers `request` with its JSON description.
pub async fn respond(request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let key = parts.extensions.get::<ExecutionKey>().cloned();
    // Counted frame by frame: the echo holds no body in memory.
    let mut body = std::pin::pin!(body);
    let mut body_length: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_length += data.len() as u64;
                }
            }
            Err(err) if BodyTooLarge::is_cause_of(&*err) => {
                return GatewayError::new(ErrorCode::PayloadTooLarge, err.to_string())
                    .into_response(key.as_ref());
            }
            Err(err) if ClientBodyError::is_cause_of(&*err) => {
                return GatewayError::new(
                    ErrorCode::BadFraming,
                    "the request body does not match its framing",
                )
                .into_response(key.as_ref());
            }
            Err(_) => {
                return GatewayError::new(
                    ErrorCode::BadRequest,
                    "the request body could not be read",
                )
                .into_response(key.as_ref());
            }
        }
    }
    // The echo answers the client, so an injected credential never appears
    // in it: sensitive headers and any copy of the injected value are redacted.
    let injected = parts
        .extensions
        .get::<crate::extensions::InjectedValue>()
        .map(|i| i.0.expose().to_owned())
        .filter(|v| !v.is_empty());
    let redact = |text: &str| -> String {
        match &injected {
            Some(secret) => text
                .replace(secret.as_str(), "[redacted]")
                .replace(&crate::percent::encode(secret), "[redacted]"),
            None => text.to_owned(),
        }
    };
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<serde_json::Value> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| {
                if v.is_sensitive() {
                    "[redacted]".into()
                } else {
                    redact(&String::from_utf8_lossy(v.as_bytes())).into()
                }
            })
            .collect();
        let value = if values.len() == 1 {
            values.into_iter().next().unwrap_or_default()
        } else {
            values.into()
        };
        headers.insert(name.as_str().to_owned(), value);
    }
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "path": redact(parts.uri.path()),
        "query": parts.uri.query().map(redact),
        "headers": headers,
        "body_length": body_length,
    });
    let mut response = Response::new(body::full(echo.to_string()));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
