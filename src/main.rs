//! The `dropguard` binary: parse the command line, start logging, call the library,
//! turn the outcome into an exit status.

use std::process::ExitCode;

use clap::Parser;
use dropguard::cli::{Cli, Command, IncidentsAction, LogFormat, SnapshotsAction};
use dropguard::commands;
use dropguard::config::{self, EXIT_CONFIG};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo narrates on stdout; its daemon's log would drown it.
    let default_level = match cli.command {
        Command::Demo { .. } => "error",
        _ => "info",
    };
    init_logging(cli.log_format, default_level);
    match cli.command {
        Command::CheckConfig => with_config(&cli.config, |config| {
            print!("{}", config.to_masked_toml());
            // A TOML comment, so the output stays a configuration.
            let access = dropguard::http::api::access_policy(
                config.server.listen,
                config.server.api_token.is_some(),
            );
            println!("\n# API access: {access}");
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
        Command::Gate { window, json } => with_config(&cli.config, |config| {
            let args = commands::gate::Args { window, json };
            block_on(commands::gate::run(
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
        Command::Incidents { action } => {
            let (action, json) = match action {
                IncidentsAction::List { json } => (commands::incidents::Action::List, json),
                IncidentsAction::Show { id, json } => (commands::incidents::Action::Show(id), json),
                IncidentsAction::Approve { id, force, json } => {
                    return with_config(&cli.config, |config| {
                        block_on(commands::incidents::approve(
                            &config,
                            &id,
                            force,
                            json,
                            &mut std::io::stdout().lock(),
                        ))
                    });
                }
                IncidentsAction::Dismiss { id, json } => {
                    return with_config(&cli.config, |config| {
                        block_on(commands::incidents::dismiss(
                            &config,
                            &id,
                            json,
                            &mut std::io::stdout().lock(),
                        ))
                    });
                }
            };
            with_config(&cli.config, |config| {
                block_on(commands::incidents::run(
                    &config,
                    &action,
                    json,
                    &mut std::io::stdout().lock(),
                ))
            })
        }
        Command::Replay {
            files,
            json,
            deploys,
        } => {
            // The configured file source's settings when there is a config;
            // the defaults otherwise: replay needs no database.
            let config = if cli.config.exists() {
                match config::load(&cli.config) {
                    Ok(config) => Some(config),
                    Err(err) => return config_failure(&err),
                }
            } else {
                None
            };
            let settings = config
                .as_ref()
                .and_then(|c| c.logs.file.first().cloned())
                .unwrap_or_else(config::FileLogConfig::defaults);
            let args = commands::replay::Args {
                files,
                json,
                patterns: config
                    .as_ref()
                    .map(|c| c.detect.patterns.clone())
                    .unwrap_or_default(),
                deploys,
                config,
            };
            commands::replay::run(&settings, &args, &mut std::io::stdout().lock())
                .map_or_else(|err| failure(&err), ExitCode::from)
        }
        Command::Demo { dir } => {
            let args = dropguard::demo::Args { dir };
            block_on(dropguard::demo::run(&args, &mut std::io::stdout().lock()))
                .map_or_else(|err| failure(&err), ExitCode::from)
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

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROPGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
