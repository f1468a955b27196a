//! The usage gate: between the code deploy and `migrate`, does anything still
//! read or write what the pending plan drops? The database's own statistics
//! answer it: two samples of the table counters and statement statistics,
//! a window apart, compared per at-risk object.
//!
//! - [`objects`]: the plan's dropped tables and columns;
//! - [`stats`]: one sample of the statistics (and what cannot be read, with the
//!   GRANT or setting that enables it);
//! - [`statements`]: which table and column a normalized statement names;
//! - [`judge`]: two samples → a verdict per object (pure);
//! - [`watch`]: the daemon's continuous check and its watch of the logs.
//!
//! It never writes to the database and never reads the application's tables:
//! only statistics views. A statistic that cannot be read makes an object
//! `unknown`, never `unused`.

pub mod statements;
pub mod stats;
pub mod watch;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::db::Engine;
use crate::migrations::OpKind;
use crate::plan::Plan;
use statements::{ColumnUse, Parsed};
use stats::{Counters, Sample, Unavailable, delta};

/// Longest statement text kept as evidence.
const STATEMENT_CHARS: usize = 2000;
/// Statements shown per object; the rest are counted.
const STATEMENTS_SHOWN: usize = 3;

/// One at-risk object: a table the plan drops whole (`column` absent) or one
/// column it drops.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Object {
    /// The migration that drops it, `app.name`.
    pub migration: String,
    pub table: String,
    pub column: Option<String>,
}

impl Object {
    /// `table` or `table.column`.
    pub fn name(&self) -> String {
        match &self.column {
            Some(column) => format!("{}.{column}", self.table),
            None => self.table.clone(),
        }
    }
}

/// The dropped tables and columns of the plan, in plan order (a table dropped
/// whole is one object, its columns none), and a note for each drop that cannot
/// be checked because its table is not in the database yet.
pub fn objects(plan: &Plan) -> (Vec<Object>, Vec<String>) {
    let mut objects: Vec<Object> = Vec::new();
    let mut notes = Vec::new();
    for (migration, op) in plan.operations() {
        let o = &op.operation;
        let columns: Vec<Option<String>> = match o.kind {
            OpKind::DropTable => vec![None],
            OpKind::DropColumn => o.columns.iter().cloned().map(Some).collect(),
            _ => continue,
        };
        let Some(table) = &o.table else { continue };
        if let Some(note) = &op.note {
            notes.push(format!("{} not checked: {note}", o.source));
            continue;
        }
        let whole = |x: &Object| {
            x.migration == migration.migration && x.table == *table && x.column.is_none()
        };
        if objects.iter().any(whole) {
            continue;
        }
        if columns == [None] {
            objects.retain(|x| !(x.migration == migration.migration && x.table == *table));
        }
        for column in columns {
            let object = Object {
                migration: migration.migration.clone(),
                table: table.clone(),
                column,
            };
            if !objects.contains(&object) {
                objects.push(object);
            }
        }
    }
    (objects, notes)
}

/// The tables whose statistics the objects need, each once.
pub fn tables(objects: &[Object]) -> Vec<String> {
    let mut tables: Vec<String> = objects.iter().map(|o| o.table.clone()).collect();
    tables.sort();
    tables.dedup();
    tables
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Nothing read or wrote it during the window.
    Unused,
    /// Something did: the evidence says what.
    InUse,
    /// The statistics that would tell are not available (the reason and fix are
    /// in the summary).
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unused => "unused",
            Status::InUse => "in_use",
            Status::Unknown => "unknown",
        }
    }

    /// As people read it.
    pub fn label(self) -> &'static str {
        match self {
            Status::Unused => "unused",
            Status::InUse => "in use",
            Status::Unknown => "unknown",
        }
    }
}

/// Log lines naming an object, counted by the daemon's log watch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct LogMentions {
    pub lines: u64,
    /// One of them, cut and with secrets masked.
    pub sample: String,
}

