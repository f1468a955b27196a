//! The command line of DESIGN.md, as clap derive types. Parsing only: `main.rs`
//! dispatches, the library does the work.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "dropguard",
    version,
    about = "Preserves the data a destructive migration drops, watches for the fallout, restores it verified."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "DROPGUARD_CONFIG",
        default_value = "dropguard.toml"
    )]
    pub config: PathBuf,

    /// Log format on stderr. Filter with DROPGUARD_LOG (e.g. "info", "dropguard=debug").
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: HTTP server, sources, detection, alerts.
    Run,
    /// Show the plan: pending destructive and breaking operations, with row counts.
    Scan {
        #[arg(long)]
        json: bool,
        /// Every destructive operation in the history, without a database.
        #[arg(long)]
        all: bool,
        /// Exit 1 when a migration file could not be analysed.
        #[arg(long)]
        strict: bool,
    },
    /// Is anything still reading or writing what the plan drops? Exit 0 only
    /// when every dropped table and column is unused; 1 when one is in use; 3
    /// when one cannot be told (no statistics, a missing privilege).
    Gate {
        /// How long to sample the database's usage statistics (and the log files).
        #[arg(long, default_value = "5m", value_parser = crate::commands::gate::parse_window)]
        window: std::time::Duration,
        #[arg(long)]
        json: bool,
    },
    /// Preserve the at-risk data of the plan (or of one migration, or an ad-hoc table).
    Preserve {
        /// Only this migration, as APP.NAME.
        #[arg(long)]
        migration: Option<String>,
        /// Ad hoc: preserve this table.
        #[arg(long, conflicts_with = "migration")]
        table: Option<String>,
        /// Ad hoc: only these columns of --table (comma-separated).
        #[arg(long, requires = "table", value_delimiter = ',')]
        columns: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List, show and verify snapshots in the vault.
    Snapshots {
        #[command(subcommand)]
        action: SnapshotsAction,
    },
    /// Write a snapshot's data back after the schema was rolled back, and verify it.
    Restore {
        #[arg(long)]
        snapshot: String,
        /// Show what would be written, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Overwrite rows that changed since the snapshot.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run the detector over existing log files, offline.
    Replay {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Run the detector as if migration APP.NAME had been applied at TIME
        /// (RFC 3339); repeatable. Needs the configuration's migrations.
        #[arg(long = "deploy", value_name = "APP.NAME@TIME", value_parser = crate::commands::replay::parse_deploy)]
        deploys: Vec<(String, std::time::SystemTime)>,
    },
    /// List, show, approve or dismiss incidents.
    Incidents {
        #[command(subcommand)]
        action: IncidentsAction,
    },
    /// Validate the configuration and print it normalized, secrets masked.
    CheckConfig,
    /// The whole loop on the embedded default, self-contained.
    Demo {
        /// Keep the demo's files here instead of a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotsAction {
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    Verify {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum IncidentsAction {
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve the restore (restore.mode = "approve"): the daemon runs the
    /// rollback command, then restores and verifies the data; this follows the
    /// steps until it is done. After a failure it resumes at the failed step.
    Approve {
        id: String,
        /// Overwrite rows that changed since the snapshot.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Close an incident without a restore, through the running daemon's API
    /// (needs server.api_token).
    Dismiss {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// The command's name as typed, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Run => "run",
            Command::Scan { .. } => "scan",
            Command::Gate { .. } => "gate",
            Command::Preserve { .. } => "preserve",
            Command::Snapshots { .. } => "snapshots",
            Command::Restore { .. } => "restore",
            Command::Replay { .. } => "replay",
            Command::Incidents { .. } => "incidents",
            Command::CheckConfig => "check-config",
            Command::Demo { .. } => "demo",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
