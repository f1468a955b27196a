//! MySQL and MariaDB behind the [`Adapter`] trait. Tables are looked up in the
//! database the URL names (`DATABASE()`).

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection, Row};
use std::str::FromStr;

use super::{
    Adapter, ColumnInfo, DbError, EncodedStream, Engine, ForeignKey, LOCK_WAIT, LockGuard,
    MigrationRecord, RowStream, Session, TableInfo, lock_key_hex,
};
use crate::vault::encoding::{
    put_blob, put_float, put_int, put_null, put_other, put_row_len, put_text, put_uint,
};
use crate::vault::{TextKind, Value};
use sqlx::mysql::MySqlRow;

pub struct Mysql {
    pool: MySqlPool,
    /// For [`Adapter::ping`]'s connection of its own.
    options: MySqlConnectOptions,
}

impl Mysql {
    /// `acquire` bounds the wait for a pooled connection; the caller bounds the
    /// whole connect.
    pub async fn connect(url: &str, acquire: std::time::Duration) -> Result<Self, sqlx::Error> {
        // sqlx knows the mysql:// scheme only; MariaDB speaks the same protocol.
        let url = match url.strip_prefix("mariadb:") {
            Some(rest) => format!("mysql:{rest}"),
            None => url.to_string(),
        };
        let options = MySqlConnectOptions::from_str(&url)?
            .log_slow_statements(log::LevelFilter::Debug, super::SLOW_STATEMENT);
        // One direct connection first: a refused or misconfigured server fails at
        // once with its own error, instead of after the pool's retries time out.
        sqlx::MySqlConnection::connect_with(&options)
            .await?
            .close()
            .await?;
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(acquire)
            .connect_with(options.clone())
            .await?;
        Ok(Self { pool, options })
    }
}

pool_reads!(Mysql, kind = MyKind, engine = Engine::Mysql);

#[async_trait]
impl Adapter for Mysql {
    fn engine(&self) -> Engine {
        Engine::Mysql
    }

    async fn ping(&self) -> Result<(), DbError> {
        let what = "connecting anew to check that the server answers";
        let mut conn = sqlx::MySqlConnection::connect_with(&self.options)
            .await
            .map_err(DbError::query(what))?;
        let answered = sqlx::query("SELECT 1").execute(&mut conn).await;
        let _ = conn.close().await;
        answered.map(|_| ()).map_err(DbError::query(what))
    }

    async fn server_version(&self) -> Result<String, DbError> {
        sqlx::query_scalar("SELECT CAST(VERSION() AS CHAR)")
            .fetch_one(&self.pool)
            .await
            .map_err(DbError::query("reading the server version"))
    }

    async fn table_exists(&self, table: &str) -> Result<bool, DbError> {
        let found: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = ?",
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
            "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR), is_nullable = 'YES', \
                    extra LIKE '%auto_increment%', CAST(column_key AS CHAR) \
             FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
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
        for row in &columns {
            let name: String = row.try_get(0).map_err(DbError::query(what()))?;
            let generated: bool = row.try_get(3).map_err(DbError::query(what()))?;
            if generated {
                info.generated_key = Some(name.clone());
            }
            info.columns.push(ColumnInfo {
                name,
                declared_type: row.try_get(1).map_err(DbError::query(what()))?,
                nullable: row.try_get(2).map_err(DbError::query(what()))?,
            });
        }
        let keys = sqlx::query(
            "SELECT CAST(constraint_name AS CHAR), CAST(column_name AS CHAR), \
                    CAST(COALESCE(referenced_table_name, '') AS CHAR), CAST(COALESCE(referenced_column_name, '') AS CHAR) \
             FROM information_schema.key_column_usage \
             WHERE table_schema = DATABASE() AND table_name = ? \
               AND (constraint_name = 'PRIMARY' OR referenced_table_name IS NOT NULL) \
             ORDER BY constraint_name, ordinal_position",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::query(what()))?;
        let mut current: Option<(String, ForeignKey)> = None;
        for row in &keys {
            let constraint: String = row.try_get(0).map_err(DbError::query(what()))?;
            let column: String = row.try_get(1).map_err(DbError::query(what()))?;
            if constraint == "PRIMARY" {
                info.primary_key.push(column);
                continue;
            }
            let referenced_table: String = row.try_get(2).map_err(DbError::query(what()))?;
            let referenced_column: String = row.try_get(3).map_err(DbError::query(what()))?;
            match &mut current {
                Some((name, fk)) if *name == constraint => {
                    fk.columns.push(column);
                    fk.referenced_columns.push(referenced_column);
                }
                _ => {
                    if let Some((_, fk)) = current.take() {
                        info.foreign_keys.push(fk);
                    }
                    current = Some((
                        constraint,
                        ForeignKey {
                            columns: vec![column],
                            referenced_table,
                            referenced_columns: vec![referenced_column],
                        },
                    ));
                }
            }
        }
        if let Some((_, fk)) = current {
            info.foreign_keys.push(fk);
        }
        Ok(Some(info))
    }

