//! From the parsed file to typed settings, collecting every problem.
//!
//! [`parse`] reads the TOML tree, deserializes each section on its own (so
//! structural problems in several sections are all reported), then builds
//! the settings section by section and checks the rules between sections.
//! Nothing stops at the first problem: every problem is collected in a
//! [`Report`] and returned in file order.
//!
//! One file per section, each with a `build_*` function from its `*File`
//! struct (`file.rs`) to the settings struct of the concern that uses it:
//!
//! - `server.rs`: `[server]`, `[server.tls]`, `[log]`, `[audit]`
//! - `auth.rs`: `[[keys]]`, `[issuer]`, `[validation]`, `[[trusted_issuers]]`
//! - `jwe_keys.rs`: the `[[keys]]` that decrypt tokens or encrypt to upstreams
//! - `login.rs`: `[login]` with its API keys and users
//! - `credentials.rs`: `[credentials]`, and a route's `inject`
//! - `shared_state.rs`: `[shared_state]`, and a route's `rate_limit`
//! - `upstream_token.rs`: a route's `upstream_token`
//! - `upstream.rs`: a route's connection, health checks and `upgrades`
//! - `routes.rs`: `[[routes]]`
//! - `report.rs`: key paths, the report, and the value checks several
//!   sections share
//! - `references.rs`: the variables and files the config names exist
//!   (for `warden check` and `run` only)
//!
//! A new section gets its `*File` struct in `file.rs`, an arm in
//! [`read_sections`] (and its name in [`SECTIONS`]), a file here with its
//! `build_*` function, and a call in [`build`]. Rules that involve two
//! sections stay in this file, in [`build`]; the section files import only
//! `report.rs` and each other one way (`routes.rs` uses `credentials.rs` and `shared_state.rs`).

mod auth;
mod credentials;
mod jwe_keys;
mod login;
mod oauth_connections;
mod references;
mod report;
mod routes;
mod server;
mod shared_state;
mod upstream;
mod upstream_token;

use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use self::report::{KeyPath, Report};
use super::file::{
    AuditFile, CredentialsFile, IssuerFile, KeyFile, LogFile, LoginFile, OauthConnectionFile,
    RouteFile, ServerFile, SharedStateFile, TrustedIssuerFile, ValidationFile,
};
use super::{Config, ConfigError};
use crate::auth::login::{JWKS_PATH, LoginSettings};
use crate::routes::{AuthMode, RouteSettings};

/// The file's sections, as far as they could be read.
#[derive(Default)]
struct Sections {
    server: ServerFile,
    log: LogFile,
    keys: Vec<(usize, KeyFile)>,
    issuer: Option<IssuerFile>,
    validation: ValidationFile,
    trusted_issuers: Vec<(usize, TrustedIssuerFile)>,
    login: Option<LoginFile>,
    audit: AuditFile,
    credentials: Option<CredentialsFile>,
    oauth_connections: Vec<(usize, OauthConnectionFile)>,
    shared_state: SharedStateFile,
    routes: Vec<(usize, RouteFile)>,
}

pub(super) fn parse(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
    parse_with(text, origin, base, false)
}

/// [`parse`], then every variable and file the config refers to must
/// exist (`references.rs`): what `warden check` and `warden run` load.
pub(super) fn parse_with_references(
    text: &str,
    origin: &str,
    base: &Path,
) -> Result<Config, ConfigError> {
    parse_with(text, origin, base, true)
}

fn parse_with(
    text: &str,
    origin: &str,
    base: &Path,
    references: bool,
) -> Result<Config, ConfigError> {
    let mut report = Report::new(origin, base, text);
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(err) => {
            report.toml_error(
                &KeyPath::default(),
                &err,
                "fix the TOML syntax at this place",
            );
            return Err(ConfigError {
                problems: report.problems,
            });
        }
    };
    let table = root.into_inner();
    let sections = read_sections(&mut report, &table);
    let walked = references.then(|| table.clone());
    report.root = Some(DeValue::Table(table));
    let config = build(&mut report, sections);
    if let Some(table) = walked {
        references::check(&mut report, &table, &config);
    }
    report.finish(config)
}

