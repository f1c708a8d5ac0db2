//! Reading a login request: which credentials it presents, and what it asks
//! for.
//!
//! Credentials come from the API-key header (`login.api_key_header`) or,
//! failing that, from `Authorization: Basic` (a user's password, or a client
//! id and key for client credentials). The body, at most 64 KiB, is empty, a
//! JSON object with an optional `scope`, or an
//! `application/x-www-form-urlencoded` form with `grant_type` and `scope`
//! (RFC 6749 §4.4). The only grant taken is `client_credentials`, whose
//! client may also post its `client_id` and `client_secret` in the form
//! (`client_secret_post`, RFC 6749 §2.3.1), but not beside another method.
//!
//! Produces the 400 `invalid_request` / `unsupported_grant_type` and
//! 401 `invalid_client` failures of a malformed request, as [`Failure`]s.
//! Reads the [`ConnectInfo`] extension for the client's address.

use std::net::IpAddr;

use base64::Engine;
use http::{HeaderMap, HeaderName, Request, header};
use serde_json::Value;
use zeroize::Zeroizing;

use super::response::Failure;
use crate::body::{self, Body};
use crate::extensions::ConnectInfo;
use crate::percent::form_fields;

/// The largest login request body read.
const MAX_LOGIN_BODY: usize = 64 * 1024;

/// The client's credentials, as presented.
pub(super) enum Presented {
    ApiKey(Zeroizing<Vec<u8>>),
    Basic {
        user: String,
        secret: Zeroizing<String>,
    },
    None,
}

/// A login request, read and checked for form.
pub(super) struct LoginRequest {
    pub(super) presented: Presented,
    /// `grant_type=client_credentials` was given (no other grant gets here).
    pub(super) client_credentials: bool,
    /// The `scope` asked for, space-separated.
    pub(super) scope: Option<String>,
}

/// The client's address, from the connection.
pub(super) fn client_ip<B>(request: &Request<B>) -> Option<IpAddr> {
    request.extensions().get::<ConnectInfo>().map(|c| c.client)
}

/// Reads `request`'s credentials and body. A malformed `Authorization`
/// fails before the body is read.
pub(super) async fn read(
    request: Request<Body>,
    api_key_header: &HeaderName,
) -> Result<LoginRequest, Failure> {
    let (parts, body) = request.into_parts();
    let presented = match parts.headers.get(api_key_header) {
        Some(value) => Presented::ApiKey(Zeroizing::new(value.as_bytes().to_vec())),
        None => match basic_credentials(&parts.headers)? {
            Some((user, secret)) => Presented::Basic { user, secret },
            None => Presented::None,
        },
    };
    let body = body::read_to_limit(body, MAX_LOGIN_BODY)
        .await
        .map_err(|_| {
            Failure::bad_request("invalid_request", "the request body could not be read")
        })?;
    let fields = body_fields(media_type(&parts.headers).as_deref(), &body)?;
    let client_credentials = match fields.grant_type.as_deref() {
        None => false,
        Some("client_credentials") => true,
        Some(_) => {
            return Err(Failure::bad_request(
                "unsupported_grant_type",
                "only the client_credentials grant is supported",
            ));
        }
    };
    let presented = client_secret_post(
        presented,
        fields.client_id,
        fields.client_secret,
        client_credentials,
    )?;
    let scope = fields.scope;
    Ok(LoginRequest {
        presented,
        client_credentials,
        scope,
    })
}

/// The user (or client id) and secret of `Authorization: Basic`, if the
/// header is there.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, Zeroizing<String>)>, Failure> {
    let malformed = || Failure::invalid_client("malformed_credentials", None);
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Failure::bad_request(
            "invalid_request",
            "more than one Authorization header",
        ));
    }
    let text = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = text.split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Failure::invalid_client("unsupported_scheme", None));
    }
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| malformed())?,
    );
    let text = std::str::from_utf8(&decoded).map_err(|_| malformed())?;
    let (user, secret) = text.split_once(':').ok_or_else(malformed)?;
    Ok(Some((user.to_owned(), Zeroizing::new(secret.to_owned()))))
}

