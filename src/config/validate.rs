//! From the parsed file to typed settings, collecting every problem.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Uri};
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::file::{
    AuditFile, CredentialsFile, IssuerFile, KeyFile, LogFile, LoginFile, OneOrMany, RouteFile,
    ServerFile, TrustedIssuerFile, ValidationFile,
};
use super::{Config, ConfigError, IssuerSettings, Location, Problem};
use crate::audit::{AuditSettings, AuditSink};
use crate::auth::ValidationSettings;
use crate::auth::forward::ForwardSettings;
use crate::auth::issue::RESERVED_CLAIMS;
use crate::auth::jwks::TrustedIssuerSettings;
use crate::auth::keys::{
    self, KeySettings, KeySource, LoadedKey, SUPPORTED_ALGORITHMS, parse_algorithm,
};
use crate::auth::login::{ApiKeyIdentity, JWKS_PATH, LoginSettings, UserIdentity};
use crate::auth::scopes::RouteAuthz;
use crate::config::ServerSettings;
use crate::proxy::Upstream;
use crate::routes::{AuthMode, RouteKey, RouteSettings, normalize_path};
use crate::telemetry::{LogFormat, LogSettings};

/// One step of a key path.
#[derive(Clone, Debug)]
enum Step {
    Key(&'static str),
    Index(usize),
}

/// A key path such as `routes[2].upstream`.
#[derive(Clone, Debug, Default)]
struct KeyPath(Vec<Step>);

impl KeyPath {
    fn key(&self, key: &'static str) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key));
        KeyPath(steps)
    }

    fn index(&self, index: usize) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        KeyPath(steps)
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for step in &self.0 {
            match step {
                Step::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

/// Collects problems and knows how to place them in the file.
struct Report<'a> {
    origin: &'a str,
    /// Relative paths in the file start here.
    base: &'a Path,
    text: &'a str,
    root: Option<DeValue<'a>>,
    problems: Vec<Problem>,
}

impl<'a> Report<'a> {
    fn location_of_offset(&self, offset: usize) -> Location {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { line, column }
    }

    /// The span of the value at `path`, or of its nearest ancestor that exists.
    fn locate(&self, path: &KeyPath) -> Option<Location> {
        let root = self.root.as_ref()?;
        let mut current: Option<&Spanned<DeValue<'a>>> = None;
        let mut best = None;
        for step in &path.0 {
            let parent = current.map_or(root, |v| v.get_ref());
            let next = match step {
                Step::Key(k) => parent.get(*k),
                Step::Index(i) => parent.get(*i),
            };
            match next {
                Some(value) => {
                    best = Some(value.span().start);
                    current = Some(value);
                }
                None => break,
            }
        }
        best.map(|offset| self.location_of_offset(offset))
    }

    fn problem(&mut self, path: &KeyPath, message: impl Into<String>, fix: impl Into<String>) {
        let location = self.locate(path);
        self.problems.push(Problem {
            origin: self.origin.to_owned(),
            location,
            key: path.render(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    fn toml_error(&mut self, path: &KeyPath, err: &toml::de::Error, fix: &str) {
        let location = err.span().map(|span| self.location_of_offset(span.start));
        self.problems.push(Problem {
            origin: self.origin.to_owned(),
            location: location.or_else(|| self.locate(path)),
            key: path.render(),
            message: err.message().trim_end().to_owned(),
            fix: fix.into(),
        });
    }

    /// Deserializes one section; a failure is recorded and gives `None`.
    fn section<T: DeserializeOwned>(
        &mut self,
        path: &KeyPath,
        value: &Spanned<DeValue<'a>>,
        fix: &str,
    ) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(parsed) => Some(parsed),
            Err(err) => {
                self.toml_error(path, &err, fix);
                None
            }
        }
    }
}

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
    routes: Vec<(usize, RouteFile)>,
}

pub(super) fn parse(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
    let mut report = Report {
        origin,
        base,
        text,
        root: None,
        problems: Vec::new(),
    };
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
    report.root = Some(DeValue::Table(table));
    let config = build(&mut report, sections);
    if report.problems.is_empty() {
        Ok(config)
    } else {
        report
            .problems
            .sort_by_key(|p| p.location.map(|l| (l.line, l.column)));
        Err(ConfigError {
            problems: report.problems,
        })
    }
}

const SECTIONS: &str =
    "server, log, audit, keys, issuer, validation, trusted_issuers, login, credentials, routes";

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
            "credentials" => {
                let path = KeyPath::default().key("credentials");
                sections.credentials =
                    report.section(&path, value, "see docs/configuration.md#credentials");
            }
            "login" => {
                let path = KeyPath::default().key("login");
                sections.login = report.section(&path, value, "see docs/configuration.md#login");
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
                let location = report.location_of_offset(name.span().start);
                report.problems.push(Problem {
                    origin: report.origin.to_owned(),
                    location: Some(location),
                    key: other.to_owned(),
                    message: format!("unknown section `{other}`"),
                    fix: format!(
                        "remove it or correct its name; the known sections are: {SECTIONS}"
                    ),
                });
            }
        }
    }
    sections
}

fn build(report: &mut Report<'_>, sections: Sections) -> Config {
    let server = build_server(report, sections.server);
    let log = build_log(report, sections.log);
    let keys = build_keys(report, sections.keys);
    let issuer = build_issuer(report, sections.issuer, &keys);
    let validation = build_validation(report, sections.validation);
    let trusted_issuers = build_trusted_issuers(report, sections.trusted_issuers);
    let (routes, route_paths) = build_routes(report, sections.routes, &server);
    let login = sections
        .login
        .map(|file| build_login(report, file, issuer.as_ref()));
    let audit = build_audit(report, sections.audit);
    let credentials = sections
        .credentials
        .map(|file| build_credentials(report, file));
    if credentials.is_none()
        && let Some(index) = routes.iter().position(|r| r.inject.is_some())
    {
        report.problem(
            &route_paths[index].key("inject"),
            "the route injects a credential, but [credentials] is not configured",
            "add [credentials] with store and master_key_env (or master_key_file)",
        );
    }
    check_reserved_paths(report, &routes, &route_paths, login.as_ref());
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
        origin: report.origin.to_owned(),
        server,
        log,
        keys,
        issuer,
        validation,
        trusted_issuers,
        login,
        audit,
        credentials,
        routes,
    }
}

