//! The incident: what the detector concluded about one deploy, with its evidence.
//! Plain data; it is journaled, served by the API and printed by the CLI, so its
//! JSON shape is part of the contract users script against.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::DeployOrigin;

/// open → alerted → restoring → restored, or dismissed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Open,
    Alerted,
    Restoring,
    Restored,
    Dismissed,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Open,
        State::Alerted,
        State::Restoring,
        State::Restored,
        State::Dismissed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Alerted => "alerted",
            State::Restoring => "restoring",
            State::Restored => "restored",
            State::Dismissed => "dismissed",
        }
    }
}

/// What made the incident open (or later grow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `detect.min_errors` errors naming a dropped object within `detect.window`.
    Errors,
    /// The error rate passed `detect.spike_factor` × the pre-deploy baseline.
    Spike,
    /// A destructive migration was applied without a complete snapshot.
    Unpreserved,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Errors => "errors",
            Trigger::Spike => "spike",
            Trigger::Unpreserved => "unpreserved",
        }
    }
}

/// How an object was touched by the deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Dropped (or truncated): its data is gone from the database.
    Dropped,
    /// Renamed: no data lost, but old code naming it breaks.
    Renamed,
}

/// A table or some of its columns that a deploy's migration dropped or renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedObject {
    pub table: String,
    /// Empty for the whole table.
    #[serde(default)]
    pub columns: Vec<String>,
    pub change: Change,
    /// The migration that dropped it, `app.name`.
    pub migration: String,
}

/// The snapshot that preserved a migration's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub id: String,
    pub rows: u64,
}

/// One migration of the deploy, with what it dropped and how to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedMigration {
    /// `app.name`.
    pub migration: String,
    /// The rollback target (`manage.py migrate <app> <previous>`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// `restore.rollback_command` filled in for this migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_command: Option<String>,
    /// True when it deletes stored data (drops or truncates).
    pub destructive: bool,
    /// The complete snapshot of its data at risk, when one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRef>,
    /// Dropped and renamed objects.
    #[serde(default)]
    pub objects: Vec<DroppedObject>,
    /// Its dropped objects that the usage gate last saw in use before it was
    /// applied: the runbook's "nothing touches them any more" did not hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_use: Vec<InUseObject>,
}

impl DeployedMigration {
    /// A migration that dropped and renamed nothing (most are).
    pub fn plain(name: &str) -> Self {
        Self {
            migration: name.to_string(),
            previous: None,
            rollback_command: None,
            destructive: false,
            snapshot: None,
            objects: Vec::new(),
            in_use: Vec::new(),
        }
    }
}

/// A dropped object still in use when its migration was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InUseObject {
    pub table: String,
    /// Absent for a whole table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// When the usage check that saw it ended.
    pub checked_at: DateTime<Utc>,
    /// What it saw: calls and a sample statement, or log lines.
    pub evidence: String,
}

/// The deploy an incident belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployInfo {
    pub at: DateTime<Utc>,
    /// Every way this deploy was seen (the poller, the API, Kafka).
    pub origins: Vec<DeployOrigin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    pub migrations: Vec<DeployedMigration>,
    /// Migrations that dropped and renamed nothing, beyond the first thousand
    /// of them: counted, not kept by name.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_migrations: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Errors tied to one dropped object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEvidence {
    pub table: String,
    /// The column the errors name; absent for errors naming the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub change: Change,
    pub migration: String,
    pub errors: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The sources the errors came from.
    pub sources: Vec<String>,
}

/// The error rate against the pre-deploy baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateEvidence {
    /// What the rate is of: `errors in logs`, or a metric series.
    pub series: String,
    /// Errors per second in the last `detect.window`, at its highest so far.
    pub per_second: f64,
    /// Errors per second before the deploy.
    pub baseline_per_second: f64,
}

/// One error line, truncated, secrets masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub source: String,
    pub text: String,
}

/// One step of the incident's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at: DateTime<Utc>,
    pub state: State,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// A ULID: sorts by opening time, safe as a file name.
    pub id: String,
    pub state: State,
    pub environment: String,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// One line for humans: what happened, to what, after which migration.
    pub headline: String,
    /// What opened it first, then anything that held later.
    pub triggers: Vec<Trigger>,
    pub deploy: DeployInfo,
    /// Errors naming a dropped object, over all objects.
    pub errors: u64,
    /// Of those, the errors read from a database driver's traceback: evidence
    /// that no client's text can forge, and the only evidence `restore.mode =
    /// "auto"` acts on ([`crate::detect::errors`]).
    #[serde(default)]
    pub traceback_errors: u64,
    pub objects: Vec<ObjectEvidence>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rates: Vec<RateEvidence>,
    pub samples: Vec<Sample>,
    pub history: Vec<Transition>,
    /// The restore run by dropguard (modes `approve` and `auto`), step by step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreRun>,
}

/// A restore dropguard runs: the schema rollback, then the data, each step
/// journaled before the next begins, so a restart resumes at the first step not
/// done and never repeats a finished one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRun {
    pub requested_at: DateTime<Utc>,
    /// Who asked: `api` (an approval), `auto` (`restore.mode = "auto"`).
    pub requested_by: String,
    /// Rows changed since the snapshot are overwritten.
    pub force: bool,
    pub status: RunStatus,
    pub steps: Vec<Step>,
    /// Why it stopped, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Failed,
    Done,
}

/// One step of a restore run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    #[serde(flatten)]
    pub action: StepAction,
    pub status: StepStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// What it did or why it failed, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The rollback command's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandRun>,
    /// A restored object's figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<RestoredRows>,
}

impl Step {
    pub fn pending(action: StepAction) -> Self {
        Self {
            action,
            status: StepStatus::Pending,
            started_at: None,
            finished_at: None,
            detail: None,
            command: None,
            rows: None,
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum StepAction {
    /// `restore.rollback_command` for one app, back to before its first
    /// destructive migration of the deploy.
    Rollback {
        /// The migration undone, `app.name`.
        migration: String,
        /// The command as configured, placeholders filled (for people; it runs
        /// as an argv, without a shell).
        argv: Vec<String>,
    },
    /// The snapshot's migration is rolled back and its tables and columns exist.
    SchemaCheck { snapshot: String },
    /// One object of a snapshot written back.
    Restore {
        snapshot: String,
        /// Its index in the snapshot's manifest.
        object: usize,
        table: String,
        /// Empty for a whole table.
        #[serde(default)]
        columns: Vec<String>,
    },
    /// Every object restored is proven equal to its snapshot.
    Verification,
    /// The receivers are told the incident is restored.
    Notification,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Done,
    Failed,
}

/// How the rollback command ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRun {
    /// The exit code; absent when it was killed (timeout) or did not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub seconds: f64,
    /// The end of its standard output and error, secrets masked.
    pub output: String,
}

/// A restored object's figures, as `dropguard restore` reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredRows {
    pub snapshot_rows: u64,
    pub written: u64,
    pub unchanged: u64,
    pub conflicts: u64,
    pub missing: u64,
    /// `checksum`, `compared`, or `not_run`.
    pub verification: String,
}

impl Incident {
    /// The destructive migrations of the deploy: what a rollback undoes.
    pub fn destructive(&self) -> impl Iterator<Item = &DeployedMigration> {
        self.deploy.migrations.iter().filter(|m| m.destructive)
    }
}
