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
    tokio::select! {
        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "stopping"),
    }
}
