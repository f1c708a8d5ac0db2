//! The provider's side of the loop: the authorization URL (RFC 6749 §4.1.1
//! with PKCE S256, RFC 7636), the code exchange (§4.1.3) and the refresh
//! (§6) at the token endpoint, with the client authenticated by Basic
//! (`client_secret_basic`, the default) or in the form body
//! (`client_secret_post`), RFC 6749 §2.3.1.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;

use super::OauthConnectionSettings;
use crate::credentials::ClientAuth;
use crate::http_client::HttpsClient;
use crate::percent::{self, form_encode};
use crate::secret::SecretString;

/// How long one token request may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest token response read.
const MAX_RESPONSE: usize = 64 * 1024;
/// The longest access-token lifetime believed.
const MAX_LIFETIME: u64 = 366 * 24 * 3600;

/// What the token endpoint granted.
#[derive(Debug)]
pub struct Grant {
    /// The access token.
    pub access_token: SecretString,
    /// A refresh token, when one was sent.
    pub refresh_token: Option<SecretString>,
    /// How long the access token lives, when the provider said.
    pub expires_in: Option<Duration>,
    /// The scope granted, when the provider said.
    pub scope: Option<String>,
}

/// Why no grant. Safe to log: the provider's `error` code, never a token.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The provider refused the grant (`invalid_grant`): the user must
    /// connect again.
    #[error("the token endpoint refused with {status}{}", error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Refused {
        /// Its status.
        status: StatusCode,
        /// Its OAuth2 `error` code.
        error: Option<String>,
    },
    /// The request failed, timed out, or the provider failed (5xx).
    #[error("the token endpoint could not be used: {0}")]
    Failed(String),
    /// A success answer that is not a token response.
    #[error("the token endpoint answered something that is not a token response")]
    Malformed,
}

/// A PKCE verifier (43 characters of base64url, 256 random bits) and the
/// state of a login loop (the same size).
pub fn random_token() -> Result<String, GrantError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::SystemRandom::new()
        .fill(bytes.as_mut())
        .map_err(|_| GrantError::Failed("the system's random source failed".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

/// The S256 challenge of `verifier`.
pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(crate::crypto::sha256(verifier.as_bytes()))
}

/// The URL the user is sent to.
pub fn authorize_url(settings: &OauthConnectionSettings, state: &str, verifier: &str) -> String {
    let scope = settings.scopes.join(" ");
    let challenge = challenge(verifier);
    let mut fields: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &settings.client_id),
        ("redirect_uri", &settings.redirect_url),
    ];
    if !scope.is_empty() {
        fields.push(("scope", &scope));
    }
    fields.push(("state", state));
    fields.push(("code_challenge", &challenge));
    fields.push(("code_challenge_method", "S256"));
    for (name, value) in &settings.authorize_params {
        fields.push((name, value));
    }
    let separator = if settings.authorize_url.contains('?') {
        '&'
    } else {
        '?'
    };
    format!(
        "{}{separator}{}",
        settings.authorize_url,
        form_encode(&fields)
    )
}

/// Exchanges `code` (with its PKCE `verifier`) for tokens.
pub async fn exchange_code(
    client: &HttpsClient<Full<Bytes>>,
    settings: &OauthConnectionSettings,
    code: &str,
    verifier: &str,
) -> Result<Grant, GrantError> {
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", settings.redirect_url.as_str()),
        ("code_verifier", verifier),
    ];
    token_request(client, settings, &fields).await
}

/// Trades `refresh_token` for a new access token (and perhaps a new
/// refresh token).
pub async fn refresh(
    client: &HttpsClient<Full<Bytes>>,
    settings: &OauthConnectionSettings,
    refresh_token: &SecretString,
) -> Result<Grant, GrantError> {
    let fields = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose()),
    ];
    token_request(client, settings, &fields).await
}

