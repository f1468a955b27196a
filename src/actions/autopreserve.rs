//! Automatic preservation: as soon as a destructive migration is pending — at
//! start, and whenever the migration files change (a release's files copied in
//! before `migrate`) — the data it puts at risk is preserved, once.
//!
//! Each pass computes the pending plan and, for every migration with something
//! to preserve and no complete snapshot in the vault yet, takes one through
//! [`preserve_once`] (under the migration's advisory lock, so of several
//! instances watching one database one preserves). A failure is logged and the
//! pass goes on with the other migrations; it is retried at the next change or
//! after [`RETRY_AFTER`]. This module never decides whether to run: the daemon
//! spawns it only when `preserve.auto` is on, and it returns at once otherwise.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::preserve::{self, preserve_once};
use crate::config::Config;
use crate::db::Adapter;
use crate::plan;
use crate::telemetry::VaultStats;
use crate::vault::{Remote, Vault};

/// After a pass with a failure, the next one comes this long after at the latest.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The vault snapshots go into: opened, or one that could not be opened at
/// start (a read-only or missing filesystem), opened again at every pass until
/// it opens. Until then every migration with data at risk fails to be preserved
/// and is counted unprotected, rather than silently skipped, and `component`
/// (not ready meanwhile) turns ready again once it opens.
pub enum Target {
    Open(Vault),
    Closed {
        dir: std::path::PathBuf,
        component: crate::health::ComponentHandle,
    },
}

impl From<Vault> for Target {
    fn from(vault: Vault) -> Self {
        Target::Open(vault)
    }
}

/// What the passes found, for whoever wants to show it (`/readyz`, the API).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Status {
    /// Passes over the plan finished since start; 0 until the first one ends.
    pub passes: u64,
    /// When the last pass ended.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "rfc3339")]
    pub checked_at: Option<SystemTime>,
    /// Why the last pass could not compute the plan (the database is down, the
    /// migration folder unreadable); the migrations below are then the last known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_error: Option<String>,
    /// Each pending migration with data to preserve, by `app.name`.
    pub migrations: BTreeMap<String, MigrationState>,
}

/// Where one pending migration's data stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MigrationState {
    /// A complete snapshot of it is in the vault.
    Preserved { snapshot: String },
    /// The last attempt failed; retried at the next change or after [`RETRY_AFTER`].
    Failed { error: String },
}

/// Where automatic preservation reports: each pass's result, and the metrics.
pub struct Reports {
    pub status: watch::Sender<Status>,
    pub stats: VaultStats,
}

/// Preserves the data at risk of every pending migration that has no complete
/// snapshot yet: once at start, then after each signal on `changed` (the
/// daemon connects it to `sources::deploys::watch_migrations`), and
/// [`RETRY_AFTER`] after a pass with a failure. Publishes each pass's result on `status`. Runs until
/// `shutdown`; a snapshot being written then is abandoned (the vault never
/// lists it) and taken again at the next start.
///
/// With `config.preserve.auto` off it returns at once, doing nothing.
pub async fn run(
    config: Config,
    db: Arc<dyn Adapter>,
    vault: impl Into<Target>,
    remote: Option<Remote>,
    mut changed: mpsc::Receiver<()>,
    Reports { status, stats }: Reports,
    shutdown: CancellationToken,
) {
    if !config.preserve.auto {
        tracing::info!("preserve.auto is off: pending migrations are not preserved automatically");
        return;
    }
    tracing::info!("preserving pending destructive migrations automatically");
    let (vault, vault_dir, waiting) = match vault.into() {
        Target::Open(vault) => {
            let dir = vault.path().to_owned();
            (Some(vault), dir, None)
        }
        Target::Closed { dir, component } => (None, dir, Some(component)),
    };
    let mut passer = Passer {
        config: &config,
        db: db.as_ref(),
        vault,
        vault_dir,
        waiting,
        remote: remote.as_ref(),
        noted: HashSet::new(),
        failures: HashMap::new(),
        stats,
    };
    let mut changes_open = true;
    loop {
        let outcome = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            outcome = passer.pass() => outcome,
        };
        let retry_at = outcome.failed.then(|| Instant::now() + RETRY_AFTER);
        status.send_modify(|status| {
            status.passes += 1;
            status.checked_at = Some(SystemTime::now());
            status.plan_error = outcome.plan_error;
            if let Some(migrations) = outcome.migrations {
                status.migrations = migrations;
            }
        });
        // Wait for a change, or for the retry.
        let go = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break false,
                got = changed.recv(), if changes_open => match got {
                    Some(()) => {
                        // Signals queued during a long pass are covered by the next one.
                        while changed.try_recv().is_ok() {}
                        break true;
                    }
                    None => changes_open = false,
                },
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => break true,
            }
        };
        if !go {
            break;
        }
    }
    tracing::info!("automatic preservation stopped");
}

