//! `dropguard gate`: between the code deploy and `migrate`, samples the
//! database's usage statistics over a window and says, per object the pending
//! plan drops, whether anything read or wrote it. The configured log files are
//! read over the same window for lines naming the objects.
//!
//! Exit 0 only when every object is unused (or nothing is pending); 1
//! ([`super::EXIT_FINDINGS`]) when one is in use; [`EXIT_UNKNOWN`] when none is
//! in use but one cannot be told (no statistics, a missing privilege).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::db::{self, Adapter, Engine};
use crate::gate::stats::{self, Counters};
use crate::gate::watch::LogWatch;
use crate::gate::{self, Evidence, Statistics, Status, Verdict};
use crate::plan;

/// Exit status when no object is in use but at least one cannot be told.
pub const EXIT_UNKNOWN: u8 = 3;

/// The most of one log file read for one window.
const LOG_BYTES: u64 = 64 << 20;

pub struct Args {
    pub window: Duration,
    pub json: bool,
}

/// What `gate --json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub environment: String,
    pub engine: Engine,
    pub server_version: String,
    pub window_secs: f64,
    pub started_at: String,
    pub finished_at: String,
    /// `unused` only when every object is.
    pub status: Status,
    /// What could be read; absent when nothing is pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistics: Option<Statistics>,
    pub objects: Vec<Verdict>,
    /// Drops that could not be checked, and migration files not analysed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Parses `--window`: a duration like `5m`, `90s`, longer than zero.
pub fn parse_window(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(window) if !window.is_zero() => Ok(window),
        Ok(_) => Err("--window must be longer than zero".to_string()),
        Err(_) => Err(format!(
            "invalid --window {text:?}: write a number with a unit, like \"30s\" or \"5m\""
        )),
    }
}

pub async fn run(config: &Config, args: &Args, out: &mut dyn Write) -> anyhow::Result<u8> {
    let db = db::open(&config.database).await?;
    let report = check(config, db.as_ref(), args.window).await;
    db.close().await;
    let report = report?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report).context("writing the report")?;
        writeln!(out)?;
    } else {
        write_text(&report, out).context("writing the report")?;
    }
    Ok(match report.status {
        Status::Unused => 0,
        Status::InUse => super::EXIT_FINDINGS,
        Status::Unknown => EXIT_UNKNOWN,
    })
}

async fn check(config: &Config, db: &dyn Adapter, window: Duration) -> anyhow::Result<Report> {
    let plan = plan::pending_uncounted(config, db)
        .await
        .context("computing the pending plan")?;
    let (objects, mut notes) = gate::objects(&plan);
    notes.extend(plan.problems.iter().map(|p| {
        format!(
            "{}:{}: {} (what it drops is not checked)",
            p.file.display(),
            p.line,
            p.message
        )
    }));
    let started = SystemTime::now();
    let report = |statistics, objects: Vec<Verdict>, window: Duration| Report {
        environment: config.environment.clone(),
        engine: db.engine(),
        server_version: plan.server_version.clone().unwrap_or_default(),
        window_secs: window.as_secs_f64(),
        started_at: super::rfc3339(started),
        finished_at: super::rfc3339(SystemTime::now()),
        status: gate::overall(&objects),
        statistics,
        objects,
        notes: notes.clone(),
    };
    if objects.is_empty() {
        return Ok(report(None, Vec::new(), Duration::ZERO));
    }
    let tables = gate::tables(&objects);
    let logs = LogWatch::default();
    logs.watch(&objects);
    let tail = Tail::start(config);
    let before = stats::sample(db, &tables)
        .await
        .context("reading the usage statistics")?;
    // Without any statistics (SQLite, or none readable) only the logs can
    // tell: wait the window only when there are logs to read.
    let blind = before.tables.is_err() && before.statements.is_err();
    let waited = if blind && tail.files.is_empty() {
        Duration::ZERO
    } else {
        tokio::time::sleep(window).await;
        window
    };
    let after = if waited.is_zero() {
        before.clone()
    } else {
        stats::sample(db, &tables)
            .await
            .context("reading the usage statistics")?
    };
    let mentions = tokio::task::spawn_blocking(move || {
        tail.read(&logs);
        logs.take()
    })
    .await
    .context("reading the log files")?;
    let verdicts = gate::judge(db.engine(), &objects, &before, &after, &mentions);
    Ok(report(Some(Statistics::of(&after)), verdicts, waited))
}

/// The configured log files and their sizes when the window opened: what is
/// appended during the window is read when it closes.
struct Tail {
    files: Vec<(PathBuf, u64)>,
    patterns: Vec<String>,
}

impl Tail {
    fn start(config: &Config) -> Self {
        let patterns: Vec<String> = config.logs.file.iter().map(|f| f.path.clone()).collect();
        let files = expand(&patterns)
            .into_iter()
            .map(|path| {
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                (path, len)
            })
            .collect();
        Self { files, patterns }
    }

    /// Hands every line appended since the start to `logs`; a file that
    /// shrank (rotated, truncated) or appeared is read from its beginning.
    fn read(&self, logs: &LogWatch) {
        let known: BTreeMap<PathBuf, u64> = self.files.iter().cloned().collect();
        for path in expand(&self.patterns) {
            let from = known.get(&path).copied().unwrap_or(0);
            if let Err(err) = read_from(&path, from, logs) {
                tracing::warn!(file = %path.display(), error = %err, "cannot read a log file for the usage gate");
            }
        }
    }
}

