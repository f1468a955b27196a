//! PostgreSQL behind the [`Adapter`] trait. Tables are looked up in the connection's
//! current schema, which is where Django creates them.

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};
use std::str::FromStr;

use super::{
    Adapter, ColumnInfo, DbError, Engine, ForeignKey, LOCK_WAIT, LockGuard, MigrationRecord,
    RowStream, Session, TableInfo, lock_key,
};
use crate::vault::{TextKind, Value};
use sqlx::postgres::PgRow;

pub struct Postgres {
    pool: PgPool,
    /// For [`Adapter::ping`]'s connection of its own.
    options: PgConnectOptions,
}

impl Postgres {
    /// `acquire` bounds the wait for a pooled connection; the caller bounds the
    /// whole connect.
    pub async fn connect(url: &str, acquire: std::time::Duration) -> Result<Self, sqlx::Error> {
        // Pinned session settings: the text of dates, times and intervals that the
        // vault keeps must not depend on the server's defaults.
        let options = PgConnectOptions::from_str(&understood(url))?
            .options([
                ("TimeZone", "UTC"),
                ("DateStyle", "ISO, MDY"),
                ("IntervalStyle", "postgres"),
                ("extra_float_digits", "3"),
            ])
            .log_slow_statements(log::LevelFilter::Debug, super::SLOW_STATEMENT);
        // One direct connection first: a refused or misconfigured server fails at
        // once with its own error, instead of after the pool's retries time out.
        sqlx::PgConnection::connect_with(&options)
            .await?
            .close()
            .await?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(acquire)
            .connect_with(options.clone())
            .await?;
        Ok(Self { pool, options })
    }
}

/// The query parameters sqlx's PostgreSQL driver reads (`options[…]` too).
const UNDERSTOOD: [&str; 17] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
];

/// `url` without the query parameters the driver does not read, each named (never
/// its value) in a warning. sqlx logs an unknown parameter with its value, and
/// libpq's `sslpassword` is one: handed on, the password would be in the log.
fn understood(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string(); // sqlx's parse error quotes nothing of it.
    };
    let Some(query) = parsed.query().map(str::to_string) else {
        return url.to_string();
    };
    let mut kept = Vec::new();
    let mut dropped = false;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let name = url::form_urlencoded::parse(raw_name.as_bytes())
            .next()
            .map(|(name, _)| name.into_owned())
            .unwrap_or_default();
        if UNDERSTOOD.contains(&name.as_str()) || name == "options" || name.starts_with("options[")
        {
            kept.push(pair);
        } else {
            dropped = true;
            tracing::warn!(
                parameter = %name,
                "database.url: PostgreSQL parameter not supported by dropguard's driver; ignored"
            );
        }
    }
    if !dropped {
        return url.to_string();
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.set_query(Some(&kept.join("&")));
    }
    parsed.to_string()
}

pool_reads!(Postgres, kind = PgKind, engine = Engine::Postgres);

#[async_trait]
impl Adapter for Postgres {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    async fn ping(&self) -> Result<(), DbError> {
        let what = "connecting anew to check that the server answers";
        let mut conn = sqlx::PgConnection::connect_with(&self.options)
            .await
            .map_err(DbError::query(what))?;
        let answered = sqlx::query("SELECT 1").execute(&mut conn).await;
        let _ = conn.close().await;
        answered.map(|_| ()).map_err(DbError::query(what))
    }

    async fn server_version(&self) -> Result<String, DbError> {
        sqlx::query_scalar("SHOW server_version")
            .fetch_one(&self.pool)
            .await
            .map_err(DbError::query("reading the server version"))
    }

