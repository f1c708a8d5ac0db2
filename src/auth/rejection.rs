//! Reading the bearer token, and the RFC 6750 answers when it is refused.
//!
//! [`bearer_token`] reads the one `Authorization: Bearer` header (SPEC §4):
//! none, another scheme or an empty token is a missing token; two headers
//! are `invalid_request`. [`rejection_response`] is the answer to every
//! refusal, with its `WWW-Authenticate` challenge and the execution key:
//! 401 without an error code for a missing token, 400 `invalid_request`,
//! 401 `invalid_token` saying what failed, 403 `insufficient_scope` naming
//! the scopes needed and, in [`forbidden_response`], the claim missing.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::jwt::{Reason, Rejection};
use crate::body::Body;
use crate::error::json_error;
use crate::execution_key::ExecutionKey;

/// The token in the request, or why there is none usable.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let missing = Rejection {
        reason: Reason::MissingToken,
        description: "a bearer token is required",
    };
    let Some(value) = values.next() else {
        return Err(missing);
    };
    if values.next().is_some() {
        return Err(Rejection {
            reason: Reason::DuplicateAuthorization,
            description: "more than one Authorization header",
        });
    }
    let malformed = Rejection {
        reason: Reason::Malformed,
        description: "malformed Authorization header",
    };
    let text = value.to_str().map_err(|_| malformed)?;
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(missing);
    }
    Ok(token)
}

/// The RFC 6750 answer to a rejection.
pub fn rejection_response(
    rejection: Rejection,
    needed_scope: Option<&str>,
    key: Option<&ExecutionKey>,
) -> Response<Body> {
    if rejection.reason == Reason::RateLimited {
        // Not a token problem: no challenge (the rate limit answers its own
        // 429 with `Retry-After`; this is for completeness).
        return json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            rejection.description,
            key,
        );
    }
    let (status, error, challenge) = match rejection.reason {
        Reason::MissingToken => (
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "Bearer realm=\"warden\"".to_owned(),
        ),
        Reason::DuplicateAuthorization => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Bearer realm=\"warden\", error=\"invalid_request\"".to_owned(),
        ),
        Reason::InsufficientScope | Reason::ClaimMismatch => {
            return forbidden_response(needed_scope.unwrap_or(""), None, key);
        }
        Reason::Malformed
        | Reason::TokenTooLarge
        | Reason::AlgNotAllowed
        | Reason::UnknownKid
        | Reason::CritUnsupported
        | Reason::SignatureInvalid
        | Reason::TokenExpired
        | Reason::TokenNotYetValid
        | Reason::LifetimeTooLong
        | Reason::IssuerMismatch
        | Reason::AudienceMismatch
        | Reason::TokenRevoked
        | Reason::DecryptFailed
        | Reason::NotSigned
        | Reason::RateLimited => (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            format!(
                "Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"{}\"",
                rejection.description
            ),
        ),
    };
    let mut response = json_error(status, error, rejection.description, key);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The 403 `insufficient_scope` answer (SPEC §4, §15). The challenge
/// carries `scope=` with the scopes the route needs for the method: left
/// out only when the route needs none and no claim failed; present, though
/// possibly empty, when `claim` names a failed `require_claims` rule, which
/// `error_description` (header and body) then names too.
pub fn forbidden_response(
    needed_scope: &str,
    claim: Option<&str>,
    key: Option<&ExecutionKey>,
) -> Response<Body> {
    let mut challenge = "Bearer realm=\"warden\", error=\"insufficient_scope\"".to_owned();
    if claim.is_some() || !needed_scope.is_empty() {
        challenge.push_str(&format!(", scope=\"{}\"", challenge_text(needed_scope)));
    }
    let description = match claim {
        Some(claim) => {
            let description = format!("required claim '{claim}' is missing or not allowed");
            challenge.push_str(&format!(
                ", error_description=\"{}\"",
                challenge_text(&description)
            ));
            std::borrow::Cow::Owned(description)
        }
        None => std::borrow::Cow::Borrowed("the token lacks a required scope"),
    };
    let mut response = json_error(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        &description,
        key,
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// `text` within the characters RFC 6750 §3 allows in a quoted
/// `error_description` or `scope` (printable ASCII but `"` and `\`).
fn challenge_text(text: &str) -> std::borrow::Cow<'_, str> {
    let allowed = |c: char| c == ' ' || (c.is_ascii_graphic() && c != '"' && c != '\\');
    if text.chars().all(allowed) {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(
            text.chars()
                .map(|c| if allowed(c) { c } else { '?' })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_single() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(
            bearer_token(&HeaderMap::from_iter([(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(b"Bearer \xff").unwrap_or(HeaderValue::from_static("x"))
            )]))
            .map_err(|r| r.reason),
            Err(Reason::Malformed)
        );
        assert_eq!(bearer_token(&headers(&["bEaReR   abc"])), Ok("abc"));
        let reason = |h: &[&'static str]| {
            bearer_token(&headers(h))
                .map(str::to_owned)
                .map_err(|r| r.reason)
        };
        assert_eq!(reason(&[]), Err(Reason::MissingToken));
        assert_eq!(reason(&["Basic dXNlcjpwYXNz"]), Err(Reason::MissingToken));
        assert_eq!(reason(&["Bearer"]), Err(Reason::MissingToken));
        assert_eq!(reason(&["Bearer  "]), Err(Reason::MissingToken));
        assert_eq!(reason(&["Bearer a b"]), Ok("a b".to_owned()));
        assert_eq!(
            reason(&["Bearer a", "Bearer b"]),
            Err(Reason::DuplicateAuthorization)
        );
    }
}