/// What one pass found.
struct Outcome {
    plan_error: Option<String>,
    /// `None` when the plan could not be computed.
    migrations: Option<BTreeMap<String, MigrationState>>,
    /// Something is to be retried.
    failed: bool,
}

struct Passer<'a> {
    config: &'a Config,
    db: &'a dyn Adapter,
    /// `None` until the vault at `vault_dir` could be opened.
    vault: Option<Vault>,
    vault_dir: std::path::PathBuf,
    /// The readiness component that says the vault cannot be opened, until it can.
    waiting: Option<crate::health::ComponentHandle>,
    remote: Option<&'a Remote>,
    /// Notes and problems already logged: each is logged once, not every pass.
    noted: HashSet<String>,
    /// The last error of each failing migration (or of the plan, under ""), so a
    /// lasting failure is logged as an error once and then quietly retried.
    failures: HashMap<String, String>,
    stats: VaultStats,
}

impl Passer<'_> {
    async fn pass(&mut self) -> Outcome {
        let plan = match plan::pending(self.config, self.db).await {
            Ok(plan) => plan,
            Err(err) => {
                let error = err.to_string();
                self.failed("", &error, "cannot compute the pending plan; retrying");
                return Outcome {
                    plan_error: Some(error),
                    migrations: None,
                    failed: true,
                };
            }
        };
        self.failures.remove("");
        for problem in &plan.problems {
            let text = format!(
                "{}:{}: {}",
                problem.file.display(),
                problem.line,
                problem.message
            );
            if self.noted.insert(text.clone()) {
                tracing::warn!(problem = %text, "migration file not analysed: what it drops is not preserved automatically");
            }
        }
        let (requests, notes) = preserve::plan_requests(&plan, None);
        for note in notes {
            if self.noted.insert(note.clone()) {
                tracing::warn!(note = %note, "not preserved automatically");
            }
        }
        let mut states = BTreeMap::new();
        let mut failed = false;
        let mut fetched = false;
        if self.vault.is_none() {
            match Vault::open(&self.vault_dir) {
                Ok(vault) => {
                    tracing::info!(vault = %self.vault_dir.display(), "the vault opens again");
                    if let Some(component) = self.waiting.take() {
                        component.ready();
                    }
                    self.vault = Some(vault);
                }
                Err(err) => {
                    let error = format!("cannot open the vault: {err}");
                    for migration in requests.iter().filter_map(|r| r.migration.clone()) {
                        self.stats.snapshots.with_label_values(&["failed"]).inc();
                        self.failed(
                            &migration,
                            &error,
                            "automatic preservation failed; retrying at the next change of the migration files or in 30 s",
                        );
                        states.insert(
                            migration,
                            MigrationState::Failed {
                                error: error.clone(),
                            },
                        );
                    }
                    return self.outcome(states, true);
                }
            }
        }
        let Some(vault) = self.vault.clone() else {
            return self.outcome(states, false);
        };
        for request in &requests {
            let Some(migration) = request.migration.clone() else {
                continue;
            };
            let mut existing = self.existing(&vault, &migration).await;
            // Another machine's instance may have taken it earlier: look in the
            // mirror once per pass, before taking a second one.
            if matches!(existing, Ok(None))
                && let Some(remote) = self.remote
                && !fetched
            {
                fetched = true;
                if let Err(err) = remote.fetch_missing(&vault).await {
                    tracing::warn!(error = %err, "cannot fetch snapshots from the vault's object store");
                }
                existing = self.existing(&vault, &migration).await;
            }
            let state = match existing {
                Ok(Some(snapshot)) => {
                    self.failures.remove(&migration);
                    MigrationState::Preserved { snapshot }
                }
                Err(error) => {
                    self.failed(&migration, &error, "cannot look up its snapshot; retrying");
                    failed = true;
                    MigrationState::Failed { error }
                }
                Ok(None) => match preserve_once(self.db, &vault, self.remote, request).await {
                    Ok(preserved) => {
                        self.failures.remove(&migration);
                        if preserved.reused {
                            self.stats.snapshots.with_label_values(&["reused"]).inc();
                        } else {
                            self.stats.snapshots.with_label_values(&["complete"]).inc();
                            self.stats.rows.inc_by(preserved.rows);
                            self.stats.bytes.inc_by(preserved.compressed_bytes);
                            self.stats.seconds.observe(preserved.seconds);
                        }
                        tracing::info!(
                            migration = %migration,
                            snapshot = %preserved.id,
                            rows = preserved.rows,
                            seconds = preserved.seconds,
                            by_another_instance = preserved.reused,
                            "data at risk preserved before migrate"
                        );
                        MigrationState::Preserved {
                            snapshot: preserved.id,
                        }
                    }
                    Err(err) => {
                        self.stats.snapshots.with_label_values(&["failed"]).inc();
                        let error = err.to_string();
                        self.failed(
                            &migration,
                            &error,
                            "automatic preservation failed; retrying at the next change of the migration files or in 30 s",
                        );
                        failed = true;
                        MigrationState::Failed { error }
                    }
                },
            };
            states.insert(migration, state);
        }
        self.outcome(states, failed)
    }

    /// A pass's outcome; publishes how many migrations are unprotected.
    fn outcome(&self, states: BTreeMap<String, MigrationState>, failed: bool) -> Outcome {
        let unprotected = states
            .values()
            .filter(|s| matches!(s, MigrationState::Failed { .. }))
            .count();
        self.stats
            .unprotected
            .set(i64::try_from(unprotected).unwrap_or(i64::MAX));
        Outcome {
            plan_error: None,
            migrations: Some(states),
            failed,
        }
    }

    /// The id of the complete snapshot of `migration` in the local vault, when
    /// it still holds what the tables hold: a snapshot whose row counts no
    /// longer match (rows written after it, say after a rollback, a restore and
    /// the same migration shipped again) is not a preservation of today's data,
    /// and a new one is taken.
    async fn existing(&self, vault: &Vault, migration: &str) -> Result<Option<String>, String> {
        let Some(manifest) = vault
            .find_for_migration(migration)
            .map_err(|err| err.to_string())?
        else {
            return Ok(None);
        };
        for object in &manifest.objects {
            let rows = self
                .db
                .count_rows(&object.table)
                .await
                .map_err(|err| err.to_string())?;
            if rows != object.rows {
                tracing::info!(
                    migration,
                    snapshot = %manifest.id,
                    table = %object.table,
                    snapshot_rows = object.rows,
                    rows,
                    "the snapshot no longer matches the table; preserving again"
                );
                return Ok(None);
            }
        }
        Ok(Some(manifest.id.to_string()))
    }

    /// Logs a failure as an error when it is new, quietly when it repeats.
    fn failed(&mut self, migration: &str, error: &str, message: &str) {
        let repeated = self
            .failures
            .get(migration)
            .is_some_and(|last| last == error);
        if repeated {
            tracing::debug!(migration, error, "{message}");
        } else {
            tracing::error!(migration, error, "{message}");
            self.failures
                .insert(migration.to_string(), error.to_string());
        }
    }
}

/// RFC 3339 UTC with milliseconds, as times are shown elsewhere.
fn rfc3339<S: serde::Serializer>(time: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => s.serialize_str(&humantime::format_rfc3339_millis(*time).to_string()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serializes_for_an_api() {
        let mut status = Status {
            passes: 2,
            checked_at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_623_758_250)),
            plan_error: None,
            migrations: BTreeMap::new(),
        };
        status.migrations.insert(
            "catalog.0016_remove_product_brand".into(),
            MigrationState::Preserved {
                snapshot: "01JD0000000000000000000000".into(),
            },
        );
        status.migrations.insert(
            "orders.0004_remove_order_sales_rep".into(),
            MigrationState::Failed {
                error: "table orders_order has no primary key".into(),
            },
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["checked_at"], "2026-11-25T16:22:38.250Z");
        assert!(json.get("plan_error").is_none());
        assert_eq!(
            json["migrations"]["catalog.0016_remove_product_brand"],
            serde_json::json!({"state": "preserved", "snapshot": "01JD0000000000000000000000"})
        );
        assert_eq!(
            json["migrations"]["orders.0004_remove_order_sales_rep"]["state"],
            "failed"
        );
    }
}