/// The media type of `Content-Type`, lowercased and without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// What a login body says: the grant, the scope asked for, and the client's
/// credentials when it posts them (`client_secret_post`).
#[derive(Default)]
struct BodyFields {
    grant_type: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Zeroizing<String>>,
}

/// The client's credentials once the body's are taken into account (RFC
/// 6749 §2.3.1: `client_id` and `client_secret` in the form, for the
/// client-credentials grant). A client uses one method only (§2.3): a
/// `client_secret` beside Basic or the API-key header, or a body
/// `client_id` that is not the Basic one, is `invalid_request`. Posted
/// credentials become the same [`Presented::Basic`] as Basic's, so they
/// take the same constant-time check.
fn client_secret_post(
    presented: Presented,
    client_id: Option<String>,
    client_secret: Option<Zeroizing<String>>,
    client_credentials: bool,
) -> Result<Presented, Failure> {
    let one_method = || {
        Failure::bad_request(
            "invalid_request",
            "use one client authentication method: Basic or client_id and client_secret in the body, not both",
        )
    };
    match (presented, client_id, client_secret) {
        (presented, None, None) => Ok(presented),
        (Presented::None, _, _) if !client_credentials => Err(Failure::bad_request(
            "invalid_request",
            "client_id and client_secret are read only with grant_type=client_credentials",
        )),
        (Presented::None, client_id, client_secret) => Ok(Presented::Basic {
            user: client_id.unwrap_or_default(),
            secret: client_secret.unwrap_or_default(),
        }),
        (Presented::Basic { user, secret }, Some(client_id), None) if client_id == user => {
            Ok(Presented::Basic { user, secret })
        }
        (Presented::Basic { .. } | Presented::ApiKey(_), _, _) => Err(one_method()),
    }
}

/// The fields of a body of `media_type`. A body without a media type is
/// read as JSON, since clients that send one rarely label it.
fn body_fields(media_type: Option<&str>, body: &[u8]) -> Result<BodyFields, Failure> {
    match media_type {
        Some("application/x-www-form-urlencoded") => {
            let mut fields = BodyFields::default();
            // The first of a repeated field counts, as for `grant_type` before.
            for (name, value) in form_fields(body) {
                let value = Zeroizing::new(value);
                match name.as_str() {
                    "grant_type" if fields.grant_type.is_none() => {
                        fields.grant_type = Some(value.to_string());
                    }
                    "scope" if fields.scope.is_none() => fields.scope = Some(value.to_string()),
                    "client_id" if fields.client_id.is_none() => {
                        fields.client_id = Some(value.to_string());
                    }
                    "client_secret" if fields.client_secret.is_none() => {
                        fields.client_secret = Some(value);
                    }
                    _ => {}
                }
            }
            Ok(fields)
        }
        _ if body.is_empty() => Ok(BodyFields::default()),
        Some("application/json") | None => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => match map.get("scope") {
                None => Ok(BodyFields::default()),
                Some(Value::String(s)) => Ok(BodyFields {
                    scope: Some(s.clone()),
                    ..BodyFields::default()
                }),
                Some(_) => Err(Failure::bad_request(
                    "invalid_request",
                    "scope must be a string",
                )),
            },
            _ => Err(Failure::bad_request(
                "invalid_request",
                "the body must be a JSON object or a form",
            )),
        },
        Some(_) => Err(Failure::bad_request(
            "invalid_request",
            "unsupported content type",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_body_gives_its_grant_type_and_scope() {
        let fields = body_fields(
            Some("application/x-www-form-urlencoded"),
            b"grant_type=client_credentials&scope=orders%3Aread+orders%3Awrite",
        );
        let fields = fields.ok().map(|f| (f.grant_type, f.scope, f.client_id));
        assert_eq!(
            fields,
            Some((
                Some("client_credentials".to_owned()),
                Some("orders:read orders:write".to_owned()),
                None
            ))
        );
    }

    #[test]
    fn a_json_scope_that_is_not_a_string_is_an_invalid_request() {
        let failure = body_fields(None, br#"{"scope": 1}"#).err();
        assert_eq!(
            failure.map(|f| (f.error, f.description)),
            Some(("invalid_request", "scope must be a string"))
        );
    }
}
