//! The database layer: one [`Adapter`] trait over sqlx, with PostgreSQL,
//! MySQL/MariaDB and SQLite behind it.
//!
//! Everything that reads or writes the application's database goes through here.
//! Identifiers are always quoted by the adapter ([`Engine::quote`]): a table called
//! `x"; DROP TABLE y; --` is just a name. Values are always bound, never formatted
//! into SQL.

/// The [`Session`] of one engine: a transaction on one pooled connection, binding
/// vault values by their variant. Engines differ only in how an unsigned integer
/// is bound (`uint`: MySQL binds it natively, the others as text the column type
/// parses) and in extra methods (`extra`, e.g. PostgreSQL's COPY).
macro_rules! session {
    ($name:ident, $db:ty, uint = |$v:ident| $uint:expr $(, extra = { $($extra:tt)* })?) => {
        struct $name {
            tx: sqlx::Transaction<'static, $db>,
        }

        #[async_trait::async_trait]
        impl $crate::db::Session for $name {
            async fn execute(
                &mut self,
                sql: &str,
                values: &[$crate::vault::Value],
                what: &str,
            ) -> Result<u64, $crate::db::DbError> {
                use $crate::vault::Value;
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for value in values {
                    query = match value {
                        Value::Null | Value::Array(_) => query.bind(None::<String>),
                        Value::Bool(v) => query.bind(*v),
                        Value::Int(v) => query.bind(*v),
                        Value::UInt($v) => query.bind($uint),
                        Value::Float(v) => query.bind(*v),
                        Value::Bytes(v) => query.bind(v.clone()),
                        other => query.bind(other.text().unwrap_or_default().to_string()),
                    };
                }
                let done = query
                    .execute(&mut *self.tx)
                    .await
                    .map_err($crate::db::DbError::query(what))?;
                Ok(done.rows_affected())
            }

            async fn count(&mut self, sql: &str, what: &str) -> Result<u64, $crate::db::DbError> {
                let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut *self.tx)
                    .await
                    .map_err($crate::db::DbError::query(what))?;
                Ok(count.unsigned_abs())
            }

            async fn commit(self: Box<Self>) -> Result<(), $crate::db::DbError> {
                self.tx
                    .commit()
                    .await
                    .map_err($crate::db::DbError::query("committing"))
            }

            $($($extra)*)?
        }
    };
}

/// Reads every adapter does the same way over its own pool: one integer, pairs of
/// text, and (for engines whose columns are read by a per-type "kind") row streams.
/// Generated as inherent methods; the `Adapter` impls delegate to them.
macro_rules! pool_reads {
    ($adapter:ty) => {
        impl $adapter {
            async fn pool_count(&self, sql: &str, what: &str) -> Result<u64, $crate::db::DbError> {
                let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&self.pool)
                    .await
                    .map_err($crate::db::DbError::query(what))?;
                Ok(count.unsigned_abs())
            }

            async fn pool_pairs(
                &self,
                sql: &str,
                what: &str,
            ) -> Result<Vec<(String, String)>, $crate::db::DbError> {
                use sqlx::Row;
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::db::DbError::query(what))?;
                rows.iter()
                    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err($crate::db::DbError::query(what))
            }
        }
    };
    ($adapter:ty, kind = $kind:ident, engine = $engine:expr) => {
        pool_reads!($adapter);

        impl $adapter {
            /// Rows read column by column as `$kind` says: its SELECT expression
            /// per column, and its decoding of that column.
            fn stream_kinds<'a>(
                &'a self,
                table: &'a $crate::db::TableInfo,
                columns: &'a [String],
            ) -> $crate::db::RowStream<'a> {
                use futures_util::StreamExt;
                let selected = match table.row_columns(columns) {
                    Ok(selected) => selected,
                    Err(err) => return $crate::db::failed_stream(err),
                };
                let kinds: Vec<$kind> = selected
                    .iter()
                    .map(|c| $kind::of(&c.declared_type))
                    .collect();
                let exprs: Vec<String> = selected
                    .iter()
                    .zip(&kinds)
                    .map(|(column, kind)| kind.select(&$engine.quote(&column.name)))
                    .collect();
                let sql = $crate::db::select_sql($engine, table, &exprs);
                let what = format!("reading rows of {}", table.name);
                Box::pin(
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .fetch(&self.pool)
                        .map(move |row| {
                            let row = row.map_err($crate::db::DbError::query(what.clone()))?;
                            kinds
                                .iter()
                                .enumerate()
                                .map(|(i, kind)| kind.decode(&row, i))
                                .collect::<Result<Vec<_>, _>>()
                                .map_err($crate::db::DbError::query(what.clone()))
                        }),
                )
            }
        }
    };
}

