//! Preservation: stream the data at risk out of the database into one vault
//! snapshot.
//!
//! The database side runs async; the vault's file writes run on a blocking thread
//! fed through a bounded channel of row batches, so memory stays flat whatever the
//! table size and the runtime is never blocked on disk. A failure anywhere drops
//! the snapshot writer, which leaves nothing listed.

use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::db::{Adapter, DbError, TableInfo};
use crate::plan::Plan;
pub use crate::plan::Target;
use crate::vault::{
    DatabaseInfo, ObjectKind, ObjectSpec, Reason, Remote, SnapshotMeta, SnapshotSummary, Value,
    Vault, VaultError,
};

/// Rows handed to the writer thread at a time, and batches in flight: bounds memory.
const BATCH_ROWS: usize = 1024;
const BATCHES_IN_FLIGHT: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PreserveError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(
        "table {table} does not exist in the database; check the name (dropguard scan lists the plan's tables)"
    )]
    NoSuchTable { table: String },
    #[error(
        "table {table} has no primary key: its column values could not be put back on their rows; preserve the whole table instead (omit --columns)"
    )]
    NoKey { table: String },
    #[error("vault object store: {0}")]
    Remote(#[from] crate::vault::RemoteError),
    #[error("nothing to preserve")]
    Empty,
    #[error("the vault writer stopped unexpectedly: {0}")]
    Writer(String),
}

/// What to preserve, and why.
#[derive(Debug, Clone)]
pub struct Request {
    /// `app.name` for a plan's migration; `None` for an ad-hoc request.
    pub migration: Option<String>,
    /// The schema rollback to run before restoring this snapshot, when known.
    pub rollback_command: Option<String>,
    pub reason: Reason,
    pub environment: String,
    pub targets: Vec<Target>,
}

/// A snapshot taken, as commands report it.
#[derive(Debug, Clone, Serialize)]
pub struct Preserved {
    pub id: String,
    pub migration: Option<String>,
    /// Another instance completed this snapshot while this one waited for the lock.
    pub reused: bool,
    pub objects: Vec<PreservedObject>,
    pub rows: u64,
    pub compressed_bytes: u64,
    pub seconds: f64,
}

