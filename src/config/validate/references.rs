//! What the config refers to outside itself: every `*_env` key must name a
//! variable that is set, and every `*_file` key a file that exists (and, for
//! Redis, the default `url_env`). `warden check` and `warden run` check them
//! after validation, so `check` fails on exactly what `run` would refuse to
//! start with, each problem placed at its key with the fix. A plain
//! [`super::parse`] (tests, reloads, `warden credentials init`, which makes
//! the master key the variable will hold) does not.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::report::{KeyPath, Report};
use crate::config::Config;
use crate::shared_state::Backend;

/// Reports every unset variable and missing file `table` (the file's
/// root) and `config` refer to.
pub(super) fn check(report: &mut Report<'_>, table: &DeTable<'_>, config: &Config) {
    walk_table(report, table, "");
    if let Backend::Redis { url_env } = &config.shared_state.backend
        && std::env::var_os(url_env).is_none()
        && !has_key(table, "shared_state", "url_env")
    {
        report.problem(
            &KeyPath::default().key("shared_state").key("backend"),
            format!("the environment variable {url_env} (the default url_env) is not set"),
            format!(
                "export {url_env}=redis://host:6379/0 before starting warden, or name another variable with url_env"
            ),
        );
    }
}

fn has_key(table: &DeTable<'_>, section: &str, key: &str) -> bool {
    table
        .get(section)
        .and_then(|value| match value.get_ref() {
            DeValue::Table(inner) => inner.get(key),
            _ => None,
        })
        .is_some()
}

fn walk_table(report: &mut Report<'_>, table: &DeTable<'_>, prefix: &str) {
    for (name, value) in table.iter() {
        let name = name.get_ref().as_ref();
        let path = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        };
        walk_value(report, name, value, &path);
    }
}

fn walk_value(report: &mut Report<'_>, name: &str, value: &Spanned<DeValue<'_>>, path: &str) {
    match value.get_ref() {
        DeValue::Table(inner) => walk_table(report, inner, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(report, name, item, &format!("{path}[{i}]"));
            }
        }
        DeValue::String(text) => check_reference(report, name, text, value.span().start, path),
        _ => {}
    }
}

fn check_reference(report: &mut Report<'_>, name: &str, text: &str, offset: usize, path: &str) {
    // Keys and TLS files are read while validating: a problem that names
    // the variable or file is already reported.
    let reported = report
        .problems
        .iter()
        .any(|p| p.key == path || p.message.contains(text));
    if text.is_empty() || reported {
        return;
    }
    if name.ends_with("_env") && std::env::var_os(text).is_none() {
        report.problem_at(
            offset,
            path,
            format!("the environment variable {text} is not set"),
            format!(
                "export {text} before starting warden: `warden run` refuses to start without it"
            ),
        );
    } else if name.ends_with("_file") {
        let resolved = report.resolve(text);
        if !resolved.exists() {
            report.problem_at(
                offset,
                path,
                format!("the file {} does not exist", resolved.display()),
                "create it, or correct the path (a relative path starts at the config file's directory): `warden run` refuses to start without it".to_owned(),
            );
        }
    }
}
