//! Mints pools of distinct tokens for the load benchmark (`benches/load.sh`).
//!
//! For each of HS256, RS256 and ES256 it signs `--count` tokens (or
//! `--hs256-count` etc.) with the warden library's own issuer
//! ([`TokenIssuer`]), each with a `kid`, `iss = "https://issuer.bench.local"`,
//! `aud = "bench-api"`, `exp` two hours from now and a distinct `sub` and
//! `jti`, and writes them one per line to `OUT/hs256.tokens`,
//! `OUT/rs256.tokens` and `OUT/es256.tokens`. It also writes one more ES256
//! token to `OUT/repeated.token`, for the cache-hit case. With
//! `--jwe-key` (an ECDH-ES+A256KW private key, as `warden keygen` writes
//! one, kid `bench-enc`), it also encrypts each ES256 token and the repeated
//! one to that key's public half (A256GCM), into `OUT/es256-jwe.tokens` and
//! `OUT/repeated-jwe.token`: nested JWTs. The key ids are
//! `bench-hs256`, `bench-rs256` and `bench-es256`: the gateway's `[[keys]]`
//! must use the same.
//!
//! RSA signing is slow (about a millisecond per token), so the work is split
//! across every core with `std::thread`.
//!
//! ```sh
//! cargo run --release --example mint_tokens -- \
//!     --hs256-secret k/hs256.secret --rs256-key k/rs256.pem --es256-key k/es256.pem \
//!     --out tokens --count 100000
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use jsonwebtoken::Algorithm;
use warden::auth::issue::IssuerSettings;
use warden::auth::issue::{Grant, TokenIssuer};
use warden::auth::keys::{self, KeySettings, KeySource, alg_name};

/// The `iss` of every minted token.
const ISS: &str = "https://issuer.bench.local";
/// The `aud` of every minted token.
const AUD: &str = "bench-api";
/// Tokens live this long: longer than any benchmark run.
const TTL: Duration = Duration::from_secs(2 * 3600);

#[derive(Debug, Parser)]
#[command(about = "Mint pools of distinct HS256, RS256 and ES256 tokens for the load benchmark")]
struct Args {
    /// The HS256 secret file (its bytes, without a trailing newline, as warden's `secret_file`).
    #[arg(long)]
    hs256_secret: PathBuf,
    /// The RS256 private key (PKCS#8 PEM, as `warden keygen` writes it).
    #[arg(long)]
    rs256_key: PathBuf,
    /// The ES256 private key (PKCS#8 PEM).
    #[arg(long)]
    es256_key: PathBuf,
    /// The directory to write the token files to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Tokens per algorithm.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// HS256 tokens [default: --count].
    #[arg(long)]
    hs256_count: Option<usize>,
    /// RS256 tokens [default: --count].
    #[arg(long)]
    rs256_count: Option<usize>,
    /// ES256 tokens [default: --count].
    #[arg(long)]
    es256_count: Option<usize>,
    /// An ECDH-ES+A256KW private key (PKCS#8 PEM) to also encrypt the ES256
    /// tokens to (kid `bench-enc`).
    #[arg(long)]
    jwe_key: Option<PathBuf>,
    /// Signing threads [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    warden::crypto::install_providers();
    if let Err(err) = std::fs::create_dir_all(&args.out) {
        eprintln!("mint_tokens: cannot create {}: {err}", args.out.display());
        return ExitCode::from(1);
    }
    let threads = args
        .threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .max(1);
    let pools = [
        (
            Algorithm::HS256,
            KeySource::SecretFile(args.hs256_secret.clone()),
            args.hs256_count.unwrap_or(args.count),
        ),
        (
            Algorithm::RS256,
            KeySource::PrivateFile(args.rs256_key.clone()),
            args.rs256_count.unwrap_or(args.count),
        ),
        (
            Algorithm::ES256,
            KeySource::PrivateFile(args.es256_key.clone()),
            args.es256_count.unwrap_or(args.count),
        ),
    ];
    for (alg, source, count) in pools {
        let issuer = match issuer_for(alg, source) {
            Ok(issuer) => issuer,
            Err(err) => {
                eprintln!("mint_tokens: {err}");
                return ExitCode::from(1);
            }
        };
        let name = alg_name(alg).to_ascii_lowercase();
        let started = Instant::now();
        let tokens = match mint(&issuer, &name, count, threads) {
            Ok(tokens) => tokens,
            Err(err) => {
                eprintln!("mint_tokens: {err}");
                return ExitCode::from(1);
            }
        };
        let path = args.out.join(format!("{name}.tokens"));
        if let Err(err) = write_file(&path, tokens.iter().map(String::as_str)) {
            eprintln!("mint_tokens: {err}");
            return ExitCode::from(1);
        }
        eprintln!(
            "mint_tokens: {count} {} tokens in {:.1} s ({threads} threads) -> {}",
            alg_name(alg),
            started.elapsed().as_secs_f64(),
            path.display()
        );
        if alg == Algorithm::ES256 {
            let repeated = match mint(&issuer, "repeated", 1, 1) {
                Ok(tokens) => tokens,
                Err(err) => {
                    eprintln!("mint_tokens: {err}");
                    return ExitCode::from(1);
                }
            };
            let path = args.out.join("repeated.token");
            if let Err(err) = write_file(&path, repeated.iter().map(String::as_str)) {
                eprintln!("mint_tokens: {err}");
                return ExitCode::from(1);
            }
            if let Some(key) = &args.jwe_key {
                let nested = [
                    ("es256-jwe.tokens", &tokens),
                    ("repeated-jwe.token", &repeated),
                ];
                for (file, signed) in nested {
                    let encrypted = match encrypt_all(key, signed) {
                        Ok(encrypted) => encrypted,
                        Err(err) => {
                            eprintln!("mint_tokens: {err}");
                            return ExitCode::from(1);
                        }
                    };
                    let path = args.out.join(file);
                    if let Err(err) = write_file(&path, encrypted.iter().map(String::as_str)) {
                        eprintln!("mint_tokens: {err}");
                        return ExitCode::from(1);
                    }
                }
            }
        }
    }
    ExitCode::SUCCESS
}