fn build_credentials(
    report: &mut Report<'_>,
    file: CredentialsFile,
) -> crate::credentials::CredentialsSettings {
    use crate::credentials::store::MasterKeySource;
    let base = KeyPath::default().key("credentials");
    if file.store.is_empty() {
        report.problem(
            &base.key("store"),
            "must not be empty",
            "e.g. store = \"credentials.store\"",
        );
    }
    let master_key = match (file.master_key_env, file.master_key_file) {
        (Some(var), None) if !var.is_empty() => MasterKeySource::Env(var),
        (None, Some(path)) if !path.is_empty() => MasterKeySource::File(resolve(report, &path)),
        _ => {
            report.problem(
                &base,
                "needs exactly one of master_key_env and master_key_file",
                "name the environment variable (or file) that holds the base64 master key from `warden credentials init`",
            );
            MasterKeySource::Env(String::new())
        }
    };
    crate::credentials::CredentialsSettings {
        store: resolve(report, &file.store),
        master_key,
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

fn build_audit(report: &mut Report<'_>, file: AuditFile) -> AuditSettings {
    let base = KeyPath::default().key("audit");
    let sink = match (file.sink.as_deref(), file.path) {
        (None | Some("stdout"), None) => AuditSink::Stdout,
        (Some("file"), Some(path)) => AuditSink::File(resolve(report, &path)),
        (Some("file"), None) => {
            report.problem(
                &base.key("path"),
                "is required with sink = \"file\"",
                "set path = \"audit.log\"",
            );
            AuditSink::Stdout
        }
        (None | Some("stdout"), Some(_)) => {
            report.problem(
                &base.key("path"),
                "is only used with sink = \"file\"",
                "set sink = \"file\", or remove path",
            );
            AuditSink::Stdout
        }
        (Some(other), _) => {
            report.problem(
                &base.key("sink"),
                format!("unknown value {other:?}"),
                "use \"stdout\" or \"file\"",
            );
            AuditSink::Stdout
        }
    };
    AuditSettings { sink }
}

fn hex_digest(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn build_login(
    report: &mut Report<'_>,
    file: LoginFile,
    issuer: Option<&IssuerSettings>,
) -> LoginSettings {
    let base = KeyPath::default().key("login");
    if issuer.and_then(|i| i.signing_kid.as_ref()).is_none() {
        report.problem(
            &base,
            "[login] issues tokens, but issuer.signing_kid is not set",
            "add [issuer] with signing_kid naming a [[keys]] entry that can sign",
        );
    }
    let path = file.path.unwrap_or_else(|| "/auth".into());
    let normal = normalize_path(&path).ok();
    if path == JWKS_PATH {
        report.problem(
            &base.key("path"),
            "is the path of the public JWKS",
            "use a path such as \"/auth\"",
        );
    }
    if normal.as_deref() != Some(path.as_str())
        || path == "/"
        || path.ends_with('/')
        || !path.bytes().all(is_path_byte)
    {
        report.problem(
            &base.key("path"),
            format!("{path:?} is not a normalised path"),
            "use a path such as \"/auth\"",
        );
    }
    let header_name = file.api_key_header.unwrap_or_else(|| "X-Api-Key".into());
    let api_key_header =
        http::HeaderName::from_bytes(header_name.as_bytes()).unwrap_or_else(|_| {
            report.problem(
                &base.key("api_key_header"),
                format!("{header_name:?} is not a header name"),
                "use e.g. \"X-Api-Key\"",
            );
            http::HeaderName::from_static("x-api-key")
        });
    if api_key_header == http::header::AUTHORIZATION {
        report.problem(
            &base.key("api_key_header"),
            "cannot be Authorization, which carries Basic credentials",
            "use e.g. \"X-Api-Key\"",
        );
    }
    let max_failures_per_minute = file.max_failures_per_minute.unwrap_or(10);
    if max_failures_per_minute == 0 {
        report.problem(
            &base.key("max_failures_per_minute"),
            "must be at least 1",
            "use e.g. 10",
        );
    }
    let check_claims =
        |report: &mut Report<'_>,
         path: KeyPath,
         claims: &serde_json::Map<String, serde_json::Value>| {
            for name in claims.keys() {
                if RESERVED_CLAIMS.contains(&name.as_str()) {
                    report.problem(
                        &path,
                        format!("claim {name:?} is set by the gateway itself"),
                        "remove it from claims",
                    );
                }
            }
        };
    let check_scopes = |report: &mut Report<'_>, path: KeyPath, scopes: &[String]| {
        for scope in scopes {
            if !is_scope_token(scope) {
                report.problem(
                    &path,
                    format!("{scope:?} is not a scope"),
                    "a scope is one word of printable ASCII",
                );
            }
        }
    };
    let mut api_keys: Vec<ApiKeyIdentity> = Vec::new();
    for (i, key) in file.api_keys.into_iter().enumerate() {
        let path = base.key("api_keys").index(i);
        if key.id.is_empty() || key.id.contains(':') {
            report.problem(
                &path.key("id"),
                "must be non-empty and without ':'",
                "use a short name such as \"reporting-service\"",
            );
        }
        if api_keys.iter().any(|k| k.id == key.id) {
            report.problem(
                &path.key("id"),
                format!("duplicate id {:?}", key.id),
                "give every API key its own id",
            );
        }
        let digest = hex_digest(&key.key_sha256.to_ascii_lowercase()).unwrap_or_else(|| {
            report.problem(
                &path.key("key_sha256"),
                "is not 64 hex digits",
                "put the SHA-256 of the key here, as `warden gen-api-key` prints it (never the key itself)",
            );
            [0u8; 32]
        });
        if api_keys.iter().any(|k| k.key_sha256 == digest) {
            report.problem(
                &path.key("key_sha256"),
                "the same key is listed twice",
                "give every client its own key",
            );
        }
        check_claims(report, path.key("claims"), &key.claims);
        check_scopes(report, path.key("scopes"), &key.scopes);
        api_keys.push(ApiKeyIdentity {
            sub: key.sub.unwrap_or_else(|| key.id.clone()),
            id: key.id,
            key_sha256: digest,
            role: key.role,
            scopes: key.scopes,
            claims: key.claims,
        });
    }
    let mut users: Vec<UserIdentity> = Vec::new();
    for (i, user) in file.users.into_iter().enumerate() {
        let path = base.key("users").index(i);
        if user.username.is_empty() || user.username.contains(':') {
            report.problem(
                &path.key("username"),
                "must be non-empty and without ':'",
                "Basic credentials cannot carry ':' in a user name",
            );
        }
        if users.iter().any(|u| u.username == user.username) {
            report.problem(
                &path.key("username"),
                format!("duplicate user {:?}", user.username),
                "list each user once",
            );
        }
        let valid_hash = user.password_argon2.starts_with("$argon2id$")
            && argon2::PasswordHash::new(&user.password_argon2).is_ok();
        if !valid_hash {
            report.problem(
                &path.key("password_argon2"),
                "is not an argon2id PHC string",
                "paste the output of `warden hash-password` (it starts with $argon2id$)",
            );
        }
        check_claims(report, path.key("claims"), &user.claims);
        check_scopes(report, path.key("scopes"), &user.scopes);
        users.push(UserIdentity {
            username: user.username,
            password_argon2: user.password_argon2,
            role: user.role,
            scopes: user.scopes,
            claims: user.claims,
        });
    }
    LoginSettings {
        path,
        api_key_header,
        max_failures_per_minute,
        api_keys,
        users,
    }
}

fn resolve(report: &Report<'_>, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        report.base.join(path)
    }
}

fn build_keys(report: &mut Report<'_>, files: Vec<(usize, KeyFile)>) -> Vec<Arc<LoadedKey>> {
    let mut loaded: Vec<Arc<LoadedKey>> = Vec::new();
    for (index, file) in files {
        let path = KeyPath::default().key("keys").index(index);
        if file.kid.is_empty() || file.kid.len() > 128 || file.kid.chars().any(char::is_control) {
            report.problem(
                &path.key("kid"),
                "must be 1-128 printable characters",
                "give the key a short id, e.g. \"main-es256\"",
            );
            continue;
        }
        if loaded.iter().any(|k| k.kid == file.kid) {
            report.problem(
                &path.key("kid"),
                format!("duplicate kid {:?}", file.kid),
                "give every key its own kid: tokens select their key by it",
            );
            continue;
        }
        let Some(alg) = parse_algorithm(&file.alg) else {
            report.problem(
                &path.key("alg"),
                format!("{:?} is not a supported algorithm", file.alg),
                format!("use one of {SUPPORTED_ALGORITHMS}"),
            );
            continue;
        };
        let mut sources = Vec::new();
        if let Some(p) = &file.private_key_file {
            sources.push(KeySource::PrivateFile(resolve(report, p)));
        }
        if let Some(p) = &file.public_key_file {
            sources.push(KeySource::PublicFile(resolve(report, p)));
        }
        if let Some(var) = &file.secret_env {
            sources.push(KeySource::SecretEnv(var.clone()));
        }
        if let Some(p) = &file.secret_file {
            sources.push(KeySource::SecretFile(resolve(report, p)));
        }
        if file.generate == Some(true) {
            sources.push(KeySource::Generate);
        }
        if sources.len() != 1 {
            report.problem(
                &path,
                format!("key {:?} needs exactly one source, found {}", file.kid, sources.len()),
                "set one of private_key_file, public_key_file, secret_env, secret_file or generate = true",
            );
            continue;
        }
        let source = sources.remove(0);
        let settings = KeySettings {
            kid: file.kid.clone(),
            alg,
            source,
        };
        match keys::load(&settings) {
            Ok(key) => loaded.push(Arc::new(key)),
            Err(err) => report.problem(&path, err.message, err.fix),
        }
    }
    loaded
}

fn build_issuer(
    report: &mut Report<'_>,
    file: Option<IssuerFile>,
    keys: &[Arc<LoadedKey>],
) -> Option<IssuerSettings> {
    let base = KeyPath::default().key("issuer");
    let Some(file) = file else {
        if !keys.is_empty() {
            report.problem(
                &KeyPath::default().key("keys"),
                "[[keys]] are configured but [issuer] is missing",
                "add [issuer] with iss and aud: tokens verified with these keys must carry them",
            );
        }
        return None;
    };
    let iss = file.iss.unwrap_or_default();
    if iss.is_empty() {
        report.problem(
            &base.key("iss"),
            "is required",
            "set the issuer name, e.g. iss = \"https://gateway.example.com\"",
        );
    }
    let audiences = file.aud.unwrap_or_default();
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        report.problem(
            &base.key("aud"),
            "must list at least one non-empty audience",
            "e.g. aud = [\"warden\"]",
        );
    }
    if let Some(kid) = &file.signing_kid {
        match keys.iter().find(|k| &k.kid == kid) {
            Some(key) if key.encoding.is_some() => {}
            Some(_) => report.problem(
                &base.key("signing_kid"),
                format!("key {kid:?} cannot sign: it is a public key"),
                "point signing_kid at a key with private_key_file, a secret, or generate = true",
            ),
            None => report.problem(
                &base.key("signing_kid"),
                format!("no [[keys]] entry has kid {kid:?}"),
                "use the kid of one of the [[keys]] entries",
            ),
        }
    }
    let ttl = duration(
        report,
        &base.key("ttl"),
        file.ttl.as_deref(),
        Duration::from_secs(15 * 60),
    );
    let max_ttl = duration(
        report,
        &base.key("max_ttl"),
        file.max_ttl.as_deref(),
        Duration::from_secs(3600),
    );
    if ttl > max_ttl {
        report.problem(
            &base.key("ttl"),
            "is longer than max_ttl",
            "shorten ttl or raise max_ttl",
        );
    }
    Some(IssuerSettings {
        iss,
        audiences,
        signing_kid: file.signing_kid,
        ttl,
        max_ttl,
    })
}

