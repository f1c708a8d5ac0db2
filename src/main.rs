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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run(ConfigArg),
    /// Validate a config file and print every problem in it.
    Check(ConfigArg),
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

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The config file [default: $WARDEN_CONFIG or ./gateway.toml]
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli
        .command
        .unwrap_or(Command::Run(ConfigArg { config: None }))
    {
        Command::Run(args) => run(args),
        Command::Check(args) => check(args),
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

fn load(args: &ConfigArg) -> Result<(PathBuf, Config), ExitCode> {
    let path = args
        .config
        .clone()
        .unwrap_or_else(warden::config::default_path);
    match Config::load(&path) {
        Ok(config) => Ok((path, config)),
        Err(err) => {
            eprint!("{err}");
            Err(ExitCode::from(1))
        }
    }
}

fn check(args: ConfigArg) -> ExitCode {
    match load(&args) {
        Ok((path, config)) => {
            println!("{}: ok ({} routes)", path.display(), config.routes.len());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(args: ConfigArg) -> ExitCode {
    // The config is validated in full before any port is bound.
    let (_, config) = match load(&args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    warden::telemetry::init(&config.log);
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
