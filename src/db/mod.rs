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

            async fn pool_text_rows(
                &self,
                sql: &str,
                binds: &[String],
                what: &str,
            ) -> Result<Vec<Vec<Option<String>>>, $crate::db::DbError> {
                use sqlx::Row;
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for bind in binds {
                    query = query.bind(bind.clone());
                }
                let rows = query
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::db::DbError::query(what))?;
                rows.iter()
                    .map(|row| (0..row.len()).map(|i| row.try_get(i)).collect())
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err($crate::db::DbError::query(what))
            }

            /// The rows of `django_migrations` after `after`, for
            /// [`Adapter::django_migrations_after`](crate::db::Adapter::django_migrations_after).
            async fn pool_migration_records(
                &self,
                after: i64,
            ) -> Result<Vec<$crate::db::MigrationRecord>, $crate::db::DbError> {
                use sqlx::Row;
                let engine = $crate::db::Adapter::engine(self);
                if !$crate::db::Adapter::table_exists(self, "django_migrations").await? {
                    return Ok(Vec::new());
                }
                let what = "reading new rows of django_migrations";
                let rows = sqlx::query(sqlx::AssertSqlSafe($crate::db::migrations_after_sql(
                    engine,
                )))
                .bind(after)
                .fetch_all(&self.pool)
                .await
                .map_err($crate::db::DbError::query(what))?;
                rows.iter()
                    .map(|row| {
                        let applied: String = row.try_get(3)?;
                        Ok($crate::db::MigrationRecord {
                            id: row.try_get(0)?,
                            app: row.try_get(1)?,
                            name: row.try_get(2)?,
                            applied: $crate::db::parse_applied(&applied),
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err($crate::db::DbError::query(what))
            }
        }
    };
    ($adapter:ty, kind = $kind:ident, engine = $engine:expr) => {
        pool_reads!($adapter);

        impl $adapter {
            /// The `$kind` of each of `table.row_columns(columns)`, and its
            /// SELECT expression.
            fn kinds_and_exprs(
                table: &$crate::db::TableInfo,
                columns: &[String],
            ) -> Result<(Vec<$kind>, Vec<String>), $crate::db::DbError> {
                let selected = table.row_columns(columns)?;
                let kinds: Vec<$kind> = selected
                    .iter()
                    .map(|c| $kind::of(&c.declared_type))
                    .collect();
                let exprs = selected
                    .iter()
                    .zip(&kinds)
                    .map(|(column, kind)| kind.select(&$engine.quote(&column.name)))
                    .collect();
                Ok((kinds, exprs))
            }

            /// Rows read column by column as `$kind` says: its SELECT expression
            /// per column, and its decoding of that column.
            fn stream_kinds<'a>(
                &'a self,
                table: &'a $crate::db::TableInfo,
                columns: &'a [String],
            ) -> $crate::db::RowStream<'a> {
                use futures_util::StreamExt;
                let (kinds, exprs) = match Self::kinds_and_exprs(table, columns) {
                    Ok(found) => found,
                    Err(err) => return $crate::db::failed_stream(err),
                };
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

            /// [`Adapter::split_rows`](crate::db::Adapter::split_rows) over the
            /// pool: one query per range of the first key column, each on its
            /// own pooled connection, decoded as `$kind` says.
            async fn split_kinds<'a>(
                &'a self,
                table: &'a $crate::db::TableInfo,
                columns: &'a [String],
                parts: usize,
            ) -> Result<Option<Vec<$crate::db::RowStream<'a>>>, $crate::db::DbError> {
                use futures_util::StreamExt;
                let Some(key) = $crate::db::integer_split_key($engine, table) else {
                    return Ok(None);
                };
                if parts < 2 {
                    return Ok(None);
                }
                let (kinds, exprs) = Self::kinds_and_exprs(table, columns)?;
                let what = format!("reading rows of {}", table.name);
                let bounds: (Option<i64>, Option<i64>) = sqlx::query_as(sqlx::AssertSqlSafe(
                    $crate::db::key_bounds_sql($engine, table, key),
                ))
                .fetch_one(&self.pool)
                .await
                .map_err($crate::db::DbError::query(what.clone()))?;
                let (Some(min), Some(max)) = bounds else {
                    return Ok(None);
                };
                let sql = $crate::db::range_select_sql($engine, table, &exprs, key);
                let streams = $crate::db::key_ranges(min, max, parts)
                    .into_iter()
                    .map(|(low, high)| {
                        let kinds = kinds.clone();
                        let what = what.clone();
                        let stream = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                            .bind(low)
                            .bind(high)
                            .fetch(&self.pool)
                            .map(move |row| {
                                let row = row.map_err($crate::db::DbError::query(what.clone()))?;
                                kinds
                                    .iter()
                                    .enumerate()
                                    .map(|(i, kind)| kind.decode(&row, i))
                                    .collect::<Result<Vec<_>, _>>()
                                    .map_err($crate::db::DbError::query(what.clone()))
                            });
                        Box::pin(stream) as $crate::db::RowStream<'a>
                    })
                    .collect();
                Ok(Some(streams))
            }
        }
    };
}