fn build_validation(report: &mut Report<'_>, file: ValidationFile) -> ValidationSettings {
    let base = KeyPath::default().key("validation");
    let defaults = ValidationSettings::default();
    let leeway = match file.leeway.as_deref().map(humantime::parse_duration) {
        Some(Ok(d)) if d.is_zero() => Duration::ZERO,
        _ if file.leeway.as_deref() == Some("0") => Duration::ZERO,
        _ => duration(
            report,
            &base.key("leeway"),
            file.leeway.as_deref(),
            defaults.leeway,
        ),
    };
    if leeway > Duration::from_secs(crate::auth::MAX_LEEWAY_SECS) {
        report.problem(
            &base.key("leeway"),
            "is longer than 5 minutes",
            "clock skew beyond a minute means a clock is wrong; use e.g. \"30s\"",
        );
    }
    let max_token_bytes = file
        .max_token_bytes
        .unwrap_or(defaults.max_token_bytes as u64);
    if !(256..=65536).contains(&max_token_bytes) {
        report.problem(
            &base.key("max_token_bytes"),
            format!("{max_token_bytes} is outside 256..=65536"),
            "use e.g. 8192",
        );
    }
    ValidationSettings {
        leeway,
        max_token_bytes: usize::try_from(max_token_bytes).unwrap_or(usize::MAX),
        cache_entries: defaults.cache_entries,
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn build_trusted_issuers(
    report: &mut Report<'_>,
    files: Vec<(usize, TrustedIssuerFile)>,
) -> Vec<TrustedIssuerSettings> {
    let mut issuers: Vec<TrustedIssuerSettings> = Vec::new();
    for (index, file) in files {
        let path = KeyPath::default().key("trusted_issuers").index(index);
        let before = report.problems.len();
        if file.iss.is_empty() {
            report.problem(
                &path.key("iss"),
                "must not be empty",
                "give the issuer's iss exactly as its tokens carry it",
            );
        }
        if issuers.iter().any(|i| i.iss == file.iss) {
            report.problem(
                &path.key("iss"),
                format!("issuer {:?} is listed twice", file.iss),
                "merge the two entries",
            );
        }
        let jwks_url = match file.jwks_url.parse::<Uri>() {
            Ok(uri) => {
                let host = uri.host().unwrap_or_default();
                match uri.scheme_str() {
                    Some("https") if !host.is_empty() => Some(uri),
                    Some("http") if is_loopback_host(host) => Some(uri),
                    Some("http") => {
                        report.problem(
                            &path.key("jwks_url"),
                            "plain http:// is allowed only to a loopback address",
                            "use the provider's https:// JWKS URL",
                        );
                        None
                    }
                    _ => {
                        report.problem(
                            &path.key("jwks_url"),
                            format!("{:?} is not an https URL", file.jwks_url),
                            "use the provider's https:// JWKS URL",
                        );
                        None
                    }
                }
            }
            Err(_) => {
                report.problem(
                    &path.key("jwks_url"),
                    format!("{:?} is not a URL", file.jwks_url),
                    "use the provider's https:// JWKS URL",
                );
                None
            }
        };
        if file.aud.is_empty() || file.aud.iter().any(String::is_empty) {
            report.problem(
                &path.key("aud"),
                "must list at least one non-empty audience",
                "list the audiences this gateway accepts, e.g. aud = [\"orders-api\"]",
            );
        }
        let mut algs = Vec::new();
        for name in &file.algs {
            match parse_algorithm(name) {
                Some(alg) if keys::is_hmac(alg) => report.problem(
                    &path.key("algs"),
                    format!("{name} needs a shared secret, which a JWKS never carries"),
                    "trusted issuers use asymmetric algorithms: RS*, PS*, ES256, ES384, EdDSA",
                ),
                Some(alg) => algs.push(alg),
                None => report.problem(
                    &path.key("algs"),
                    format!("{name:?} is not a supported algorithm"),
                    "use some of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
                ),
            }
        }
        if file.algs.is_empty() {
            report.problem(
                &path.key("algs"),
                "must list at least one algorithm",
                "e.g. algs = [\"RS256\"]",
            );
        }
        let refresh = duration(
            report,
            &path.key("refresh"),
            file.refresh.as_deref(),
            Duration::from_secs(600),
        );
        if refresh < Duration::from_secs(10) {
            report.problem(
                &path.key("refresh"),
                "is shorter than 10 seconds, which would hammer the identity provider",
                "use e.g. \"10m\"; unknown kids trigger a refetch anyway",
            );
        }
        let ca_file = file.ca_file.as_deref().map(|p| resolve(report, p));
        if let Some(ca) = &ca_file
            && let Err(why) = crate::http_client::ca_certificates(ca)
        {
            report.problem(
                &path.key("ca_file"),
                why,
                "give the PEM file of the provider's CA",
            );
        }
        if report.problems.len() != before {
            continue;
        }
        if let Some(jwks_url) = jwks_url {
            issuers.push(TrustedIssuerSettings {
                iss: file.iss,
                jwks_url,
                audiences: file.aud,
                algs,
                refresh,
                ca_file,
            });
        }
    }
    issuers
}

fn duration(
    report: &mut Report<'_>,
    path: &KeyPath,
    value: Option<&str>,
    default: Duration,
) -> Duration {
    let Some(text) = value else { return default };
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            report.problem(
                path,
                "must be longer than zero",
                "give a duration such as \"30s\"",
            );
            default
        }
        Ok(d) => d,
        Err(err) => {
            report.problem(
                path,
                format!("{text:?} is not a duration ({err})"),
                "write a number and a unit, such as \"500ms\", \"30s\" or \"15m\"",
            );
            default
        }
    }
}

