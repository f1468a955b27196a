//! SQLite behind the [`Adapter`] trait.
//!
//! One connection only: after DDL, other pooled connections were seen keeping a stale
//! schema (STACK.md), and the application's file is never ours to create.

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

use super::{
    Adapter, ColumnInfo, DbError, Engine, ForeignKey, LOCK_WAIT, LockGuard, MigrationRecord,
    RowStream, Session, TableInfo, failed_stream, lock_key_hex, select_sql,
};
use crate::vault::Value;
use futures_util::StreamExt;
use sqlx::sqlite::SqliteRow;

pub struct Sqlite {
    pool: SqlitePool,
    /// The database file: lock files live beside it, where every instance
    /// sharing the file can see them.
    path: std::path::PathBuf,
    /// For [`Adapter::ping`]'s connection of its own.
    options: SqliteConnectOptions,
}

impl Sqlite {
    /// `acquire` bounds the wait for the pooled connection; the caller bounds
    /// the whole connect.
    pub async fn connect(url: &str, acquire: std::time::Duration) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(false)
            .log_slow_statements(log::LevelFilter::Debug, super::SLOW_STATEMENT);
        let path = options.get_filename().to_path_buf();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire)
            .connect_with(options.clone())
            .await?;
        Ok(Self {
            pool,
            path,
            options,
        })
    }
}

pool_reads!(Sqlite);

#[async_trait]
impl Adapter for Sqlite {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    async fn ping(&self) -> Result<(), DbError> {
        let what = "opening the database file anew to check that it answers";
        let mut conn = sqlx::SqliteConnection::connect_with(&self.options)
            .await
            .map_err(DbError::query(what))?;
        let answered = sqlx::query("SELECT 1").execute(&mut conn).await;
        let _ = conn.close().await;
        answered.map(|_| ()).map_err(DbError::query(what))
    }