mod mysql;
mod postgres;
mod sqlite;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::Serialize;

use crate::config::DatabaseUrl;
use crate::vault::Value;

/// How long to wait for a connection before reporting the database unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The database engines dropguard speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    Mysql,
    Sqlite,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
            Engine::Sqlite => "sqlite",
        })
    }
}

impl Engine {
    /// The `n`-th (1-based) bind placeholder for a value going into a column of
    /// `declared_type`. PostgreSQL casts explicitly, so that values bound as text
    /// (numerics, dates, arrays) are parsed by the column type's own input function.
    pub fn placeholder(self, n: usize, declared_type: &str) -> String {
        match self {
            Engine::Postgres => format!("${n}::{declared_type}"),
            Engine::Mysql | Engine::Sqlite => "?".to_string(),
        }
    }

    /// An expression in a form every type can be compared and grouped by:
    /// PostgreSQL compares the text form, which is exact (`10.50` is not `10.5`)
    /// and exists for types without an equality operator (json, point, xml).
    pub fn comparable(self, expr: &str) -> String {
        match self {
            Engine::Postgres => format!("({expr})::text"),
            Engine::Mysql | Engine::Sqlite => expr.to_string(),
        }
    }

    /// `a` and `b` are equal, NULL equal to NULL.
    pub fn not_distinct(self, a: &str, b: &str) -> String {
        match self {
            Engine::Postgres => format!(
                "{} IS NOT DISTINCT FROM {}",
                self.comparable(a),
                self.comparable(b)
            ),
            Engine::Mysql => format!("{a} <=> {b}"),
            Engine::Sqlite => format!("{a} IS {b}"),
        }
    }

    /// A temporary table private to the session, with the given columns (name,
    /// declared type). SQLite gets no types, so no affinity converts a value.
    pub fn create_temp_table(self, name: &str, columns: &[(&str, &str)]) -> String {
        let defs: Vec<String> = columns
            .iter()
            .map(|(column, declared)| match self {
                Engine::Sqlite => self.quote(column),
                _ => format!("{} {declared}", self.quote(column)),
            })
            .collect();
        let defs = defs.join(", ");
        match self {
            Engine::Postgres => format!(
                "CREATE TEMPORARY TABLE {} ({defs}) ON COMMIT DROP",
                self.quote(name)
            ),
            Engine::Mysql | Engine::Sqlite => {
                format!("CREATE TEMPORARY TABLE {} ({defs})", self.quote(name))
            }
        }
    }

    /// Drops a temporary table left on a pooled connection by an earlier session
    /// (MySQL and SQLite keep them for the connection's life, even on rollback).
    pub fn drop_temp_table(self, name: &str) -> String {
        match self {
            Engine::Mysql => format!("DROP TEMPORARY TABLE IF EXISTS {}", self.quote(name)),
            Engine::Postgres | Engine::Sqlite => {
                format!("DROP TABLE IF EXISTS {}", self.quote(name))
            }
        }
    }

