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
    /// Is anything still reading or writing what the plan drops?
    Gate {
        /// How long to sample the database's usage counters.
        #[arg(long, default_value = "5m")]
        window: String,
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
    Approve {
        id: String,
    },
    Dismiss {
        id: String,
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