    fn stream_rows<'a>(&'a self, table: &'a TableInfo, columns: &'a [String]) -> RowStream<'a> {
        self.stream_kinds(table, columns)
    }

    fn stream_encoded<'a>(
        &'a self,
        table: &'a TableInfo,
        columns: &'a [String],
    ) -> Option<EncodedStream<'a>> {
        use futures_util::StreamExt;
        let (kinds, exprs) = match Self::kinds_and_exprs(table, columns) {
            Ok(found) => found,
            Err(err) => return Some(super::failed_stream(err)),
        };
        let sql = super::select_sql(Engine::Mysql, table, &exprs);
        let what = format!("reading rows of {}", table.name);
        Some(Box::pin(
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch(&self.pool)
                .map(move |row| {
                    let row = row.map_err(DbError::query(what.clone()))?;
                    let mut out = Vec::with_capacity(64 * kinds.len());
                    put_row_len(&mut out, kinds.len()).map_err(|err| {
                        DbError::query(what.clone())(sqlx::Error::Decode(err.into()))
                    })?;
                    for (i, kind) in kinds.iter().enumerate() {
                        kind.encode(&row, i, &mut out)
                            .map_err(DbError::query(what.clone()))?;
                    }
                    Ok(out)
                }),
        ))
    }

    async fn split_rows<'a>(
        &'a self,
        table: &'a TableInfo,
        columns: &'a [String],
        parts: usize,
    ) -> Result<Option<Vec<RowStream<'a>>>, DbError> {
        self.split_kinds(table, columns, parts).await
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
        // GET_LOCK names are at most 64 characters: use the key's hex.
        let lock_name = format!("dropguard:{}", lock_key_hex(name));
        let what = || format!("taking lock {name:?}");
        let mut conn = self.pool.acquire().await.map_err(DbError::query(what()))?;
        let taken: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(&lock_name)
            .bind(LOCK_WAIT.as_secs())
            .fetch_one(&mut *conn)
            .await
            .map_err(DbError::query(what()))?;
        if taken != Some(1) {
            return Err(DbError::LockTimeout {
                name: name.to_string(),
                waited: LOCK_WAIT,
            });
        }
        Ok(Box::new(MyLock { conn, lock_name }))
    }

    async fn begin(&self) -> Result<Box<dyn Session>, DbError> {
        let tx = self
            .pool
            .begin()
            .await
            .map_err(DbError::query("starting a transaction"))?;
        Ok(Box::new(MySession { tx }))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// How a MySQL/MariaDB column is read. Integers, floats and strings are read as
/// they come (sqlx widens any signed integer to i64, any unsigned one to u64, and
/// floats are exact only in binary); BIT is widened by the server; blobs are bytes;
/// everything else is the server's own text (`CAST … AS CHAR`), which it parses
/// back exactly under the same session settings.
#[derive(Debug, Clone)]
enum MyKind {
    Signed,
    Unsigned,
    Bit,
    Float,
    Double,
    Bytes,
    /// char, varchar and the text types: already text, no cast needed.
    String,
    Text(TextKind),
    Other(String),
}

impl MyKind {
    fn of(declared: &str) -> Self {
        let t = declared.to_ascii_lowercase();
        let base = t.split(['(', ' ']).next().unwrap_or("");
        match base {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => {
                if t.contains("unsigned") {
                    Self::Unsigned
                } else {
                    Self::Signed
                }
            }
            "bit" => Self::Bit,
            "float" => Self::Float,
            "double" | "real" => Self::Double,
            "decimal" | "numeric" => Self::Text(TextKind::Decimal),
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Self::Bytes,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Self::String,
            "json" => Self::Text(TextKind::Json),
            "date" => Self::Text(TextKind::Date),
            "datetime" | "timestamp" => Self::Text(TextKind::Timestamp),
            "time" => Self::Text(TextKind::Time),
            _ => Self::Other(declared.to_string()),
        }
    }

    fn select(&self, quoted: &str) -> String {
        match self {
            Self::Bit => format!("CAST({quoted} AS UNSIGNED)"),
            Self::Signed
            | Self::Unsigned
            | Self::Float
            | Self::Double
            | Self::Bytes
            | Self::String => quoted.to_string(),
            Self::Text(_) | Self::Other(_) => format!("CAST({quoted} AS CHAR)"),
        }
    }

    fn decode(&self, row: &MySqlRow, i: usize) -> Result<Value, sqlx::Error> {
        fn opt<T>(value: Option<T>, wrap: impl FnOnce(T) -> Value) -> Value {
            value.map_or(Value::Null, wrap)
        }
        Ok(match self {
            Self::Signed => opt(row.try_get::<Option<i64>, _>(i)?, Value::Int),
            Self::Unsigned | Self::Bit => opt(row.try_get::<Option<u64>, _>(i)?, Value::UInt),
            Self::String => opt(row.try_get::<Option<String>, _>(i)?, Value::Text),
            Self::Float => opt(row.try_get::<Option<f32>, _>(i)?, |v| {
                Value::Float(v.into())
            }),
            Self::Double => opt(row.try_get::<Option<f64>, _>(i)?, Value::Float),
            Self::Bytes => opt(row.try_get::<Option<Vec<u8>>, _>(i)?, Value::Bytes),
            Self::Text(kind) => opt(row.try_get::<Option<String>, _>(i)?, |text| {
                kind.value(text)
            }),
            Self::Other(type_name) => {
                opt(row.try_get::<Option<String>, _>(i)?, |text| Value::Other {
                    type_name: type_name.clone(),
                    text,
                })
            }
        })
    }
}

impl MyKind {
    /// Appends the canonical encoding of the value [`decode`](Self::decode)
    /// makes of column `i`, read in place from the row: no `Value`, no copy.
    fn encode(&self, row: &MySqlRow, i: usize, out: &mut Vec<u8>) -> Result<(), sqlx::Error> {
        fn put<T>(value: Option<T>, out: &mut Vec<u8>, write: impl FnOnce(T, &mut Vec<u8>)) {
            match value {
                Some(value) => write(value, out),
                None => put_null(out),
            }
        }
        let unencodable = |err: crate::vault::VaultError| sqlx::Error::Decode(err.into());
        match self {
            Self::Signed => put(row.try_get::<Option<i64>, _>(i)?, out, |v, out| {
                put_int(out, v)
            }),
            Self::Unsigned | Self::Bit => put(row.try_get::<Option<u64>, _>(i)?, out, |v, out| {
                put_uint(out, v)
            }),
            Self::Float => put(row.try_get::<Option<f32>, _>(i)?, out, |v, out| {
                put_float(out, v.into())
            }),
            Self::Double => put(row.try_get::<Option<f64>, _>(i)?, out, |v, out| {
                put_float(out, v)
            }),
            Self::Bytes => match row.try_get::<Option<&[u8]>, _>(i)? {
                Some(bytes) => put_blob(out, bytes).map_err(unencodable)?,
                None => put_null(out),
            },
            Self::String | Self::Text(_) | Self::Other(_) => {
                match row.try_get::<Option<&str>, _>(i)? {
                    None => put_null(out),
                    Some(text) => match self {
                        Self::Other(type_name) => put_other(out, type_name, text.as_bytes()),
                        Self::Text(kind) => put_text(out, *kind, text.as_bytes()),
                        _ => put_text(out, TextKind::Text, text.as_bytes()),
                    }
                    .map_err(unencodable)?,
                }
            }
        }
        Ok(())
    }
}

session!(MySession, sqlx::MySql, uint = |v| *v);

/// The connection holding a `GET_LOCK` lock.
struct MyLock {
    conn: sqlx::pool::PoolConnection<sqlx::MySql>,
    lock_name: String,
}

#[async_trait]
impl LockGuard for MyLock {
    async fn release(mut self: Box<Self>) {
        let released = sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(&self.lock_name)
            .execute(&mut *self.conn)
            .await;
        if let Err(err) = released {
            tracing::warn!(error = %err, "releasing a lock failed; closing its connection");
            let _ = self.conn.detach().close().await;
        }
    }
}
