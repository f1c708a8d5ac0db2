//! The `warden` command: run the gateway, or check a config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warden::{Config, Gateway};

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "An API gateway that guards services with JWTs"
)]
struct Cli {
    /// The config file [default: $WARDEN_CONFIG or ./gateway.toml]
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate a config file and print every problem in it.
    Check,
    /// Read a password from stdin (no echo on a terminal) and print its
    /// argon2id PHC string for `password_argon2`.
    HashPassword,
    /// Print a new random API key and the `key_sha256` line for the config.
    GenApiKey,
    /// Write a new private key (PKCS#8 PEM); for HS algorithms print a random secret.
    ///
    /// For an encryption key (RSA-OAEP-256, ECDH-ES, ECDH-ES+A128KW,
    /// ECDH-ES+A256KW), also print its public half, as a JWK and as SPKI PEM,
    /// for whoever encrypts to it; for A256KW and dir, print a random secret
    /// as base64url (the text secret_env and secret_file hold).
    Keygen {
        /// ES256, ES384, EdDSA, RS256, PS256, ..., HS256/384/512 (signing);
        /// RSA-OAEP-256, ECDH-ES, ECDH-ES+A128KW, ECDH-ES+A256KW, A256KW or
        /// dir (encryption).
        #[arg(long)]
        alg: String,
        /// Where to write the key (never over an existing file). Required
        /// for key pairs; a secret goes there instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// ECDH-ES*: the curve, P-256 (default), P-384 or X25519.
        #[arg(long)]
        curve: Option<String>,
        /// dir: the content encryption the secret is the key of, which fixes
        /// its length: A128GCM (16 bytes), A256GCM (default, 32),
        /// A128CBC-HS256 (32) or A256CBC-HS512 (64).
        #[arg(long)]
        enc: Option<String>,
        /// Encryption key pairs: also write the public key to this file
        /// (never over an existing one), as a JWK if its name ends in .json
        /// or .jwk, else as SPKI PEM.
        #[arg(long, value_name = "FILE")]
        public_out: Option<PathBuf>,
        /// Encryption key pairs: the kid of the public JWK [default: the
        /// --out file's name without its extension]. Give its [[keys]] entry
        /// the same kid.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Sign a token offline with the config's signing key.
    Token {
        /// The token's subject.
        #[arg(long)]
        sub: String,
        /// Space-separated scopes.
        #[arg(long, default_value = "")]
        scope: String,
        /// Lifetime (default issuer.ttl; at most issuer.max_ttl), e.g. "5m".
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Then encrypt the signed token (a nested JWT, A256GCM) to the
        /// [[keys]] entry with this kid: an upstream's public key
        /// (public_key_file), or one of the gateway's own decryption keys, so
        /// that the gateway accepts it.
        #[arg(long, value_name = "KID")]
        encrypt_to: Option<String>,
    },
    /// Manage the encrypted store of upstream credentials.
    Credentials {
        #[command(subcommand)]
        action: CredentialsCommand,
    },
    /// List or remove users' OAuth connections (never shows a token).
    Connections {
        #[command(subcommand)]
        action: ConnectionsCommand,
    },
    /// Check one compact JWS's signature and print its header and payload
    /// (exit 0 valid, 1 not); decrypt an encrypted token (a JWE) first with
    /// --decrypt-key.
    Verify(VerifyArgs),
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum CredentialsCommand {
    /// Create an empty store and print a new master key (once).
    Init,
    /// Store a credential; its secret is read from stdin (no echo on a terminal).
    Set {
        /// The credential's name (routes use it in `inject`).
        name: String,
        /// api_key, secret, basic, bearer or oauth2.
        #[arg(long)]
        kind: String,
        /// Inject into this header.
        #[arg(long)]
        header: Option<String>,
        /// Inject as this query parameter.
        #[arg(long)]
        query: Option<String>,
        /// Inject at `{credential}` in the route's upstream URL.
        #[arg(long)]
        path: bool,
        /// Inject as this top-level field of a JSON body.
        #[arg(long)]
        body: Option<String>,
        /// basic: the user name.
        #[arg(long)]
        username: Option<String>,
        /// oauth2: the token endpoint.
        #[arg(long)]
        token_url: Option<String>,
        /// oauth2: the client id.
        #[arg(long)]
        client_id: Option<String>,
        /// oauth2: the scope to ask for.
        #[arg(long)]
        scope: Option<String>,
        /// oauth2: an extra token-endpoint parameter, k=v (repeatable).
        #[arg(long = "param")]
        params: Vec<String>,
        /// oauth2: how the client authenticates (basic or form).
        #[arg(long)]
        client_auth: Option<String>,
        /// oauth2: read a refresh token from stdin's second line.
        #[arg(long)]
        refresh_token: bool,
    },
    /// List the credentials: name, kind, location, times; never a value.
    List,
    /// Remove a credential.
    Remove {
        /// The credential's name.
        name: String,
    },
    /// Re-encrypt the store under a new master key and print it (once).
    RotateMasterKey,
}

#[derive(Debug, Subcommand)]
enum ConnectionsCommand {
    /// List the connections: name, subject, issuer, times; never a token.
    List,
    /// Remove a subject's connection (the user must connect again).
    Remove {
        /// The [[oauth_connections]] name.
        name: String,
        /// The subject (`sub` of the user's token).
        sub: String,
    },
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("keys").required(true).args(["jwks", "key"])))]
struct VerifyArgs {
    /// A JWKS file holding the key.
    #[arg(long)]
    jwks: Option<PathBuf>,
    /// A key file: public PEM/JWK, private PEM, or the HS secret.
    #[arg(long, requires = "alg")]
    key: Option<PathBuf>,
    /// The key's algorithm (with --key).
    #[arg(long)]
    alg: Option<String>,
    /// For an encrypted TOKEN (a JWE): the key that decrypts it, a private
    /// key (PEM or JWK) or, for A256KW and dir, a file holding the base64url
    /// secret. The JWS inside is then checked with --key or --jwks.
    #[arg(long, value_name = "FILE", requires = "decrypt_alg")]
    decrypt_key: Option<PathBuf>,
    /// The decryption key's algorithm (with --decrypt-key): RSA-OAEP-256,
    /// ECDH-ES, ECDH-ES+A128KW, ECDH-ES+A256KW, A256KW or dir.
    #[arg(long, value_name = "ALG", requires = "decrypt_key")]
    decrypt_alg: Option<String>,
    /// The token: a compact JWS, or a compact JWE holding one.
    token: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(config),
        Command::Check => check(config),
        Command::Verify(args) => verify(args),
        Command::HashPassword => hash_password(),
        Command::GenApiKey => match warden::cli::gen_api_key() {
            Ok((key, line)) => {
                println!("api key (give it to the client; it is not stored): {key}");
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(err) => fail(&err),
        },
        Command::Keygen {
            alg,
            out,
            curve,
            enc,
            public_out,
            kid,
        } => {
            let options = warden::cli::KeygenOptions {
                alg: &alg,
                out: out.as_deref(),
                curve: curve.as_deref(),
                enc: enc.as_deref(),
                public_out: public_out.as_deref(),
                kid: kid.as_deref(),
            };
            match warden::cli::keygen_with(&options) {
                Ok(warden::cli::Generated::KeyFile(path)) => {
                    println!("wrote {} (mode 0600)", path.display());
                    ExitCode::SUCCESS
                }
                Ok(warden::cli::Generated::Secret(secret)) => {
                    println!("{}", &*secret);
                    ExitCode::SUCCESS
                }
                Ok(warden::cli::Generated::KeyPair(pair)) => {
                    print!("{}", pair.report());
                    ExitCode::SUCCESS
                }
                Err(err) => fail(&err),
            }
        }
        Command::Credentials { action } => {
            let (_, config) = match load(config) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            credentials(&config, action)
        }
        Command::Connections { action } => {
            let (_, config) = match load(config) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            let result = match action {
                ConnectionsCommand::List => warden::cli::connections_list(&config),
                ConnectionsCommand::Remove { name, sub } => {
                    warden::cli::connections_remove(&config, &name, &sub)
                        .map(|n| format!("removed {n} record(s) of {sub:?} at {name}\n"))
                }
            };
            match result {
                Ok(output) => {
                    print!("{output}");
                    ExitCode::SUCCESS
                }
                Err(err) => fail(&err),
            }
        }
        Command::Token {
            sub,
            scope,
            ttl,
            encrypt_to,
        } => {
            let (_, config) = match load(config) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            let token =
                warden::cli::token(&config, &sub, &scope, ttl).and_then(|jws| match &encrypt_to {
                    Some(kid) => warden::cli::encrypt_token(&config, kid, &jws),
                    None => Ok(jws),
                });
            match token {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(err) => fail(&err),
            }
        }
    }
}