/// What was seen of one object during the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// A normalized statement naming the object ran.
    Statement {
        source: &'static str,
        calls: u64,
        /// Rows it returned or changed.
        rows: u64,
        statement: String,
        /// The server cut the text: it may name more past the cut.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    /// More statements naming it ran than are listed.
    MoreStatements {
        source: &'static str,
        statements: usize,
        calls: u64,
    },
    /// The table's read and write counters over the window.
    Table {
        source: &'static str,
        #[serde(flatten)]
        counters: Counters,
    },
    /// dropguard's own reads of the table (a preserve, a row count), left out.
    OwnReads { source: &'static str, calls: u64 },
    /// Log lines naming it (the daemon's log watch).
    Logs { lines: u64, sample: String },
}

/// The gate's answer for one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    #[serde(flatten)]
    pub object: Object,
    pub status: Status,
    /// One line: why this status.
    pub summary: String,
    pub evidence: Vec<Evidence>,
}

/// Whether a kind of statistics could be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Availability {
    pub source: &'static str,
    /// `available`, `partial` (some statements' texts are hidden) or `unavailable`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The statement to run or the setting to change to make it available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Availability {
    fn of<T>(
        source: &'static str,
        read: &Result<T, Unavailable>,
        partial: Option<&Unavailable>,
    ) -> Self {
        match (read, partial) {
            (Err(why), _) => Self {
                source,
                state: "unavailable",
                reason: Some(why.reason.clone()),
                fix: why.fix.clone(),
            },
            (Ok(_), Some(why)) => Self {
                source,
                state: "partial",
                reason: Some(why.reason.clone()),
                fix: why.fix.clone(),
            },
            (Ok(_), None) => Self {
                source,
                state: "available",
                reason: None,
                fix: None,
            },
        }
    }
}

/// What the gate could read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statistics {
    pub table_counters: Availability,
    pub statements: Availability,
}

impl Statistics {
    pub fn of(sample: &Sample) -> Self {
        let hidden = sample
            .statements
            .as_ref()
            .ok()
            .and_then(|s| s.hidden.as_ref());
        Self {
            table_counters: Availability::of(sample.table_source, &sample.tables, None),
            statements: Availability::of(sample.statement_source, &sample.statements, hidden),
        }
    }
}

/// The overall status of several verdicts: in use if any is, else unknown if
/// any is, else unused (also when there are none).
pub fn overall(verdicts: &[Verdict]) -> Status {
    if verdicts.iter().any(|v| v.status == Status::InUse) {
        Status::InUse
    } else if verdicts.iter().any(|v| v.status == Status::Unknown) {
        Status::Unknown
    } else {
        Status::Unused
    }
}

/// A statement that ran during the window.
struct Ran<'a> {
    calls: u64,
    rows: u64,
    text: &'a str,
    parsed: Parsed,
}

/// The statements that ran between two samples, and the calls of statements
/// whose text cannot be seen; `None` without statement statistics.
fn ran<'a>(engine: Engine, before: &Sample, after: &'a Sample) -> Option<(Vec<Ran<'a>>, u64)> {
    let (Ok(b), Ok(a)) = (&before.statements, &after.statements) else {
        return None;
    };
    let ran = a
        .entries
        .iter()
        .filter_map(|(key, entry)| {
            let earlier = b.entries.get(key);
            let calls = delta(earlier.map_or(0, |e| e.calls), entry.calls);
            (calls > 0).then(|| Ran {
                calls,
                rows: delta(earlier.map_or(0, |e| e.rows), entry.rows),
                text: &entry.text,
                parsed: Parsed::new(&entry.text, engine),
            })
        })
        .collect();
    Some((ran, delta(b.hidden_calls, a.hidden_calls)))
}

/// What the table counters say over the window.
enum TableMoves {
    /// No counters to compare.
    Unavailable,
    /// The table had counters before the window and none after.
    Gone,
    /// Not in the counters at all (another schema?).
    Missing,
    Counted(Counters),
}

