//! One sample of the database's own usage statistics for some tables: their
//! read/write counters, and the normalized statements that may name them.
//!
//! PostgreSQL: `pg_stat_user_tables` and, where the extension is installed,
//! `pg_stat_statements`. MySQL/MariaDB: `performance_schema`'s table I/O
//! summary and statement digests. SQLite keeps neither. Read-only: every query
//! here reads a statistics view; table names are bound, never formatted in, so
//! these queries never name the objects they measure.
//!
//! What cannot be read (a disabled extension, a missing privilege, a setting
//! off) is an [`Unavailable`] with the exact statement or setting that fixes it,
//! never an empty result that would read as "unused".

use std::collections::BTreeMap;

use serde::Serialize;

use crate::db::{Adapter, DbError, Engine};

/// Why a kind of statistics cannot be read, and what enables it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unavailable {
    pub reason: String,
    /// The statement to run or the setting to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Unavailable {
    fn new(reason: impl Into<String>, fix: Option<String>) -> Self {
        Self {
            reason: reason.into(),
            fix,
        }
    }
}

/// A table's read and write counters, cumulative since the server's last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Sequential and index scans started (PostgreSQL only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scans: Option<u64>,
    pub rows_read: u64,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
}

impl Counters {
    /// What happened between `before` and `self`; a counter that went down was
    /// reset in between, and counts from zero.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            scans: self.scans.map(|s| delta(before.scans.unwrap_or(0), s)),
            rows_read: delta(before.rows_read, self.rows_read),
            inserted: delta(before.inserted, self.inserted),
            updated: delta(before.updated, self.updated),
            deleted: delta(before.deleted, self.deleted),
        }
    }

    pub fn moved(&self) -> bool {
        self.scans.unwrap_or(0) + self.rows_read + self.inserted + self.updated + self.deleted > 0
    }
}

/// `after - before`, or `after` when the counter was reset in between.
pub fn delta(before: u64, after: u64) -> u64 {
    after.checked_sub(before).unwrap_or(after)
}

/// One entry of the statement statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub calls: u64,
    /// Rows returned or affected.
    pub rows: u64,
    /// The normalized text.
    pub text: String,
}

/// The statement statistics of the current database that may name the tables.
#[derive(Debug, Clone, Default)]
pub struct Statements {
    /// By the server's key (PostgreSQL: user/queryid; MySQL: digest).
    pub entries: BTreeMap<String, Entry>,
    /// Calls of statements whose text cannot be seen (other roles' statements
    /// without `pg_read_all_stats`; MySQL digests that found no free slot).
    pub hidden_calls: u64,
    /// Why some texts cannot be seen, when some cannot.
    pub hidden: Option<Unavailable>,
}

/// One sample of everything the gate reads.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Where table counters come from (`pg_stat_user_tables`, `performance_schema`).
    pub table_source: &'static str,
    /// Counters by table name; a table absent from the map has none yet.
    pub tables: Result<BTreeMap<String, Counters>, Unavailable>,
    pub statement_source: &'static str,
    pub statements: Result<Statements, Unavailable>,
}

/// How a refused query becomes an [`Unavailable`]; any other failure (the
/// connection, a timeout) is the caller's error.
fn refused(err: DbError, fix: impl FnOnce(&str) -> Option<String>) -> Result<Unavailable, DbError> {
    let (Some(state), Some(message)) = (err.sqlstate(), err.server_message()) else {
        return Err(err);
    };
    let fix = fix(&state);
    Ok(Unavailable::new(message, fix))
}

fn number(value: &Option<String>) -> u64 {
    value
        .as_deref()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v.max(0.0) as u64)
}

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

/// `(placeholder, placeholder, …)` for `n` text values.
fn placeholders(engine: Engine, first: usize, n: usize) -> Vec<String> {
    (first..first + n)
        .map(|i| engine.placeholder(i, "text"))
        .collect()
}

/// `%name%` for a LIKE over statement texts; `_` and `%` in a name only widen
/// the match, which the tokenizer then narrows.
fn like_patterns(tables: &[String]) -> Vec<String> {
    tables.iter().map(|t| format!("%{t}%")).collect()
}