    async fn server_version(&self) -> Result<String, DbError> {
        sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&self.pool)
            .await
            .map_err(DbError::query("reading the SQLite version"))
    }

    async fn table_exists(&self, table: &str) -> Result<bool, DbError> {
        let found: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
        )
        .bind(table)
        .fetch_one(&self.pool)
        .await
        .map_err(DbError::query(format!("looking up table {table}")))?;
        Ok(found > 0)
    }

    async fn introspect(&self, table: &str) -> Result<Option<TableInfo>, DbError> {
        let what = || format!("reading the definition of table {table}");
        let columns = sqlx::query(
            "SELECT name, type, \"notnull\" = 0, pk FROM pragma_table_info(?) ORDER BY cid",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query(what()))?;
        if columns.is_empty() {
            return Ok(None);
        }
        let mut info = TableInfo {
            name: table.to_string(),
            columns: Vec::new(),
            primary_key: Vec::new(),
            foreign_keys: Vec::new(),
            generated_key: None,
        };
        let mut key: Vec<(i64, String)> = Vec::new();
        for row in &columns {
            let name: String = row.try_get(0).map_err(DbError::query(what()))?;
            let declared_type: String = row.try_get(1).map_err(DbError::query(what()))?;
            let position: i64 = row.try_get(3).map_err(DbError::query(what()))?;
            if position > 0 {
                key.push((position, name.clone()));
            }
            info.columns.push(ColumnInfo {
                name,
                declared_type,
                nullable: row.try_get(2).map_err(DbError::query(what()))?,
            });
        }
        key.sort();
        info.primary_key = key.into_iter().map(|(_, name)| name).collect();
        // A single INTEGER PRIMARY KEY is the rowid: SQLite generates it.
        if let [pk] = info.primary_key.as_slice()
            && info
                .columns
                .iter()
                .any(|c| c.name == *pk && c.declared_type.eq_ignore_ascii_case("integer"))
        {
            info.generated_key = Some(pk.clone());
        }
        let fks = sqlx::query(
            "SELECT id, \"table\", \"from\", COALESCE(\"to\", '') FROM pragma_foreign_key_list(?) ORDER BY id, seq",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query(what()))?;
        let mut last_id = None;
        for row in &fks {
            let id: i64 = row.try_get(0).map_err(DbError::query(what()))?;
            let column: String = row.try_get(2).map_err(DbError::query(what()))?;
            let referenced_column: String = row.try_get(3).map_err(DbError::query(what()))?;
            if last_id != Some(id) {
                info.foreign_keys.push(ForeignKey {
                    columns: Vec::new(),
                    referenced_table: row.try_get(1).map_err(DbError::query(what()))?,
                    referenced_columns: Vec::new(),
                });
                last_id = Some(id);
            }
            if let Some(fk) = info.foreign_keys.last_mut() {
                fk.columns.push(column);
                fk.referenced_columns.push(referenced_column);
            }
        }
        Ok(Some(info))
    }

    fn stream_rows<'a>(&'a self, table: &'a TableInfo, columns: &'a [String]) -> RowStream<'a> {
        let selected = match table.row_columns(columns) {
            Ok(selected) => selected,
            Err(err) => return failed_stream(err),
        };
        // SQLite types values, not columns: read each value's storage class with
        // it and keep that class, whatever the column declares.
        let exprs: Vec<String> = selected
            .iter()
            .map(|column| {
                let quoted = Engine::Sqlite.quote(&column.name);
                format!("typeof({quoted}), {quoted}")
            })
            .collect();
        let sql = select_sql(Engine::Sqlite, table, &exprs);
        let width = selected.len();
        let what = format!("reading rows of {}", table.name);
        Box::pin(
            sqlx::query(AssertSqlSafe(sql))
                .fetch(&self.pool)
                .map(move |row| {
                    let row = row.map_err(DbError::query(what.clone()))?;
                    (0..width)
                        .map(|i| decode(&row, 2 * i))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(DbError::query(what.clone()))
                }),
        )
    }

    async fn count(&self, sql: &str, what: &str) -> Result<u64, DbError> {
        self.pool_count(sql, what).await
    }

    async fn string_pairs(&self, sql: &str, what: &str) -> Result<Vec<(String, String)>, DbError> {
        self.pool_pairs(sql, what).await
    }

    async fn text_rows(
        &self,
        sql: &str,
        binds: &[String],
        what: &str,
    ) -> Result<Vec<Vec<Option<String>>>, DbError> {
        self.pool_text_rows(sql, binds, what).await
    }

    async fn django_migrations_after(&self, after: i64) -> Result<Vec<MigrationRecord>, DbError> {
        self.pool_migration_records(after).await
    }

    async fn lock(&self, name: &str) -> Result<Box<dyn LockGuard>, DbError> {
        let key = lock_key_hex(name);
        let mut file_name = self.path.file_name().unwrap_or_default().to_os_string();
        file_name.push(format!(".dropguard-{key}.lock"));
        let path = self.path.with_file_name(file_name);
        let what = format!("taking lock {name:?} ({})", path.display());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|err| DbError::query(what.clone())(sqlx::Error::Io(err)))?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Box::new(FileLock { _file: file })),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(DbError::LockTimeout {
                        name: name.to_string(),
                        waited: LOCK_WAIT,
                    });
                }
                Err(std::fs::TryLockError::Error(err)) => {
                    return Err(DbError::query(what)(sqlx::Error::Io(err)));
                }
            }
        }
    }

    async fn begin(&self) -> Result<Box<dyn Session>, DbError> {
        let tx = self
            .pool
            .begin()
            .await
            .map_err(DbError::query("starting a transaction"))?;
        Ok(Box::new(LiteSession { tx }))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// One value by its storage class (`typeof`, in column `i`; the value in `i + 1`).
fn decode(row: &SqliteRow, i: usize) -> Result<Value, sqlx::Error> {
    let class: String = row.try_get(i)?;
    Ok(match class.as_str() {
        "integer" => Value::Int(row.try_get(i + 1)?),
        "real" => Value::Float(row.try_get(i + 1)?),
        "text" => Value::Text(row.try_get(i + 1)?),
        "blob" => Value::Bytes(row.try_get(i + 1)?),
        _ => Value::Null,
    })
}

session!(LiteSession, sqlx::Sqlite, uint = |v| v.to_string());

/// An exclusive `flock` on a file beside the database, released when dropped.
struct FileLock {
    _file: std::fs::File,
}

#[async_trait]
impl LockGuard for FileLock {
    async fn release(self: Box<Self>) {}
}
