//! The `dropguard` binary: parse the command line, start logging, call the library,
//! turn the outcome into an exit status.

use std::process::ExitCode;

use clap::Parser;
use dropguard::cli::{Cli, Command, LogFormat};
use dropguard::config::{self, EXIT_CONFIG};

/// A command whose work a later release brings.
const EXIT_NOT_IMPLEMENTED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig => match config::load(&cli.config) {
            Ok(config) => {
                print!("{}", config.to_masked_toml());
                ExitCode::SUCCESS
            }
            Err(err) => config_failure(&err),
        },
        Command::Run => {
            // The whole configuration is checked before any port is bound.
            let config = match config::load(&cli.config) {
                Ok(config) => config,
                Err(err) => return config_failure(&err),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(err) => {
                    return failure(&anyhow::Error::new(err).context("starting the async runtime"));
                }
            };
            match runtime.block_on(dropguard::app::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => failure(&err),
            }
        }
        other => {
            eprintln!("dropguard {}: not implemented yet", other.name());
            ExitCode::from(EXIT_NOT_IMPLEMENTED)
        }
    }
}

fn config_failure(err: &config::ConfigError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(EXIT_CONFIG as u8)
}

/// Prints the error chain once, outermost first.
fn failure(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::FAILURE
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROPGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