mod deadline;
mod mysql;
mod pg_binary;
mod pg_checksum;
mod postgres;
mod sqlite;

pub use deadline::Deadlines;
pub use pg_binary::{BinaryRows, Unencodable};

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::Serialize;

use crate::config::DatabaseUrl;
use crate::vault::Value;

/// A statement slower than this is logged by sqlx at debug level only: reading a
/// whole table to preserve it is slow by design, not a problem to warn about.
const SLOW_STATEMENT: std::time::Duration = std::time::Duration::from_secs(1);

/// Appends one row, encoded for a bulk load, to a buffer.
pub type RowEncoder = fn(&[Value], &mut Vec<u8>);

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

    /// How rows are encoded for [`Session::copy_in`]: PostgreSQL's COPY text
    /// format; `None` for engines that load by INSERT.
    pub fn bulk_encoder(self) -> Option<RowEncoder> {
        match self {
            Engine::Postgres => Some(postgres::copy_text_row),
            Engine::Mysql | Engine::Sqlite => None,
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
    // The cause is in the message, not a `source`: sqlx's text already carries
    // its own cause, and a chain would print it twice more.
    #[error("cannot connect to {url}: {cause}; check database.url and that the server is up")]
    Connect {
        /// The URL with its credentials masked.
        url: String,
        /// The driver's error, the URL's credentials masked in it.
        cause: String,
    },
    #[error(
        "cannot connect to {url}: no answer within {waited} (database.connect_timeout); check database.url, that the server is up, and that nothing in between holds connections open"
    )]
    ConnectTimeout {
        /// The URL with its password masked.
        url: String,
        waited: String,
    },
    #[error(
        "the database at {url} stopped answering: {what} got no answer for {waited} (database.statement_timeout), and a SELECT 1 on a new connection: {cause}; check the server and the network to it, then try again"
    )]
    Unresponsive {
        /// The URL with its password masked.
        url: String,
        /// What was waiting for it.
        what: String,
        waited: String,
        /// How the check on a new connection failed.
        cause: String,
    },
    #[error(
        "the database at {url} gave {what} no connection within {waited} (database.connect_timeout): it stopped answering, or every pooled connection stayed busy; check the server and the network to it, then try again"
    )]
    NoConnection {
        /// The URL with its password masked.
        url: String,
        /// What was waiting for a connection.
        what: String,
        waited: String,
    },
    #[error(
        "the database at {url} does not answer: a SELECT 1 on a new connection: {cause}; check the server and the network to it"
    )]
    Unanswered {
        /// The URL with its password masked.
        url: String,
        cause: String,
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

    /// The server's SQLSTATE for a query it refused (`42501`, `42P01`, …).
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            DbError::Query {
                source: sqlx::Error::Database(err),
                ..
            } => err.code().map(|code| code.into_owned()),
            _ => None,
        }
    }

    /// The server's own message for a query it refused, without dropguard's context.
    pub fn server_message(&self) -> Option<String> {
        match self {
            DbError::Query {
                source: sqlx::Error::Database(err),
                ..
            } => Some(err.message().to_string()),
            _ => None,
        }
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

/// The alias under which dropguard's own reads of an application table name it
/// (`FROM "t" AS dropguard_own WHERE TRUE …`), so that the usage gate can tell
/// them from the application's in the database's statement statistics.
///
/// Both parts matter: MySQL/MariaDB digests keep identifiers but drop comments,
/// so the alias shows in the text; PostgreSQL's `pg_stat_statements` ignores
/// aliases and comments when it groups statements, so the constant `TRUE` gives
/// the statement a shape of its own: otherwise dropguard's `COUNT(*)` would share
/// one entry (and one text) with a Django `.count()` of the same table.
pub const OWN_READ: &str = "dropguard_own";

/// `FROM <table> AS dropguard_own WHERE TRUE`: see [`OWN_READ`].
fn own_from(engine: Engine, table: &str) -> String {
    format!("FROM {} AS {OWN_READ} WHERE TRUE", engine.quote(table))
}

/// `SELECT <exprs> FROM <table> … ORDER BY <key>`, the query behind every row stream.
pub(crate) fn select_sql(engine: Engine, table: &TableInfo, exprs: &[String]) -> String {
    format!(
        "SELECT {} {} ORDER BY {}",
        exprs.join(", "),
        own_from(engine, &table.name),
        table.order_by(engine)
    )
}

/// A stream holding only `err`, for failures found before the query is sent.
pub(crate) fn failed_stream<'a, T: Send + 'a>(err: DbError) -> BoxStream<'a, Result<T, DbError>> {
    Box::pin(futures_util::stream::once(async { Err(err) }))
}

