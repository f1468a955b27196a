//! The `dropguard` binary: parse the command line, start logging, call the library,
//! turn the outcome into an exit status.

use std::process::ExitCode;

use clap::Parser;
use dropguard::cli::{Cli, Command, LogFormat, SnapshotsAction};
use dropguard::commands;
use dropguard::config::{self, EXIT_CONFIG};

/// A command whose work a later release brings.
const EXIT_NOT_IMPLEMENTED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig => with_config(&cli.config, |config| {
            print!("{}", config.to_masked_toml());
            Ok(0)
        }),
        // The whole configuration is checked before any port is bound.
        Command::Run => with_config(&cli.config, |config| {
            block_on(dropguard::app::run(config)).map(|()| 0)
        }),
        Command::Scan { json, all, strict } => with_config(&cli.config, |config| {
            let args = commands::scan::Args { json, all, strict };
            block_on(commands::scan::run(
                &config,
                &args,
                &mut std::io::stdout().lock(),
            ))
        }),
        Command::Preserve {
            migration,
            table,
            columns,
            json,
        } => with_config(&cli.config, |config| {
            let args = commands::preserve::Args {
                migration,
                table,
                columns,
                json,
            };
            block_on(commands::preserve::run(
                &config,
                &args,
                &mut std::io::stdout().lock(),
            ))
        }),
        Command::Restore {
            snapshot,
            dry_run,
            force,
            json,
        } => with_config(&cli.config, |config| {
            let args = commands::restore::Args {
                snapshot,
                dry_run,
                force,
                json,
            };
            block_on(commands::restore::run(
                &config,
                &args,
                &mut std::io::stdout().lock(),
            ))
        }),
        Command::Snapshots { action } => with_config(&cli.config, |config| {
            let (action, json) = match action {
                SnapshotsAction::List { json } => (commands::snapshots::Action::List, json),
                SnapshotsAction::Show { id, json } => (commands::snapshots::Action::Show(id), json),
                SnapshotsAction::Verify { id, json } => {
                    (commands::snapshots::Action::Verify(id), json)
                }
            };
            block_on(commands::snapshots::run(
                &config,
                &action,
                json,
                &mut std::io::stdout().lock(),
            ))
        }),
        other => {
            eprintln!("dropguard {}: not implemented yet", other.name());
            ExitCode::from(EXIT_NOT_IMPLEMENTED)
        }
    }
}

/// Runs a command's future on a fresh multi-threaded runtime.
fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|err| anyhow::Error::new(err).context("starting the async runtime"))?;
    runtime.block_on(future)
}

/// Loads the configuration (exit 64 on any problem), then runs `command` with it.
fn with_config(
    path: &std::path::Path,
    command: impl FnOnce(config::Config) -> anyhow::Result<u8>,
) -> ExitCode {
    match config::load(path) {
        Ok(config) => command(config).map_or_else(|err| failure(&err), ExitCode::from),
        Err(err) => config_failure(&err),
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