    /// `UPDATE target SET assignments FROM source WHERE join AND condition`, in
    /// the engine's syntax. `assignments` are `(target column, source expression)`.
    pub fn update_from(
        self,
        target: &str,
        source: &str,
        assignments: &[(String, String)],
        join: &str,
        condition: &str,
    ) -> String {
        let target_q = self.quote(target);
        match self {
            Engine::Mysql => {
                let set: Vec<String> = assignments
                    .iter()
                    .map(|(column, expr)| format!("{target_q}.{} = {expr}", self.quote(column)))
                    .collect();
                format!(
                    "UPDATE {target_q} JOIN {} ON {join} SET {} WHERE {condition}",
                    self.quote(source),
                    set.join(", ")
                )
            }
            Engine::Postgres | Engine::Sqlite => {
                let set: Vec<String> = assignments
                    .iter()
                    .map(|(column, expr)| format!("{} = {expr}", self.quote(column)))
                    .collect();
                format!(
                    "UPDATE {target_q} SET {} FROM {} WHERE {join} AND {condition}",
                    set.join(", "),
                    self.quote(source)
                )
            }
        }
    }

    /// The engine a database URL names, from its scheme.
    pub fn from_url(url: &str) -> Option<Self> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "postgres" | "postgresql" => Some(Engine::Postgres),
            "mysql" | "mariadb" => Some(Engine::Mysql),
            "sqlite" => Some(Engine::Sqlite),
            _ => None,
        }
    }

    /// Quotes an identifier for this engine, doubling the quote character inside it.
    pub fn quote(self, name: &str) -> String {
        let quote = match self {
            Engine::Mysql => '`',
            Engine::Postgres | Engine::Sqlite => '"',
        };
        let mut quoted = String::with_capacity(name.len() + 2);
        quoted.push(quote);
        for c in name.chars() {
            if c == quote {
                quoted.push(quote);
            }
            quoted.push(c);
        }
        quoted.push(quote);
        quoted
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to {url}: {source}; check database.url and that the server is up")]
    Connect {
        /// The URL with its password masked.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("unsupported database URL {url}: use postgres://, mysql:// or sqlite://")]
    Scheme { url: String },
    #[error("table {table} has no column {column}; check the plan against the live schema")]
    UnknownColumn { table: String, column: String },
    #[error("table {table} has no primary key; dropguard needs one to restore values by key")]
    NoPrimaryKey { table: String },
    #[error(
        "waited {waited:?} for lock {name:?} held by another dropguard instance; is one stuck?"
    )]
    LockTimeout { name: String, waited: Duration },
    #[error("{what}: {source}")]
    Query {
        what: String,
        #[source]
        source: sqlx::Error,
    },
}

impl DbError {
    fn query(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> DbError {
        let what = what.into();
        move |source| DbError::Query { what, source }
    }
}

/// A column as the database declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    /// The type as the database spells it (`numeric(12,2)`, `varchar(40)`,
    /// `bigint unsigned`), needed to cast preserved text back on restore.
    pub declared_type: String,
    pub nullable: bool,
}

/// A foreign key of a table: restore writes referenced tables first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub referenced_table: String,
    pub referenced_columns: Vec<String>,
}

/// What dropguard needs to know of a table to preserve and restore it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableInfo {
    pub name: String,
    /// In table order.
    pub columns: Vec<ColumnInfo>,
    /// In key order; empty when the table has none.
    pub primary_key: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
    /// The column whose values a sequence, identity or auto-increment generates:
    /// after explicit ids are restored, its counter must be moved past them.
    pub generated_key: Option<String>,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The columns a snapshot of `columns` (all of them when empty) holds, in
    /// order: the primary key first, then the requested columns not in it.
    pub fn row_columns(&self, columns: &[String]) -> Result<Vec<&ColumnInfo>, DbError> {
        let wanted: Vec<&str> = if columns.is_empty() {
            self.columns.iter().map(|c| c.name.as_str()).collect()
        } else {
            columns.iter().map(String::as_str).collect()
        };
        let mut out: Vec<&ColumnInfo> = Vec::new();
        for name in self.primary_key.iter().map(String::as_str).chain(wanted) {
            let column = self.column(name).ok_or_else(|| DbError::UnknownColumn {
                table: self.name.clone(),
                column: name.to_string(),
            })?;
            if !out.iter().any(|c| c.name == column.name) {
                out.push(column);
            }
        }
        Ok(out)
    }

    /// `ORDER BY` over the primary key (or every column when there is none), so
    /// snapshots are written in a stable order.
    fn order_by(&self, engine: Engine) -> String {
        let keys: Vec<String> = if self.primary_key.is_empty() {
            self.columns.iter().map(|c| engine.quote(&c.name)).collect()
        } else {
            self.primary_key.iter().map(|c| engine.quote(c)).collect()
        };
        keys.join(", ")
    }
}