/// Samples the statistics of `tables` (names as the plan gives them).
pub async fn sample(db: &dyn Adapter, tables: &[String]) -> Result<Sample, DbError> {
    match db.engine() {
        Engine::Postgres => postgres(db, tables).await,
        Engine::Mysql => mysql(db, tables).await,
        Engine::Sqlite => {
            let none = Unavailable::new(
                "SQLite keeps no usage statistics: no per-table counters, no statement statistics",
                None,
            );
            Ok(Sample {
                table_source: "sqlite",
                tables: Err(none.clone()),
                statement_source: "sqlite",
                statements: Err(none),
            })
        }
    }
}

async fn setting(db: &dyn Adapter, sql: &str, what: &str) -> Result<Vec<Option<String>>, DbError> {
    Ok(db
        .text_rows(sql, &[], what)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default())
}

async fn postgres(db: &dyn Adapter, tables: &[String]) -> Result<Sample, DbError> {
    let engine = Engine::Postgres;
    // `pg_stat_statements.track` exists only where the server loaded the
    // library: that says whether it is preloaded without reading
    // shared_preload_libraries, which needs pg_read_all_settings.
    let settings = setting(
        db,
        "SELECT current_setting('track_counts'), current_user::text, \
                current_setting('pg_stat_statements.track', true), \
                (SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
                 WHERE e.extname = 'pg_stat_statements'), \
                pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')::text",
        "reading the statistics settings",
    )
    .await?;
    let get = |i: usize| settings.get(i).cloned().flatten();
    let (track_counts, user, track, schema, read_all) = (
        get(0).unwrap_or_default(),
        get(1).unwrap_or_default(),
        get(2).filter(|t| !t.is_empty()),
        get(3),
        get(4).unwrap_or_default(),
    );

    let tables_read = if track_counts != "on" {
        Err(Unavailable::new(
            "track_counts is off: PostgreSQL counts no table reads or writes",
            Some("track_counts = on (postgresql.conf, then SELECT pg_reload_conf())".to_string()),
        ))
    } else {
        let sql = format!(
            "SELECT relname::text, (seq_scan + COALESCE(idx_scan, 0))::text, \
                    (seq_tup_read + COALESCE(idx_tup_fetch, 0))::text, \
                    n_tup_ins::text, n_tup_upd::text, n_tup_del::text \
             FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname::text IN ({})",
            placeholders(engine, 1, tables.len()).join(", ")
        );
        match db
            .text_rows(&sql, tables, "reading pg_stat_user_tables")
            .await
        {
            Ok(rows) => Ok(rows
                .iter()
                .map(|row| {
                    (
                        text(&row[0]),
                        Counters {
                            scans: Some(number(&row[1])),
                            rows_read: number(&row[2]),
                            inserted: number(&row[3]),
                            updated: number(&row[4]),
                            deleted: number(&row[5]),
                        },
                    )
                })
                .collect()),
            Err(err) => Err(refused(err, |_| None)?),
        }
    };

    let preloaded = track.is_some();
    let preload_fix = "add pg_stat_statements to shared_preload_libraries (postgresql.conf, or ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'), restart the server";
    let statements = match schema {
        None if preloaded => Err(Unavailable::new(
            "pg_stat_statements is not installed in this database",
            Some("CREATE EXTENSION pg_stat_statements; (in this database)".to_string()),
        )),
        None => Err(Unavailable::new(
            "pg_stat_statements is neither loaded by the server nor installed in this database",
            Some(format!(
                "{preload_fix}, then CREATE EXTENSION pg_stat_statements; (in this database)"
            )),
        )),
        Some(_) if track.as_deref() == Some("none") => Err(Unavailable::new(
            "pg_stat_statements.track is none: no statement is recorded",
            Some(
                "pg_stat_statements.track = top (postgresql.conf, then SELECT pg_reload_conf())"
                    .to_string(),
            ),
        )),
        Some(schema) => {
            let sql = format!(
                "SELECT CASE WHEN queryid IS NULL THEN NULL ELSE userid::text || '/' || queryid::text END, \
                        calls::text, rows::text, query \
                 FROM {}.pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND (queryid IS NULL OR query ILIKE ANY (ARRAY[{}]))",
                engine.quote(&schema),
                placeholders(engine, 1, tables.len()).join(", ")
            );
            let patterns = like_patterns(tables);
            match db
                .text_rows(&sql, &patterns, "reading pg_stat_statements")
                .await
            {
                Ok(rows) => {
                    let mut statements = Statements::default();
                    for row in &rows {
                        let (calls, rows) = (number(&row[1]), number(&row[2]));
                        match &row[0] {
                            Some(key) => {
                                let entry =
                                    statements.entries.entry(key.clone()).or_insert(Entry {
                                        calls: 0,
                                        rows: 0,
                                        text: text(&row[3]),
                                    });
                                entry.calls += calls;
                                entry.rows += rows;
                            }
                            None => statements.hidden_calls += calls,
                        }
                    }
                    if rows.iter().any(|row| row[0].is_none()) && read_all != "true" {
                        statements.hidden = Some(Unavailable::new(
                            format!(
                                "the text of other roles' statements is hidden from {user} (it needs pg_read_all_stats)"
                            ),
                            Some(format!(
                                "GRANT pg_read_all_stats TO {};",
                                engine.quote(&user)
                            )),
                        ));
                    }
                    Ok(statements)
                }
                Err(err) => Err(refused(err, |state| match state {
                    // "pg_stat_statements must be loaded via shared_preload_libraries"
                    "55000" => Some(preload_fix.to_string()),
                    "42501" => Some(format!(
                        "GRANT SELECT ON {}.pg_stat_statements TO {};",
                        engine.quote(&schema),
                        engine.quote(&user)
                    )),
                    _ => None,
                })?),
            }
        }
    };
    Ok(Sample {
        table_source: "pg_stat_user_tables",
        tables: tables_read,
        statement_source: "pg_stat_statements",
        statements,
    })
}