/// The first key column of `table` when it is an integer type whose every value
/// fits an `i64`: its ranges split the table's rows into disjoint parts (a key
/// column is never NULL, so every row falls in exactly one range).
pub(crate) fn integer_split_key(engine: Engine, table: &TableInfo) -> Option<&ColumnInfo> {
    let key = table.column(table.primary_key.first()?)?;
    let t = key.declared_type.to_ascii_lowercase();
    let integer = match engine {
        Engine::Postgres => matches!(t.as_str(), "smallint" | "integer" | "bigint"),
        Engine::Mysql => {
            let base = t.split(['(', ' ']).next().unwrap_or("");
            match base {
                "tinyint" | "smallint" | "mediumint" | "int" | "integer" => true,
                // An unsigned bigint can exceed i64.
                "bigint" => !t.contains("unsigned"),
                _ => false,
            }
        }
        Engine::Sqlite => false,
    };
    integer.then_some(key)
}

/// `SELECT MIN(key), MAX(key)` of `table` as 64-bit integers (NULLs when empty).
pub(crate) fn key_bounds_sql(engine: Engine, table: &TableInfo, key: &ColumnInfo) -> String {
    let int = match engine {
        Engine::Mysql => "SIGNED",
        Engine::Postgres | Engine::Sqlite => "BIGINT",
    };
    let k = engine.quote(&key.name);
    format!(
        "SELECT CAST(MIN({k}) AS {int}), CAST(MAX({k}) AS {int}) {}",
        own_from(engine, &table.name)
    )
}

/// `SELECT <exprs> FROM <table> … AND key BETWEEN <low> AND <high>`, both bounds
/// bound as 64-bit integers, in no particular order.
pub(crate) fn range_select_sql(
    engine: Engine,
    table: &TableInfo,
    exprs: &[String],
    key: &ColumnInfo,
) -> String {
    format!(
        "SELECT {} {} AND {} BETWEEN {} AND {}",
        exprs.join(", "),
        own_from(engine, &table.name),
        engine.quote(&key.name),
        engine.placeholder(1, "bigint"),
        engine.placeholder(2, "bigint"),
    )
}

/// `[min, max]` cut into at most `parts` adjacent, non-empty, inclusive ranges
/// of nearly equal width that together cover it exactly.
pub(crate) fn key_ranges(min: i64, max: i64, parts: usize) -> Vec<(i64, i64)> {
    if max < min {
        return Vec::new();
    }
    let span = i128::from(max) - i128::from(min) + 1;
    let parts = i128::try_from(parts.max(1)).unwrap_or(1).min(span);
    (0..parts)
        .map(|i| {
            // Within [min, max] by construction, so the conversions cannot fail.
            let low = i128::from(min) + span * i / parts;
            let high = i128::from(min) + span * (i + 1) / parts - 1;
            (
                i64::try_from(low).unwrap_or(min),
                i64::try_from(high).unwrap_or(max),
            )
        })
        .collect()
}