fn socket_addr(
    report: &mut Report<'_>,
    path: &KeyPath,
    value: Option<&str>,
    default: &str,
) -> SocketAddr {
    let text = value.unwrap_or(default);
    text.parse().unwrap_or_else(|_| {
        report.problem(
            path,
            format!("{text:?} is not an IP address and port"),
            "write it as \"127.0.0.1:8080\" or \"[::1]:8080\" (host names are not resolved)",
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn build_server(report: &mut Report<'_>, file: ServerFile) -> ServerSettings {
    let base = KeyPath::default().key("server");
    let defaults = ServerSettings::default();
    let listen = socket_addr(
        report,
        &base.key("listen"),
        file.listen.as_deref(),
        "127.0.0.1:8080",
    );
    let admin_listen = socket_addr(
        report,
        &base.key("admin_listen"),
        file.admin_listen.as_deref(),
        "127.0.0.1:9090",
    );
    let same_ip = listen.ip() == admin_listen.ip()
        || listen.ip().is_unspecified()
        || admin_listen.ip().is_unspecified();
    if same_ip && listen.port() == admin_listen.port() && listen.port() != 0 {
        report.problem(
            &base.key("admin_listen"),
            format!("{admin_listen} overlaps server.listen ({listen})"),
            "give the admin listener its own port, e.g. admin_listen = \"127.0.0.1:9090\"",
        );
    }
    let request_timeout = duration(
        report,
        &base.key("request_timeout"),
        file.request_timeout.as_deref(),
        defaults.request_timeout,
    );
    let max_header_bytes = file
        .max_header_bytes
        .unwrap_or(defaults.max_header_bytes as u64);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        report.problem(
            &base.key("max_header_bytes"),
            format!("{max_header_bytes} is outside 1024..=1048576"),
            "use a value such as 16384",
        );
    }
    let max_body_bytes = file.max_body_bytes.unwrap_or(defaults.max_body_bytes);
    if max_body_bytes == 0 {
        report.problem(
            &base.key("max_body_bytes"),
            "must be at least 1",
            "use a value such as 10485760 (10 MiB)",
        );
    }
    let max_connections = file.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        report.problem(
            &base.key("max_connections"),
            "must be at least 1",
            "use e.g. 10000",
        );
    }
    let max_concurrent_streams = file.max_concurrent_streams.unwrap_or(128);
    if max_concurrent_streams == 0 {
        report.problem(
            &base.key("max_concurrent_streams"),
            "must be at least 1",
            "use e.g. 128",
        );
    }
    let tls = file.tls.and_then(|tls| {
        let cert_file = resolve(report, &tls.cert_file);
        let key_file = resolve(report, &tls.key_file);
        let client_ca_file = tls.client_ca_file.as_deref().map(|p| resolve(report, p));
        match crate::tls::server_config(&cert_file, &key_file, client_ca_file.as_deref()) {
            Ok(config) => Some(crate::tls::TlsSettings {
                cert_file,
                key_file,
                client_ca_file,
                config,
            }),
            Err(why) => {
                report.problem(
                    &base.key("tls"),
                    why,
                    "give a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or SEC1)",
                );
                None
            }
        }
    });
    ServerSettings {
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        max_concurrent_streams,
        tls,
        listen,
        admin_listen,
        shutdown_grace: duration(
            report,
            &base.key("shutdown_grace"),
            file.shutdown_grace.as_deref(),
            defaults.shutdown_grace,
        ),
        request_timeout,
        header_read_timeout: duration(
            report,
            &base.key("header_read_timeout"),
            file.header_read_timeout.as_deref(),
            defaults.header_read_timeout,
        ),
        connect_timeout: duration(
            report,
            &base.key("connect_timeout"),
            file.connect_timeout.as_deref(),
            defaults.connect_timeout,
        ),
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
        max_body_bytes,
        trust_execution_key_header: file.trust_execution_key_header.unwrap_or(false),
    }
}

fn build_log(report: &mut Report<'_>, file: LogFile) -> LogSettings {
    let base = KeyPath::default().key("log");
    let level = file.level.unwrap_or_else(|| "info".into());
    if !is_log_filter(&level) {
        report.problem(
            &base.key("level"),
            format!("{level:?} is not a log level or filter"),
            "use one of \"error\", \"warn\", \"info\", \"debug\", \"trace\" (or a filter like \"info,warden=debug\")",
        );
    }
    let format = match file.format.as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("pretty") => LogFormat::Pretty,
        Some(other) => {
            report.problem(
                &base.key("format"),
                format!("unknown value {other:?}"),
                "use \"json\" (one JSON object a line) or \"pretty\" (for humans)",
            );
            LogFormat::Json
        }
    };
    LogSettings { level, format }
}

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A level, or an `EnvFilter` whose every directive ends in a level: a bare
/// word that is not a level (`"warning"`) would silently filter everything.
fn is_log_filter(filter: &str) -> bool {
    let level_ok = |level: &str| LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str());
    !filter.trim().is_empty()
        && tracing_subscriber::EnvFilter::try_new(filter).is_ok()
        && filter
            .split(',')
            .all(|directive| match directive.rsplit_once('=') {
                Some((target, level)) => !target.trim().is_empty() && level_ok(level.trim()),
                None => level_ok(directive.trim()),
            })
}