/// `'user'@'host'` from `CURRENT_USER()`'s `user@host`.
fn mysql_account(current: &str) -> String {
    let (user, host) = current.rsplit_once('@').unwrap_or((current, "%"));
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    format!("{}@{}", quote(user), quote(host))
}

async fn mysql(db: &dyn Adapter, tables: &[String]) -> Result<Sample, DbError> {
    let settings = setting(
        db,
        "SELECT CAST(@@performance_schema AS CHAR), CAST(CURRENT_USER() AS CHAR), \
                CAST(DATABASE() AS CHAR)",
        "reading the performance_schema setting",
    )
    .await?;
    let get = |i: usize| settings.get(i).cloned().flatten().unwrap_or_default();
    let (enabled, account, database) = (get(0), mysql_account(&get(1)), get(2));
    let sample = |tables, statements| Sample {
        table_source: "performance_schema",
        tables,
        statement_source: "performance_schema",
        statements,
    };
    if enabled != "1" && !enabled.eq_ignore_ascii_case("on") {
        let off = Unavailable::new(
            "performance_schema is OFF: the server keeps no table I/O or statement statistics",
            Some(
                "performance_schema = ON in the [mysqld] section of the server's configuration, then restart the server (it cannot be turned on at runtime)"
                    .to_string(),
            ),
        );
        return Ok(sample(Err(off.clone()), Err(off)));
    }
    let grant = format!("GRANT SELECT ON performance_schema.* TO {account};");
    let setup = db
        .text_rows(
            "SELECT CAST(NAME AS CHAR), CAST(ENABLED AS CHAR) FROM performance_schema.setup_consumers \
             WHERE NAME IN ('global_instrumentation', 'statements_digest') \
             UNION ALL \
             SELECT CAST(NAME AS CHAR), CAST(ENABLED AS CHAR) FROM performance_schema.setup_instruments \
             WHERE NAME IN ('wait/io/table/sql/handler', 'statement/sql/select', 'statement/sql/insert', \
                            'statement/sql/update', 'statement/sql/delete')",
            &[],
            "reading performance_schema's setup",
        )
        .await;
    let setup: BTreeMap<String, bool> = match setup {
        Ok(rows) => rows
            .iter()
            .map(|row| (text(&row[0]), text(&row[1]) == "YES"))
            .collect(),
        Err(err) => {
            let denied = refused(err, |_| Some(grant.clone()))?;
            return Ok(sample(Err(denied.clone()), Err(denied)));
        }
    };
    let on = |name: &str| setup.get(name).copied().unwrap_or(false);
    let consumer_fix = |name: &str| {
        format!(
            "UPDATE performance_schema.setup_consumers SET ENABLED = 'YES' WHERE NAME = '{name}';"
        )
    };
    let global = (!on("global_instrumentation")).then(|| {
        Unavailable::new(
            "performance_schema's global_instrumentation consumer is disabled",
            Some(consumer_fix("global_instrumentation")),
        )
    });

    let tables_read = if let Some(off) = &global {
        Err(off.clone())
    } else if !on("wait/io/table/sql/handler") {
        Err(Unavailable::new(
            "the table I/O instrument (wait/io/table/sql/handler) is disabled",
            Some("UPDATE performance_schema.setup_instruments SET ENABLED = 'YES' WHERE NAME = 'wait/io/table/sql/handler';".to_string()),
        ))
    } else {
        table_io(db, tables, &database, &grant).await?
    };

    let statement_instruments = ["select", "insert", "update", "delete"]
        .iter()
        .all(|kind| on(&format!("statement/sql/{kind}")));
    let statements = if let Some(off) = global {
        Err(off)
    } else if !on("statements_digest") {
        Err(Unavailable::new(
            "performance_schema's statements_digest consumer is disabled",
            Some(consumer_fix("statements_digest")),
        ))
    } else if !statement_instruments {
        Err(Unavailable::new(
            "some statement instruments (statement/sql/select, insert, update, delete) are disabled",
            Some("UPDATE performance_schema.setup_instruments SET ENABLED = 'YES' WHERE NAME LIKE 'statement/sql/%';".to_string()),
        ))
    } else {
        digests(db, tables, &grant).await?
    };
    Ok(sample(tables_read, statements))
}

