//! `[login]`: the gateway's own login route, and the clients that may use it:
//! `[[login.api_keys]]` (a key whose SHA-256 is listed) and `[[login.users]]`
//! (a user name and an argon2id hash). Both kinds of client are checked by
//! one loop, [`build_clients`]; what differs is in their [`ClientEntry`]. A
//! check every client needs goes into that loop, one for a single kind into
//! its `into_identity`.
//!
//! `[login]` issues tokens, so it needs `[issuer]` with a signing key: that is
//! why it is built after the keys and the issuer.

use super::report::{KeyPath, Report, check_scopes, is_path_byte};
use crate::auth::issue::{IssuerSettings, RESERVED_CLAIMS};
use crate::auth::login::MAX_M_COST_KIB;
use crate::auth::login::{ApiKeyIdentity, JWKS_PATH, LoginSettings, UserIdentity};
use crate::config::file::{ApiKeyFile, LoginFile, UserFile};
use crate::routes::normalize_path;

type Claims = serde_json::Map<String, serde_json::Value>;

pub(super) fn build_login(
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
    report.require_positive(
        &base.key("max_failures_per_minute"),
        u64::from(max_failures_per_minute),
        "use e.g. 10",
    );
    let api_keys = build_clients(report, &base.key("api_keys"), file.api_keys);
    let users = build_clients(report, &base.key("users"), file.users);
    LoginSettings {
        path,
        api_key_header,
        max_failures_per_minute,
        api_keys,
        users,
    }
}

/// An entry of `login.api_keys` or `login.users`. Both name a client in
/// Basic credentials (so the name cannot hold ':'), once per list, and give
/// its tokens a role, scopes and claims; they differ in the name's key and in
/// the secret that proves the client.
trait ClientEntry: Sized {
    /// What the gateway keeps of a valid entry.
    type Identity;
    /// The key of the name: `id` or `username`.
    const NAME_KEY: &'static str;
    /// How to fix a name that is empty or holds ':'.
    const NAME_FIX: &'static str;
    /// What the message calls a name listed twice.
    const DUPLICATE: &'static str;
    /// How to fix a name listed twice.
    const DUPLICATE_FIX: &'static str;

    fn name(&self) -> &str;

    fn name_of(identity: &Self::Identity) -> &str;

    /// The scopes and claims the client's tokens get.
    fn grants(identity: &Self::Identity) -> (&[String], &Claims);

    /// Checks the secret and builds the identity; `earlier` holds the
    /// entries listed before this one.
    fn into_identity(
        self,
        report: &mut Report<'_>,
        path: &KeyPath,
        earlier: &[Self::Identity],
    ) -> Self::Identity;
}

/// The clients listed at `list`, each checked for what all clients share.
fn build_clients<E: ClientEntry>(
    report: &mut Report<'_>,
    list: &KeyPath,
    entries: Vec<E>,
) -> Vec<E::Identity> {
    let mut identities: Vec<E::Identity> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let path = list.index(i);
        let name = entry.name();
        if name.is_empty() || name.contains(':') {
            report.problem(
                &path.key(E::NAME_KEY),
                "must be non-empty and without ':'",
                E::NAME_FIX,
            );
        }
        if identities.iter().any(|known| E::name_of(known) == name) {
            report.problem(
                &path.key(E::NAME_KEY),
                format!("duplicate {} {name:?}", E::DUPLICATE),
                E::DUPLICATE_FIX,
            );
        }
        let identity = entry.into_identity(report, &path, &identities);
        let (scopes, claims) = E::grants(&identity);
        check_claims(report, &path.key("claims"), claims);
        check_scopes(
            report,
            &path.key("scopes"),
            scopes,
            "a scope is one word of printable ASCII",
        );
        identities.push(identity);
    }
    identities
}

impl ClientEntry for ApiKeyFile {
    type Identity = ApiKeyIdentity;
    const NAME_KEY: &'static str = "id";
    const NAME_FIX: &'static str = "use a short name such as \"reporting-service\"";
    const DUPLICATE: &'static str = "id";
    const DUPLICATE_FIX: &'static str = "give every API key its own id";

    fn name(&self) -> &str {
        &self.id
    }

    fn name_of(identity: &ApiKeyIdentity) -> &str {
        &identity.id
    }

    fn grants(identity: &ApiKeyIdentity) -> (&[String], &Claims) {
        (&identity.scopes, &identity.claims)
    }

    fn into_identity(
        self,
        report: &mut Report<'_>,
        path: &KeyPath,
        earlier: &[ApiKeyIdentity],
    ) -> ApiKeyIdentity {
        let digest = hex_digest(&self.key_sha256.to_ascii_lowercase()).unwrap_or_else(|| {
            report.problem(
                &path.key("key_sha256"),
                "is not 64 hex digits",
                "put the SHA-256 of the key here, as `warden gen-api-key` prints it (never the key itself)",
            );
            [0u8; 32]
        });
        if earlier.iter().any(|k| k.key_sha256 == digest) {
            report.problem(
                &path.key("key_sha256"),
                "the same key is listed twice",
                "give every client its own key",
            );
        }
        ApiKeyIdentity {
            sub: self.sub.unwrap_or_else(|| self.id.clone()),
            id: self.id,
            key_sha256: digest,
            role: self.role,
            scopes: self.scopes,
            claims: self.claims,
        }
    }
}

impl ClientEntry for UserFile {
    type Identity = UserIdentity;
    const NAME_KEY: &'static str = "username";
    const NAME_FIX: &'static str = "Basic credentials cannot carry ':' in a user name";
    const DUPLICATE: &'static str = "user";
    const DUPLICATE_FIX: &'static str = "list each user once";

    fn name(&self) -> &str {
        &self.username
    }

    fn name_of(identity: &UserIdentity) -> &str {
        &identity.username
    }

    fn grants(identity: &UserIdentity) -> (&[String], &Claims) {
        (&identity.scopes, &identity.claims)
    }

    fn into_identity(
        self,
        report: &mut Report<'_>,
        path: &KeyPath,
        _earlier: &[UserIdentity],
    ) -> UserIdentity {
        let valid_hash = self.password_argon2.starts_with("$argon2id$")
            && argon2::PasswordHash::new(&self.password_argon2).is_ok();
        if !valid_hash {
            report.problem(
                &path.key("password_argon2"),
                "is not an argon2id PHC string",
                "paste the output of `warden hash-password` (it starts with $argon2id$)",
            );
        } else if let Some(m_cost) = argon2::PasswordHash::new(&self.password_argon2)
            .ok()
            .and_then(|hash| argon2::Params::try_from(&hash).ok())
            .map(|params| params.m_cost())
            .filter(|m_cost| *m_cost > MAX_M_COST_KIB)
        {
            report.problem(
                &path.key("password_argon2"),
                format!(
                    "asks for {} MiB of argon2 memory per login; at most {} MiB is allowed",
                    m_cost / 1024,
                    MAX_M_COST_KIB / 1024
                ),
                "hash the password again with `warden hash-password` (19 MiB)",
            );
        }
        UserIdentity {
            username: self.username,
            password_argon2: self.password_argon2,
            role: self.role,
            scopes: self.scopes,
            claims: self.claims,
        }
    }
}

/// Claims the gateway sets itself cannot be configured per client.
fn check_claims(report: &mut Report<'_>, path: &KeyPath, claims: &Claims) {
    for name in claims.keys() {
        if RESERVED_CLAIMS.contains(&name.as_str()) {
            report.problem(
                path,
                format!("claim {name:?} is set by the gateway itself"),
                "remove it from claims",
            );
        }
    }
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