fn is_route_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The valid routes, and the key path of each in the file.
fn build_routes(
    report: &mut Report<'_>,
    files: Vec<(usize, RouteFile)>,
    server: &ServerSettings,
) -> (Vec<RouteSettings>, Vec<KeyPath>) {
    let mut routes: Vec<RouteSettings> = Vec::new();
    let mut paths: Vec<KeyPath> = Vec::new();
    // Names are compared over every route, valid or not, so a duplicate is
    // reported together with the route's other problems.
    let mut names: Vec<(String, KeyPath)> = Vec::new();
    for (index, file) in files {
        let path = KeyPath::default().key("routes").index(index);
        if let Some((_, other_path)) = names.iter().find(|(name, _)| *name == file.name) {
            report.problem(
                &path.key("name"),
                format!(
                    "duplicate route name {:?} (also {})",
                    file.name,
                    other_path.render()
                ),
                "give every route its own name: names label metrics and logs",
            );
        }
        names.push((file.name.clone(), path.clone()));
        if let Some(route) = build_route(report, &path, file, server) {
            for (other, other_path) in routes.iter().zip(&paths) {
                if other.name != route.name
                    && other.key.host == route.key.host
                    && other.key.path_prefix == route.key.path_prefix
                    && methods_overlap(&other.key.methods, &route.key.methods)
                {
                    report.problem(
                        &path.key("path_prefix"),
                        format!(
                            "route {:?} takes the same host, prefix {:?} and methods as route {:?} ({})",
                            route.name,
                            route.key.path_prefix,
                            other.name,
                            other_path.render()
                        ),
                        "give one of them other `methods`, another `host`, or merge them",
                    );
                }
            }
            routes.push(route);
            paths.push(path);
        }
    }
    (routes, paths)
}