async fn table_io(
    db: &dyn Adapter,
    tables: &[String],
    database: &str,
    grant: &str,
) -> Result<Result<BTreeMap<String, Counters>, Unavailable>, DbError> {
    let engine = Engine::Mysql;
    // setup_objects can switch instrumentation off per schema or table; the
    // most specific row wins. A table it switches off has no counters at all,
    // which must not read as "unused".
    let objects = db
        .text_rows(
            "SELECT CAST(OBJECT_SCHEMA AS CHAR), CAST(OBJECT_NAME AS CHAR), CAST(ENABLED AS CHAR) \
             FROM performance_schema.setup_objects WHERE OBJECT_TYPE = 'TABLE' \
               AND OBJECT_SCHEMA IN (DATABASE(), '%')",
            &[],
            "reading performance_schema.setup_objects",
        )
        .await;
    let objects = match objects {
        Ok(rows) => rows,
        Err(err) => return Ok(Err(refused(err, |_| Some(grant.to_string()))?)),
    };
    for table in tables {
        let rule = objects
            .iter()
            .filter(|row| {
                let name = text(&row[1]);
                name == "%" || name == *table
            })
            .max_by_key(|row| (text(&row[0]) != "%", text(&row[1]) != "%"));
        if rule.is_none_or(|row| text(&row[2]) != "YES") {
            return Ok(Err(Unavailable::new(
                format!(
                    "performance_schema.setup_objects does not instrument table {database}.{table}"
                ),
                Some(format!(
                    "INSERT INTO performance_schema.setup_objects (OBJECT_TYPE, OBJECT_SCHEMA, OBJECT_NAME, ENABLED, TIMED) VALUES ('TABLE', '{}', '%', 'YES', 'YES');",
                    database.replace('\'', "''")
                )),
            )));
        }
    }
    let sql = format!(
        "SELECT CAST(OBJECT_NAME AS CHAR), CAST(COUNT_FETCH AS CHAR), CAST(COUNT_INSERT AS CHAR), \
                CAST(COUNT_UPDATE AS CHAR), CAST(COUNT_DELETE AS CHAR) \
         FROM performance_schema.table_io_waits_summary_by_table \
         WHERE OBJECT_TYPE = 'TABLE' AND OBJECT_SCHEMA = DATABASE() AND OBJECT_NAME IN ({})",
        placeholders(engine, 1, tables.len()).join(", ")
    );
    Ok(
        match db
            .text_rows(
                &sql,
                tables,
                "reading performance_schema.table_io_waits_summary_by_table",
            )
            .await
        {
            Ok(rows) => {
                // A table not opened since the server started has no row yet.
                let mut counters: BTreeMap<String, Counters> = tables
                    .iter()
                    .map(|t| (t.clone(), Counters::default()))
                    .collect();
                counters.extend(rows.iter().map(|row| {
                    (
                        text(&row[0]),
                        Counters {
                            scans: None,
                            rows_read: number(&row[1]),
                            inserted: number(&row[2]),
                            updated: number(&row[3]),
                            deleted: number(&row[4]),
                        },
                    )
                }));
                Ok(counters)
            }
            Err(err) => Err(refused(err, |_| Some(grant.to_string()))?),
        },
    )
}