    async fn table_exists(&self, table: &str) -> Result<bool, DbError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = $1)",
        )
        .bind(table)
        .fetch_one(&self.pool)
        .await
        .map_err(DbError::query(format!("looking up table {table}")))
    }

    async fn introspect(&self, table: &str) -> Result<Option<TableInfo>, DbError> {
        let what = || format!("reading the definition of table {table}");
        let columns = sqlx::query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, \
                    (a.attidentity <> '' OR pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) IS NOT NULL) \
             FROM pg_attribute a \
             JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relname = $1 AND c.relkind IN ('r', 'p') \
               AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
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
            if generated && info.generated_key.is_none() {
                info.generated_key = Some(name.clone());
            }
            info.columns.push(ColumnInfo {
                name,
                declared_type: row.try_get(1).map_err(DbError::query(what()))?,
                nullable: row.try_get(2).map_err(DbError::query(what()))?,
            });
        }
        let relation = "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = current_schema() AND c.relname = $1)";
        let key_columns = |keys: &str, rel: &str| {
            format!(
                "(SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(con.{keys}) WITH ORDINALITY k(attnum, ord) \
                  JOIN pg_attribute a ON a.attrelid = con.{rel} AND a.attnum = k.attnum)"
            )
        };
        let sql = format!(
            "SELECT con.contype::text, {}, COALESCE(ref.relname::text, ''), COALESCE({}, ARRAY[]::text[]) \
             FROM pg_constraint con LEFT JOIN pg_class ref ON ref.oid = con.confrelid \
             WHERE con.conrelid = {relation} AND con.contype IN ('p', 'f') ORDER BY con.conname",
            key_columns("conkey", "conrelid"),
            key_columns("confkey", "confrelid"),
        );
        let constraints = sqlx::query(AssertSqlSafe(sql))
            .bind(table)
            .fetch_all(&self.pool)
            .await
            .map_err(DbError::query(what()))?;
        for row in &constraints {
            let kind: String = row.try_get(0).map_err(DbError::query(what()))?;
            let columns: Vec<String> = row.try_get(1).map_err(DbError::query(what()))?;
            if kind == "p" {
                info.primary_key = columns;
            } else {
                info.foreign_keys.push(ForeignKey {
                    columns,
                    referenced_table: row.try_get(2).map_err(DbError::query(what()))?,
                    referenced_columns: row.try_get(3).map_err(DbError::query(what()))?,
                });
            }
        }
        Ok(Some(info))
    }

    fn stream_rows<'a>(&'a self, table: &'a TableInfo, columns: &'a [String]) -> RowStream<'a> {
        self.stream_kinds(table, columns)
    }

    async fn split_rows<'a>(
        &'a self,
        table: &'a TableInfo,
        columns: &'a [String],
        parts: usize,
    ) -> Result<Option<Vec<RowStream<'a>>>, DbError> {
        self.split_kinds(table, columns, parts).await
    }

    async fn checksum_rows(
        &self,
        table: &TableInfo,
        columns: &[String],
        parts: usize,
    ) -> Result<Option<crate::vault::Checksummer>, DbError> {
        super::pg_checksum::checksum(&self.pool, table, columns, parts)
            .await
            .map(Some)
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
        let key = i64::from_be_bytes(lock_key(name));
        let what = || format!("taking lock {name:?}");
        let mut conn = self.pool.acquire().await.map_err(DbError::query(what()))?;
        let wait_ms = LOCK_WAIT.as_millis().to_string();
        sqlx::query("SELECT set_config('lock_timeout', $1, false)")
            .bind(&wait_ms)
            .execute(&mut *conn)
            .await
            .map_err(DbError::query(what()))?;
        let taken = sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await;
        let reset = sqlx::query("SELECT set_config('lock_timeout', '0', false)")
            .execute(&mut *conn)
            .await;
        match taken {
            Ok(_) => {}
            Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("55P03") => {
                return Err(DbError::LockTimeout {
                    name: name.to_string(),
                    waited: LOCK_WAIT,
                });
            }
            Err(err) => return Err(DbError::query(what())(err)),
        }
        reset.map_err(DbError::query(what()))?;
        Ok(Box::new(PgLock { conn, key }))
    }

    async fn begin(&self) -> Result<Box<dyn Session>, DbError> {
        let tx = self
            .pool
            .begin()
            .await
            .map_err(DbError::query("starting a transaction"))?;
        Ok(Box::new(PgSession { tx }))
    }

    async fn reset_generator(&self, table: &str, column: &str) -> Result<(), DbError> {
        let sql = format!(
            "SELECT setval(seq, m) FROM (SELECT pg_get_serial_sequence($1, $2) AS seq, \
             (SELECT MAX({col}) FROM {tab}) AS m) x WHERE seq IS NOT NULL AND m IS NOT NULL",
            col = Engine::Postgres.quote(column),
            tab = Engine::Postgres.quote(table),
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(Engine::Postgres.quote(table))
            .bind(column)
            .execute(&self.pool)
            .await
            .map_err(DbError::query(format!(
                "resetting the sequence of {table}.{column}"
            )))?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// How a PostgreSQL column is read: natively for the types whose binary form is
/// exact and cheap, as the server's own text (`::text`) for everything else, which
/// its input function reads back exactly (the text format is what pg_dump uses).
#[derive(Debug, Clone)]
pub(super) enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bytes,
    Text(TextKind),
    Other(String),
}

impl PgKind {
    pub(super) fn of(declared: &str) -> Self {
        let t = declared.to_ascii_lowercase();
        match t.as_str() {
            "boolean" => Self::Bool,
            "smallint" => Self::Int2,
            "integer" => Self::Int4,
            "bigint" => Self::Int8,
            "real" => Self::Float4,
            "double precision" => Self::Float8,
            "bytea" => Self::Bytes,
            "text" | "citext" | "name" | "\"char\"" => Self::Text(TextKind::Text),
            "json" | "jsonb" => Self::Text(TextKind::Json),
            "uuid" => Self::Text(TextKind::Uuid),
            "date" => Self::Text(TextKind::Date),
            _ if t.ends_with("[]") => Self::Other(declared.to_string()),
            _ if t.starts_with("numeric") => Self::Text(TextKind::Decimal),
            _ if t.starts_with("character") => Self::Text(TextKind::Text),
            _ if t.starts_with("timestamp") && t.ends_with("with time zone") => {
                Self::Text(TextKind::TimestampTz)
            }
            _ if t.starts_with("timestamp") => Self::Text(TextKind::Timestamp),
            _ if t.starts_with("time") => Self::Text(TextKind::Time),
            _ if t.starts_with("interval") => Self::Text(TextKind::Interval),
            _ => Self::Other(declared.to_string()),
        }
    }

    pub(super) fn select(&self, quoted: &str) -> String {
        match self {
            Self::Text(_) | Self::Other(_) => format!("{quoted}::text"),
            _ => quoted.to_string(),
        }
    }

    fn decode(&self, row: &PgRow, i: usize) -> Result<Value, sqlx::Error> {
        fn opt<T>(value: Option<T>, wrap: impl FnOnce(T) -> Value) -> Value {
            value.map_or(Value::Null, wrap)
        }
        Ok(match self {
            Self::Bool => opt(row.try_get::<Option<bool>, _>(i)?, Value::Bool),
            Self::Int2 => opt(row.try_get::<Option<i16>, _>(i)?, |v| Value::Int(v.into())),
            Self::Int4 => opt(row.try_get::<Option<i32>, _>(i)?, |v| Value::Int(v.into())),
            Self::Int8 => opt(row.try_get::<Option<i64>, _>(i)?, Value::Int),
            Self::Float4 => opt(row.try_get::<Option<f32>, _>(i)?, |v| {
                Value::Float(v.into())
            }),
            Self::Float8 => opt(row.try_get::<Option<f64>, _>(i)?, Value::Float),
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

session!(
    PgSession,
    sqlx::Postgres,
    uint = |v| v.to_string(),
    extra = {
        async fn copy_in(
            &mut self,
            table: &str,
            columns: &[String],
            binary: bool,
            chunks: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
        ) -> Result<Option<u64>, DbError> {
            let what = format!("copying rows into {table}");
            let quoted: Vec<String> = columns.iter().map(|c| Engine::Postgres.quote(c)).collect();
            let statement = format!(
                "COPY {} ({}) FROM STDIN{}",
                Engine::Postgres.quote(table),
                quoted.join(", "),
                if binary { " WITH (FORMAT binary)" } else { "" }
            );
            let mut copy = self
                .tx
                .copy_in_raw(&statement)
                .await
                .map_err(DbError::query(what.clone()))?;
            while let Some(chunk) = chunks.recv().await {
                if let Err(err) = copy.send(chunk).await {
                    let _ = copy.abort("sending failed").await;
                    return Err(DbError::query(what)(err));
                }
            }
            let rows = copy.finish().await.map_err(DbError::query(what))?;
            Ok(Some(rows))
        }
    }
);

/// One row in COPY's text format: tab-separated values, newline-terminated.
pub(super) fn copy_text_row(row: &[Value], out: &mut Vec<u8>) {
    for (i, value) in row.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        copy_text(value, out);
    }
    out.push(b'\n');
}

/// One value in COPY's text format: `\N` for NULL, backslash escapes for the
/// delimiter, line breaks and the backslash itself; the column type's input
/// function parses the text, as it does for values bound as text.
fn copy_text(value: &Value, out: &mut Vec<u8>) {
    fn escaped(text: &str, out: &mut Vec<u8>) {
        for byte in text.bytes() {
            match byte {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                other => out.push(other),
            }
        }
    }
    match value {
        Value::Null | Value::Array(_) => out.extend_from_slice(b"\\N"),
        Value::Bool(v) => out.push(if *v { b't' } else { b'f' }),
        Value::Int(v) => out.extend_from_slice(v.to_string().as_bytes()),
        Value::UInt(v) => out.extend_from_slice(v.to_string().as_bytes()),
        Value::Float(v) if v.is_nan() => out.extend_from_slice(b"NaN"),
        Value::Float(v) if v.is_infinite() => {
            out.extend_from_slice(if *v > 0.0 { b"Infinity" } else { b"-Infinity" })
        }
        // Rust prints the shortest text that parses back to the same bits.
        Value::Float(v) => out.extend_from_slice(format!("{v:?}").as_bytes()),
        Value::Bytes(bytes) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\\\x");
            for b in bytes {
                out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
        }
        other => escaped(other.text().unwrap_or_default(), out),
    }
}

/// The connection holding a session-level advisory lock.
struct PgLock {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
    key: i64,
}

#[async_trait]
impl LockGuard for PgLock {
    async fn release(mut self: Box<Self>) {
        let released = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut *self.conn)
            .await;
        if let Err(err) = released {
            // Closing the connection ends the session, which frees the lock.
            tracing::warn!(error = %err, "releasing an advisory lock failed; closing its connection");
            let _ = self.conn.detach().close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_the_driver_would_log_with_their_value_are_dropped() {
        assert_eq!(
            understood("postgres://app@db/shop?sslpassword=s3cret&sslmode=require&password=pw"),
            "postgres://app@db/shop?sslmode=require&password=pw"
        );
        assert_eq!(
            understood("postgres://app@db/shop?passwd=s3cret"),
            "postgres://app@db/shop"
        );
        let kept = "postgres://app@db/shop?sslmode=verify-full&options[search_path]=x";
        assert_eq!(understood(kept), kept);
    }
}