/// RFC 3986 `pchar` bytes and `/`: what a request path can hold.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
}

fn methods_overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

fn build_route(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: RouteFile,
    server: &ServerSettings,
) -> Option<RouteSettings> {
    let before = report.problems.len();
    if !is_route_name(&file.name) {
        report.problem(
            &path.key("name"),
            format!("{:?} is not a valid route name", file.name),
            "use 1-64 characters of letters, digits, '-', '_' and '.'",
        );
    } else if file.name.starts_with("warden-") {
        report.problem(
            &path.key("name"),
            "names starting with \"warden-\" label the gateway's own endpoints",
            "give the route another name",
        );
    } else if file.name == crate::metrics::UNMATCHED_ROUTE {
        report.problem(
            &path.key("name"),
            "\"none\" is the route label of unmatched requests",
            "give the route another name",
        );
    }

    let prefix = file.path_prefix.as_str();
    // A prefix must already be in normal form: otherwise it could never match
    // a normalised request path, or would match one the author did not mean.
    let path_prefix = match normalize_path(prefix) {
        Ok(normal) if normal == prefix && prefix.bytes().all(is_path_byte) => {
            let trimmed = prefix.trim_end_matches('/');
            Some(if trimmed.is_empty() {
                "/".to_owned()
            } else {
                trimmed.to_owned()
            })
        }
        _ => None,
    };
    let path_prefix = path_prefix.or_else(|| {
        report.problem(
            &path.key("path_prefix"),
            format!("{prefix:?} is not a normalised absolute path"),
            "start it with '/', without '.' or '..' segments, '//', '?', '#', spaces or escapes of plain characters (write %7E as ~), e.g. \"/orders\"",
        );
        None
    });

    let methods = file.methods.as_ref().map(|list| {
        list.iter()
            .filter_map(|m| {
                let valid = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
                match Method::from_bytes(m.as_bytes()) {
                    Ok(method) if valid => Some(method),
                    _ => {
                        report.problem(
                            &path.key("methods"),
                            format!("{m:?} is not an HTTP method"),
                            "use upper-case method names such as \"GET\" and \"POST\"",
                        );
                        None
                    }
                }
            })
            .collect::<Vec<_>>()
    });
    if methods.as_ref().is_some_and(Vec::is_empty) && report.problems.len() == before {
        report.problem(
            &path.key("methods"),
            "is empty, so the route could never match",
            "list the methods, or remove the key to take every method",
        );
    }

    let host = file.host.as_ref().map(|h| h.to_ascii_lowercase());
    if let Some(h) = &host {
        let valid = !h.is_empty()
            && h.len() <= 253
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        if !valid {
            report.problem(
                &path.key("host"),
                format!("{h:?} is not a host name"),
                "give the bare host name, without scheme or port, e.g. \"api.example.com\"",
            );
        }
    }

    let authz = build_authz(report, path, &file);
    let forward = build_forward(report, path, &file);
    let connection = crate::proxy::ConnectionSettings {
        ca_file: file.ca_file.as_deref().map(|p| resolve(report, p)),
        server_name: file.server_name.clone(),
        http2: file.upstream_http2.unwrap_or(false),
    };
    if let Some(ca) = &connection.ca_file
        && let Err(why) = crate::http_client::ca_certificates(ca)
    {
        report.problem(
            &path.key("ca_file"),
            why,
            "give the PEM file of the upstream's CA",
        );
    }
    if let Some(name) = &connection.server_name
        && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
    {
        report.problem(
            &path.key("server_name"),
            format!("{name:?} is not a DNS name or IP address"),
            "give the name in the upstream's certificate",
        );
    }
    let health = crate::proxy::health::HealthSettings {
        path: file.health_path.clone(),
        interval: duration(
            report,
            &path.key("health_interval"),
            file.health_interval.as_deref(),
            std::time::Duration::from_secs(10),
        ),
        max_failures: file.max_failures.unwrap_or(3),
        cooldown: duration(
            report,
            &path.key("cooldown"),
            file.cooldown.as_deref(),
            std::time::Duration::from_secs(10),
        ),
    };
    if health.max_failures == 0 {
        report.problem(
            &path.key("max_failures"),
            "must be at least 1",
            "use e.g. 3",
        );
    }
    if let Some(p) = &health.path
        && (!p.starts_with('/') || normalize_path(p).is_err())
    {
        report.problem(
            &path.key("health_path"),
            format!("{p:?} is not an absolute path"),
            "e.g. health_path = \"/healthz\"",
        );
    }
    let inject = file.inject.as_ref().and_then(|inject| {
        let location = crate::credentials::location_of(
            inject.header.as_deref(),
            inject.query.as_deref(),
            inject.path,
            inject.body.as_deref(),
        );
        match location {
            Ok(location) if !inject.credential.is_empty() => {
                Some(crate::credentials::inject::InjectSettings {
                    credential: inject.credential.clone(),
                    location,
                })
            }
            Ok(_) => {
                report.problem(
                    &path.key("inject").key("credential"),
                    "must name a stored credential",
                    "e.g. inject = { credential = \"orders-api-key\" }",
                );
                None
            }
            Err(why) => {
                report.problem(
                    &path.key("inject"),
                    why,
                    "give at most one of header, query, path = true, body",
                );
                None
            }
        }
    });
    let placeholder = match &file.upstream {
        OneOrMany::One(url) => url.contains(CREDENTIAL_PLACEHOLDER),
        OneOrMany::Many(urls) => urls.iter().any(|u| u.contains(CREDENTIAL_PLACEHOLDER)),
    };
    if placeholder && file.health_path.is_some() {
        report.problem(
            &path.key("health_path"),
            "cannot check an upstream whose URL holds {credential}",
            "remove health_path from this route (passive checks still apply)",
        );
    }
    if placeholder && inject.is_none() {
        report.problem(
            &path.key("upstream"),
            "holds {credential}, but the route injects no credential",
            "add inject = { credential = \"...\", path = true }, or remove {credential}",
        );
    }
    let upstream = build_upstream(report, &path.key("upstream"), file.upstream);

    let timeout = duration(
        report,
        &path.key("timeout"),
        file.timeout.as_deref(),
        server.request_timeout,
    );
    if timeout > server.request_timeout {
        report.problem(
            &path.key("timeout"),
            "is longer than server.request_timeout, which caps every route",
            "shorten the route's timeout or raise server.request_timeout",
        );
    }

    let auth = match file.auth.as_deref() {
        None | Some("jwt") => AuthMode::Jwt,
        Some("none") => AuthMode::None,
        Some(other) => {
            report.problem(
                &path.key("auth"),
                format!("unknown value {other:?}"),
                "use \"jwt\" (a valid token is required) or \"none\" (a public route)",
            );
            AuthMode::Jwt
        }
    };

    if report.problems.len() != before {
        return None;
    }
    Some(RouteSettings {
        name: file.name,
        key: RouteKey {
            host,
            path_prefix: path_prefix?,
            methods,
        },
        upstream: upstream?,
        strip_prefix: file.strip_prefix.unwrap_or(false),
        timeout,
        auth,
        authz,
        forward,
        inject,
        connection,
        health,
    })
}