/// Reads secret lines from stdin: prompted without echo on a terminal.
fn read_secrets(prompts: &[&str]) -> std::io::Result<Vec<zeroize::Zeroizing<String>>> {
    use std::io::{BufRead, IsTerminal};
    let mut lines = Vec::new();
    if std::io::stdin().is_terminal() {
        for prompt in prompts {
            let line = rpassword::prompt_password(prompt)?;
            lines.push(zeroize::Zeroizing::new(line));
        }
    } else {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        for _ in prompts {
            let mut line = zeroize::Zeroizing::new(String::new());
            input.read_line(&mut line)?;
            let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
            lines.push(zeroize::Zeroizing::new(trimmed));
        }
    }
    Ok(lines)
}

fn credentials(config: &warden::Config, action: CredentialsCommand) -> ExitCode {
    use warden::credentials::{ClientAuth, CredentialInput};
    use warden::secret::SecretString;
    let result = match action {
        CredentialsCommand::Init => warden::cli::credentials_init(config).map(|key| {
            let var = match config.credentials.as_ref().map(|c| &c.master_key) {
                Some(warden::credentials::store::MasterKeySource::Env(var)) => var.clone(),
                _ => "the master_key_file".into(),
            };
            format!(
                "created the credential store. Its master key (shown once; keep it in {var}):\n{}\n",
                &*key
            )
        }),
        CredentialsCommand::Set {
            name,
            kind,
            header,
            query,
            path,
            body,
            username,
            token_url,
            client_id,
            scope,
            params,
            client_auth,
            refresh_token,
        } => {
            let prompt = match kind.as_str() {
                "basic" => "password: ",
                "oauth2" => "client secret: ",
                _ => "secret: ",
            };
            let mut prompts = vec![prompt];
            if refresh_token {
                prompts.push("refresh token: ");
            }
            let secrets = match read_secrets(&prompts) {
                Ok(secrets) => secrets,
                Err(err) => return fail(format!("cannot read the secret: {err}")),
            };
            let mut param_map = std::collections::BTreeMap::new();
            for param in params {
                match param.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        param_map.insert(k.to_owned(), v.to_owned());
                    }
                    _ => return fail(format!("--param {param:?} is not k=v")),
                }
            }
            let client_auth = match client_auth.as_deref() {
                None => None,
                Some("basic") => Some(ClientAuth::Basic),
                Some("form") => Some(ClientAuth::Form),
                Some(other) => return fail(format!("--client-auth {other:?}: use basic or form")),
            };
            let input = CredentialInput {
                kind,
                value: secrets.first().map(|s| SecretString::new(s.as_str())),
                username,
                token_url,
                client_id,
                scope,
                refresh_token: secrets.get(1).map(|s| SecretString::new(s.as_str())),
                params: param_map,
                client_auth,
                header,
                query,
                path,
                body,
            };
            warden::cli::credentials_set(config, &name, input).map(|summary| format!("stored {summary}\n"))
        }
        CredentialsCommand::List => warden::cli::credentials_list(config),
        CredentialsCommand::Remove { name } => {
            warden::cli::credentials_remove(config, &name).map(|()| format!("removed {name}\n"))
        }
        CredentialsCommand::RotateMasterKey => warden::cli::credentials_rotate(config).map(|key| {
            format!("re-encrypted the store. The new master key (shown once; replace the old one):\n{}\n", &*key)
        }),
    };
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("warden: {message}");
    ExitCode::from(1)
}