async fn digests(
    db: &dyn Adapter,
    tables: &[String],
    grant: &str,
) -> Result<Result<Statements, Unavailable>, DbError> {
    let engine = Engine::Mysql;
    let likes: Vec<String> = placeholders(engine, 1, tables.len())
        .into_iter()
        .map(|p| format!("DIGEST_TEXT LIKE {p}"))
        .collect();
    // Statements that found no free digest slot are summed in the row whose
    // DIGEST is NULL: their texts are lost.
    let sql = format!(
        "SELECT CAST(DIGEST AS CHAR), CAST(COUNT_STAR AS CHAR), \
                CAST(SUM_ROWS_SENT + SUM_ROWS_AFFECTED AS CHAR), CAST(DIGEST_TEXT AS CHAR) \
         FROM performance_schema.events_statements_summary_by_digest \
         WHERE (SCHEMA_NAME = DATABASE() AND ({})) OR DIGEST IS NULL",
        likes.join(" OR ")
    );
    let rows = match db
        .text_rows(
            &sql,
            &like_patterns(tables),
            "reading performance_schema.events_statements_summary_by_digest",
        )
        .await
    {
        Ok(rows) => rows,
        Err(err) => return Ok(Err(refused(err, |_| Some(grant.to_string()))?)),
    };
    let mut statements = Statements::default();
    for row in &rows {
        match &row[0] {
            Some(digest) => {
                statements.entries.insert(
                    digest.clone(),
                    Entry {
                        calls: number(&row[1]),
                        rows: number(&row[2]),
                        text: text(&row[3]),
                    },
                );
            }
            None => {
                statements.hidden_calls += number(&row[1]);
                statements.hidden = Some(Unavailable::new(
                    "the digest table is full: new statements are summed without their text",
                    Some("TRUNCATE TABLE performance_schema.events_statements_summary_by_digest; or raise performance_schema_digests_size (server configuration, restart)".to_string()),
                ));
            }
        }
    }
    Ok(Ok(statements))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_since_a_reset_count_from_zero() {
        let before = Counters {
            scans: Some(10),
            rows_read: 100,
            inserted: 5,
            updated: 0,
            deleted: 0,
        };
        let after = Counters {
            scans: Some(12),
            rows_read: 3,
            ..before
        };
        let moved = after.since(&before);
        assert_eq!(moved.scans, Some(2));
        assert_eq!(moved.rows_read, 3);
        assert_eq!(moved.inserted, 0);
        assert!(moved.moved());
        assert!(!before.since(&before).moved());
    }

    #[test]
    fn mysql_accounts_are_quoted_for_a_grant() {
        assert_eq!(mysql_account("gate@%"), "'gate'@'%'");
        assert_eq!(mysql_account("o'neil@10.0.0.1"), "'o''neil'@'10.0.0.1'");
    }
}