pub(super) const SECTIONS: &str = "server, log, audit, keys, issuer, validation, trusted_issuers, login, credentials, oauth_connections, shared_state, routes";

/// Deserializes every element of an array of tables (`[[name]]`).
fn array_section<'a, T: DeserializeOwned>(
    report: &mut Report<'a>,
    name: &'static str,
    value: &Spanned<DeValue<'a>>,
) -> Vec<(usize, T)> {
    let path = KeyPath::default().key(name);
    let fix = format!("see docs/configuration.md#{}", name.replace('_', "-"));
    let mut items = Vec::new();
    match value.get_ref() {
        DeValue::Array(elements) => {
            for (i, element) in elements.iter().enumerate() {
                if let Some(item) = report.section(&path.index(i), element, &fix) {
                    items.push((i, item));
                }
            }
        }
        _ => report.problem(
            &path,
            format!("`{name}` must be an array of tables"),
            format!("write each entry as a [[{name}]] table"),
        ),
    }
    items
}

fn read_sections<'a>(report: &mut Report<'a>, table: &DeTable<'a>) -> Sections {
    let mut sections = Sections::default();
    for (name, value) in table.iter() {
        match name.get_ref().as_ref() {
            "server" => {
                let path = KeyPath::default().key("server");
                if let Some(s) = report.section(&path, value, "see docs/configuration.md#server") {
                    sections.server = s;
                }
            }
            "log" => {
                let path = KeyPath::default().key("log");
                if let Some(s) = report.section(&path, value, "see docs/configuration.md#log") {
                    sections.log = s;
                }
            }
            "routes" => sections.routes = array_section(report, "routes", value),
            "keys" => sections.keys = array_section(report, "keys", value),
            "trusted_issuers" => {
                sections.trusted_issuers = array_section(report, "trusted_issuers", value);
            }
            "oauth_connections" => {
                sections.oauth_connections = array_section(report, "oauth_connections", value);
            }
            "credentials" => {
                let path = KeyPath::default().key("credentials");
                sections.credentials =
                    report.section(&path, value, "see docs/configuration.md#credentials");
            }
            "login" => {
                let path = KeyPath::default().key("login");
                sections.login = report.section(&path, value, "see docs/configuration.md#login");
            }
            "shared_state" => {
                let path = KeyPath::default().key("shared_state");
                if let Some(s) =
                    report.section(&path, value, "see docs/configuration.md#shared-state")
                {
                    sections.shared_state = s;
                }
            }
            "audit" => {
                let path = KeyPath::default().key("audit");
                if let Some(a) = report.section(&path, value, "see docs/configuration.md#audit") {
                    sections.audit = a;
                }
            }
            "issuer" => {
                let path = KeyPath::default().key("issuer");
                sections.issuer = report.section(&path, value, "see docs/configuration.md#issuer");
            }
            "validation" => {
                let path = KeyPath::default().key("validation");
                if let Some(v) =
                    report.section(&path, value, "see docs/configuration.md#validation")
                {
                    sections.validation = v;
                }
            }
            other => {
                report.problem_at(
                    name.span().start,
                    other,
                    format!("unknown section `{other}`"),
                    match report::did_you_mean(other, SECTIONS.split(", ")) {
                        Some(meant) => {
                            format!("did you mean `{meant}`? the known sections are: {SECTIONS}")
                        }
                        None => format!(
                            "remove it or correct its name; the known sections are: {SECTIONS}"
                        ),
                    },
                );
            }
        }
    }
    sections
}

