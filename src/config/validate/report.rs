//! What every section's checks share: key paths, the [`Report`] that
//! collects problems and places them in the file, and the value parsers more
//! than one section uses (durations, relative paths, scopes, path bytes).
//!
//! The section files import this one and nothing else of `validate/`, so a
//! helper that two sections need belongs here rather than in either of them;
//! one that a single section uses stays in that section's file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use crate::config::{ConfigError, Location, Problem};

/// One step of a key path.
#[derive(Clone, Debug)]
enum Step {
    Key(&'static str),
    Index(usize),
}

/// A key path such as `routes[2].upstream`.
#[derive(Clone, Debug, Default)]
pub(super) struct KeyPath(Vec<Step>);

impl KeyPath {
    pub(super) fn key(&self, key: &'static str) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key));
        KeyPath(steps)
    }

    pub(super) fn index(&self, index: usize) -> KeyPath {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        KeyPath(steps)
    }

    pub(super) fn render(&self) -> String {
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
pub(super) struct Report<'a> {
    origin: &'a str,
    /// Relative paths in the file start here.
    base: &'a Path,
    text: &'a str,
    /// The parsed file, once the sections are read: problems are located in it.
    pub(super) root: Option<DeValue<'a>>,
    pub(super) problems: Vec<Problem>,
}

impl<'a> Report<'a> {
    pub(super) fn new(origin: &'a str, base: &'a Path, text: &'a str) -> Self {
        Report {
            origin,
            base,
            text,
            root: None,
            problems: Vec::new(),
        }
    }

    /// Where the file came from, for messages.
    pub(super) fn origin(&self) -> &'a str {
        self.origin
    }

    /// `value` when nothing was reported, else every problem in file order.
    pub(super) fn finish<T>(mut self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            return Ok(value);
        }
        self.problems
            .sort_by_key(|p| p.location.map(|l| (l.line, l.column)));
        Err(ConfigError {
            problems: self.problems,
        })
    }

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

