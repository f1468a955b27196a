//! Restore: after the schema was rolled back, write a snapshot's data back, exactly,
//! and prove it.
//!
//! Per object, in one transaction: the snapshot's rows go into a session-private
//! staging table, then set-based statements insert the missing rows (a dropped
//! table) or put the values back by primary key (dropped columns). Rows that
//! changed since the snapshot are counted as conflicts and left alone unless
//! forced. Before commit, every restored row is compared with the staging table;
//! after commit, when the object holds only the snapshot's rows, its checksum is
//! recomputed from the database and compared with the manifest's.
//!
//! It refuses to write anything while the schema is not rolled back, or while
//! any object of the snapshot fails the vault's verification (a restore never
//! commits one object and then finds the next one damaged), and a second run
//! changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::db::{Adapter, BinaryRows, DbError, Engine, RowEncoder, Session, TableInfo};
use crate::vault::{
    Checksummer, Manifest, ObjectEntry, ObjectKind, SnapshotId, Value, Vault, VaultError,
};

const STAGE: &str = "dropguard_restore_stage";
/// Bind parameters per statement: under SQLite's 32,766 and PostgreSQL's 65,535.
const MAX_PARAMS: usize = 30_000;
const MAX_BATCH_ROWS: usize = 5_000;
/// COPY data is handed to the connection in chunks of about this size.
const COPY_CHUNK_BYTES: usize = 1 << 20;
/// From this many rows on, the verification re-read is split over several
/// connections; below it one query is quicker than the splitting.
const SPLIT_READ_ROWS: u64 = 50_000;
/// Connections the verification re-read uses at most: the pool holds four, the
/// advisory lock keeps one, and one stays free for the daemon's other reads
/// (the deploy watcher) while a long re-read runs.
const READ_PARTS: usize = 2;
/// The savepoint a binary COPY runs under, so a value it cannot carry exactly
/// leaves the transaction as it was.
const BINARY_SAVEPOINT: &str = "dropguard_binary_load";
/// Rows handed to the hashing thread at a time.
const HASH_BATCH_ROWS: usize = 1_024;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(
        "snapshot {id} was taken from {snapshot} but database.url points at {target}; restore it into the same kind of database"
    )]
    WrongEngine {
        id: String,
        snapshot: Engine,
        target: Engine,
    },
    #[error(
        "snapshot {id} belongs to environment {snapshot:?}, this configuration is {target:?}; use the configuration of {snapshot:?}"
    )]
    WrongEnvironment {
        id: String,
        snapshot: String,
        target: String,
    },
    #[error(
        "the schema is not rolled back yet: {reason}; run `{command}` first, then restore again"
    )]
    NotRolledBack { reason: String, command: String },
    #[error("verification of {table} failed: {detail}")]
    VerificationFailed { table: String, detail: String },
    #[error(
        "snapshot {id} is damaged, so nothing was written: {problems}. `dropguard snapshots verify {id}` shows every object's state; restore from an intact copy of the snapshot (the vault.url mirror, or a backup of the vault)"
    )]
    Damaged {
        id: String,
        /// Each damaged object and what is wrong with it.
        problems: String,
    },
    #[error("reading the snapshot stopped unexpectedly: {0}")]
    Reader(String),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Do everything in the transaction, report, then roll it back.
    pub dry_run: bool,
    /// Overwrite rows that changed since the snapshot.
    pub force: bool,
}

/// How the written data was proven equal to the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Verification {
    /// The object's rows, re-read from the database, have the snapshot's checksum.
    Checksum,
    /// Every restored row equals its staged snapshot row (the table also holds
    /// rows the snapshot does not, so a whole-object checksum cannot apply).
    Compared { rows: u64 },
    /// A dry run verifies nothing.
    NotRun,
}

/// What happened to one object.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectReport {
    pub table: String,
    pub kind: ObjectKind,
    pub columns: Vec<String>,
    pub snapshot_rows: u64,
    /// Rows inserted (a table) or rows whose values were put back (columns).
    pub written: u64,
    /// Rows already equal to the snapshot.
    pub unchanged: u64,
    /// Rows that changed since the snapshot and were left alone (or, with
    /// `--force`, overwritten: then they are also counted in `written`).
    pub conflicts: u64,
    /// Rows of the snapshot no longer in the table (column restores only).
    pub missing: u64,
    pub verification: Verification,
}