/// `tokens`, each encrypted to the public half of the ECDH-ES+A256KW key
/// in the PEM file `key`.
fn encrypt_all(key: &Path, tokens: &[String]) -> Result<Vec<String>, String> {
    use warden::auth::jwe::{self, DecryptionKey, KeyAlg};
    let pem = std::fs::read(key).map_err(|err| format!("cannot read {}: {err}", key.display()))?;
    let private = DecryptionKey::from_private_pem("bench-enc", KeyAlg::EcdhEsA256Kw, &pem)
        .map_err(|err| format!("{}: {err}", key.display()))?;
    let public = private.encryption_key().map_err(|err| err.to_string())?;
    tokens
        .iter()
        .map(|token| jwe::encrypt(&public, token.as_bytes()).map_err(|err| err.to_string()))
        .collect()
}

/// The warden issuer signing with key `bench-<alg>` read from `source`.
fn issuer_for(alg: Algorithm, source: KeySource) -> Result<TokenIssuer, String> {
    let kid = format!("bench-{}", alg_name(alg).to_ascii_lowercase());
    let key = keys::load(&KeySettings {
        kid: kid.clone(),
        alg,
        source,
    })
    .map_err(|err| format!("{kid}: {err} ({})", err.fix))?;
    let settings = IssuerSettings {
        iss: ISS.into(),
        audiences: vec![AUD.into()],
        signing_kid: Some(kid.clone()),
        ttl: TTL,
        max_ttl: TTL,
    };
    TokenIssuer::new(&settings, &Arc::new(key)).ok_or_else(|| format!("{kid} cannot sign"))
}

/// `count` tokens with subjects `bench-<label>-<i>`, signed on `threads` threads.
fn mint(
    issuer: &TokenIssuer,
    label: &str,
    count: usize,
    threads: usize,
) -> Result<Vec<String>, String> {
    let per_thread = count.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..count)
            .step_by(per_thread)
            .map(|start| {
                let end = (start + per_thread).min(count);
                scope.spawn(move || {
                    (start..end)
                        .map(|i| {
                            let sub = format!("bench-{label}-{i}");
                            issuer
                                .issue(&Grant {
                                    sub: &sub,
                                    ..Grant::default()
                                })
                                .map(|issued| issued.token)
                                .map_err(|err| err.to_string())
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut tokens = Vec::with_capacity(count);
        for worker in workers {
            let chunk = worker
                .join()
                .map_err(|_| "a signing thread panicked".to_owned())??;
            tokens.extend(chunk);
        }
        Ok(tokens)
    })
}

fn write_file<'a>(path: &Path, lines: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let failed = |err: std::io::Error| format!("cannot write {}: {err}", path.display());
    let file = std::fs::File::create(path).map_err(failed)?;
    let mut out = std::io::BufWriter::new(file);
    for line in lines {
        out.write_all(line.as_bytes()).map_err(failed)?;
        out.write_all(b"\n").map_err(failed)?;
    }
    out.flush().map_err(failed)
}
