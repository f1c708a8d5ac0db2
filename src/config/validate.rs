//! From the parsed file to typed settings, collecting every problem.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Uri};
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::file::{LogFile, OneOrMany, RouteFile, ServerFile};
use super::{Config, ConfigError, Location, Problem};
use crate::proxy::Upstream;
use crate::routes::{AuthMode, RouteKey, RouteSettings, normalize_path};
use crate::server::ServerSettings;
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
    routes: Vec<(usize, RouteFile)>,
}

pub(super) fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let mut report = Report {
        origin,
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

const SECTIONS: &str = "server, log, routes";

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
            "routes" => {
                let path = KeyPath::default().key("routes");
                match value.get_ref() {
                    DeValue::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let fix = "see docs/configuration.md#routes";
                            if let Some(route) = report.section(&path.index(i), item, fix) {
                                sections.routes.push((i, route));
                            }
                        }
                    }
                    _ => report.problem(
                        &path,
                        "`routes` must be an array of tables",
                        "write each route as a [[routes]] table",
                    ),
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
    let routes = build_routes(report, sections.routes, &server);
    Config {
        origin: report.origin.to_owned(),
        server,
        log,
        routes,
    }
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
    if listen == admin_listen && listen.port() != 0 {
        report.problem(
            &base.key("admin_listen"),
            format!("is the same address as server.listen ({listen})"),
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
    ServerSettings {
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
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
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

fn is_route_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn build_routes(
    report: &mut Report<'_>,
    files: Vec<(usize, RouteFile)>,
    server: &ServerSettings,
) -> Vec<RouteSettings> {
    let mut routes: Vec<RouteSettings> = Vec::new();
    let mut paths: Vec<KeyPath> = Vec::new();
    for (index, file) in files {
        let path = KeyPath::default().key("routes").index(index);
        if let Some(route) = build_route(report, &path, file, server) {
            for (other, other_path) in routes.iter().zip(&paths) {
                if other.name == route.name {
                    report.problem(
                        &path.key("name"),
                        format!(
                            "duplicate route name {:?} (also {})",
                            route.name,
                            other_path.render()
                        ),
                        "give every route its own name: names label metrics and logs",
                    );
                }
                if other.key.host == route.key.host
                    && other.key.path_prefix == route.key.path_prefix
                    && methods_overlap(&other.key.methods, &route.key.methods)
                {
                    report.problem(
                        &path.key("path_prefix"),
                        format!(
                            "route {:?} takes the same host, prefix {:?} and methods as route {:?}",
                            route.name, route.key.path_prefix, other.name
                        ),
                        "give one of them other `methods`, another `host`, or merge them",
                    );
                }
            }
            routes.push(route);
            paths.push(path);
        }
    }
    routes
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
    }

    let prefix = file.path_prefix.as_str();
    // A prefix must already be in normal form: otherwise it could never match
    // a normalised request path, or would match one the author did not mean.
    let path_prefix = match normalize_path(prefix) {
        Ok(normal) if normal == prefix && !prefix.contains(['?', '#']) => {
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
            "start it with '/', without '.', '..', '//', percent-escapes, '?' or '#', e.g. \"/orders\"",
        );
        None
    });

    let methods = file.methods.map(|list| {
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

    let host = file.host.map(|h| h.to_ascii_lowercase());
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

    let upstream = build_upstream(report, &path.key("upstream"), file.upstream);

    let timeout = duration(
        report,
        &path.key("timeout"),
        file.timeout.as_deref(),
        server.request_timeout,
    )
    .min(server.request_timeout);

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
    })
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
    let uri: Uri = text.parse().map_err(|_| "it does not parse as a URL")?;
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
        return Err("credentials in the URL are not allowed (use [credentials])");
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
            found[0].starts_with("gw.toml:3:16: server.admin_listen: is the same address"),
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
}