/// `SELECT <exprs> FROM <table> ORDER BY <key>`, the query behind every row stream.
pub(crate) fn select_sql(engine: Engine, table: &TableInfo, exprs: &[String]) -> String {
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        exprs.join(", "),
        engine.quote(&table.name),
        table.order_by(engine)
    )
}

/// A stream holding only `err`, for failures found before the query is sent.
pub(crate) fn failed_stream<'a>(err: DbError) -> RowStream<'a> {
    Box::pin(futures_util::stream::once(async { Err(err) }))
}

/// A stream of rows, each the values of `TableInfo::row_columns` in that order.
pub type RowStream<'a> = BoxStream<'a, Result<Vec<Value>, DbError>>;

/// A migration recorded as applied: (app, name).
pub type Applied = BTreeSet<(String, String)>;

/// What dropguard needs from the application's database.
#[async_trait]
pub trait Adapter: Send + Sync {
    fn engine(&self) -> Engine;

    /// The server's version string, recorded in snapshots.
    async fn server_version(&self) -> Result<String, DbError>;

    /// Whether a table exists (in the current schema/database).
    async fn table_exists(&self, table: &str) -> Result<bool, DbError>;

    /// Columns, primary key, foreign keys and generated key of `table`; `None` when
    /// the table does not exist.
    async fn introspect(&self, table: &str) -> Result<Option<TableInfo>, DbError>;

    /// Streams `table.row_columns(columns)` of every row, in primary-key order,
    /// without holding the table in memory.
    fn stream_rows<'a>(&'a self, table: &'a TableInfo, columns: &'a [String]) -> RowStream<'a>;

    /// Rows of `table`.
    async fn count_rows(&self, table: &str) -> Result<u64, DbError> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.engine().quote(table));
        self.count(&sql, &format!("counting the rows of {table}"))
            .await
    }

    /// Rows of `table` where at least one of `columns` is not NULL: the rows whose
    /// values a column drop destroys.
    async fn count_non_null(&self, table: &str, columns: &[String]) -> Result<u64, DbError> {
        let engine = self.engine();
        let condition = columns
            .iter()
            .map(|column| format!("{} IS NOT NULL", engine.quote(column)))
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE {condition}",
            engine.quote(table)
        );
        let what = format!("counting the values of {table}.{}", columns.join(","));
        self.count(&sql, &what).await
    }

    /// Runs a query returning one integer. `sql` is built from quoted identifiers only.
    async fn count(&self, sql: &str, what: &str) -> Result<u64, DbError>;

    /// Runs a query returning rows of two text columns. `sql` is built from quoted
    /// identifiers only.
    async fn string_pairs(&self, sql: &str, what: &str) -> Result<Vec<(String, String)>, DbError>;

    /// The rows of `django_migrations`; an empty set when the table does not exist
    /// (nothing is applied yet).
    async fn applied_migrations(&self) -> Result<Applied, DbError> {
        if !self.table_exists("django_migrations").await? {
            return Ok(Applied::new());
        }
        let pairs = self
            .string_pairs(
                "SELECT app, name FROM django_migrations",
                "reading django_migrations",
            )
            .await?;
        Ok(pairs.into_iter().collect())
    }

    /// Takes the advisory lock `name`, shared by every dropguard on this database
    /// (PostgreSQL `pg_advisory_lock`, MySQL `GET_LOCK`, a file lock beside a
    /// SQLite file), waiting up to [`LOCK_WAIT`] for another holder.
    async fn lock(&self, name: &str) -> Result<Box<dyn LockGuard>, DbError>;

    /// One connection in one transaction, for writing an object back.
    async fn begin(&self) -> Result<Box<dyn Session>, DbError>;

    /// After explicit ids were written, moves the generator of `column` past them
    /// (PostgreSQL sequences and identities; MySQL and SQLite do it themselves).
    async fn reset_generator(&self, _table: &str, _column: &str) -> Result<(), DbError> {
        Ok(())
    }

    async fn close(&self);
}

