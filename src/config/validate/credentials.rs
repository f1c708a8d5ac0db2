//! `[credentials]`: where the encrypted store of upstream credentials is and
//! where its master key comes from; and a route's `inject`, which names a
//! stored credential and where it goes in the upstream request.
//!
//! Whether a route that injects has a `[credentials]` store to inject from is
//! a rule between sections, checked in `mod.rs`.

use super::report::{KeyPath, Report};
use crate::config::file::{CredentialsFile, InjectFile};
use crate::credentials::CredentialsSettings;
use crate::credentials::inject::InjectSettings;
use crate::credentials::store::MasterKeySource;
use crate::oauth_connections::inject::InjectConnectionSettings;

/// Where a path credential goes in an upstream URL.
pub(super) const CREDENTIAL_PLACEHOLDER: &str = "{credential}";

pub(super) fn build_credentials(
    report: &mut Report<'_>,
    file: CredentialsFile,
) -> CredentialsSettings {
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
        (None, Some(path)) if !path.is_empty() => MasterKeySource::File(report.resolve(&path)),
        _ => {
            report.problem(
                &base,
                "needs exactly one of master_key_env and master_key_file",
                "name the environment variable (or file) that holds the base64 master key from `warden credentials init`",
            );
            MasterKeySource::Env(String::new())
        }
    };
    CredentialsSettings {
        store: report.resolve(&file.store),
        master_key,
    }
}

/// What a route's `inject` puts into the upstream request.
pub(super) enum Injected {
    /// A stored credential.
    Credential(InjectSettings),
    /// The calling user's token at an OAuth connection.
    Connection(InjectConnectionSettings),
}

/// A route's `inject` at `path`: a named credential (or the user's own
/// token at a named connection) and at most one place for it (none means
/// the credential kind's own default place, or `Authorization: Bearer`).
pub(super) fn build_inject(
    report: &mut Report<'_>,
    path: &KeyPath,
    inject: &InjectFile,
) -> Option<Injected> {
    let location = crate::credentials::location_of(
        inject.header.as_deref(),
        inject.query.as_deref(),
        inject.path,
        inject.body.as_deref(),
    );
    let named = (inject.credential.as_deref(), inject.connection.as_deref());
    match location {
        Ok(location) => match named {
            (Some(credential), None) if !credential.is_empty() => {
                Some(Injected::Credential(InjectSettings {
                    credential: credential.to_owned(),
                    location,
                }))
            }
            (None, Some(connection)) if !connection.is_empty() => {
                if location == Some(crate::credentials::Location::Path) {
                    report.problem(
                        &path.key("path"),
                        "a user's token never goes in the upstream URL, where logs keep it",
                        "remove path = true; the token goes in Authorization: Bearer, or give header or query",
                    );
                    return None;
                }
                Some(Injected::Connection(InjectConnectionSettings {
                    connection: connection.to_owned(),
                    location,
                }))
            }
            (Some(_), Some(_)) => {
                report.problem(
                    path,
                    "names both a credential and a connection",
                    "keep one: credential (a service credential) or connection (the user's own token)",
                );
                None
            }
            _ => {
                report.problem(
                    &path.key("credential"),
                    "must name a stored credential or an OAuth connection",
                    "e.g. inject = { credential = \"orders-api-key\" } or inject = { connection = \"github\" }",
                );
                None
            }
        },
        Err(why) => {
            report.problem(
                path,
                why.to_string(),
                "give at most one of header, query, path = true, body",
            );
            None
        }
    }
}