fn build(report: &mut Report<'_>, sections: Sections) -> Config {
    let server = server::build_server(report, sections.server);
    let log = server::build_log(report, sections.log);
    let (keys, jwe) = auth::build_keys(report, sections.keys);
    let issuer = auth::build_issuer(report, sections.issuer, &keys, &jwe);
    let validation = auth::build_validation(report, sections.validation);
    auth::check_issued_lifetime(report, issuer.as_ref(), &validation);
    let trusted_issuers = auth::build_trusted_issuers(report, sections.trusted_issuers);
    let (routes, route_paths) = routes::build_routes(report, sections.routes, &server);
    let login = sections
        .login
        .map(|file| login::build_login(report, file, issuer.as_ref()));
    let audit = server::build_audit(report, sections.audit);
    let shared_state = shared_state::build_shared_state(report, sections.shared_state);
    let credentials = sections
        .credentials
        .map(|file| credentials::build_credentials(report, file));
    if credentials.is_none()
        && let Some(index) = routes.iter().position(|r| r.inject.is_some())
    {
        report.problem(
            &route_paths[index].key("inject"),
            "the route injects a credential, but [credentials] is not configured",
            "add [credentials] with store and master_key_env (or master_key_file)",
        );
    }
    let oauth_connections =
        oauth_connections::build_oauth_connections(report, sections.oauth_connections);
    if credentials.is_none() && !oauth_connections.is_empty() {
        report.problem(
            &KeyPath::default().key("oauth_connections"),
            "users' tokens are sealed under the credential store's master key, but [credentials] is not configured",
            "add [credentials] with store and master_key_env (or master_key_file); the connections live beside the store",
        );
    }
    for (route, path) in routes.iter().zip(&route_paths) {
        if let Some(inject) = &route.inject_connection
            && !oauth_connections
                .iter()
                .any(|c| c.name == inject.connection)
        {
            report.problem(
                &path.key("inject").key("connection"),
                format!(
                    "no [[oauth_connections]] entry is named {:?}",
                    inject.connection
                ),
                "add the connection, or correct the name",
            );
        }
    }
    check_reserved_paths(report, &routes, &route_paths, login.as_ref());
    check_encrypt_to(report, &routes, &route_paths, &jwe);
    let can_sign = issuer.as_ref().is_some_and(|i| i.signing_kid.is_some());
    if !can_sign && let Some(index) = routes.iter().position(|r| r.upstream_token.is_some()) {
        report.problem(
            &route_paths[index].key("upstream_token"),
            "is signed with issuer.signing_kid, but the gateway has no signing key",
            "add [issuer] with signing_kid naming an asymmetric [[keys]] entry",
        );
    }
    if let Some(own) = &issuer
        && let Some(index) = trusted_issuers.iter().position(|t| t.iss == own.iss)
    {
        report.problem(
            &KeyPath::default().key("trusted_issuers").index(index).key("iss"),
            format!("{:?} is also issuer.iss, the gateway's own", own.iss),
            "give the gateway its own iss: an identity provider must not be able to mint tokens that pass as the gateway's",
        );
    }
    let verifiers = keys.len() + trusted_issuers.len();
    let unverifiable = routes
        .iter()
        .position(|r| r.auth == AuthMode::Jwt)
        .filter(|_| verifiers == 0);
    if let Some(index) = unverifiable {
        report.problem(
            &route_paths[index].key("auth"),
            format!("route {:?} requires a token, but no key could verify one", routes[index].name),
            "add a [[keys]] entry or a [[trusted_issuers]] entry, or set auth = \"none\" for a public route",
        );
    }
    Config {
        origin: report.origin().to_owned(),
        server,
        log,
        keys,
        issuer,
        validation,
        trusted_issuers,
        login,
        audit,
        credentials,
        oauth_connections,
        shared_state,
        decryption_keys: jwe.decryption,
        encryption_keys: jwe.encryption,
        generated_decryption_keys: jwe.generated,
        routes,
    }
}