async fn token_request(
    client: &HttpsClient<Full<Bytes>>,
    settings: &OauthConnectionSettings,
    grant: &[(&str, &str)],
) -> Result<Grant, GrantError> {
    let mut fields: Vec<(&str, &str)> = grant.to_vec();
    for (name, value) in &settings.token_params {
        fields.push((name, value));
    }
    if settings.client_auth == ClientAuth::Form {
        fields.push(("client_id", &settings.client_id));
        fields.push(("client_secret", settings.client_secret.expose()));
    }
    let body = zeroize::Zeroizing::new(form_encode(&fields));
    let mut request = Request::post(&settings.token_url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body.as_bytes().to_vec())))
        .map_err(|e| GrantError::Failed(e.to_string()))?;
    if settings.client_auth == ClientAuth::Basic {
        // RFC 6749 §2.3.1: both parts form-encoded before Basic.
        let pair = zeroize::Zeroizing::new(format!(
            "{}:{}",
            percent::encode(&settings.client_id),
            percent::encode(settings.client_secret.expose()),
        ));
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|e| GrantError::Failed(e.to_string()))?;
        value.set_sensitive(true);
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| GrantError::Failed(e.to_string()))?;
        let status = response.status();
        let body = crate::body::read_to_limit(response.into_body(), MAX_RESPONSE)
            .await
            .map_err(|e| GrantError::Failed(e.to_string()))?;
        Ok::<_, GrantError>((status, body))
    };
    let (status, body) = tokio::time::timeout(TOKEN_TIMEOUT, exchange)
        .await
        .map_err(|_| GrantError::Failed("timed out".into()))??;
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let error: Option<String> = json
        .get("error")
        .and_then(Value::as_str)
        .map(|e| e.chars().filter(char::is_ascii_graphic).take(64).collect());
    // Some providers (GitHub) answer a refused grant with 200 and `error`.
    if let Some(code) = error.as_deref()
        && (status.is_client_error() || status.is_success())
        && REFUSED_GRANT.contains(&code)
    {
        return Err(GrantError::Refused { status, error });
    }
    if !status.is_success() || error.is_some() {
        // A wrong client secret, a throttled client or a failing provider is
        // not the user's grant being refused: the record stays.
        let why = match error {
            Some(code) => format!("it answered {status} ({code})"),
            None => format!("it answered {status}"),
        };
        return Err(GrantError::Failed(why));
    }
    grant_from(&json)
}

/// The `error` codes that mean the user's grant itself is gone: RFC 6749
/// §5.2 `invalid_grant`, and GitHub's `bad_refresh_token` and
/// `bad_verification_code`.
const REFUSED_GRANT: &[&str] = &[
    "invalid_grant",
    "bad_refresh_token",
    "bad_verification_code",
];

fn grant_from(json: &Value) -> Result<Grant, GrantError> {
    let text = |name: &str| {
        json.get(name)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    };
    let access_token = text("access_token").ok_or(GrantError::Malformed)?;
    if let Some(kind) = text("token_type")
        && !kind.eq_ignore_ascii_case("bearer")
    {
        // Only bearer tokens can go in `Authorization: Bearer`.
        return Err(GrantError::Malformed);
    }
    let expires_in = match json
        .get("expires_in")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
    {
        Some(0) => return Err(GrantError::Malformed),
        Some(seconds) => Some(Duration::from_secs(seconds.min(MAX_LIFETIME))),
        None => None,
    };
    Ok(Grant {
        access_token: SecretString::new(access_token),
        refresh_token: text("refresh_token").map(SecretString::new),
        expires_in,
        scope: text("scope").map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_the_rfc_7636_example() {
        // RFC 7636 Appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_grant_needs_a_bearer_access_token() {
        let ok =
            serde_json::json!({"access_token": "a", "token_type": "Bearer", "expires_in": "60"});
        let grant = grant_from(&ok).expect("grant");
        assert_eq!(grant.expires_in, Some(Duration::from_secs(60)));
        assert!(grant.refresh_token.is_none());
        for bad in [
            serde_json::json!({"token_type": "Bearer"}),
            serde_json::json!({"access_token": "a", "token_type": "mac"}),
            serde_json::json!({"access_token": "a", "expires_in": 0}),
        ] {
            assert!(matches!(grant_from(&bad), Err(GrantError::Malformed)));
        }
    }
}