impl Preserved {
    fn from_manifest(manifest: &crate::vault::Manifest, reused: bool, seconds: f64) -> Self {
        Self {
            id: manifest.id.to_string(),
            migration: manifest.migration.clone(),
            reused,
            objects: manifest
                .objects
                .iter()
                .map(|o| PreservedObject {
                    table: o.table.clone(),
                    columns: o.columns.clone(),
                    rows: o.rows,
                })
                .collect(),
            rows: manifest.objects.iter().map(|o| o.rows).sum(),
            compressed_bytes: manifest.objects.iter().map(|o| o.compressed_bytes).sum(),
            seconds,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PreservedObject {
    pub table: String,
    pub columns: Vec<String>,
    pub rows: u64,
}

/// The requests that preserve what the plan's migrations destroy: one per
/// migration with anything to preserve, in plan order (only `only`, an
/// `app.name`, when given), each a [`Reason::Plan`] snapshot carrying the
/// migration's rollback command. With them, a note per operation whose data
/// cannot be preserved (opaque code, a table not in the database yet),
/// prefixed with its migration.
pub fn plan_requests(plan: &Plan, only: Option<&str>) -> (Vec<Request>, Vec<String>) {
    let mut requests = Vec::new();
    let mut notes = Vec::new();
    for migration in &plan.migrations {
        if only.is_some_and(|wanted| wanted != migration.migration) {
            continue;
        }
        let (targets, skipped) = migration.targets();
        notes.extend(
            skipped
                .into_iter()
                .map(|n| format!("{}: {n}", migration.migration)),
        );
        if targets.is_empty() {
            continue;
        }
        requests.push(Request {
            migration: Some(migration.migration.clone()),
            rollback_command: migration.rollback_command.clone(),
            reason: Reason::Plan,
            environment: plan.environment.clone(),
            targets,
        });
    }
    (requests, notes)
}

/// The advisory lock under which a migration is preserved or restored, so that
/// of several instances watching one database, one does it.
pub fn lock_name(migration: Option<&str>, fallback: &str) -> String {
    match migration {
        Some(migration) => format!("dropguard:migration:{migration}"),
        None => format!("dropguard:ad-hoc:{fallback}"),
    }
}

/// [`preserve`] under the migration's advisory lock. When another instance
/// completed a snapshot of the same migration while this one waited, that
/// snapshot is reported (`reused`) instead of taking a second one.
pub async fn preserve_once(
    db: &dyn Adapter,
    vault: &Vault,
    remote: Option<&Remote>,
    request: &Request,
) -> Result<Preserved, PreserveError> {
    let first_table = request.targets.first().map_or("", |t| t.table.as_str());
    let waiting_since = std::time::SystemTime::now();
    let guard = db
        .lock(&lock_name(request.migration.as_deref(), first_table))
        .await?;
    let result = async {
        // Another machine's instance may have taken it: look in the mirror too.
        if let Some(remote) = remote {
            remote.fetch_missing(vault).await?;
        }
        if let Some(migration) = &request.migration
            && let Some(manifest) = vault.find_for_migration(migration)?
            && manifest.completed_at >= waiting_since
        {
            tracing::info!(snapshot = %manifest.id, migration, "snapshot taken by another instance");
            return Ok(Preserved::from_manifest(&manifest, true, 0.0));
        }
        let preserved = preserve(db, vault, request).await?;
        if let Some(remote) = remote {
            let id = crate::vault::SnapshotId::parse(&preserved.id)?;
            remote.upload(vault, &id).await?;
        }
        Ok(preserved)
    }
    .await;
    guard.release().await;
    result
}

/// Takes one snapshot of every target of `request`.
pub async fn preserve(
    db: &dyn Adapter,
    vault: &Vault,
    request: &Request,
) -> Result<Preserved, PreserveError> {
    if request.targets.is_empty() {
        return Err(PreserveError::Empty);
    }
    let started = Instant::now();
    let mut tables = Vec::with_capacity(request.targets.len());
    for target in &request.targets {
        let table =
            db.introspect(&target.table)
                .await?
                .ok_or_else(|| PreserveError::NoSuchTable {
                    table: target.table.clone(),
                })?;
        // Checks the requested columns exist before anything is written.
        table.row_columns(&target.columns)?;
        if !target.columns.is_empty() && table.primary_key.is_empty() {
            return Err(PreserveError::NoKey {
                table: target.table.clone(),
            });
        }
        tables.push(table);
    }
    let meta = SnapshotMeta {
        migration: request.migration.clone(),
        rollback_command: request.rollback_command.clone(),
        reason: request.reason,
        environment: request.environment.clone(),
        database: DatabaseInfo {
            kind: db.engine(),
            server_version: db.server_version().await?,
        },
    };
    let mut writer = vault.begin(meta)?;
    for (target, table) in request.targets.iter().zip(&tables) {
        let spec = spec_for(target, table);
        if let Some(progress) = crate::progress::current() {
            // Only for a person watching: a count is one more scan of the table.
            progress.add_total(db.count_rows(&target.table).await?);
            progress.phase(format!("preserving {}", target.table));
        }
        let object = writer.object(spec)?;
        let (tx, rx) = mpsc::channel::<Batch>(BATCHES_IN_FLIGHT);
        let sink = tokio::task::spawn_blocking(move || write_batches(object, rx));
        let streamed = match db.stream_encoded(table, &target.columns) {
            Some(rows) => stream_into(rows, tx, Batch::Encoded).await,
            None => stream_into(db.stream_rows(table, &target.columns), tx, Batch::Values).await,
        };
        let written = sink
            .await
            .map_err(|err| PreserveError::Writer(err.to_string()))?;
        streamed?;
        written?;
    }
    let summary: SnapshotSummary = tokio::task::spawn_blocking(move || writer.commit())
        .await
        .map_err(|err| PreserveError::Writer(err.to_string()))??;
    tracing::info!(
        snapshot = %summary.id,
        migration = summary.manifest.migration.as_deref().unwrap_or("-"),
        rows = summary.rows,
        "snapshot complete"
    );
    Ok(Preserved::from_manifest(
        &summary.manifest,
        false,
        started.elapsed().as_secs_f64(),
    ))
}

fn spec_for(target: &Target, table: &TableInfo) -> ObjectSpec {
    ObjectSpec {
        table: table.name.clone(),
        kind: if target.columns.is_empty() {
            ObjectKind::Table
        } else {
            ObjectKind::Columns
        },
        columns: target.columns.clone(),
        all_columns: table.columns.clone(),
        primary_key: table.primary_key.clone(),
        foreign_keys: table.foreign_keys.clone(),
        generated_key: table.generated_key.clone(),
    }
}

/// Rows on their way to the writer: as values, or already in the canonical
/// encoding (from an adapter that makes no values, so that the reading task
/// leaves the encoding work to no one).
enum Batch {
    Values(Vec<Vec<Value>>),
    Encoded(Vec<Vec<u8>>),
}

/// Reads the rows and sends them in batches; returns when the table is read or
/// the writer has gone (its error is reported by the writer's side).
async fn stream_into<T>(
    mut rows: futures_util::stream::BoxStream<'_, Result<T, DbError>>,
    tx: mpsc::Sender<Batch>,
    batch_of: fn(Vec<T>) -> Batch,
) -> Result<(), PreserveError> {
    let progress = crate::progress::current();
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    while let Some(row) = rows.next().await {
        batch.push(row?);
        if batch.len() == BATCH_ROWS
            && let Some(progress) = &progress
        {
            progress.add(BATCH_ROWS as u64);
        }
        if batch.len() == BATCH_ROWS
            && tx
                .send(batch_of(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(BATCH_ROWS),
                )))
                .await
                .is_err()
        {
            return Ok(());
        }
    }
    if !batch.is_empty() {
        if let Some(progress) = &progress {
            progress.add(batch.len() as u64);
        }
        let _ = tx.send(batch_of(batch)).await;
    }
    Ok(())
}

fn write_batches(
    mut object: crate::vault::ObjectWriter,
    mut rx: mpsc::Receiver<Batch>,
) -> Result<(), PreserveError> {
    while let Some(batch) = rx.blocking_recv() {
        match batch {
            Batch::Values(rows) => {
                for row in &rows {
                    object.write_row(row)?;
                }
            }
            Batch::Encoded(rows) => {
                for row in &rows {
                    object.write_encoded(row)?;
                }
            }
        }
    }
    object.finish()?;
    Ok(())
}
