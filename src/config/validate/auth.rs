//! `[[keys]]`, `[issuer]`, `[validation]` and `[[trusted_issuers]]`: the keys
//! that sign and verify tokens, what the gateway's own tokens carry, and the
//! identity providers whose tokens it accepts. Keys are loaded here, so a
//! missing or malformed key file is a config error at start.
//!
//! The issuer is built after the keys because `signing_kid` must name one
//! that can sign. Rules between these sections and others (a trusted issuer
//! reusing the gateway's own `iss`, a route no key could verify) are in
//! `mod.rs`.

use std::sync::Arc;
use std::time::Duration;

use http::Uri;

use super::jwe_keys::{JweKeys, load_jwe_key};
use super::report::{KeyPath, Report, duration};
use crate::auth::ValidationSettings;
use crate::auth::issue::IssuerSettings;
use crate::auth::jwe::{KeyAlg, SUPPORTED_KEY_ALGS};
use crate::auth::jwks::{JwksSource, TrustedIssuerSettings, discovery_url, usable_url};
use crate::auth::keys::{
    self, KeySettings, KeySource, LoadedKey, SUPPORTED_ALGORITHMS, parse_algorithm,
};
use crate::config::file::{IssuerFile, KeyFile, TrustedIssuerFile, ValidationFile};

pub(super) fn build_keys(
    report: &mut Report<'_>,
    files: Vec<(usize, KeyFile)>,
) -> (Vec<Arc<LoadedKey>>, JweKeys) {
    let mut loaded: Vec<Arc<LoadedKey>> = Vec::new();
    let mut jwe = JweKeys::default();
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
        if loaded.iter().any(|k| k.kid == file.kid) || jwe.has(&file.kid) {
            report.problem(
                &path.key("kid"),
                format!("duplicate kid {:?}", file.kid),
                "give every key its own kid: tokens select their key by it",
            );
            continue;
        }
        if let Some(alg) = KeyAlg::parse(&file.alg) {
            load_jwe_key(report, &path, &file, alg, &mut jwe);
            continue;
        }
        let Some(alg) = parse_algorithm(&file.alg) else {
            report.problem(
                &path.key("alg"),
                format!("{:?} is not a supported algorithm", file.alg),
                format!(
                    "use one of {SUPPORTED_ALGORITHMS} to sign and verify, or {SUPPORTED_KEY_ALGS} to decrypt"
                ),
            );
            continue;
        };
        let mut sources = Vec::new();
        if let Some(p) = &file.private_key_file {
            sources.push(KeySource::PrivateFile(report.resolve(p)));
        }
        if let Some(p) = &file.public_key_file {
            sources.push(KeySource::PublicFile(report.resolve(p)));
        }
        if let Some(var) = &file.secret_env {
            sources.push(KeySource::SecretEnv(var.clone()));
        }
        if let Some(p) = &file.secret_file {
            sources.push(KeySource::SecretFile(report.resolve(p)));
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
    (loaded, jwe)
}

pub(super) fn build_issuer(
    report: &mut Report<'_>,
    file: Option<IssuerFile>,
    keys: &[Arc<LoadedKey>],
    jwe: &JweKeys,
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
            None if jwe.has(kid) => report.problem(
                &base.key("signing_kid"),
                format!("key {kid:?} is an encryption key: it decrypts, it never signs"),
                "point signing_kid at a signing key (ES256, RS256, EdDSA…)",
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

pub(super) fn build_validation(
    report: &mut Report<'_>,
    file: ValidationFile,
) -> ValidationSettings {
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
    let max_token_lifetime = duration(
        report,
        &base.key("max_token_lifetime"),
        file.max_token_lifetime.as_deref(),
        defaults.max_token_lifetime,
    );
    if max_token_lifetime < Duration::from_secs(60) {
        report.problem(
            &base.key("max_token_lifetime"),
            "is shorter than a minute",
            "a bound on how long tokens may live: use e.g. \"24h\" (the default) or \"1h\"",
        );
    }
    ValidationSettings {
        leeway,
        max_token_bytes: usize::try_from(max_token_bytes).unwrap_or(usize::MAX),
        cache_entries: defaults.cache_entries,
        max_token_lifetime,
    }
}

/// The gateway's own tokens must pass its own `max_token_lifetime`:
/// `issuer.max_ttl` (the longest `warden token --ttl` and login may give)
/// may not exceed it.
pub(super) fn check_issued_lifetime(
    report: &mut Report<'_>,
    issuer: Option<&IssuerSettings>,
    validation: &ValidationSettings,
) {
    if let Some(issuer) = issuer
        && issuer.max_ttl > validation.max_token_lifetime
    {
        report.problem(
            &KeyPath::default().key("issuer").key("max_ttl"),
            format!(
                "is longer than validation.max_token_lifetime ({})",
                humantime::format_duration(validation.max_token_lifetime)
            ),
            "tokens that long would be refused by the gateway itself: shorten max_ttl or raise max_token_lifetime",
        );
    }
}

pub(super) fn build_trusted_issuers(
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
        let jwks = match (&file.jwks_url, file.discovery) {
            (Some(url), false) => {
                let problem = match url.parse::<Uri>() {
                    Ok(uri) => match usable_url(&uri) {
                        Ok(()) => None,
                        Err(why) => Some(format!("{url:?} {why}")),
                    },
                    Err(_) => Some(format!("{url:?} is not a URL")),
                };
                match problem {
                    None => url.parse::<Uri>().ok().map(JwksSource::Url),
                    Some(message) => {
                        report.problem(
                            &path.key("jwks_url"),
                            message,
                            "use the provider's https:// JWKS URL",
                        );
                        None
                    }
                }
            }
            (None, true) => {
                let document = discovery_url(&file.iss);
                match document.as_ref().map(usable_url) {
                    Some(Ok(())) => document.map(JwksSource::Discovery),
                    Some(Err(why)) => {
                        report.problem(
                            &path.key("discovery"),
                            format!("the discovery document of {:?} {why}", file.iss),
                            "discovery reads {iss}/.well-known/openid-configuration: the iss must be an https URL (http only to a loopback address)",
                        );
                        None
                    }
                    None => {
                        report.problem(
                            &path.key("discovery"),
                            format!(
                                "{:?} is not a URL, so it has no discovery document",
                                file.iss
                            ),
                            "give jwks_url instead, or the issuer's https iss",
                        );
                        None
                    }
                }
            }
            (Some(_), true) => {
                report.problem(
                    &path.key("discovery"),
                    "is set together with jwks_url",
                    "keep one: jwks_url, or discovery = true to read it from the discovery document",
                );
                None
            }
            (None, false) => {
                report.problem(
                    &path,
                    "needs jwks_url or discovery = true",
                    "give the provider's https:// JWKS URL, or discovery = true to read it from {iss}/.well-known/openid-configuration",
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
        let ca_file = file.ca_file.as_deref().map(|p| report.resolve(p));
        if let Some(ca) = &ca_file
            && let Err(why) = crate::http_client::ca_certificates(ca)
        {
            report.problem(
                &path.key("ca_file"),
                why.to_string(),
                "give the PEM file of the provider's CA",
            );
        }
        if report.problems.len() != before {
            continue;
        }
        if let Some(jwks) = jwks {
            issuers.push(TrustedIssuerSettings {
                iss: file.iss,
                jwks,
                audiences: file.aud,
                algs,
                refresh,
                ca_file,
                accept_high_s: file.accept_high_s,
            });
        }
    }
    issuers
}