fn expand(patterns: &[String]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = patterns
        .iter()
        .filter_map(|pattern| glob::glob(pattern).ok())
        .flat_map(|paths| paths.filter_map(Result::ok))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files.dedup();
    files
}

fn read_from(path: &std::path::Path, from: u64, logs: &LogWatch) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let from = if len < from { 0 } else { from };
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(LOG_BYTES).read_to_end(&mut bytes)?;
    for line in String::from_utf8_lossy(&bytes).lines() {
        logs.observe(line);
    }
    Ok(())
}

fn write_text(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    if report.objects.is_empty() {
        writeln!(
            out,
            "No pending migration drops a table or column on {} ({} {}): nothing to check.",
            report.environment, report.engine, report.server_version
        )?;
        for note in &report.notes {
            writeln!(out, "note: {note}")?;
        }
        return Ok(());
    }
    let migrations: std::collections::BTreeSet<&str> = report
        .objects
        .iter()
        .map(|v| v.object.migration.as_str())
        .collect();
    let over = if report.window_secs > 0.0 {
        format!(
            "over {}",
            humantime::format_duration(Duration::from_secs_f64(report.window_secs))
        )
    } else {
        "not sampled: no statistics and no log files to read".to_string()
    };
    writeln!(
        out,
        "Usage of {} object(s) dropped by {} pending migration(s) on {} ({} {}), {over}:",
        report.objects.len(),
        migrations.len(),
        report.environment,
        report.engine,
        report.server_version,
    )?;
    let width = report
        .objects
        .iter()
        .map(|v| v.object.name().len())
        .max()
        .unwrap_or(0);
    for verdict in &report.objects {
        writeln!(
            out,
            "\n{:<width$}  {:<7} — {}",
            verdict.object.name(),
            verdict.status.label(),
            verdict.summary
        )?;
        writeln!(
            out,
            "  {:<width$}dropped by {}",
            "", verdict.object.migration
        )?;
        let needle = verdict
            .object
            .column
            .as_deref()
            .unwrap_or(&verdict.object.table);
        for evidence in &verdict.evidence {
            writeln!(out, "  {:<width$}{}", "", evidence_line(evidence, needle))?;
        }
    }
    if let Some(statistics) = &report.statistics {
        let missing: Vec<_> = [&statistics.table_counters, &statistics.statements]
            .into_iter()
            .filter(|a| a.state != "available")
            .collect();
        if !missing.is_empty() {
            writeln!(out)?;
        }
        for availability in missing {
            let what = if std::ptr::eq(availability, &statistics.table_counters) {
                "table counters"
            } else {
                "statements"
            };
            writeln!(
                out,
                "{what} ({}): {}: {}",
                availability.source,
                availability.state,
                availability.reason.as_deref().unwrap_or("")
            )?;
            if let Some(fix) = &availability.fix {
                writeln!(out, "  to enable: {fix}")?;
            }
        }
    }
    for note in &report.notes {
        writeln!(out, "note: {note}")?;
    }
    let count = |status| report.objects.iter().filter(|v| v.status == status).count();
    writeln!(
        out,
        "\n{}",
        match report.status {
            Status::Unused =>
                "Nothing uses what the pending migrations drop: migrate can run.".to_string(),
            Status::InUse => format!(
                "{} object(s) in use: do not run migrate until the code that uses them is gone.",
                count(Status::InUse)
            ),
            Status::Unknown => format!(
                "{} object(s) cannot be told: enable what is missing above, or check them by other means.",
                count(Status::Unknown)
            ),
        }
    )
}

/// One detail line of an object's evidence, beyond its summary; statements
/// are cut around their mention of `needle`.
fn evidence_line(evidence: &Evidence, needle: &str) -> String {
    match evidence {
        Evidence::Statement {
            source,
            calls,
            rows,
            statement,
            truncated,
        } => format!(
            "{calls} call(s), {rows} row(s): {}{} ({source})",
            gate::statements::excerpt(statement, needle, 160),
            if *truncated {
                " [cut by the server]"
            } else {
                ""
            }
        ),
        Evidence::MoreStatements {
            source,
            statements,
            calls,
        } => format!("{statements} more statement(s), {calls} call(s) ({source})"),
        Evidence::Table { source, counters } => table_line(source, counters),
        Evidence::OwnReads { source, calls } => {
            format!("{calls} call(s) of dropguard's own reads, left out ({source})")
        }
        Evidence::Logs { lines, sample } => {
            let first = sample.lines().next().unwrap_or("");
            format!("{lines} log line(s), e.g. {first}")
        }
    }
}

fn table_line(source: &str, c: &Counters) -> String {
    let scans = c
        .scans
        .map(|s| format!("{s} scan(s), "))
        .unwrap_or_default();
    format!(
        "table: {scans}{} row(s) read, {} inserted, {} updated, {} deleted ({source})",
        c.rows_read, c.inserted, c.updated, c.deleted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_durations_longer_than_zero() {
        assert_eq!(parse_window("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_window(" 2s "), Ok(Duration::from_secs(2)));
        assert!(parse_window("0s").unwrap_err().contains("longer than zero"));
        assert!(parse_window("five").unwrap_err().contains("\"30s\""));
    }
}
