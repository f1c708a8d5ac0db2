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
    Keygen {
        /// ES256, ES384, EdDSA, RS256, PS256, ..., or HS256/384/512.
        #[arg(long)]
        alg: String,
        /// Where to write the key (never over an existing file).
        #[arg(long)]
        out: Option<PathBuf>,
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
    },
    /// Check one compact JWS's signature and print its header and payload
    /// (exit 0 valid, 1 not).
    Verify(VerifyArgs),
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
    /// The token.
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
        Command::Keygen { alg, out } => match warden::cli::keygen(&alg, out.as_deref()) {
            Ok(warden::cli::Generated::KeyFile(path)) => {
                println!("wrote {} (mode 0600)", path.display());
                ExitCode::SUCCESS
            }
            Ok(warden::cli::Generated::Secret(secret)) => {
                println!("{}", &*secret);
                ExitCode::SUCCESS
            }
            Err(err) => fail(&err),
        },
        Command::Token { sub, scope, ttl } => {
            let (_, config) = match load(config) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            match warden::cli::token(&config, &sub, &scope, ttl) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(err) => fail(&err),
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
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
        Err(err) => fail(&err),
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
    match warden::cli::verify(&args.token, with) {
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
    let path = config.unwrap_or_else(warden::config::default_path);
    match Config::load(&path) {
        Ok(config) => Ok((path, config)),
        Err(err) => {
            eprint!("{err}");
            Err(ExitCode::from(1))
        }
    }
}

fn check(config: Option<PathBuf>) -> ExitCode {
    match load(config) {
        Ok((path, config)) => {
            println!("{}: ok ({} routes)", path.display(), config.routes.len());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(config: Option<PathBuf>) -> ExitCode {
    // The config is validated in full before any port is bound.
    let (_, config) = match load(config) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    warden::telemetry::init(&config.log);
    warden::install_crypto_providers();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
        let gateway = match Gateway::bind(config, prometheus::Registry::new()).await {
            Ok(gateway) => gateway,
            Err(err) => {
                tracing::error!(error = %err, "cannot start");
                eprintln!("warden: {err}");
                return ExitCode::from(1);
            }
        };
        gateway.serve(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
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
    // SIGHUP would end the process by default; until config reload exists,
    // it is logged and ignored, so a routine `kill -HUP` does not stop serving.
    let mut hangup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = terminate.recv() => {
                tracing::info!(signal = "SIGTERM", "stopping");
                return;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!(signal = "SIGINT", "stopping");
                return;
            }
            Some(()) = async { hangup.as_mut()?.recv().await } => {
                tracing::warn!(
                    signal = "SIGHUP",
                    "config reload is not supported by this version; restart to apply a new config"
                );
            }
        }
    }
}