/// Where a path credential goes in an upstream URL.
const CREDENTIAL_PLACEHOLDER: &str = "{credential}";

fn is_scope_token(scope: &str) -> bool {
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

fn build_authz(report: &mut Report<'_>, path: &KeyPath, file: &RouteFile) -> RouteAuthz {
    let check_scopes = |report: &mut Report<'_>, key: KeyPath, scopes: &[String]| {
        for scope in scopes {
            if !is_scope_token(scope) {
                report.problem(
                    &key,
                    format!("{scope:?} is not a scope"),
                    "a scope is one word of printable ASCII, without spaces, quotes or backslashes",
                );
            }
        }
    };
    let scopes = file.scopes.clone().unwrap_or_default();
    check_scopes(report, path.key("scopes"), &scopes);
    let mut method_scopes = Vec::new();
    for (method, list) in file.method_scopes.iter().flatten() {
        check_scopes(report, path.key("method_scopes"), list);
        match Method::from_bytes(method.as_bytes()) {
            Ok(m) if method.bytes().all(|b| b.is_ascii_uppercase()) => {
                method_scopes.push((m, list.clone()))
            }
            _ => report.problem(
                &path.key("method_scopes"),
                format!("{method:?} is not an HTTP method"),
                "use upper-case method names such as POST",
            ),
        }
    }
    let require_claims: Vec<(String, Vec<String>)> = file
        .require_claims
        .iter()
        .flatten()
        .map(|(claim, values)| (claim.clone(), values.clone()))
        .collect();
    if require_claims.iter().any(|(_, values)| values.is_empty()) {
        report.problem(
            &path.key("require_claims"),
            "a claim lists no allowed value, so no token could pass",
            "list the allowed values, e.g. { tenant = [\"acme\"] }",
        );
    }
    let has_rules = !scopes.is_empty() || !method_scopes.is_empty() || !require_claims.is_empty();
    if has_rules && file.auth.as_deref() == Some("none") {
        report.problem(
            &path.key("auth"),
            "is \"none\", but the route sets scopes or required claims, which need a token",
            "remove the scopes, or set auth = \"jwt\"",
        );
    }
    RouteAuthz {
        scopes,
        method_scopes,
        require_claims,
    }
}