fn table_moves(table: &str, before: &Sample, after: &Sample) -> TableMoves {
    let (Ok(b), Ok(a)) = (&before.tables, &after.tables) else {
        return TableMoves::Unavailable;
    };
    match (b.get(table), a.get(table)) {
        (_, Some(now)) => {
            TableMoves::Counted(now.since(&b.get(table).copied().unwrap_or_default()))
        }
        (Some(_), None) => TableMoves::Gone,
        (None, None) => TableMoves::Missing,
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn describe_moves(c: &Counters) -> String {
    let written = c.inserted + c.updated + c.deleted;
    let mut parts = Vec::new();
    if let Some(scans) = c.scans {
        parts.push(plural(scans, "scan", "scans"));
    }
    parts.push(format!("{} read", plural(c.rows_read, "row", "rows")));
    parts.push(format!("{} written", plural(written, "row", "rows")));
    parts.join(", ")
}

/// Compares two samples a window apart: a verdict per object. `logs` holds the
/// log lines that named each object during the window (the daemon's; empty
/// for the CLI).
pub fn judge(
    engine: Engine,
    objects: &[Object],
    before: &Sample,
    after: &Sample,
    logs: &BTreeMap<Object, LogMentions>,
) -> Vec<Verdict> {
    let ran = ran(engine, before, after);
    let statements_missing = after.statements.as_ref().err().cloned();
    let counters_missing = after.tables.as_ref().err().cloned();
    let hidden = after
        .statements
        .as_ref()
        .ok()
        .and_then(|s| s.hidden.clone());
    objects
        .iter()
        .map(|object| {
            let table_moves = table_moves(&object.table, before, after);
            Judging {
                object,
                engine_sources: (after.table_source, after.statement_source),
                ran: ran.as_ref(),
                table_moves,
                logs: logs.get(object),
                statements_missing: statements_missing.as_ref(),
                counters_missing: counters_missing.as_ref(),
                hidden: hidden.as_ref(),
            }
            .verdict()
        })
        .collect()
}

struct Judging<'a> {
    object: &'a Object,
    /// (table counters' source, statements' source)
    engine_sources: (&'static str, &'static str),
    ran: Option<&'a (Vec<Ran<'a>>, u64)>,
    table_moves: TableMoves,
    logs: Option<&'a LogMentions>,
    statements_missing: Option<&'a Unavailable>,
    counters_missing: Option<&'a Unavailable>,
    hidden: Option<&'a Unavailable>,
}