fn hash_password() -> ExitCode {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ");
        let second = rpassword::prompt_password("again: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => zeroize::Zeroizing::new(a),
            (Ok(_), Ok(_)) => return fail("the passwords differ"),
            _ => return fail("cannot read the password"),
        }
    } else {
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_err() {
            return fail("cannot read the password from stdin");
        }
        let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
        zeroize::Zeroizing::new(trimmed)
    };
    if password.is_empty() {
        return fail("the password is empty");
    }
    match warden::auth::login::hash_password(password.as_bytes()) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(err),
    }
}

fn verify(args: VerifyArgs) -> ExitCode {
    let with = match (&args.jwks, &args.key, &args.alg) {
        (Some(jwks), _, _) => warden::cli::VerifyWith::Jwks(jwks),
        (None, Some(key), Some(alg)) => warden::cli::VerifyWith::Key(key, alg),
        _ => {
            eprintln!("warden verify: give --jwks FILE, or --key FILE with --alg ALG");
            return ExitCode::from(2);
        }
    };
    let decrypt = match (&args.decrypt_key, &args.decrypt_alg) {
        (Some(key), Some(alg)) => Some(warden::cli::DecryptWith { key, alg }),
        _ => None,
    };
    match warden::cli::verify_decrypting(&args.token, with, decrypt) {
        Ok(report) => {
            print!("{}", report.output);
            if report.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("warden verify: {err}");
            ExitCode::from(1)
        }
    }
}

