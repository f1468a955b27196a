//! Static analysis of schema migrations: works out which tables and columns a
//! release drops or renames, so their data can be preserved first. Owns the
//! public types; Django specifics live in `django`, SQL in `sql`.
//!
//! Pure: no database access, no printing, no async.

mod depth;
mod django;

/// Directories never searched for migrations (virtualenvs, VCS, caches).
pub(crate) use django::skip_dir as is_skipped_dir;
mod names;
pub mod sql;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use sql::{SqlEffect, SqlError, analyse_sql, analyse_sql_dir};

pub use crate::db::Engine;

/// `connection.ops.max_name_length()` of Django's backend for `engine`: longer
/// generated names (join tables) are truncated with a hash suffix.
pub fn max_name_length(engine: Engine) -> Option<usize> {
    match engine {
        Engine::Postgres => Some(63),
        Engine::Mysql => Some(64),
        Engine::Sqlite => None,
    }
}

/// A migration: Django app label and migration name. Plain SQL migrations
/// have an empty `app` and the file's id as `name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MigrationId {
    pub app: String,
    pub name: String,
}

impl MigrationId {
    pub fn new(app: impl Into<String>, name: impl Into<String>) -> Self {
        MigrationId {
            app: app.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for MigrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.app.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}.{}", self.app, self.name)
        }
    }
}

/// What a destructive or breaking operation does to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    DropTable,
    DropColumn,
    /// TRUNCATE, and DELETE without WHERE.
    Truncate,
    RenameTable,
    RenameColumn,
    /// Code or SQL whose effect could not be determined statically.
    Opaque,
}

/// One destructive or breaking operation of a migration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operation {
    pub migration: MigrationId,
    pub kind: OpKind,
    /// Schema / database qualifier, when the SQL named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// None only for opaque operations that name no table.
    pub table: Option<String>,
    /// Columns dropped or renamed (old names); empty = the whole table.
    pub columns: Vec<String>,
    /// Primary key columns of `table`, when the replayed state knows them.
    pub primary_key: Vec<String>,
    /// New name, for renames.
    pub new_name: Option<String>,
    /// The operation as written, e.g. "RemoveField(product.legacy_sku)".
    pub source: String,
    pub file: PathBuf,
    /// 1-based line of the operation in `file`.
    pub line: usize,
}

/// One migration of the resolved graph and what it destroys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationPlan {
    pub id: MigrationId,
    pub file: PathBuf,
    /// Target for `manage.py migrate <app> <previous>` that unapplies this
    /// migration: its first parent in the same app, "zero" when it is the
    /// app's first. For SQL folders: the previous file's id, None for the first.
    pub previous: Option<String>,
    /// Recorded as applied (a squash counts as applied when it is recorded or
    /// all the migrations it replaces are).
    pub applied: bool,
    /// Migrations this squash stands in for (empty unless it is a squash in use).
    pub replaces: Vec<MigrationId>,
    pub operations: Vec<Operation>,
}

/// Something in one file that could not be analysed (the rest still is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the file as a whole.
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Analysis {
    /// Topological order (Django's `migrate` plan order), all migrations of
    /// the graph, applied or not.
    pub migrations: Vec<MigrationPlan>,
    pub problems: Vec<Problem>,
}

impl Analysis {
    /// Every operation of the migrations not yet applied, in plan order.
    pub fn pending_operations(&self) -> impl Iterator<Item = &Operation> {
        self.migrations
            .iter()
            .filter(|m| !m.applied)
            .flat_map(|m| m.operations.iter())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    pub engine: Engine,
    /// `settings.AUTH_USER_MODEL`, "app_label.ModelName".
    pub auth_user_model: String,
}

impl Options {
    pub fn new(engine: Engine) -> Self {
        Options {
            engine,
            auth_user_model: "auth.User".to_string(),
        }
    }
}

/// A migration that depends on one that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingDependency {
    pub migration: MigrationId,
    pub dependency: MigrationId,
}

impl fmt::Display for MissingDependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} depends on {}", self.migration, self.dependency)
    }
}

/// Whole-project failures; anything confined to one file is a `Problem`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("circular dependency between migrations: {}", join(.0, " -> "))]
    Cycle(Vec<MigrationId>),
    #[error("missing migration dependencies: {}", join(.0, "; "))]
    MissingDependencies(Vec<MissingDependency>),
    #[error("cannot start a thread for the analysis: {0}")]
    Thread(std::io::Error),
}

fn join<T: fmt::Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// Parses one Django migration file's bytes and replays its operations on an
/// empty project state. Only for the fuzz targets (`fuzz/`): the real entry point
/// is [`analyse_django`], which needs a project on disk.
#[doc(hidden)]
pub fn fuzz_django_file(
    bytes: &[u8],
    opts: &Options,
) -> Result<(Vec<Operation>, Vec<Problem>), Problem> {
    // On the stack the real analysis has, so the fuzzer finds what it would meet.
    depth::on_analysis_stack("migrations", || django::analyse_file(bytes, opts)).map_err(|e| {
        Problem {
            file: PathBuf::new(),
            line: 0,
            message: format!("cannot start a thread for the analysis: {e}"),
        }
    })?
}

/// Analyses every Django migration under `project_dir`, on a thread of its own
/// with a known stack (see `depth`).
///
/// `applied` holds the rows of `django_migrations` as (app, name); it decides
/// whether squashed migrations stand in for the ones they replace.
pub fn analyse_django(
    project_dir: &Path,
    applied: &BTreeSet<(String, String)>,
    opts: &Options,
) -> Result<Analysis, Error> {
    depth::on_analysis_stack("migrations", || django::analyse(project_dir, applied, opts))
        .map_err(Error::Thread)?
}
