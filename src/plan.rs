//! The plan: the destructive and breaking operations of the migrations not yet
//! applied, each with the live row count of what it would destroy.
//!
//! Joins the pure analysis (`migrations`) with the database (`db`): which migrations
//! are applied, how many rows and values are at risk. It never changes the database.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::db::{Adapter, DbError, Engine};
use crate::migrations::{self, Analysis, MigrationPlan, OpKind, Operation, Problem};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "nothing to analyse: set django.project_dir (a Django project) or sql.dir (plain SQL migrations)"
    )]
    NoSource,
    #[error("analysing migrations: {0}")]
    Analysis(#[from] migrations::Error),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// One migration of the plan, in apply order.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedMigration {
    /// `app.name`, or the file's id for plain SQL migrations.
    pub migration: String,
    pub file: PathBuf,
    /// The app's migration before this one (`zero` for the first), the target of
    /// the rollback; absent for plain SQL migrations.
    pub previous: Option<String>,
    /// `restore.rollback_command` filled in for this migration.
    pub rollback_command: Option<String>,
    pub operations: Vec<PlannedOperation>,
}

/// One destructive or breaking operation, with what the database holds for it.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedOperation {
    #[serde(flatten)]
    pub operation: Operation,
    /// Rows a table drop/truncate destroys, or rows with a value in a dropped
    /// column; absent without a database, or when the table is not there yet.
    pub rows: Option<u64>,
    /// Why `rows` is absent, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One object whose data is at risk: a whole table (`columns` empty) or some of
/// its columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub table: String,
    pub columns: Vec<String>,
}

impl PlannedMigration {
    /// What this migration destroys, merged per table (a table dropped whole takes
    /// in its dropped columns), in the order the plan names them; and a note for
    /// each operation whose data cannot be preserved (opaque code, tables not in
    /// the database).
    pub fn targets(&self) -> (Vec<Target>, Vec<String>) {
        let mut targets: Vec<Target> = Vec::new();
        let mut notes = Vec::new();
        for op in &self.operations {
            let o = &op.operation;
            let destroys = matches!(
                o.kind,
                OpKind::DropTable | OpKind::DropColumn | OpKind::Truncate
            );
            if o.kind == OpKind::Opaque {
                notes.push(format!(
                    "{} is opaque: dropguard cannot tell what it destroys",
                    o.source
                ));
            }
            let Some(table) = o.table.clone().filter(|_| destroys) else {
                continue;
            };
            if op.rows.is_none() && op.note.is_some() {
                notes.push(format!(
                    "{} not preserved: {}",
                    o.source,
                    op.note.as_deref().unwrap_or("")
                ));
                continue;
            }
            let whole = o.kind != OpKind::DropColumn;
            match targets.iter_mut().find(|t| t.table == table) {
                Some(existing) if whole || existing.columns.is_empty() => existing.columns.clear(),
                Some(existing) => {
                    for column in &o.columns {
                        if !existing.columns.contains(column) {
                            existing.columns.push(column.clone());
                        }
                    }
                }
                None => targets.push(Target {
                    table,
                    columns: if whole { Vec::new() } else { o.columns.clone() },
                }),
            }
        }
        (targets, notes)
    }
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub environment: String,
    pub engine: Engine,
    /// The server version; absent for an offline plan.
    pub server_version: Option<String>,
    /// True when this is the whole history (`scan --all`), not the pending part.
    pub all: bool,
    pub migrations: Vec<PlannedMigration>,
    /// Migration files that could not be (fully) analysed.
    pub problems: Vec<Problem>,
}

impl Plan {
    /// Every operation with its migration, in apply order.
    pub fn operations(&self) -> impl Iterator<Item = (&PlannedMigration, &PlannedOperation)> {
        self.migrations
            .iter()
            .flat_map(|m| m.operations.iter().map(move |op| (m, op)))
    }
}

fn engine_of(config: &Config) -> Engine {
    // Validation guarantees a known scheme; SQLite is the harmless fallback.
    Engine::from_url(config.database.url.expose()).unwrap_or(Engine::Sqlite)
}

/// Analyses every configured source as if `applied` were what the database records.
fn analyse(
    config: &Config,
    applied: &BTreeSet<(String, String)>,
    sql_applied: &SqlApplied,
) -> Result<Analysis, PlanError> {
    let engine = engine_of(config);
    if config.django.is_none() && config.sql.is_none() {
        return Err(PlanError::NoSource);
    }
    let mut analysis = Analysis::default();
    if let Some(django) = &config.django {
        let options = migrations::Options {
            engine,
            auth_user_model: django.auth_user_model.clone(),
        };
        let found = migrations::analyse_django(&django.project_dir, applied, &options)?;
        let pending: Vec<MigrationPlan> = found
            .migrations
            .into_iter()
            .filter(|m| !m.applied)
            .collect();
        analysis.migrations.extend(pending);
        analysis.problems.extend(found.problems);
    }
    if let Some(sql) = &config.sql {
        let found = migrations::analyse_sql_dir(&sql.dir, engine)?;
        analysis.migrations.extend(
            found
                .migrations
                .into_iter()
                .filter(|m| !sql_applied.covers(m)),
        );
        analysis.problems.extend(found.problems);
    }
    Ok(analysis)
}