/// How long an instance waits for another to finish preserving or restoring the
/// same migration before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(600);

/// A held advisory lock. Dropping it without `release` still frees it (the
/// connection holding it is closed, or the file lock dropped), just less promptly.
#[async_trait]
pub trait LockGuard: Send {
    async fn release(self: Box<Self>);
}

/// The 64-bit key of a lock name: stable across instances and versions.
pub fn lock_key(name: &str) -> [u8; 8] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    key
}

/// [`lock_key`] as hex, for engines that name locks with text.
pub fn lock_key_hex(name: &str) -> String {
    lock_key(name).iter().map(|b| format!("{b:02x}")).collect()
}

/// One connection inside one transaction. Dropped without `commit`, everything it
/// wrote is rolled back.
#[async_trait]
pub trait Session: Send {
    /// Runs `sql`, binding `values` in order; returns the rows affected.
    async fn execute(&mut self, sql: &str, values: &[Value], what: &str) -> Result<u64, DbError>;

    /// Runs a query returning one integer.
    async fn count(&mut self, sql: &str, what: &str) -> Result<u64, DbError>;

    /// Bulk-loads `rows` into `table` by the engine's fastest path (PostgreSQL
    /// COPY); `false` when the engine has none and multi-row INSERTs must do.
    async fn copy_in(
        &mut self,
        _table: &str,
        _columns: &[String],
        _rows: &[Vec<Value>],
    ) -> Result<bool, DbError> {
        Ok(false)
    }

    async fn commit(self: Box<Self>) -> Result<(), DbError>;
}

/// Connects to the database `url` names.
pub async fn connect(url: &DatabaseUrl) -> Result<Box<dyn Adapter>, DbError> {
    let text = url.expose();
    let fail = |source| DbError::Connect {
        url: url.masked(),
        source,
    };
    match Engine::from_url(text) {
        Some(Engine::Postgres) => Ok(Box::new(
            postgres::Postgres::connect(text).await.map_err(fail)?,
        )),
        Some(Engine::Mysql) => Ok(Box::new(mysql::Mysql::connect(text).await.map_err(fail)?)),
        Some(Engine::Sqlite) => Ok(Box::new(sqlite::Sqlite::connect(text).await.map_err(fail)?)),
        None => Err(DbError::Scheme { url: url.masked() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_escaped() {
        assert_eq!(Engine::Postgres.quote("order"), "\"order\"");
        assert_eq!(
            Engine::Postgres.quote("x\"; DROP TABLE y; --"),
            "\"x\"\"; DROP TABLE y; --\""
        );
        assert_eq!(Engine::Mysql.quote("we`ird"), "`we``ird`");
        assert_eq!(Engine::Sqlite.quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn engines_come_from_url_schemes() {
        assert_eq!(
            Engine::from_url("postgresql://h/db"),
            Some(Engine::Postgres)
        );
        assert_eq!(Engine::from_url("mariadb://h/db"), Some(Engine::Mysql));
        assert_eq!(Engine::from_url("sqlite:///x.db"), Some(Engine::Sqlite));
        assert_eq!(Engine::from_url("oracle://h"), None);
    }
}
