//! PostgreSQL behind the [`Adapter`] trait. Tables are looked up in the connection's
//! current schema, which is where Django creates them.

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};
use std::str::FromStr;

use super::{Adapter, CONNECT_TIMEOUT, ColumnInfo, DbError, Engine, ForeignKey, TableInfo};

pub struct Postgres {
    pool: PgPool,
}

impl Postgres {
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?;
        // One direct connection first: a refused or misconfigured server fails at
        // once with its own error, instead of after the pool's retries time out.
        sqlx::PgConnection::connect_with(&options)
            .await?
            .close()
            .await?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Adapter for Postgres {
    fn engine(&self) -> Engine {
        Engine::Postgres
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

    async fn count(&self, sql: &str, what: &str) -> Result<u64, DbError> {
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .map_err(DbError::query(what))?;
        Ok(count.unsigned_abs())
    }

    async fn string_pairs(&self, sql: &str, what: &str) -> Result<Vec<(String, String)>, DbError> {
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .map_err(DbError::query(what))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::query(what))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
