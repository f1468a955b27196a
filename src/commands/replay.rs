//! `dropguard replay FILE...`: existing logs read offline through the file
//! source's decoding (multi-line joining, JSON fields, size cap) and the error
//! signatures; prints which dropped tables and columns the errors name.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::{Config, FileLogConfig};
use crate::detect::incident::Incident;
use crate::detect::{Detector, Missing, Settings, Signatures};
use crate::event::{Deploy, DeployOrigin, Event, Payload, Record};
use crate::sources::file::{Assembler, Finished, Rule};
use crate::sources::{SourceStats, decode_record};

pub struct Args {
    pub files: Vec<PathBuf>,
    pub json: bool,
    /// `detect.patterns` of the config, if any.
    pub patterns: Vec<String>,
    /// `--deploy APP.NAME@TIME`: run the detector as if these migrations had been
    /// applied then.
    pub deploys: Vec<(String, SystemTime)>,
    /// The configuration, when there is one: what the deploys dropped, `detect.*`.
    pub config: Option<Config>,
}

/// Parses `--deploy APP.NAME@TIME` (RFC 3339, or `YYYY-MM-DD HH:MM:SS` as UTC).
pub fn parse_deploy(text: &str) -> Result<(String, SystemTime), String> {
    let (migration, time) = text
        .rsplit_once('@')
        .ok_or_else(|| format!("{text:?}: write the migration and its time, like catalog.0016_remove_product_brand@2026-11-25T16:00:00Z"))?;
    if migration.is_empty() {
        return Err(format!(
            "{text:?}: the migration (app.name) is missing before '@'"
        ));
    }
    let at = crate::event::parse_time(time).ok_or_else(|| {
        format!("{time:?} is not a time: write RFC 3339, like 2026-11-25T16:00:00Z")
    })?;
    Ok((migration.to_string(), at))
}

/// Matches printed in text mode before the rest is summarised.
const SHOWN: usize = 50;
/// Bytes read at a time.
const READ_CHUNK: usize = 1 << 20;
/// Files from this size on are replayed in two halves, on two threads.
const SPLIT_FROM: u64 = 8 << 20;
/// How far past the middle a line that certainly starts an event is looked for.
const SPLIT_WINDOW: u64 = 1 << 20;
/// Characters of the matching line shown.
const SAMPLE_CHARS: usize = 300;

#[derive(Serialize)]
struct Report {
    files: Vec<PathBuf>,
    /// Events read (a traceback with its record line is one).
    events: u64,
    matches: Vec<Match>,
    /// Per missing object: how many events named it, first and last seen.
    objects: Vec<ObjectSummary>,
    /// With `--deploy`: the incidents the detector would have opened, as they
    /// stood at the end of the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    incidents: Option<Vec<Incident>>,
    /// With `--deploy`: matching events without a time, which the detector
    /// cannot place.
    #[serde(skip_serializing_if = "Option::is_none")]
    untimed: Option<u64>,
}

#[derive(Serialize)]
struct Match {
    file: PathBuf,
    /// 1-based line where the event starts.
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    #[serde(skip)]
    logged_at: Option<SystemTime>,
    missing: Vec<Missing>,
    /// The line of the event holding the error.
    sample: String,
    /// The whole event, as the detector reads it.
    #[serde(skip)]
    record: Record,
}

#[derive(Serialize)]
struct ObjectSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<String>,
    errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<String>,
}

/// Replays `args.files` read as `settings` (the configured file source's
/// format, multi-line rule and size cap).
pub fn run(settings: &FileLogConfig, args: &Args, out: &mut dyn Write) -> anyhow::Result<u8> {
    let signatures =
        Signatures::with_patterns(&args.patterns).context("compiling detect.patterns")?;
    let stats = SourceStats::detached().context("creating counters")?;
    let rule = Rule::new(settings.multiline, settings.multiline_start.as_deref())
        .context("compiling multiline_start")?;
    let mut report = Report {
        files: args.files.clone(),
        events: 0,
        matches: Vec::new(),
        objects: Vec::new(),
        incidents: None,
        untimed: None,
    };
    for path in &args.files {
        replay_file(path, settings, &rule, &signatures, &stats, &mut report)
            .with_context(|| format!("replaying {}", path.display()))?;
    }
    report.objects = summarise(&report.matches);
    if !args.deploys.is_empty() {
        let config = args.config.as_ref().filter(|c| c.django.is_some() || c.sql.is_some()).context(
            "--deploy needs a configuration with django.project_dir or sql.dir, to know what the migrations dropped (--config FILE)",
        )?;
        let (incidents, untimed) = detect(config, &args.deploys, &report.matches, signatures);
        report.incidents = Some(incidents);
        report.untimed = Some(untimed);
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        print_text(&report, out)?;
    }
    Ok(0)
}