impl ObjectReport {
    /// Nothing done yet for `object`.
    fn new(object: &ObjectEntry) -> Self {
        Self {
            table: object.table.clone(),
            kind: object.kind,
            columns: object.columns.clone(),
            snapshot_rows: object.rows,
            written: 0,
            unchanged: 0,
            conflicts: 0,
            missing: 0,
            verification: Verification::NotRun,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub snapshot: String,
    pub migration: Option<String>,
    pub dry_run: bool,
    /// Conflicting rows were overwritten.
    pub forced: bool,
    pub objects: Vec<ObjectReport>,
}

impl Report {
    /// Rows of the snapshot that are not in the database as they were.
    pub fn unresolved(&self) -> u64 {
        self.objects
            .iter()
            .map(|o| o.missing + if self.forced { 0 } else { o.conflicts })
            .sum()
    }
}

/// Restores snapshot `id` into `db`.
pub async fn restore(
    db: &dyn Adapter,
    vault: &Vault,
    id: &SnapshotId,
    environment: &str,
    options: Options,
) -> Result<Report, RestoreError> {
    let manifest = vault.show(id)?;
    let lock = crate::actions::preserve::lock_name(manifest.migration.as_deref(), id.as_str());
    let guard = db.lock(&lock).await?;
    let result = restore_locked(db, vault, id, &manifest, environment, options).await;
    guard.release().await;
    result
}

async fn restore_locked(
    db: &dyn Adapter,
    vault: &Vault,
    id: &SnapshotId,
    manifest: &Manifest,
    environment: &str,
    options: Options,
) -> Result<Report, RestoreError> {
    let tables = check_schema(db, manifest, environment).await?;
    check_intact(vault, manifest).await?;
    if let Some(progress) = crate::progress::current() {
        progress.add_total(manifest.objects.iter().map(|o| o.rows).sum());
    }
    let mut objects = Vec::new();
    for index in order(manifest) {
        let object = &manifest.objects[index];
        objects.push(restore_object(db, vault, id, index, object, &tables[index], options).await?);
    }
    Ok(Report {
        snapshot: id.to_string(),
        migration: manifest.migration.clone(),
        dry_run: options.dry_run,
        forced: options.force,
        objects,
    })
}

/// The order a snapshot's objects are restored in (indexes into its manifest):
/// a table before the tables whose foreign keys reference it.
pub fn order(manifest: &Manifest) -> Vec<usize> {
    parents_first(manifest.objects.iter().enumerate().collect())
        .into_iter()
        .map(|(index, _)| index)
        .collect()
}

/// Whether snapshot `id` can go back into `db` now: same engine and
/// environment, its migration rolled back, every table and column it holds
/// there again. The error says what to run first.
pub async fn check_rolled_back(
    db: &dyn Adapter,
    vault: &Vault,
    id: &SnapshotId,
    environment: &str,
) -> Result<(), RestoreError> {
    let manifest = vault.show(id)?;
    check_schema(db, &manifest, environment).await.map(|_| ())
}

/// Re-reads every data file of the snapshot `manifest` describes with the
/// vault's own verification (as `dropguard snapshots verify` does: streamed,
/// memory flat) before anything is written; the error names each damaged object.
pub async fn check_intact(vault: &Vault, manifest: &Manifest) -> Result<(), RestoreError> {
    let id = manifest.id.clone();
    let report = {
        let (vault, verified) = (vault.clone(), id.clone());
        tokio::task::spawn_blocking(move || vault.verify(&verified))
            .await
            .map_err(|err| RestoreError::Reader(format!("verifying snapshot {id}: {err}")))??
    };
    let problems: Vec<String> = report
        .objects
        .iter()
        .filter(|o| o.status != crate::vault::ObjectStatus::Ok)
        .map(|o| {
            let what = match manifest.objects.get(o.index) {
                Some(object) if object.kind == ObjectKind::Columns => {
                    format!("{}.{}", object.table, object.columns.join(","))
                }
                _ => format!("table {}", o.table),
            };
            format!(
                "object {} ({what}, {}): {}",
                o.index + 1,
                o.file.display(),
                o.status
            )
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    tracing::error!(snapshot = %id, damaged = problems.len(), "the snapshot fails verification; nothing is restored from it");
    Err(RestoreError::Damaged {
        id: id.to_string(),
        problems: problems.join("; "),
    })
}

/// Restores only object `index` of snapshot `id` (under the snapshot's lock,
/// after the same checks as [`restore`]): one step of a journaled restore.
pub async fn restore_one(
    db: &dyn Adapter,
    vault: &Vault,
    id: &SnapshotId,
    index: usize,
    environment: &str,
    options: Options,
) -> Result<ObjectReport, RestoreError> {
    let manifest = vault.show(id)?;
    let Some(object) = manifest.objects.get(index) else {
        return Err(RestoreError::Reader(format!(
            "snapshot {id} has no object {index}"
        )));
    };
    let lock = crate::actions::preserve::lock_name(manifest.migration.as_deref(), id.as_str());
    let guard = db.lock(&lock).await?;
    let result = async {
        check_target(db, &manifest, environment).await?;
        let table = rolled_back_table(db, &manifest, object).await?;
        restore_object(db, vault, id, index, object, &table, options).await
    }
    .await;
    guard.release().await;
    result
}

/// The live table of each of the manifest's objects, in manifest order, after
/// checking the snapshot belongs here and its migration is rolled back.
async fn check_schema(
    db: &dyn Adapter,
    manifest: &Manifest,
    environment: &str,
) -> Result<Vec<TableInfo>, RestoreError> {
    check_target(db, manifest, environment).await?;
    let mut tables = Vec::new();
    for object in &manifest.objects {
        tables.push(rolled_back_table(db, manifest, object).await?);
    }
    Ok(tables)
}

async fn check_target(
    db: &dyn Adapter,
    manifest: &Manifest,
    environment: &str,
) -> Result<(), RestoreError> {
    if manifest.database.kind != db.engine() {
        return Err(RestoreError::WrongEngine {
            id: manifest.id.to_string(),
            snapshot: manifest.database.kind,
            target: db.engine(),
        });
    }
    if manifest.environment != environment {
        return Err(RestoreError::WrongEnvironment {
            id: manifest.id.to_string(),
            snapshot: manifest.environment.clone(),
            target: environment.to_string(),
        });
    }
    if let Some((app, name)) = manifest
        .migration
        .as_deref()
        .and_then(|m| m.split_once('.'))
        && db
            .applied_migrations()
            .await?
            .contains(&(app.to_string(), name.to_string()))
    {
        return Err(not_rolled_back(
            manifest,
            format!("django_migrations still records {app}.{name} as applied"),
        ));
    }
    Ok(())
}

fn not_rolled_back(manifest: &Manifest, reason: String) -> RestoreError {
    let command = manifest
        .rollback_command
        .clone()
        .unwrap_or_else(|| match &manifest.migration {
            Some(migration) => {
                format!("the rollback of {migration} (python manage.py migrate <app> <previous>)")
            }
            None => "the schema rollback".to_string(),
        });
    RestoreError::NotRolledBack { reason, command }
}

/// The live table an object goes back into; it and every column the snapshot
/// holds must exist again.
async fn rolled_back_table(
    db: &dyn Adapter,
    manifest: &Manifest,
    object: &ObjectEntry,
) -> Result<TableInfo, RestoreError> {
    let table = db.introspect(&object.table).await?.ok_or_else(|| {
        not_rolled_back(manifest, format!("table {} does not exist", object.table))
    })?;
    if let Some(missing) = object
        .row_columns
        .iter()
        .find(|c| table.column(c).is_none())
    {
        return Err(not_rolled_back(
            manifest,
            format!("table {} has no column {missing}", object.table),
        ));
    }
    Ok(table)
}

/// Objects ordered so that a table comes before the tables whose foreign keys
/// reference it. A cycle keeps the remaining objects in snapshot order.
fn parents_first(mut pending: Vec<(usize, &ObjectEntry)>) -> Vec<(usize, &ObjectEntry)> {
    let mut ordered = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready = pending.iter().position(|(_, object)| {
            object.foreign_keys.iter().all(|fk| {
                fk.referenced_table == object.table
                    || !pending
                        .iter()
                        .any(|(_, other)| other.table == fk.referenced_table)
            })
        });
        ordered.push(pending.remove(ready.unwrap_or(0)));
    }
    ordered
}

/// SQL pieces for one object, all identifiers quoted.
struct Sql {
    engine: Engine,
    /// The target table's name, unquoted.
    table: String,
    target: String,
    stage: String,
    /// `target.pk = stage.pk AND …`
    join: String,
}

impl Sql {
    fn t(&self, column: &str) -> String {
        format!("{}.{}", self.target, self.engine.quote(column))
    }

    fn s(&self, column: &str) -> String {
        format!("{}.{}", self.stage, self.engine.quote(column))
    }

    fn same(&self, column: &str) -> String {
        self.engine.not_distinct(&self.t(column), &self.s(column))
    }

    fn all_same(&self, columns: &[String]) -> String {
        let parts: Vec<String> = columns.iter().map(|c| self.same(c)).collect();
        format!("({})", parts.join(" AND "))
    }

    fn joined_count(&self, condition: &str) -> String {
        format!(
            "SELECT COUNT(*) FROM {} JOIN {} ON {} WHERE {condition}",
            self.stage, self.target, self.join
        )
    }
}

async fn restore_object(
    db: &dyn Adapter,
    vault: &Vault,
    id: &SnapshotId,
    index: usize,
    object: &ObjectEntry,
    table: &TableInfo,
    options: Options,
) -> Result<ObjectReport, RestoreError> {
    let engine = db.engine();
    let key = &object.primary_key;
    let sql = Sql {
        engine,
        table: object.table.clone(),
        target: engine.quote(&object.table),
        stage: engine.quote(STAGE),
        join: key
            .iter()
            .map(|k| {
                format!(
                    "{}.{} = {}.{}",
                    engine.quote(&object.table),
                    engine.quote(k),
                    engine.quote(STAGE),
                    engine.quote(k)
                )
            })
            .collect::<Vec<_>>()
            .join(" AND "),
    };
    let types: Vec<&str> = object
        .row_columns
        .iter()
        .map(|c| declared_type(object, c))
        .collect();
    let mut session = db.begin().await?;
    let what = |step: &str| format!("restoring {}: {step}", object.table);

    // The common case after a rollback: the table came back empty. Its rows are
    // loaded straight in (COPY on PostgreSQL), and the checksum after commit is
    // the proof; no staging table, no row-by-row comparison.
    if object.kind == ObjectKind::Table {
        let existing = session
            .count(
                &format!(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM {} LIMIT 1) probe",
                    sql.target
                ),
                &what("looking for existing rows"),
            )
            .await?;
        if existing == 0 {
            let started = std::time::Instant::now();
            // The server's own count of the rows it took (COPY's, or the
            // INSERTs' affected rows) into a table that held none.
            let loaded = load_rows(
                engine,
                session.as_mut(),
                vault,
                id,
                index,
                object,
                &object.table,
                &types,
            )
            .await?;
            tracing::debug!(table = %object.table, seconds = started.elapsed().as_secs_f64(), "loaded");
            if loaded != object.rows {
                return Err(RestoreError::VerificationFailed {
                    table: object.table.clone(),
                    detail: format!(
                        "{loaded} rows loaded of {}; nothing was committed",
                        object.rows
                    ),
                });
            }
            let mut report = ObjectReport {
                written: loaded,
                ..ObjectReport::new(object)
            };
            if options.dry_run {
                return Ok(report);
            }
            let started = std::time::Instant::now();
            session.commit().await?;
            if let Some(column) = &object.generated_key {
                db.reset_generator(&object.table, column).await?;
            }
            tracing::debug!(table = %object.table, seconds = started.elapsed().as_secs_f64(), "committed");
            let started = std::time::Instant::now();
            if let Some(progress) = crate::progress::current() {
                progress.phase(format!("verifying {}", object.table));
            }
            report.verification = checksum_or_compared(db, object, table, loaded, false).await?;
            tracing::debug!(table = %object.table, seconds = started.elapsed().as_secs_f64(), "verified");
            return Ok(report);
        }
    }

    let stage_columns: Vec<(&str, &str)> = object
        .row_columns
        .iter()
        .map(String::as_str)
        .zip(types.iter().copied())
        .collect();
    for statement in [
        engine.drop_temp_table(STAGE),
        engine.create_temp_table(STAGE, &stage_columns),
    ] {
        session
            .execute(&statement, &[], &what("creating the staging table"))
            .await?;
    }
    load_rows(
        engine,
        session.as_mut(),
        vault,
        id,
        index,
        object,
        STAGE,
        &types,
    )
    .await?;

    let mut report = ObjectReport::new(object);
    let non_key: Vec<String> = object
        .row_columns
        .iter()
        .filter(|c| !key.contains(c))
        .cloned()
        .collect();
    match object.kind {
        ObjectKind::Table => {
            let all = sql.all_same(&object.row_columns);
            report.unchanged = session
                .count(&sql.joined_count(&all), &what("comparing"))
                .await?;
            report.conflicts = session
                .count(&sql.joined_count(&format!("NOT {all}")), &what("comparing"))
                .await?;
            let columns: Vec<String> = object.row_columns.iter().map(|c| engine.quote(c)).collect();
            let insert = format!(
                "INSERT INTO {} ({cols}) SELECT {scols} FROM {} WHERE NOT EXISTS (SELECT 1 FROM {} WHERE {})",
                sql.target,
                sql.stage,
                sql.target,
                sql.join,
                cols = columns.join(", "),
                scols = object
                    .row_columns
                    .iter()
                    .map(|c| sql.s(c))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            report.written = session
                .execute(&insert, &[], &what("inserting rows"))
                .await?;
            if options.force && report.conflicts > 0 && !non_key.is_empty() {
                let assignments: Vec<(String, String)> =
                    non_key.iter().map(|c| (c.clone(), sql.s(c))).collect();
                let update = engine.update_from(
                    &object.table,
                    STAGE,
                    &assignments,
                    &sql.join,
                    &format!("NOT {all}"),
                );
                report.written += session
                    .execute(&update, &[], &what("overwriting changed rows"))
                    .await?;
            }
        }
        ObjectKind::Columns => {
            report.missing = session
                .count(
                    &format!(
                        "SELECT COUNT(*) FROM {} WHERE NOT EXISTS (SELECT 1 FROM {} WHERE {})",
                        sql.stage, sql.target, sql.join
                    ),
                    &what("looking for deleted rows"),
                )
                .await?;
            report.unchanged = session
                .count(
                    &sql.joined_count(&sql.all_same(&object.columns)),
                    &what("comparing"),
                )
                .await?;
            for (n, column) in object.columns.iter().enumerate() {
                let (written, conflicts) = restore_column(
                    session.as_mut(),
                    &sql,
                    n,
                    column,
                    declared_type(object, column),
                    options,
                    &what,
                )
                .await?;
                report.written += written;
                report.conflicts += conflicts;
            }
        }
    }

    // Every snapshot row still in the table, and not a conflict left alone, must
    // now equal its staged row.
    let compared = session
        .count(
            &sql.joined_count(&sql.all_same(&object.row_columns)),
            &what("verifying"),
        )
        .await?;
    let expected = object.rows - report.missing - if options.force { 0 } else { report.conflicts };
    if compared < expected {
        return Err(RestoreError::VerificationFailed {
            table: object.table.clone(),
            detail: format!(
                "{compared} of {expected} rows equal the snapshot; nothing was committed"
            ),
        });
    }
    if options.dry_run {
        return Ok(report);
    }
    session.commit().await?;
    if object.kind == ObjectKind::Table
        && let Some(column) = &object.generated_key
    {
        db.reset_generator(&object.table, column).await?;
    }
    if let Some(progress) = crate::progress::current() {
        progress.phase(format!("verifying {}", object.table));
    }
    report.verification = checksum_or_compared(db, object, table, compared, true).await?;
    Ok(report)
}

/// The declared type of one of the object's columns, as the snapshot recorded it.
fn declared_type<'a>(object: &'a ObjectEntry, column: &str) -> &'a str {
    object
        .all_columns
        .iter()
        .find(|info| info.name == column)
        .map_or("text", |info| info.declared_type.as_str())
}

/// Puts one column's values back. A rolled-back column holds the same fill value
/// in every row (NULL, or the default Django filled it with); a row holding another
/// value that differs from the snapshot was written since, and is a conflict.
/// The fill is NULL, or the most common differing value when at least two rows
/// share it: a value in one row only may be a write, so it is never overwritten
/// without `--force`.
async fn restore_column(
    session: &mut dyn Session,
    sql: &Sql,
    n: usize,
    column: &str,
    declared_type: &str,
    options: Options,
    what: &(dyn Fn(&str) -> String + Sync),
) -> Result<(u64, u64), RestoreError> {
    let engine = sql.engine;
    let fill = format!("dropguard_restore_fill_{n}");
    // The fill value is kept in the column's comparable form.
    let fill_type = if engine == Engine::Postgres {
        "text"
    } else {
        declared_type
    };
    let fill_q = engine.quote(&fill);
    let column_q = engine.quote(column);
    for statement in [
        engine.drop_temp_table(&fill),
        engine.create_temp_table(&fill, &[(column, fill_type)]),
    ] {
        session
            .execute(&statement, &[], &what("creating the fill table"))
            .await?;
    }
    let differs = format!("NOT {}", sql.same(column));
    session
        .execute(
            &format!(
                "INSERT INTO {fill_q} ({column_q}) SELECT {t} FROM {} JOIN {} ON {} WHERE {differs} GROUP BY {t} HAVING COUNT(*) >= 2 ORDER BY COUNT(*) DESC LIMIT 1",
                sql.stage,
                sql.target,
                sql.join,
                t = engine.comparable(&sql.t(column)),
            ),
            &[],
            &what("finding the fill value"),
        )
        .await?;
    let fillable = format!(
        "({t} IS NULL OR {})",
        engine.not_distinct(
            &sql.t(column),
            &format!("(SELECT {column_q} FROM {fill_q})")
        ),
        t = sql.t(column)
    );
    let conflicts = session
        .count(
            &sql.joined_count(&format!("{differs} AND NOT {fillable}")),
            &what("counting conflicts"),
        )
        .await?;
    let condition = if options.force {
        differs
    } else {
        format!("{differs} AND {fillable}")
    };
    let update = engine.update_from(
        &sql.table,
        STAGE,
        &[(column.to_string(), sql.s(column))],
        &sql.join,
        &condition,
    );
    let written = session
        .execute(&update, &[], &what("putting values back"))
        .await?;
    Ok((written, conflicts))
}

/// Streams the snapshot's rows into table `into` (the staging table, or an empty
/// target): by one COPY where the engine has it, the rows encoded on the blocking
/// thread that reads the vault, so that decoding overlaps the server's work; else
/// in multi-row INSERTs. Returns the rows the server took. A vault error after
/// part of the rows went in is returned before anything is committed.
#[allow(clippy::too_many_arguments)] // one call site each way; a struct would only rename them
async fn load_rows(
    engine: Engine,
    session: &mut dyn Session,
    vault: &Vault,
    id: &SnapshotId,
    index: usize,
    object: &ObjectEntry,
    into: &str,
    types: &[&str],
) -> Result<u64, RestoreError> {
    let progress = crate::progress::current();
    if let Some(progress) = &progress {
        progress.phase(format!("restoring {}", object.table));
    }
    // Rows read from the vault, counted as they are handed on; `attempted`
    // keeps the count of a binary load, which a fallback to text undoes.
    let attempted = Arc::new(AtomicU64::new(0));
    let counted = {
        let progress = progress.clone();
        let attempted = Arc::clone(&attempted);
        move |n: usize| {
            attempted.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(progress) = &progress {
                progress.add(n as u64);
            }
        }
    };
    if let Some(encode) = engine.bulk_encoder() {
        // The binary format where every column has an exact one, under a
        // savepoint: a value it cannot carry rolls back to it, and the rows go
        // in as text instead.
        if let Some(binary) = BinaryRows::for_types(types) {
            session
                .execute(
                    &format!("SAVEPOINT {BINARY_SAVEPOINT}"),
                    &[],
                    "starting a binary load",
                )
                .await?;
            let rows = vault.read_object(id, index)?;
            match copy_rows(
                session,
                rows,
                object,
                into,
                CopyFormat::Binary(binary),
                &counted,
            )
            .await?
            {
                Some(loaded) => return Ok(loaded),
                None => {
                    tracing::debug!(table = %object.table, "a value has no exact binary form; loading as text");
                    if let Some(progress) = &progress {
                        progress.undo(attempted.load(Ordering::Relaxed));
                    }
                    session
                        .execute(
                            &format!("ROLLBACK TO SAVEPOINT {BINARY_SAVEPOINT}"),
                            &[],
                            "undoing a binary load",
                        )
                        .await?;
                }
            }
        }
        let rows = vault.read_object(id, index)?;
        return copy_rows(
            session,
            rows,
            object,
            into,
            CopyFormat::Text(encode),
            &counted,
        )
        .await?
        .ok_or_else(|| RestoreError::Reader("the text format refused a row".to_string()));
    }

    let rows = vault.read_object(id, index)?;
    let width = object.row_columns.len();
    let batch_rows = (MAX_PARAMS / width.max(1)).clamp(1, MAX_BATCH_ROWS);
    let (tx, mut rx) = mpsc::channel::<Result<Vec<Vec<Value>>, VaultError>>(4);
    let reader = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(batch_rows);
        for row in rows {
            match row {
                Ok(row) => batch.push(row),
                Err(err) => {
                    let _ = tx.blocking_send(Err(err));
                    return;
                }
            }
            if batch.len() == batch_rows {
                counted(batch_rows);
                if tx
                    .blocking_send(Ok(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(batch_rows),
                    )))
                    .is_err()
                {
                    return;
                }
            }
        }
        if !batch.is_empty() {
            counted(batch.len());
            let _ = tx.blocking_send(Ok(batch));
        }
    });
    let columns: Vec<String> = object.row_columns.iter().map(|c| engine.quote(c)).collect();
    // The statement for `n` rows; every batch but the last has the same size, so
    // it is built once.
    let insert_for = |n: usize| {
        let tuples: Vec<String> = (0..n)
            .map(|row| {
                let placeholders: Vec<String> = (0..width)
                    .map(|i| engine.placeholder(row * width + i + 1, types[i]))
                    .collect();
                format!("({})", placeholders.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO {} ({}) VALUES {}",
            engine.quote(into),
            columns.join(", "),
            tuples.join(", ")
        )
    };
    let full_batch = insert_for(batch_rows);
    let mut loaded = 0;
    while let Some(batch) = rx.recv().await {
        let batch = batch?;
        let last_batch;
        let insert = if batch.len() == batch_rows {
            &full_batch
        } else {
            last_batch = insert_for(batch.len());
            &last_batch
        };
        let values: Vec<Value> = batch.into_iter().flatten().collect();
        loaded += session
            .execute(
                insert,
                &values,
                &format!("restoring {}: staging rows", object.table),
            )
            .await?;
    }
    reader
        .await
        .map_err(|err| RestoreError::Reader(err.to_string()))?;
    Ok(loaded)
}

/// How [`copy_rows`] encodes rows.
enum CopyFormat {
    Text(RowEncoder),
    Binary(BinaryRows),
}

/// One COPY of `rows` into `into`, the rows encoded on a blocking thread while
/// the server loads the chunks before. The rows the server took; `None` when a
/// value had no binary form (the rows before it went in: the caller undoes them).
async fn copy_rows(
    session: &mut dyn Session,
    rows: crate::vault::ObjectRows,
    object: &ObjectEntry,
    into: &str,
    format: CopyFormat,
    counted: &(impl Fn(usize) + Clone + Send + 'static),
) -> Result<Option<u64>, RestoreError> {
    let binary = matches!(format, CopyFormat::Binary(_));
    let counted = counted.clone();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let reader = tokio::task::spawn_blocking(move || -> Result<bool, VaultError> {
        let mut chunk = Vec::with_capacity(COPY_CHUNK_BYTES + 4096);
        let mut in_chunk = 0;
        if binary {
            BinaryRows::header(&mut chunk);
        }
        for row in rows {
            let row = row?;
            match &format {
                CopyFormat::Text(encode) => encode(&row, &mut chunk),
                CopyFormat::Binary(encoder) => {
                    if encoder.row(&row, &mut chunk).is_err() {
                        // What is complete still goes, so the COPY ends cleanly.
                        let _ = tx.blocking_send(chunk);
                        return Ok(false);
                    }
                }
            }
            in_chunk += 1;
            if chunk.len() >= COPY_CHUNK_BYTES {
                counted(std::mem::take(&mut in_chunk));
                let full =
                    std::mem::replace(&mut chunk, Vec::with_capacity(COPY_CHUNK_BYTES + 4096));
                if tx.blocking_send(full).is_err() {
                    return Ok(true); // the COPY failed; its error is the one reported
                }
            }
        }
        if binary {
            BinaryRows::trailer(&mut chunk);
        }
        if !chunk.is_empty() {
            counted(in_chunk);
            let _ = tx.blocking_send(chunk);
        }
        Ok(true)
    });
    let copied = session
        .copy_in(into, &object.row_columns, binary, &mut rx)
        .await;
    drop(rx);
    let complete = reader
        .await
        .map_err(|err| RestoreError::Reader(err.to_string()))?;
    let copied = copied?;
    if !complete? {
        return Ok(None);
    }
    copied
        .map(Some)
        .ok_or_else(|| RestoreError::Reader(format!("no bulk load into {into}")))
}

/// After commit: when the object holds exactly the snapshot's rows, its checksum
/// recomputed from the database must be the manifest's; otherwise the in-
/// transaction comparison stands. `count_first`: count the live rows before
/// reading them all (a column restore into a table that may have grown); after a
/// load into an empty table the read's own row count decides instead.
async fn checksum_or_compared(
    db: &dyn Adapter,
    object: &ObjectEntry,
    table: &TableInfo,
    compared: u64,
    count_first: bool,
) -> Result<Verification, RestoreError> {
    if compared != object.rows
        || (count_first && db.count_rows(&object.table).await? != object.rows)
    {
        return Ok(Verification::Compared { rows: compared });
    }
    let found = read_back(db, object, table).await?.checksum();
    if found.rows != object.rows {
        // Rows were written since commit: the table no longer holds only the
        // snapshot's rows.
        return Ok(Verification::Compared { rows: compared });
    }
    if found != object.checksum() {
        return Err(RestoreError::VerificationFailed {
            table: object.table.clone(),
            detail: format!(
                "the restored rows read back as {found}, the snapshot holds {}; the rows were committed, `dropguard snapshots verify` checks the snapshot itself",
                object.checksum()
            ),
        });
    }
    Ok(Verification::Checksum)
}

/// The checksum of the object's rows as the database holds them now. The sum
/// does not depend on row order, so a large table is read in parts on several
/// connections at once and the parts' sums added; each part's rows are hashed
/// on a thread of its own while the next ones arrive.
async fn read_back(
    db: &dyn Adapter,
    object: &ObjectEntry,
    table: &TableInfo,
) -> Result<Checksummer, RestoreError> {
    // The snapshot's own column order: the key, then the rest as preserved.
    let columns: Vec<String> = object
        .row_columns
        .iter()
        .filter(|c| !object.primary_key.contains(c))
        .cloned()
        .collect();
    let parts = if object.rows >= SPLIT_READ_ROWS {
        READ_PARTS
    } else {
        1
    };
    if let Some(sum) = db.checksum_rows(table, &columns, parts).await? {
        return Ok(sum);
    }
    let streams = match db.split_rows(table, &columns, parts).await? {
        Some(streams) => streams,
        None => vec![db.stream_rows(table, &columns)],
    };
    let sums = futures_util::future::try_join_all(streams.into_iter().map(hash_stream)).await?;
    let mut total = Checksummer::new();
    for sum in &sums {
        total.merge(sum);
    }
    Ok(total)
}

/// Sums one stream of rows, handing them in batches to a blocking thread that
/// encodes and hashes them, so the async side only receives and decodes.
async fn hash_stream(mut rows: crate::db::RowStream<'_>) -> Result<Checksummer, RestoreError> {
    let (tx, mut rx) = mpsc::channel::<Vec<Vec<Value>>>(4);
    let hasher = tokio::task::spawn_blocking(move || -> Result<Checksummer, VaultError> {
        let mut checksum = Checksummer::new();
        while let Some(batch) = rx.blocking_recv() {
            for row in &batch {
                checksum.add_row(row)?;
            }
        }
        Ok(checksum)
    });
    let mut batch = Vec::with_capacity(HASH_BATCH_ROWS);
    let mut read = Ok(());
    while let Some(row) = rows.next().await {
        match row {
            Ok(row) => batch.push(row),
            Err(err) => {
                read = Err(err);
                break;
            }
        }
        if batch.len() == HASH_BATCH_ROWS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(HASH_BATCH_ROWS));
            if tx.send(full).await.is_err() {
                break; // the hasher stopped; its error is the one reported
            }
        }
    }
    if read.is_ok() && !batch.is_empty() {
        let _ = tx.send(batch).await;
    }
    drop(tx);
    let hashed = hasher
        .await
        .map_err(|err| RestoreError::Reader(err.to_string()))?;
    read?;
    Ok(hashed?)
}