/// A stream of rows, each the values of `TableInfo::row_columns` in that order.
pub type RowStream<'a> = BoxStream<'a, Result<Vec<Value>, DbError>>;

/// A [`RowStream`] with each row already in the vault's canonical encoding.
pub type EncodedStream<'a> = BoxStream<'a, Result<Vec<u8>, DbError>>;

/// A migration recorded as applied: (app, name).
pub type Applied = BTreeSet<(String, String)>;

/// One row of `django_migrations`: Django writes one per migration it applies
/// (and deletes it when the migration is unapplied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRecord {
    /// The row's primary key: increasing in the order rows were written, so the
    /// highest one seen is where the next read starts.
    pub id: i64,
    pub app: String,
    pub name: String,
    /// The `applied` column, read as UTC: Django stores UTC when `USE_TZ = True`
    /// (its default); a project with `USE_TZ = False` on MySQL or SQLite stores
    /// local time, which is then off by the server's offset. `None` when the
    /// stored text is not a time (never written so by Django).
    pub applied: Option<SystemTime>,
}

/// `SELECT` of the rows of `django_migrations` after a bound id, in id order:
/// the id as a 64-bit integer, `app`, `name`, and `applied` as UTC text
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` whatever the column type (timestamptz on
/// PostgreSQL, datetime(6) on MySQL, text on SQLite).
pub(crate) fn migrations_after_sql(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => {
            "SELECT CAST(id AS BIGINT), app::text, name::text, \
                    to_char(applied AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') \
             FROM django_migrations WHERE id > $1::bigint ORDER BY id"
        }
        Engine::Mysql => {
            "SELECT CAST(id AS SIGNED), app, name, CAST(applied AS CHAR) \
             FROM django_migrations WHERE id > ? ORDER BY id"
        }
        Engine::Sqlite => {
            "SELECT id, app, name, CAST(applied AS TEXT) \
             FROM django_migrations WHERE id > ? ORDER BY id"
        }
    }
}

/// The text of an `applied` value (see [`migrations_after_sql`]) as a time.
pub(crate) fn parse_applied(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    // SQLite keeps what Django wrote: `T` or space, an offset on some versions.
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(&text.replacen(' ', "T", 1)) {
        return Some(time.with_timezone(&chrono::Utc).into());
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
        .map(|time| time.and_utc().into())
}

/// What dropguard needs from the application's database.
#[async_trait]
pub trait Adapter: Send + Sync {
    fn engine(&self) -> Engine;

    /// A `SELECT 1` on a connection of its own, outside the pool (a busy pool
    /// says nothing of the server): whether the server answers at all. The
    /// adapter [`connect`] hands out bounds it by `database.connect_timeout`.
    async fn ping(&self) -> Result<(), DbError>;

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

    /// The rows of [`stream_rows`](Adapter::stream_rows), each already in the
    /// vault's canonical encoding (the bytes `encode_row` gives for the values
    /// `stream_rows` yields), for a reader that only stores them: no `Value` is
    /// made. `None` when the adapter reads rows only as values.
    fn stream_encoded<'a>(
        &'a self,
        _table: &'a TableInfo,
        _columns: &'a [String],
    ) -> Option<EncodedStream<'a>> {
        None
    }

    /// The rows of [`stream_rows`](Adapter::stream_rows), in no particular order,
    /// split by ranges of the first key column into at most `parts` streams, each
    /// on a connection of its own, that together yield every row exactly once:
    /// for a reader whose result does not depend on order (a checksum), so that
    /// the server reads the parts in parallel. `None` when the table does not
    /// split so (its first key column is not an integer, it is empty, `parts` is
    /// below two, or the engine has one connection): `stream_rows` is then the
    /// one stream. Each part has its own snapshot of the table.
    async fn split_rows<'a>(
        &'a self,
        _table: &'a TableInfo,
        _columns: &'a [String],
        _parts: usize,
    ) -> Result<Option<Vec<RowStream<'a>>>, DbError> {
        Ok(None)
    }

    /// The checksum of `table.row_columns(columns)` over every row as the
    /// database holds it now, when the adapter computes it without making
    /// [`Value`]s: PostgreSQL does, from binary COPY, read in up to `parts`
    /// parts (ranges of heap pages, on connections of their own) that all see
    /// one snapshot. `None`: the caller hashes `split_rows` or `stream_rows`.
    async fn checksum_rows(
        &self,
        _table: &TableInfo,
        _columns: &[String],
        _parts: usize,
    ) -> Result<Option<crate::vault::Checksummer>, DbError> {
        Ok(None)
    }

    /// Rows of `table`.
    async fn count_rows(&self, table: &str) -> Result<u64, DbError> {
        let sql = format!("SELECT COUNT(*) {}", own_from(self.engine(), table));
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
            "SELECT COUNT(*) {} AND ({condition})",
            own_from(engine, table)
        );
        let what = format!("counting the values of {table}.{}", columns.join(","));
        self.count(&sql, &what).await
    }

    /// Runs a query returning one integer. `sql` is built from quoted identifiers only.
    async fn count(&self, sql: &str, what: &str) -> Result<u64, DbError>;

    /// Runs a query returning rows of two text columns. `sql` is built from quoted
    /// identifiers only.
    async fn string_pairs(&self, sql: &str, what: &str) -> Result<Vec<(String, String)>, DbError>;

    /// Runs a query whose every column is text (cast in the SQL), binding
    /// `binds` as text in order; NULL is `None`. `sql` is built from quoted
    /// identifiers and placeholders only.
    async fn text_rows(
        &self,
        sql: &str,
        binds: &[String],
        what: &str,
    ) -> Result<Vec<Vec<Option<String>>>, DbError>;

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

    /// The highest id in `django_migrations`; 0 when it is empty or does not
    /// exist yet (a database before its first `migrate`: nothing applied). One
    /// lookup of the primary key's index.
    async fn django_migrations_max_id(&self) -> Result<i64, DbError> {
        if !self.table_exists("django_migrations").await? {
            return Ok(0);
        }
        let sql = match self.engine() {
            Engine::Postgres => {
                "SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM django_migrations"
            }
            Engine::Mysql => "SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) FROM django_migrations",
            Engine::Sqlite => "SELECT COALESCE(MAX(id), 0) FROM django_migrations",
        };
        let max = self
            .count(sql, "reading the last id of django_migrations")
            .await?;
        Ok(i64::try_from(max).unwrap_or(i64::MAX))
    }

    /// The rows of `django_migrations` with `id > after`, in id order (a range
    /// scan of the primary key); empty when the table does not exist yet.
    async fn django_migrations_after(&self, after: i64) -> Result<Vec<MigrationRecord>, DbError>;

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

    /// Bulk-loads into `table` by the engine's fastest path: one COPY fed with
    /// the chunks `chunks` yields, rows already encoded by the engine's
    /// [`Engine::bulk_encoder`] off the async thread; returns the rows the
    /// server loaded. `None` when the engine has no such path and multi-row
    /// INSERTs must do.
    /// `binary`: the chunks are COPY's binary format ([`BinaryRows`]), not text.
    async fn copy_in(
        &mut self,
        _table: &str,
        _columns: &[String],
        _binary: bool,
        _chunks: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> Result<Option<u64>, DbError> {
        Ok(None)
    }

    async fn commit(self: Box<Self>) -> Result<(), DbError>;
}

/// Connects to the configured database, under its configured deadlines
/// (`database.connect_timeout`, `database.statement_timeout`).
pub async fn open(config: &crate::config::DatabaseConfig) -> Result<Box<dyn Adapter>, DbError> {
    connect_with(&config.url, config.into()).await
}

/// Connects to the database `url` names, with the default [`Deadlines`].
pub async fn connect(url: &DatabaseUrl) -> Result<Box<dyn Adapter>, DbError> {
    connect_with(url, Deadlines::default()).await
}

/// Connects to the database `url` names within `deadlines.connect`; every call
/// of the adapter it returns is then under `deadlines` (see [`Deadlines`]).
pub async fn connect_with(
    url: &DatabaseUrl,
    deadlines: Deadlines,
) -> Result<Box<dyn Adapter>, DbError> {
    let text = url.expose();
    let fail = |cause: sqlx::Error| DbError::Connect {
        url: url.masked(),
        cause: url.scrub(&cause.to_string()),
    };
    let wait = deadlines.connect;
    let connecting = async {
        Ok::<Box<dyn Adapter>, DbError>(match Engine::from_url(text) {
            Some(Engine::Postgres) => Box::new(
                postgres::Postgres::connect(text, wait)
                    .await
                    .map_err(fail)?,
            ),
            Some(Engine::Mysql) => Box::new(mysql::Mysql::connect(text, wait).await.map_err(fail)?),
            Some(Engine::Sqlite) => {
                Box::new(sqlite::Sqlite::connect(text, wait).await.map_err(fail)?)
            }
            None => return Err(DbError::Scheme { url: url.masked() }),
        })
    };
    let inner = match tokio::time::timeout(wait, connecting).await {
        Ok(connected) => connected?,
        Err(_) => {
            return Err(DbError::ConnectTimeout {
                url: url.masked(),
                waited: deadline::text(wait),
            });
        }
    };
    Ok(Box::new(deadline::Watched::new(
        inner,
        deadlines,
        url.masked(),
    )))
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
    fn applied_times_are_read_as_utc_in_the_forms_engines_give() {
        let at = |secs: u64, micros: u64| {
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
        };
        // 2026-11-25T16:22:38Z
        for (text, expected) in [
            ("2026-11-25 16:22:38.250000", at(1_795_623_758, 250_000)),
            ("2026-11-25 16:22:38", at(1_795_623_758, 0)),
            ("2026-11-25T16:22:38.000001", at(1_795_623_758, 1)),
            ("2026-11-25 17:22:38.5+01:00", at(1_795_623_758, 500_000)),
        ] {
            assert_eq!(parse_applied(text), expected, "{text}");
        }
        assert_eq!(parse_applied("yesterday"), None);
        assert_eq!(parse_applied(""), None);
    }

    #[test]
    fn key_ranges_cover_the_span_exactly_once() {
        for (min, max, parts) in [
            (1, 1_000_000, 3),
            (1, 2, 3),
            (5, 5, 4),
            (-10, 10, 2),
            (i64::MIN, i64::MAX, 3),
            (i64::MAX - 1, i64::MAX, 8),
            (0, 99, 1),
        ] {
            let ranges = key_ranges(min, max, parts);
            assert!(
                !ranges.is_empty() && ranges.len() <= parts,
                "{min}..{max}/{parts}"
            );
            assert_eq!(ranges[0].0, min);
            assert_eq!(ranges[ranges.len() - 1].1, max);
            for (low, high) in &ranges {
                assert!(low <= high, "{ranges:?}");
            }
            for pair in ranges.windows(2) {
                assert_eq!(
                    i128::from(pair[0].1) + 1,
                    i128::from(pair[1].0),
                    "{ranges:?}"
                );
            }
        }
        assert!(key_ranges(3, 2, 2).is_empty());
    }

    #[test]
    fn only_integer_first_keys_split() {
        let table = |declared: &str| TableInfo {
            name: "t".into(),
            columns: vec![ColumnInfo {
                name: "k".into(),
                declared_type: declared.into(),
                nullable: false,
            }],
            primary_key: vec!["k".into()],
            foreign_keys: Vec::new(),
            generated_key: None,
        };
        for (engine, declared, splits) in [
            (Engine::Postgres, "bigint", true),
            (Engine::Postgres, "integer", true),
            (Engine::Postgres, "numeric(20,0)", false),
            (Engine::Postgres, "uuid", false),
            (Engine::Mysql, "int(11)", true),
            (Engine::Mysql, "bigint(20)", true),
            (Engine::Mysql, "int(10) unsigned", true),
            (Engine::Mysql, "bigint(20) unsigned", false),
            (Engine::Mysql, "varchar(40)", false),
            (Engine::Sqlite, "integer", false),
        ] {
            assert_eq!(
                integer_split_key(engine, &table(declared)).is_some(),
                splits,
                "{engine} {declared}"
            );
        }
        let mut keyless = table("bigint");
        keyless.primary_key.clear();
        assert!(integer_split_key(Engine::Postgres, &keyless).is_none());
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