impl Judging<'_> {
    fn verdict(self) -> Verdict {
        let (table_source, statement_source) = self.engine_sources;
        let table = &self.object.table;
        let column = self.object.column.as_deref();
        let mut evidence = Vec::new();

        // Statements naming the object, the application's and dropguard's own.
        let mut app: Vec<&Ran> = Vec::new();
        let mut own_calls = 0;
        let mut others_naming_table = 0;
        let mut maybe_past_the_cut = 0;
        if let Some((ran, _)) = self.ran {
            for r in ran {
                if r.parsed.schema_change || !r.parsed.names_table(table) {
                    continue;
                }
                if r.parsed.own {
                    own_calls += r.calls;
                    continue;
                }
                others_naming_table += 1;
                match column {
                    None => app.push(r),
                    Some(column) => match r.parsed.column_use(table, column) {
                        ColumnUse::Named | ColumnUse::All => app.push(r),
                        ColumnUse::No if r.parsed.truncated => maybe_past_the_cut += 1,
                        ColumnUse::No => {}
                    },
                }
            }
        }
        app.sort_by_key(|r| std::cmp::Reverse(r.calls));
        let app_calls: u64 = app.iter().map(|r| r.calls).sum();
        let needle = column.unwrap_or(table);
        for r in app.iter().take(STATEMENTS_SHOWN) {
            evidence.push(Evidence::Statement {
                source: statement_source,
                calls: r.calls,
                rows: r.rows,
                statement: cut(r.text, STATEMENT_CHARS),
                truncated: r.parsed.truncated,
            });
        }
        if app.len() > STATEMENTS_SHOWN {
            evidence.push(Evidence::MoreStatements {
                source: statement_source,
                statements: app.len() - STATEMENTS_SHOWN,
                calls: app.iter().skip(STATEMENTS_SHOWN).map(|r| r.calls).sum(),
            });
        }
        if own_calls > 0 {
            evidence.push(Evidence::OwnReads {
                source: statement_source,
                calls: own_calls,
            });
        }
        if let TableMoves::Counted(counters) = &self.table_moves {
            evidence.push(Evidence::Table {
                source: table_source,
                counters: *counters,
            });
        }
        let log_lines = self.logs.map_or(0, |l| l.lines);
        if let Some(logs) = self.logs.filter(|l| l.lines > 0) {
            evidence.push(Evidence::Logs {
                lines: logs.lines,
                sample: logs.sample.clone(),
            });
        }

        let hidden_calls = self.ran.map_or(0, |(_, hidden)| *hidden);
        let statements_complete = self.ran.is_some() && hidden_calls == 0;
        // Why statements cannot settle it, with the fix.
        let statements_gap = || -> String {
            let why = match (self.statements_missing, self.hidden) {
                (Some(missing), _) => Some(missing),
                (None, Some(hidden)) if hidden_calls > 0 => Some(hidden),
                _ => None,
            };
            match why {
                Some(why) => match &why.fix {
                    Some(fix) => format!("{} ({statement_source}); to enable: {fix}", why.reason),
                    None => format!("{} ({statement_source})", why.reason),
                },
                None => format!("statement statistics are unavailable ({statement_source})"),
            }
        };
        let counters_gap = || -> String {
            match self.counters_missing {
                Some(why) => match &why.fix {
                    Some(fix) => format!("{} ({table_source}); to enable: {fix}", why.reason),
                    None => format!("{} ({table_source})", why.reason),
                },
                None => format!("no counters for table {table} in {table_source}"),
            }
        };

        let in_use_summary = || -> String {
            let mut parts = Vec::new();
            if let Some(top) = app.first() {
                let statement = statements::excerpt(top.text, needle, 120);
                parts.push(if app.len() == 1 {
                    format!(
                        "{}: {statement} ({statement_source})",
                        plural(app_calls, "call", "calls")
                    )
                } else {
                    format!(
                        "{} of {} statements, e.g. {statement} ({statement_source})",
                        plural(app_calls, "call", "calls"),
                        app.len()
                    )
                });
            }
            if log_lines > 0 {
                parts.push(format!(
                    "{} naming it",
                    plural(log_lines, "log line", "log lines")
                ));
            }
            parts.join("; ")
        };

        let (status, summary) = if !app.is_empty() || log_lines > 0 {
            (Status::InUse, in_use_summary())
        } else {
            match (column, &self.table_moves) {
                (_, TableMoves::Gone) => (
                    Status::Unknown,
                    format!(
                        "table {table} disappeared during the window: was the migration applied?"
                    ),
                ),
                (None, TableMoves::Counted(c)) if c.moved() => {
                    if statements_complete && own_calls > 0 && others_naming_table == 0 {
                        (
                            Status::Unused,
                            format!(
                                "only dropguard's own reads ({}) touched it ({statement_source}, {table_source})",
                                plural(own_calls, "call", "calls")
                            ),
                        )
                    } else {
                        let how = if statements_complete {
                            " by statements that do not name it (a foreign-key check, a view or a function)"
                        } else {
                            ""
                        };
                        (
                            Status::InUse,
                            format!("{}{how} ({table_source})", describe_moves(c)),
                        )
                    }
                }
                (None, TableMoves::Counted(_)) => (
                    Status::Unused,
                    format!("not read or written ({table_source})"),
                ),
                (None, _) if statements_complete => (
                    Status::Unused,
                    format!(
                        "no statement naming it ran ({statement_source}); table counters: {}",
                        counters_gap()
                    ),
                ),
                (None, _) => (
                    Status::Unknown,
                    format!("cannot tell: {}; {}", counters_gap(), statements_gap()),
                ),
                (Some(_), TableMoves::Counted(c)) if !c.moved() => (
                    Status::Unused,
                    format!("table {table} not read or written ({table_source})"),
                ),
                (Some(_), moves) if statements_complete => {
                    if maybe_past_the_cut > 0 {
                        (
                            Status::Unknown,
                            format!(
                                "cannot tell: {maybe_past_the_cut} statement(s) naming {table} were cut by the server before their end ({statement_source}); to keep longer texts: performance_schema_max_digest_length = 4096 and max_digest_length = 4096 (server configuration, restart)"
                            ),
                        )
                    } else {
                        let context = match moves {
                            TableMoves::Counted(c) => format!(
                                "; table {table}: {} by statements not naming the column",
                                describe_moves(c)
                            ),
                            _ => String::new(),
                        };
                        (
                            Status::Unused,
                            format!("no statement naming it ran ({statement_source}){context}"),
                        )
                    }
                }
                (Some(_), TableMoves::Counted(c)) => (
                    Status::Unknown,
                    format!(
                        "cannot tell which columns: table {table} had {} ({table_source}) and {}",
                        describe_moves(c),
                        statements_gap()
                    ),
                ),
                (Some(_), _) => (
                    Status::Unknown,
                    format!("cannot tell: {}; {}", counters_gap(), statements_gap()),
                ),
            }
        };
        Verdict {
            object: self.object.clone(),
            status,
            summary,
            evidence,
        }
    }
}

#[cfg(test)]
mod tests;