/// A route's `upstream_token.encrypt_to` names an upstream's public key.
fn check_encrypt_to(
    report: &mut Report<'_>,
    routes: &[RouteSettings],
    paths: &[KeyPath],
    jwe: &jwe_keys::JweKeys,
) {
    for (route, path) in routes.iter().zip(paths) {
        let Some(kid) = route
            .upstream_token
            .as_ref()
            .and_then(|t| t.encrypt_to.as_deref())
        else {
            continue;
        };
        let at = path.key("upstream_token").key("encrypt_to");
        match jwe.encryption.iter().find(|k| k.kid() == kid) {
            Some(key) if key.alg().is_symmetric() => report.problem(
                &at,
                format!("key {kid:?} is a shared secret"),
                "encrypt to the upstream's public key: a [[keys]] entry with public_key_file and alg ECDH-ES+A256KW or RSA-OAEP-256",
            ),
            Some(_) => {}
            None if jwe.decryption.iter().any(|k| k.kid() == kid) => report.problem(
                &at,
                format!("key {kid:?} is one of the gateway's own decryption keys"),
                "encrypt to the upstream's public key: a [[keys]] entry with public_key_file and alg ECDH-ES+A256KW or RSA-OAEP-256",
            ),
            None => report.problem(
                &at,
                format!("no [[keys]] entry with a public encryption key has kid {kid:?}"),
                "add the upstream's public key: [[keys]] with kid, alg = \"ECDH-ES+A256KW\" (or \"RSA-OAEP-256\") and public_key_file",
            ),
        }
    }
}

/// Routes cannot take the exact paths of the gateway's own endpoints.
fn check_reserved_paths(
    report: &mut Report<'_>,
    routes: &[RouteSettings],
    paths: &[KeyPath],
    login: Option<&LoginSettings>,
) {
    let mut reserved = vec![JWKS_PATH.to_owned()];
    if let Some(login) = login {
        reserved.push(login.path.clone());
        reserved.push(format!("{}/revoke", login.path));
    }
    for (route, path) in routes.iter().zip(paths) {
        if reserved.contains(&route.key.path_prefix) {
            report.problem(
                &path.key("path_prefix"),
                format!(
                    "{:?} is the path of one of the gateway's own endpoints",
                    route.key.path_prefix
                ),
                "choose another prefix (or move the login route with login.path)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::from_toml(text, "gw.toml") {
            Ok(_) => Vec::new(),
            Err(err) => err.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_minimal_config_is_valid() {
        let text = "[[routes]]\nname = \"echo\"\npath_prefix = \"/\"\nupstream = \"builtin:echo\"\nauth = \"none\"\n";
        assert_eq!(problems(text), Vec::<String>::new());
    }

    #[test]
    fn key_paths_are_located_on_their_line() {
        let text = "[server]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:8080\"\n";
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("gw.toml:3:16: server.admin_listen: 127.0.0.1:8080 overlaps server.listen (127.0.0.1:8080)"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn structural_errors_in_several_sections_are_all_reported() {
        let text = "[server]\nlisen = \"x\"\n[log]\nfromat = \"json\"\n[[routes]]\nname = \"a\"\n";
        let found = problems(text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].contains("gw.toml:2:1: server: unknown field `lisen`"),
            "{}",
            found[0]
        );
        assert!(
            found[1].contains("gw.toml:4:1: log: unknown field `fromat`"),
            "{}",
            found[1]
        );
        assert!(
            found[2].contains("routes[0]: missing field `path_prefix`"),
            "{}",
            found[2]
        );
    }

    #[test]
    fn a_trusted_issuer_cannot_use_the_gateways_own_iss() {
        let text = "[[keys]]\nkid = \"k\"\nalg = \"ES256\"\ngenerate = true\n\
                    [issuer]\niss = \"https://gw\"\naud = [\"a\"]\n\
                    [[trusted_issuers]]\niss = \"https://gw\"\njwks_url = \"https://idp/jwks\"\naud = [\"a\"]\nalgs = [\"RS256\"]\n";
        crate::crypto::install_providers();
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("trusted_issuers[0].iss: \"https://gw\" is also issuer.iss"),
            "{}",
            found[0]
        );
    }
}