    pub(super) fn problem(
        &mut self,
        path: &KeyPath,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let location = self.locate(path);
        self.problems.push(Problem {
            origin: self.origin.to_owned(),
            location,
            key: path.render(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// A problem with a key that is no key path, at a byte offset in the file.
    /// A count that must be at least 1; `fix` suggests a value.
    pub(super) fn require_positive(&mut self, path: &KeyPath, value: u64, fix: &str) {
        if value == 0 {
            self.problem(path, "must be at least 1", fix);
        }
    }

    pub(super) fn problem_at(&mut self, offset: usize, key: &str, message: String, fix: String) {
        let location = self.location_of_offset(offset);
        self.problems.push(Problem {
            origin: self.origin.to_owned(),
            location: Some(location),
            key: key.to_owned(),
            message,
            fix,
        });
    }

    pub(super) fn toml_error(&mut self, path: &KeyPath, err: &toml::de::Error, fix: &str) {
        let location = err.span().map(|span| self.location_of_offset(span.start));
        let message = err.message().trim_end();
        let fix = match unknown_name_suggestion(message) {
            Some(suggestion) => format!("did you mean `{suggestion}`? {fix}"),
            None => fix.to_owned(),
        };
        self.problems.push(Problem {
            origin: self.origin.to_owned(),
            location: location.or_else(|| self.locate(path)),
            key: path.render(),
            message: human_types(message),
            fix,
        });
    }

    /// Deserializes one section; a failure is recorded and gives `None`.
    pub(super) fn section<T: DeserializeOwned>(
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

    /// A path from the file: relative ones start at the file's directory.
    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base.join(path)
        }
    }
}

/// A duration such as `"30s"`; missing gives `default`, and so does a bad
/// one, after reporting it.
pub(super) fn duration(
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

/// The name among `known` that `name` was most likely meant to be: the
/// closest by edit distance (transpositions count once), if close enough
/// to be a typo (`request_timout` → `request_timeout`, `lisen` → `listen`).
pub(super) fn did_you_mean<'k>(
    name: &str,
    known: impl IntoIterator<Item = &'k str>,
) -> Option<&'k str> {
    let allowed = (name.chars().count() / 3).clamp(1, 3);
    known
        .into_iter()
        .map(|candidate| (strsim::damerau_levenshtein(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// The suggestion for serde's ``unknown field `x`, expected one of `a`, `b` ``
/// (or ``unknown variant …``): the known name closest to `x`, if any is close.
fn unknown_name_suggestion(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (name, expected) = rest.split_once('`')?;
    let known = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|candidate| !candidate.is_empty());
    did_you_mean(name, known)
}

/// serde's type names in a message, as a person who writes TOML reads
/// them: `expected u64` → `expected a whole number (0 or more)`, `a
/// sequence` → `an array`, `a map` or `struct FooFile` → `a table`.
pub(super) fn human_types(message: &str) -> String {
    const NAMES: &[(&str, &str)] = &[
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: table"),
        (
            "invalid type: floating point",
            "invalid type: decimal number",
        ),
    ];
    let mut text = message.to_owned();
    for (rust, human) in NAMES {
        // Whole words only: `expected u8` must not rewrite `expected u80`.
        let mut from = 0;
        while let Some(at) = text[from..].find(rust).map(|i| i + from) {
            let end = at + rust.len();
            let whole = !text[end..].starts_with(|c: char| c.is_ascii_alphanumeric());
            if whole {
                text.replace_range(at..end, human);
                from = at + human.len();
            } else {
                from = end;
            }
        }
    }
    if let Some(at) = text.find("expected struct ") {
        let name_end = text[at + 16..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(text.len(), |i| i + at + 16);
        text.replace_range(at..name_end, "expected a table");
    }
    text
}

/// Reports each entry of `scopes` that is not a scope token. Login clients
/// and routes both list scopes, but each section words its own `fix`.
pub(super) fn check_scopes(report: &mut Report<'_>, path: &KeyPath, scopes: &[String], fix: &str) {
    for scope in scopes {
        if !is_scope_token(scope) {
            report.problem(path, format!("{scope:?} is not a scope"), fix);
        }
    }
}

fn is_scope_token(scope: &str) -> bool {
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// RFC 3986 `pchar` bytes and `/`: what a request path can hold.
pub(super) fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn typos_get_the_name_they_were_meant_to_be() {
        use super::{did_you_mean, unknown_name_suggestion};
        let keys = [
            "listen",
            "admin_listen",
            "request_timeout",
            "max_body_bytes",
        ];
        assert_eq!(
            did_you_mean("request_timout", keys),
            Some("request_timeout")
        );
        assert_eq!(did_you_mean("lisen", keys), Some("listen"));
        assert_eq!(did_you_mean("colour", keys), None);
        assert_eq!(
            unknown_name_suggestion("unknown field `fromat`, expected `level` or `format`"),
            Some("format")
        );
        assert_eq!(
            unknown_name_suggestion("unknown variant `jtw`, expected `jwt` or `none`"),
            Some("jwt")
        );
        assert_eq!(unknown_name_suggestion("missing field `key`"), None);
    }

    #[test]
    fn rust_type_names_become_words() {
        use super::human_types;
        assert_eq!(
            human_types("invalid type: string \"x\", expected u64"),
            "invalid type: string \"x\", expected a whole number (0 or more)"
        );
        assert_eq!(
            human_types("invalid type: integer `1`, expected struct ServerFile"),
            "invalid type: integer `1`, expected a table"
        );
        assert_eq!(
            human_types("invalid type: map, expected a sequence"),
            "invalid type: table, expected an array"
        );
        assert_eq!(human_types("expected u80"), "expected u80");
    }

    use super::*;

    #[test]
    fn key_paths_render_keys_with_dots_and_indexes_in_brackets() {
        let path = KeyPath::default().key("routes").index(2).key("upstream");
        assert_eq!(path.render(), "routes[2].upstream");
        assert_eq!(KeyPath::default().render(), "");
    }

    #[test]
    fn scope_tokens_are_one_word_of_printable_ascii() {
        assert!(is_scope_token("orders:read"));
        for bad in ["", "two words", "quo\"te", "back\\slash", "tab\t"] {
            assert!(!is_scope_token(bad), "{bad:?}");
        }
    }
}