fn build_forward(report: &mut Report<'_>, path: &KeyPath, file: &RouteFile) -> ForwardSettings {
    let mut claims = Vec::new();
    for (name, claim) in file.forward_claims.iter().flatten() {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) if !is_reserved_header(&header) => claims.push((header, claim.clone())),
            Ok(_) => report.problem(
                &path.key("forward_claims"),
                format!("{name:?} is a header the gateway sets itself"),
                "forward the claim in a header of its own, e.g. \"X-User-Id\"",
            ),
            Err(_) => report.problem(
                &path.key("forward_claims"),
                format!("{name:?} is not a header name"),
                "use a header name such as \"X-User-Id\"",
            ),
        }
    }
    ForwardSettings {
        claims,
        authorization: file.forward_authorization.unwrap_or(false),
    }
}

fn is_reserved_header(name: &http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "connection"
            | "content-length"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "x-execution-key"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
    )
}

fn build_upstream(report: &mut Report<'_>, path: &KeyPath, file: OneOrMany) -> Option<Upstream> {
    let list = match file {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    };
    if list.is_empty() {
        report.problem(path, "is an empty list", "give at least one upstream URL");
        return None;
    }
    if list.iter().any(|u| u == "builtin:echo") {
        if list.len() > 1 {
            report.problem(
                path,
                "\"builtin:echo\" cannot be mixed with other upstreams",
                "use either upstream = \"builtin:echo\" or a list of URLs",
            );
            return None;
        }
        return Some(Upstream::Echo);
    }
    let mut targets = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let item_path = if list.len() > 1 {
            path.index(i)
        } else {
            path.clone()
        };
        match parse_upstream_url(text) {
            Ok(uri) => targets.push(uri),
            Err(why) => report.problem(
                &item_path,
                format!("{text:?} is not a usable upstream URL: {why}"),
                "use http://host:port or https://host:port, optionally with a base path, or \"builtin:echo\"",
            ),
        }
    }
    (targets.len() == list.len()).then_some(Upstream::Http(targets))
}

fn parse_upstream_url(text: &str) -> Result<Uri, &'static str> {
    // `{credential}` is kept in its percent-encoded form, which a URI can
    // hold; the proxy puts the credential there.
    let text = text.replace(
        CREDENTIAL_PLACEHOLDER,
        crate::proxy::ENCODED_CREDENTIAL_PLACEHOLDER,
    );
    let uri: Uri = text.parse().map_err(|_| "it does not parse as a URL")?;
    if uri.authority().is_some_and(|a| {
        a.as_str()
            .contains(crate::proxy::ENCODED_CREDENTIAL_PLACEHOLDER)
    }) {
        return Err("{credential} can only be in the path");
    }
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err("the scheme must be http or https"),
        None => return Err("it has no scheme"),
    }
    let authority = uri.authority().ok_or("it has no host")?;
    if authority.host().is_empty() {
        return Err("it has no host");
    }
    if authority.as_str().contains('@') {
        return Err(
            "credentials in the URL are not allowed: they would reach logs and every target",
        );
    }
    if uri.query().is_some() {
        return Err("it has a query string");
    }
    Ok(uri)
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