fn load(config: Option<PathBuf>) -> Result<(PathBuf, Config), ExitCode> {
    load_by(config, Config::load)
}

/// `check` and `run` also require every variable and file the config names,
/// so that `check` fails wherever `run` would.
fn load_by(
    config: Option<PathBuf>,
    loader: fn(&std::path::Path) -> Result<Config, warden::config::ConfigError>,
) -> Result<(PathBuf, Config), ExitCode> {
    let path = config.unwrap_or_else(warden::config::default_path);
    match loader(&path) {
        Ok(config) => Ok((path, config)),
        Err(err) => {
            eprint!("{err}");
            Err(ExitCode::from(1))
        }
    }
}

fn check(config: Option<PathBuf>) -> ExitCode {
    match load_by(config, Config::load_with_references) {
        Ok((path, config)) => {
            println!("{}: ok ({} routes)", path.display(), config.routes.len());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(config: Option<PathBuf>) -> ExitCode {
    // The config is validated in full before any port is bound.
    let (path, config) = match load_by(config, Config::load_with_references) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    warden::telemetry::init(&config.log);
    warden::crypto::install_providers();
    // The workers ([server] workers) serve requests on runtimes of their
    // own; this one runs the admin listener, reloads, health checks and
    // the background tasks, which one thread keeps up with.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        // Listen for SIGHUP before the ports open, so an early reload
        // request cannot hit the signal's default action (ending the process).
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let options = warden::StartOptions {
            config_path: Some(path),
            ..warden::StartOptions::default()
        };
        let gateway = match Gateway::bind_with(config, options).await {
            Ok(gateway) => gateway,
            Err(err) => {
                tracing::error!(error = %err, "cannot start");
                eprintln!("warden: {err}");
                return ExitCode::from(1);
            }
        };
        match (gateway.reloader(), hangup) {
            (Some(reloader), Ok(hangup)) => {
                tokio::spawn(reload_on_hangup(reloader, hangup));
            }
            (_, Err(err)) => {
                tracing::error!(error = %err, "cannot listen for SIGHUP; reload with POST /admin/reload");
            }
            (None, Ok(_)) => {}
        }
        gateway.serve(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Reloads the config on every SIGHUP; an invalid config is logged and the
/// old one keeps serving.
async fn reload_on_hangup(
    reloader: std::sync::Arc<warden::server::generation::Reloader>,
    mut hangup: tokio::signal::unix::Signal,
) {
    while hangup.recv().await.is_some() {
        tracing::info!(signal = "SIGHUP", "reloading the config");
        // The outcome is logged by the reloader.
        let _ = reloader.reload().await;
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "stopping"),
    }
}