/// What a plain-SQL migration tool recorded as applied.
#[derive(Debug, Default)]
struct SqlApplied {
    versions: BTreeSet<u128>,
}

impl SqlApplied {
    /// A file is applied when its version is recorded, or when a later version is
    /// (golang-migrate keeps only the latest version).
    fn covers(&self, migration: &MigrationPlan) -> bool {
        let Some(version) = sql_version(&migration.id.name) else {
            return false;
        };
        self.versions.contains(&version) || self.versions.last().is_some_and(|max| *max > version)
    }
}

/// The leading digits of a SQL migration's name: `0003_drop_sku` → 3.
fn sql_version(name: &str) -> Option<u128> {
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The plan of every destructive operation in history, without a database.
pub fn history(config: &Config) -> Result<Plan, PlanError> {
    let analysis = analyse(config, &BTreeSet::new(), &SqlApplied::default())?;
    Ok(assemble(config, analysis, None, true))
}

/// The pending plan, with live row counts.
pub async fn pending(config: &Config, db: &dyn Adapter) -> Result<Plan, PlanError> {
    pending_with(config, db, true).await
}

/// The pending plan without row counts: each operation's table is only looked
/// up (a missing one gets its note). The usage gate's plan: counting would read
/// the very tables whose reads it measures.
pub async fn pending_uncounted(config: &Config, db: &dyn Adapter) -> Result<Plan, PlanError> {
    pending_with(config, db, false).await
}

async fn pending_with(config: &Config, db: &dyn Adapter, counted: bool) -> Result<Plan, PlanError> {
    let applied = db.applied_migrations().await?;
    let sql_applied = match &config.sql {
        Some(sql) if db.table_exists(&sql.history_table).await? => {
            let engine = db.engine();
            // Versions are numbers in some tools and text in others: read text.
            let text_type = if engine == Engine::Postgres {
                "TEXT"
            } else {
                "CHAR(64)"
            };
            let query = format!(
                "SELECT CAST({col} AS {text_type}), '' FROM {table}",
                col = engine.quote(&sql.version_column),
                table = engine.quote(&sql.history_table)
            );
            let rows = db
                .string_pairs(&query, &format!("reading {}", sql.history_table))
                .await?;
            SqlApplied {
                versions: rows
                    .iter()
                    .filter_map(|(v, _)| sql_version(v.trim()))
                    .collect(),
            }
        }
        _ => SqlApplied::default(),
    };
    let analysis = analyse(config, &applied, &sql_applied)?;
    let version = db.server_version().await?;
    let mut plan = assemble(config, analysis, Some(version), false);
    for migration in &mut plan.migrations {
        for op in &mut migration.operations {
            count(db, op, counted).await;
        }
    }
    Ok(plan)
}

/// Fills in the rows at risk for one operation (with `counted`; otherwise only
/// looks the table up). A failed count is a note, not an error: the rest of the
/// plan still matters.
async fn count(db: &dyn Adapter, op: &mut PlannedOperation, counted: bool) {
    let Some(table) = op.operation.table.clone() else {
        op.note = Some("names no table".to_string());
        return;
    };
    match db.table_exists(&table).await {
        Ok(true) => {}
        Ok(false) => {
            op.note = Some(format!(
                "table {table} is not in the database yet (an earlier pending migration creates or renames it)"
            ));
            return;
        }
        Err(err) => {
            op.note = Some(format!("cannot look up {table}: {err}"));
            return;
        }
    }
    if !counted {
        return;
    }
    let counted = match op.operation.kind {
        OpKind::DropColumn | OpKind::RenameColumn if !op.operation.columns.is_empty() => {
            db.count_non_null(&table, &op.operation.columns).await
        }
        _ => db.count_rows(&table).await,
    };
    match counted {
        Ok(rows) => op.rows = Some(rows),
        Err(err) => op.note = Some(format!("cannot count: {err}")),
    }
}

fn assemble(
    config: &Config,
    analysis: Analysis,
    server_version: Option<String>,
    all: bool,
) -> Plan {
    let migrations = analysis
        .migrations
        .into_iter()
        .filter(|m| !m.operations.is_empty())
        .map(|m| {
            // Plain SQL migrations (no app) have no rollback command we could know.
            let previous = m.previous.as_ref().filter(|_| !m.id.app.is_empty());
            let rollback_command = previous.map(|previous| {
                config
                    .restore
                    .rollback_command
                    .replace("{app}", &m.id.app)
                    .replace("{previous}", previous)
                    .replace("{migration}", &m.id.name)
            });
            PlannedMigration {
                migration: m.id.to_string(),
                file: m.file,
                previous: m.previous,
                rollback_command,
                operations: m
                    .operations
                    .into_iter()
                    .map(|operation| PlannedOperation {
                        operation,
                        rows: None,
                        note: None,
                    })
                    .collect(),
            }
        })
        .collect();
    Plan {
        environment: config.environment.clone(),
        engine: engine_of(config),
        server_version,
        all,
        migrations,
        problems: analysis.problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_versions_come_from_leading_digits() {
        assert_eq!(sql_version("0003_drop_sku"), Some(3));
        assert_eq!(sql_version("20240101120000_add"), Some(20240101120000));
        assert_eq!(sql_version("init"), None);
    }
}
