//! The file format: serde structs that mirror `gateway.toml` one to one.
//!
//! Every struct denies unknown fields. Values stay close to their TOML form
//! here (durations and addresses are strings); `validate/` turns them into
//! typed settings and reports what is wrong with them.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerFile {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub shutdown_grace: Option<String>,
    pub request_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub max_header_bytes: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub trust_execution_key_header: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_connections: Option<u32>,
    pub max_concurrent_streams: Option<u32>,
    pub workers: Option<u32>,
    pub tunnel_idle_timeout: Option<String>,
    pub tunnel_max_duration: Option<String>,
    pub tls: Option<TlsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsFile {
    pub cert_file: String,
    pub key_file: String,
    pub client_ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogFile {
    pub level: Option<String>,
    pub format: Option<String>,
    pub otlp_endpoint: Option<String>,
    pub otlp_service_name: Option<String>,
}

/// `upstream = "http://a"` or `upstream = ["http://a", "http://b"]`.
#[derive(Debug)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a URL string or a list of URL strings")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteFile {
    pub name: String,
    pub path_prefix: String,
    pub upstream: OneOrMany,
    pub methods: Option<Vec<String>>,
    pub host: Option<String>,
    pub strip_prefix: Option<bool>,
    pub timeout: Option<String>,
    pub auth: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub method_scopes: Option<BTreeMap<String, Vec<String>>>,
    pub require_claims: Option<BTreeMap<String, Vec<String>>>,
    pub forward_claims: Option<BTreeMap<String, String>>,
    pub forward_authorization: Option<bool>,
    pub inject: Option<InjectFile>,
    pub rate_limit: Option<RateLimitFile>,
    pub upstream_token: Option<UpstreamTokenFile>,
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub upstream_http2: Option<bool>,
    pub upgrades: Option<Vec<String>>,
    pub health_path: Option<String>,
    pub health_interval: Option<String>,
    pub max_failures: Option<u32>,
    pub cooldown: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InjectFile {
    pub credential: Option<String>,
    pub connection: Option<String>,
    pub header: Option<String>,
    pub query: Option<String>,
    #[serde(default)]
    pub path: bool,
    pub body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OauthConnectionFile {
    pub name: String,
    pub authorize_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret_env: Option<String>,
    pub client_secret_file: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub redirect_url: String,
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    #[serde(default)]
    pub token_params: BTreeMap<String, String>,
    pub token_endpoint_auth: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialsFile {
    pub store: String,
    pub master_key_env: Option<String>,
    pub master_key_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyFile {
    pub kid: String,
    pub alg: String,
    pub private_key_file: Option<String>,
    pub public_key_file: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub generate: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssuerFile {
    pub iss: Option<String>,
    pub aud: Option<Vec<String>>,
    pub signing_kid: Option<String>,
    pub ttl: Option<String>,
    pub max_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidationFile {
    pub leeway: Option<String>,
    pub max_token_bytes: Option<u64>,
    pub max_token_lifetime: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrustedIssuerFile {
    pub iss: String,
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub discovery: bool,
    pub aud: Vec<String>,
    pub algs: Vec<String>,
    pub refresh: Option<String>,
    pub ca_file: Option<String>,
    #[serde(default)]
    pub accept_high_s: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginFile {
    pub path: Option<String>,
    pub api_key_header: Option<String>,
    pub max_failures_per_minute: Option<u32>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyFile>,
    #[serde(default)]
    pub users: Vec<UserFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiKeyFile {
    pub id: String,
    pub key_sha256: String,
    pub sub: Option<String>,
    pub role: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserFile {
    pub username: String,
    pub password_argon2: String,
    pub role: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditFile {
    pub sink: Option<String>,
    pub path: Option<String>,
    pub on_failure: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitFile {
    pub requests: u32,
    pub per: String,
    pub burst: Option<u32>,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamTokenFile {
    pub aud: String,
    pub ttl: Option<String>,
    pub claims: Option<Vec<String>>,
    pub header: Option<String>,
    pub encrypt_to: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SharedStateFile {
    pub backend: Option<String>,
    pub url_env: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout: Option<String>,
}
