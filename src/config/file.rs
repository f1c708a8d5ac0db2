//! The file format: serde structs that mirror `gateway.toml` one to one.
//!
//! Every struct denies unknown fields. Values stay close to their TOML form
//! here (durations and addresses are strings); `validate.rs` turns them into
//! typed settings and reports what is wrong with them.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerFile {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub shutdown_grace: Option<String>,
    pub request_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub max_header_bytes: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub trust_execution_key_header: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogFile {
    pub level: Option<String>,
    pub format: Option<String>,
}

/// `upstream = "http://a"` or `upstream = ["http://a", "http://b"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
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
}