/// Runs the detector over the matches in time order, with the deploys where
/// they fall. Returns the incidents as they stood at the end, and the number of
/// matches without a time.
///
/// Offline there is no pre-deploy error rate (only the matching events are
/// kept), so incidents open on `detect.min_errors` and on unpreserved drops,
/// not on spikes.
fn detect(
    config: &Config,
    deploys: &[(String, SystemTime)],
    matches: &[Match],
    signatures: Signatures,
) -> (Vec<Incident>, u64) {
    let settings = Settings {
        environment: config.environment.clone(),
        window: config.detect.window.0,
        min_errors: config.detect.min_errors,
        spike_factor: config.detect.spike_factor,
        watch_for: config.detect.watch_for.0,
    };
    let mut detector = Detector::new(settings, signatures);
    let vault = super::open_vault(config).ok();
    enum Input<'a> {
        Deploy(&'a str),
        Error(&'a Match),
    }
    let mut inputs: Vec<(SystemTime, Input<'_>)> = deploys
        .iter()
        .map(|(migration, at)| (*at, Input::Deploy(migration)))
        .collect();
    inputs.extend(
        matches
            .iter()
            .filter_map(|m| Some((m.logged_at?, Input::Error(m)))),
    );
    let untimed = matches.iter().filter(|m| m.logged_at.is_none()).count() as u64;
    // Deploys first among equal times: errors logged the same instant are theirs.
    inputs.sort_by_key(|(at, input)| (*at, matches!(input, Input::Error(_))));
    let mut incidents: BTreeMap<String, Incident> = BTreeMap::new();
    for (at, input) in inputs {
        let outcome = match input {
            Input::Deploy(migration) => {
                let deploy = Deploy {
                    migrations: vec![migration.to_string()],
                    origin: DeployOrigin::Replay,
                    release: None,
                };
                let info = crate::resolve::deploy(config, vault.as_ref(), &deploy, at);
                detector.deploy(info, at)
            }
            Input::Error(m) => {
                let event = Event {
                    source: std::sync::Arc::from(format!("file:{}", m.file.display())),
                    observed_at: at,
                    logged_at: Some(at),
                    written_by: None,
                    payload: Payload::Log(m.record.clone()),
                };
                detector.observe(&event, at)
            }
        };
        for incident in outcome.opened.into_iter().chain(outcome.updated) {
            incidents.insert(incident.id.clone(), incident);
        }
    }
    (incidents.into_values().collect(), untimed)
}

/// What one stretch of a file held.
struct Part {
    events: u64,
    lines: u64,
    /// Line numbers counted from the stretch's first line.
    matches: Vec<Match>,
}

/// Replays one file: a large one in two halves on two threads, cut where a line
/// certainly starts an event, so that no event is split between them.
fn replay_file(
    path: &PathBuf,
    settings: &FileLogConfig,
    rule: &Rule,
    signatures: &Signatures,
    stats: &SourceStats,
    report: &mut Report,
) -> anyhow::Result<()> {
    let len = std::fs::metadata(path).context("opening the file")?.len();
    let split = if len >= SPLIT_FROM {
        find_split(path, len / 2, rule)?
    } else {
        None
    };
    let ranges = match split {
        Some(at) => vec![(0, at), (at, len)],
        None => vec![(0, len)],
    };
    let parts: Vec<anyhow::Result<Part>> = std::thread::scope(|scope| {
        let workers: Vec<_> = ranges
            .iter()
            .map(|&(from, to)| {
                scope.spawn(move || replay_range(path, from, to, settings, rule, signatures, stats))
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a replay thread panicked")))
            })
            .collect()
    });
    let mut lines_before = 0;
    for part in parts {
        let part = part?;
        report.events += part.events;
        report.matches.extend(part.matches.into_iter().map(|mut m| {
            m.line += lines_before;
            m
        }));
        lines_before += part.lines;
    }
    Ok(())
}

/// Where a file can be cut near `near`: the first line after it that certainly
/// starts an event, whatever came before.
fn find_split(path: &PathBuf, near: u64, rule: &Rule) -> anyhow::Result<Option<u64>> {
    let mut file = File::open(path).context("opening the file")?;
    file.seek(SeekFrom::Start(near)).context("reading")?;
    let mut window = Vec::new();
    file.take(SPLIT_WINDOW)
        .read_to_end(&mut window)
        .context("reading")?;
    let mut lines = window.split(|b| *b == b'\n');
    let first = lines.next().map_or(0, |partial| partial.len() + 1);
    let mut previous: Option<&[u8]> = None;
    let mut at = near + first as u64;
    let complete = window.len() - window.iter().rev().position(|b| *b == b'\n').unwrap_or(0);
    for line in window[first.min(complete)..complete].split(|b| *b == b'\n') {
        if let Some(previous) = previous
            && rule.certainly_starts(previous, line)
        {
            return Ok(Some(at));
        }
        previous = Some(line);
        at += line.len() as u64 + 1;
    }
    Ok(None)
}

#[allow(clippy::too_many_arguments)] // the shared settings of every stretch
fn replay_range(
    path: &PathBuf,
    from: u64,
    to: u64,
    settings: &FileLogConfig,
    rule: &Rule,
    signatures: &Signatures,
    stats: &SourceStats,
) -> anyhow::Result<Part> {
    let mut file = File::open(path).context("opening the file")?;
    file.seek(SeekFrom::Start(from)).context("reading")?;
    let mut part = Part {
        events: 0,
        lines: 0,
        matches: Vec::new(),
    };
    let mut assembler = Assembler::new(rule.clone(), settings.max_event_bytes);
    let label = path.display().to_string();
    // Where a signature may match, as file offsets in order: found by one pass over
    // each chunk read (as a grep would), so that the events around them are the
    // only ones the signatures are run on.
    let candidates: RefCell<VecDeque<u64>> = RefCell::new(VecDeque::new());
    let mut emit =
        |finished: Finished<'_>, first_line: u64| -> Result<(), std::convert::Infallible> {
            part.events += 1;
            {
                let mut candidates = candidates.borrow_mut();
                while candidates.front().is_some_and(|&at| at < finished.start) {
                    candidates.pop_front();
                }
                if candidates.front().is_none_or(|&at| at >= finished.end) {
                    return Ok(());
                }
            }
            if signatures.find(finished.bytes).is_empty() {
                return Ok(());
            }
            let (record, logged_at) = decode_record(
                finished.bytes,
                settings.format,
                &settings.fields,
                settings.max_event_bytes,
                stats,
                &label,
            );
            // As the daemon reads it: only an error's own text names objects.
            let (text, missing) = match crate::detect::errors::error_text(&record) {
                Some(error) => {
                    let missing = signatures.find(error.text.as_bytes());
                    (error.text, missing)
                }
                None => (
                    record.message.clone(),
                    crate::detect::errors::user_pattern_matches(&record, signatures),
                ),
            };
            if missing.is_empty() {
                return Ok(());
            }
            let sample = text
                .lines()
                .find(|line| !signatures.find(line.as_bytes()).is_empty())
                .unwrap_or(&text)
                .chars()
                .take(SAMPLE_CHARS)
                .collect();
            part.matches.push(Match {
                file: path.clone(),
                line: first_line,
                time: logged_at.map(rfc3339),
                logged_at,
                missing,
                sample,
                record,
            });
            Ok(())
        };

    let limit = settings.max_event_bytes + 1;
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut partial: Vec<u8> = Vec::new();
    let mut offset = from; // of the next unread byte
    let mut line_start = from;
    let mut line_no = 0u64; // lines finished so far
    let mut pending_line = 1u64; // first line of the pending event
    while offset < to {
        let want = READ_CHUNK.min((to - offset) as usize);
        let n = file.read(&mut buffer[..want]).context("reading")?;
        if n == 0 {
            break;
        }
        let chunk = &buffer[..n];
        {
            let mut candidates = candidates.borrow_mut();
            // A line begun in the previous chunk is looked at whole, since a
            // signature's words may straddle the two chunks.
            if !partial.is_empty() {
                let first = memchr::memchr(b'\n', chunk).unwrap_or(n);
                let mut line = partial.clone();
                line.extend_from_slice(&chunk[..first]);
                if !signatures.candidates(&line).is_empty() {
                    candidates.push_back(line_start);
                }
            }
            candidates.extend(
                signatures
                    .candidates(chunk)
                    .into_iter()
                    .map(|at| offset + at as u64),
            );
        }
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', chunk) {
            let end = offset + newline as u64 + 1;
            let line: &[u8] = if partial.is_empty() {
                &chunk[start..newline]
            } else {
                let piece = &chunk[start..newline];
                let room = limit.saturating_sub(partial.len());
                partial.extend_from_slice(&piece[..piece.len().min(room)]);
                &partial
            };
            line_no += 1;
            let previous = pending_line;
            assembler
                .push(line, line_start, end, &mut |f| emit(f, previous))
                .ok();
            if assembler.pending_start() == Some(line_start) {
                pending_line = line_no;
            }
            partial.clear();
            line_start = end;
            start = newline + 1;
        }
        let rest = &chunk[start..];
        let room = limit.saturating_sub(partial.len());
        partial.extend_from_slice(&rest[..rest.len().min(room)]);
        offset += n as u64;
    }
    if !partial.is_empty() {
        // A last line without its newline still counts.
        line_no += 1;
        let previous = pending_line;
        let last = std::mem::take(&mut partial);
        assembler
            .push(&last, line_start, offset, &mut |f| emit(f, previous))
            .ok();
        if assembler.pending_start() == Some(line_start) {
            pending_line = line_no;
        }
    }
    assembler.flush(&mut |f| emit(f, pending_line)).ok();
    part.lines = line_no;
    Ok(part)
}

