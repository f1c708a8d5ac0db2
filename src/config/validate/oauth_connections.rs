//! `[[oauth_connections]]` (SPEC §13): the providers whose OAuth loop
//! warden runs for each user. The client secret is read here (from its
//! environment variable or file), so `warden check` fails where `run`
//! would.
//!
//! Whether a connection has a `[credentials]` master key to seal its
//! records with, and whether a route's `inject.connection` names one, are
//! rules between sections, checked in `mod.rs`.

use std::collections::BTreeMap;

use super::report::{KeyPath, Report, check_scopes};
use crate::config::file::OauthConnectionFile;
use crate::credentials::ClientAuth;
use crate::oauth_connections::{OauthConnectionSettings, callback_path};
use crate::secret::SecretString;

/// Authorization-request parameters warden sets itself.
const OWN_AUTHORIZE_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];
/// Token-request parameters warden sets itself.
const OWN_TOKEN_PARAMS: &[&str] = &[
    "grant_type",
    "code",
    "redirect_uri",
    "code_verifier",
    "refresh_token",
    "client_id",
    "client_secret",
];

pub(super) fn build_oauth_connections(
    report: &mut Report<'_>,
    files: Vec<(usize, OauthConnectionFile)>,
) -> Vec<OauthConnectionSettings> {
    let base = KeyPath::default().key("oauth_connections");
    let mut built: Vec<OauthConnectionSettings> = Vec::new();
    for (index, file) in files {
        let path = base.index(index);
        let before = report.problems.len();
        if built.iter().any(|c| c.name == file.name) {
            report.problem(
                &path.key("name"),
                format!("{:?} is the name of another connection", file.name),
                "give each [[oauth_connections]] entry its own name",
            );
        }
        let settings = build_one(report, &path, file);
        if report.problems.len() == before
            && let Some(settings) = settings
        {
            built.push(settings);
        }
    }
    built
}

fn build_one(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: OauthConnectionFile,
) -> Option<OauthConnectionSettings> {
    let valid_name = !file.name.is_empty()
        && file.name.len() <= 64
        && file
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid_name {
        report.problem(
            &path.key("name"),
            format!("{:?} cannot be a connection name", file.name),
            "use 1 to 64 lowercase letters, digits, '-' or '_' (it is part of /oauth/{name}/…)",
        );
    }
    for (key, url) in [
        ("authorize_url", &file.authorize_url),
        ("token_url", &file.token_url),
    ] {
        if let Err(why) = crate::credentials::check_token_url(url) {
            report.problem(
                &path.key(key),
                why.to_string(),
                "use the provider's https:// endpoint",
            );
        } else if url.contains('#') {
            report.problem(
                &path.key(key),
                "must not hold a #fragment",
                "remove the fragment",
            );
        }
    }
    if file.client_id.is_empty() {
        report.problem(
            &path.key("client_id"),
            "must not be empty",
            "give the client id the provider registered for warden",
        );
    }
    let client_secret = client_secret(report, path, &file);
    check_scopes(
        report,
        &path.key("scopes"),
        &file.scopes,
        "list the provider's scope names, one per string",
    );
    check_redirect(report, path, &file);
    check_params(
        report,
        &path.key("authorize_params"),
        &file.authorize_params,
        OWN_AUTHORIZE_PARAMS,
    );
    check_params(
        report,
        &path.key("token_params"),
        &file.token_params,
        OWN_TOKEN_PARAMS,
    );
    let client_auth = match file.token_endpoint_auth.as_deref() {
        None | Some("client_secret_basic") => ClientAuth::Basic,
        Some("client_secret_post") => ClientAuth::Form,
        Some(other) => {
            report.problem(
                &path.key("token_endpoint_auth"),
                format!("{other:?} is not a client authentication method warden uses"),
                "use \"client_secret_basic\" (the default) or \"client_secret_post\"",
            );
            ClientAuth::Basic
        }
    };
    Some(OauthConnectionSettings {
        name: file.name,
        authorize_url: file.authorize_url,
        token_url: file.token_url,
        client_id: file.client_id,
        client_secret: client_secret?,
        scopes: file.scopes,
        redirect_url: file.redirect_url,
        authorize_params: file.authorize_params,
        token_params: file.token_params,
        client_auth,
    })
}

fn client_secret(
    report: &mut Report<'_>,
    path: &KeyPath,
    file: &OauthConnectionFile,
) -> Option<SecretString> {
    let secret = match (&file.client_secret_env, &file.client_secret_file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(value) => Some(SecretString::new(value.trim().to_owned())),
            Err(_) => {
                report.problem(
                    &path.key("client_secret_env"),
                    format!("the environment variable {var} is not set"),
                    format!("export {var} with the client secret the provider issued"),
                );
                return None;
            }
        },
        (None, Some(file_path)) => {
            let resolved = report.resolve(file_path);
            match std::fs::read_to_string(&resolved) {
                Ok(text) => Some(SecretString::new(text.trim().to_owned())),
                Err(err) => {
                    report.problem(
                        &path.key("client_secret_file"),
                        format!("cannot read {}: {err}", resolved.display()),
                        "point it at a file holding the client secret",
                    );
                    return None;
                }
            }
        }
        _ => None,
    };
    match secret {
        Some(secret) if !secret.is_empty() => Some(secret),
        Some(_) => {
            report.problem(
                path,
                "the client secret is empty",
                "store the secret the provider issued",
            );
            None
        }
        None => {
            report.problem(
                path,
                "needs exactly one of client_secret_env and client_secret_file",
                "name the environment variable (or file) that holds the client secret",
            );
            None
        }
    }
}

fn check_redirect(report: &mut Report<'_>, path: &KeyPath, file: &OauthConnectionFile) {
    let at = path.key("redirect_url");
    let expected = callback_path(&file.name);
    let fix = format!("use https://<the gateway's public host>{expected}");
    if crate::credentials::check_token_url(&file.redirect_url).is_err() {
        report.problem(
            &at,
            "must be an https:// URL (http:// only to a loopback address)",
            fix,
        );
        return;
    }
    let Ok(uri) = file.redirect_url.parse::<http::Uri>() else {
        report.problem(&at, "is not a URL", fix);
        return;
    };
    if uri.path() != expected || uri.query().is_some() || file.redirect_url.contains('#') {
        report.problem(
            &at,
            format!(
                "its path must be {expected}, with no query: the provider sends the user back there"
            ),
            fix,
        );
    }
}

fn check_params(
    report: &mut Report<'_>,
    path: &KeyPath,
    params: &BTreeMap<String, String>,
    own: &[&str],
) {
    for name in params.keys() {
        if own.contains(&name.as_str()) {
            report.problem(
                path,
                format!("{name:?} is set by warden itself"),
                "remove it; give only the provider's extra parameters (audience, resource, prompt, …)",
            );
        } else if name.is_empty() {
            report.problem(path, "holds an empty parameter name", "remove it");
        }
    }
}