fn rfc3339(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn summarise(matches: &[Match]) -> Vec<ObjectSummary> {
    let mut objects: BTreeMap<(Option<String>, Option<String>), ObjectSummary> = BTreeMap::new();
    for m in matches {
        for missing in &m.missing {
            let key = (missing.table.clone(), missing.column.clone());
            let summary = objects.entry(key).or_insert_with(|| ObjectSummary {
                table: missing.table.clone(),
                column: missing.column.clone(),
                errors: 0,
                first_seen: None,
                last_seen: None,
            });
            summary.errors += 1;
            if let Some(time) = &m.time {
                if summary.first_seen.as_ref().is_none_or(|first| time < first) {
                    summary.first_seen = Some(time.clone());
                }
                if summary.last_seen.as_ref().is_none_or(|last| time > last) {
                    summary.last_seen = Some(time.clone());
                }
            }
        }
    }
    let mut objects: Vec<ObjectSummary> = objects.into_values().collect();
    objects.sort_by(|a, b| {
        b.errors
            .cmp(&a.errors)
            .then_with(|| (&a.table, &a.column).cmp(&(&b.table, &b.column)))
    });
    objects
}

fn describe(table: &Option<String>, column: &Option<String>) -> String {
    match (table, column) {
        (Some(table), Some(column)) => format!("missing column {table}.{column}"),
        (None, Some(column)) => format!("missing column {column} (table not named)"),
        (Some(table), None) => format!("missing table {table}"),
        (None, None) => "missing object".to_string(),
    }
}

fn print_text(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    for m in report.matches.iter().take(SHOWN) {
        let what: Vec<String> = m
            .missing
            .iter()
            .map(|missing| describe(&missing.table, &missing.column))
            .collect();
        writeln!(
            out,
            "{}:{}  {}{} ({})",
            m.file.display(),
            m.line,
            m.time
                .as_deref()
                .map(|t| format!("{t}  "))
                .unwrap_or_default(),
            what.join(", "),
            m.missing[0].engine
        )?;
        writeln!(out, "    {}", m.sample)?;
    }
    if report.matches.len() > SHOWN {
        writeln!(
            out,
            "… {} more (--json lists them all)",
            report.matches.len() - SHOWN
        )?;
    }
    writeln!(
        out,
        "{} of {} events name a missing table or column{}",
        report.matches.len(),
        report.events,
        if report.objects.is_empty() { "." } else { ":" }
    )?;
    print_objects(report, out)?;
    if let Some(incidents) = &report.incidents {
        writeln!(
            out,
            "{} incident{} would open{}",
            incidents.len(),
            if incidents.len() == 1 { "" } else { "s" },
            if incidents.is_empty() { "." } else { ":" }
        )?;
        for incident in incidents {
            let triggers: Vec<&str> = incident.triggers.iter().map(|t| t.as_str()).collect();
            writeln!(
                out,
                "  {}  {} ({})",
                incident
                    .opened_at
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
                incident.headline,
                triggers.join(", ")
            )?;
        }
        if let Some(untimed) = report.untimed.filter(|n| *n > 0) {
            writeln!(
                out,
                "{untimed} matching event{} carried no time and could not be placed against the deploys",
                if untimed == 1 { "" } else { "s" }
            )?;
        }
    }
    Ok(())
}

fn print_objects(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    for object in &report.objects {
        let seen = match (&object.first_seen, &object.last_seen) {
            (Some(first), Some(last)) => format!(", first {first}, last {last}"),
            _ => String::new(),
        };
        writeln!(
            out,
            "  {}: {} error{}{}",
            describe(&object.table, &object.column),
            object.errors,
            if object.errors == 1 { "" } else { "s" },
            seen
        )?;
    }
    Ok(())
}
