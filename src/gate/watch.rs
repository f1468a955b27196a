//! The gate in the daemon: while destructive migrations are pending, the usage
//! of what they drop is checked every `gate.interval` (each check compares the
//! statistics with the previous check's), the tailed logs are watched for
//! lines naming those objects, and the result is exported as metrics.
//!
//! [`Usage`] is the shared handle: the check task writes the verdicts, the
//! detection task hands it every log record ([`Usage::observe`]) and, when a
//! destructive migration is applied, asks which of its objects were still in
//! use ([`Usage::annotate`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use regex::RegexSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::stats::{self, Sample};
use super::{LogMentions, Object, Status, Verdict, judge, objects, tables};
use crate::config::Config;
use crate::db::Adapter;
use crate::detect::incident::{DeployInfo, InUseObject};
use crate::event::{Event, Payload};
use crate::plan;
use crate::telemetry::GateStats;

/// Longest log sample kept as evidence.
const SAMPLE_CHARS: usize = 300;

/// The gate's state shared between the check task and the detection task.
#[derive(Clone)]
pub struct Usage {
    inner: Arc<Inner>,
}

struct Inner {
    logs: LogWatch,
    /// The last verdicts of each migration (kept after it is applied, so that
    /// its deploy can be told what they were), with when they were reached.
    last: Mutex<BTreeMap<String, (Vec<Verdict>, SystemTime)>>,
    /// Objects with a `dropguard_gate_in_use` series.
    labelled: Mutex<BTreeSet<Object>>,
    /// Migrations already reported applied in use, with the check that saw
    /// it: one deploy seen twice (the poller and the API) is counted once.
    reported: Mutex<BTreeSet<(String, SystemTime)>>,
    stats: GateStats,
}

/// Counts log lines naming watched objects: the table (and, for a column, the
/// column too) as whole words, case-insensitively, in one pass per line.
#[derive(Default)]
pub struct LogWatch {
    /// What is looked for; swapped whole when the plan changes.
    watched: RwLock<Arc<Watch>>,
    /// Some object is watched: lines are looked at only then.
    active: AtomicBool,
}

/// The log watch's objects and one pass over a line for all their names.
#[derive(Default)]
struct Watch {
    objects: Vec<Arc<Watched>>,
    /// Each distinct table and column name as a whole word, case-insensitive.
    names: Option<RegexSet>,
}

struct Watched {
    object: Object,
    /// Indexes of its table and column in [`Watch::names`].
    table: usize,
    column: Option<usize>,
    lines: AtomicU64,
    sample: Mutex<Option<String>>,
}

impl LogWatch {
    /// Counts `text` for each watched object it names. Cheap when nothing is
    /// watched.
    pub fn observe(&self, text: &str) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        let watch = match self.watched.read() {
            Ok(watch) => Arc::clone(&watch),
            Err(_) => return,
        };
        let Some(names) = &watch.names else { return };
        let found = names.matches(text);
        if !found.matched_any() {
            return;
        }
        for watched in &watch.objects {
            if found.matched(watched.table) && watched.column.is_none_or(|c| found.matched(c)) {
                watched.lines.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut sample) = watched.sample.lock()
                    && sample.is_none()
                {
                    *sample = Some(crate::detect::mask::sample(text, SAMPLE_CHARS));
                }
            }
        }
    }

    /// Watches `objects` from now on; an object watched already keeps its count.
    pub fn watch(&self, objects: &[Object]) {
        let Ok(mut current) = self.watched.write() else {
            return;
        };
        let same = current.objects.len() == objects.len()
            && current
                .objects
                .iter()
                .zip(objects)
                .all(|(w, o)| w.object == *o);
        if same {
            return;
        }
        let mut names: Vec<String> = Vec::new();
        let mut index = |name: &str| -> usize {
            let name = name.to_lowercase();
            match names.iter().position(|n| *n == name) {
                Some(i) => i,
                None => {
                    names.push(name);
                    names.len() - 1
                }
            }
        };
        let watched: Vec<Arc<Watched>> = objects
            .iter()
            .map(|object| {
                let table = index(&object.table);
                let column = object.column.as_deref().map(&mut index);
                match current.objects.iter().find(|w| w.object == *object) {
                    Some(known) => Arc::new(Watched {
                        object: object.clone(),
                        table,
                        column,
                        lines: AtomicU64::new(known.lines.load(Ordering::Relaxed)),
                        sample: Mutex::new(known.sample.lock().ok().and_then(|s| s.clone())),
                    }),
                    None => Arc::new(Watched {
                        object: object.clone(),
                        table,
                        column,
                        lines: AtomicU64::new(0),
                        sample: Mutex::new(None),
                    }),
                }
            })
            .collect();
        let patterns: Vec<String> = names
            .iter()
            .map(|n| format!(r"(?i)(?:^|[^\w$]){}(?:$|[^\w$])", regex::escape(n)))
            .collect();
        let names = match RegexSet::new(&patterns) {
            Ok(set) => Some(set),
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch the logs for the pending objects' names");
                None
            }
        };
        *current = Arc::new(Watch {
            objects: watched,
            names,
        });
        self.active.store(!objects.is_empty(), Ordering::Relaxed);
    }

    /// The lines counted per object since the last call, and resets them.
    pub fn take(&self) -> BTreeMap<Object, LogMentions> {
        let Ok(watch) = self.watched.read() else {
            return BTreeMap::new();
        };
        watch
            .objects
            .iter()
            .map(|w| {
                let lines = w.lines.swap(0, Ordering::Relaxed);
                let sample = w.sample.lock().ok().and_then(|mut s| s.take());
                (
                    w.object.clone(),
                    LogMentions {
                        lines,
                        sample: sample.unwrap_or_default(),
                    },
                )
            })
            .filter(|(_, mentions)| mentions.lines > 0)
            .collect()
    }
}

impl Usage {
    pub fn new(stats: GateStats) -> Self {
        Self {
            inner: Arc::new(Inner {
                logs: LogWatch::default(),
                last: Mutex::new(BTreeMap::new()),
                labelled: Mutex::new(BTreeSet::new()),
                reported: Mutex::new(BTreeSet::new()),
                stats,
            }),
        }
    }

    /// Counts a log record that names an object of a pending destructive
    /// migration (see [`LogWatch`]).
    pub fn observe(&self, event: &Event) {
        if let Payload::Log(record) = &event.payload {
            self.inner.logs.observe(&record.message);
        }
    }

    /// Keeps a check's verdicts and exports them.
    fn record(&self, verdicts: &[Verdict], at: SystemTime) {
        let stats = &self.inner.stats;
        let mut by_migration: BTreeMap<String, Vec<Verdict>> = BTreeMap::new();
        for verdict in verdicts {
            by_migration
                .entry(verdict.object.migration.clone())
                .or_default()
                .push(verdict.clone());
        }
        if let Ok(mut last) = self.inner.last.lock() {
            for (migration, verdicts) in by_migration {
                let before = last
                    .get(&migration)
                    .map(|(v, _)| v.clone())
                    .unwrap_or_default();
                for verdict in &verdicts {
                    let was = before
                        .iter()
                        .find(|b| b.object == verdict.object)
                        .map(|b| b.status);
                    if was == Some(verdict.status) {
                        continue;
                    }
                    let object = verdict.object.name();
                    let migration = &verdict.object.migration;
                    match verdict.status {
                        Status::InUse => {
                            tracing::warn!(%object, %migration, evidence = %verdict.summary, "an object the pending migration drops is in use")
                        }
                        Status::Unknown => {
                            tracing::warn!(%object, %migration, why = %verdict.summary, "cannot tell whether an object the pending migration drops is in use")
                        }
                        Status::Unused => {
                            tracing::info!(%object, %migration, evidence = %verdict.summary, "an object the pending migration drops is unused")
                        }
                    }
                }
                last.insert(migration, (verdicts, at));
            }
        }
        let current: BTreeSet<Object> = verdicts.iter().map(|v| v.object.clone()).collect();
        self.unlabel(|object| !current.contains(object));
        if let Ok(mut labelled) = self.inner.labelled.lock() {
            for verdict in verdicts {
                let o = &verdict.object;
                let labels = [
                    o.migration.as_str(),
                    o.table.as_str(),
                    o.column.as_deref().unwrap_or(""),
                ];
                match verdict.status {
                    Status::Unknown => {
                        if labelled.remove(o) {
                            let _ = stats.in_use.remove_label_values(&labels);
                        }
                    }
                    status => {
                        stats
                            .in_use
                            .with_label_values(&labels)
                            .set(i64::from(status == Status::InUse));
                        labelled.insert(o.clone());
                    }
                }
            }
        }
        for status in [Status::Unused, Status::InUse, Status::Unknown] {
            let count = verdicts.iter().filter(|v| v.status == status).count();
            stats
                .objects
                .with_label_values(&[status.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        stats
            .checks
            .with_label_values(&[super::overall(verdicts).as_str()])
            .inc();
    }

    /// Removes the `dropguard_gate_in_use` series of the objects `gone` selects.
    fn unlabel(&self, gone: impl Fn(&Object) -> bool) {
        let Ok(mut labelled) = self.inner.labelled.lock() else {
            return;
        };
        let stats = &self.inner.stats;
        labelled.retain(|o| {
            if gone(o) {
                let _ = stats.in_use.remove_label_values(&[
                    o.migration.as_str(),
                    o.table.as_str(),
                    o.column.as_deref().unwrap_or(""),
                ]);
                false
            } else {
                true
            }
        });
    }

    /// Nothing is pending: no object series, no objects.
    fn clear(&self) {
        self.unlabel(|_| true);
        for status in [Status::Unused, Status::InUse, Status::Unknown] {
            self.inner
                .stats
                .objects
                .with_label_values(&[status.as_str()])
                .set(0);
        }
    }

    fn failed(&self) {
        self.inner.stats.checks.with_label_values(&["failed"]).inc();
    }

    /// Marks, on each destructive migration of a deploy, the objects the last
    /// check saw in use before it was applied; counts and logs each such
    /// migration.
    pub fn annotate(&self, info: &mut DeployInfo) {
        let Ok(last) = self.inner.last.lock() else {
            return;
        };
        for migration in info.migrations.iter_mut().filter(|m| m.destructive) {
            let Some((verdicts, at)) = last.get(&migration.migration) else {
                continue;
            };
            migration.in_use = verdicts
                .iter()
                .filter(|v| v.status == Status::InUse)
                .map(|v| InUseObject {
                    table: v.object.table.clone(),
                    column: v.object.column.clone(),
                    checked_at: (*at).into(),
                    evidence: v.summary.clone(),
                })
                .collect();
            let first = self
                .inner
                .reported
                .lock()
                .is_ok_and(|mut reported| reported.insert((migration.migration.clone(), *at)));
            if !migration.in_use.is_empty() && first {
                self.inner.stats.applied_in_use.inc();
                let objects: Vec<String> = verdicts
                    .iter()
                    .filter(|v| v.status == Status::InUse)
                    .map(|v| v.object.name())
                    .collect();
                tracing::warn!(migration = %migration.migration, objects = ?objects, "a destructive migration was applied while the usage gate saw what it drops still in use");
            }
        }
    }
}

/// Checks the pending objects' usage every `gate.interval` until `shutdown`.
/// A check that cannot run (the database is down) is logged, counted
/// (`outcome = failed`) and retried at the next interval.
pub async fn run(
    config: Arc<Config>,
    db: Arc<dyn Adapter>,
    usage: Usage,
    shutdown: CancellationToken,
) {
    let every = config.gate.interval.0.max(Duration::from_millis(100));
    tracing::info!(interval = ?every, "checking what pending destructive migrations drop for use");
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut previous: Option<(Vec<String>, Sample)> = None;
    let mut failing: Option<String> = None;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let checked = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            checked = check(&config, db.as_ref(), &usage, previous.take()) => checked,
        };
        match checked {
            Ok(next) => {
                if failing.take().is_some() {
                    tracing::info!("the usage check runs again");
                }
                previous = next;
            }
            Err(err) => {
                usage.failed();
                if failing.as_deref() != Some(err.as_str()) {
                    tracing::warn!(error = %err, retry_in = ?every, "the usage check cannot run; retrying every interval");
                }
                failing = Some(err);
            }
        }
    }
    tracing::info!("usage checks stopped");
}

/// One check: the pending objects, a new sample, and (when the previous check
/// sampled the same tables) the verdicts over the time between the two.
async fn check(
    config: &Config,
    db: &dyn Adapter,
    usage: &Usage,
    previous: Option<(Vec<String>, Sample)>,
) -> Result<Option<(Vec<String>, Sample)>, String> {
    let plan = plan::pending_uncounted(config, db)
        .await
        .map_err(|err| format!("computing the pending plan: {err}"))?;
    let (objects, _) = objects(&plan);
    usage.inner.logs.watch(&objects);
    if objects.is_empty() {
        usage.clear();
        return Ok(None);
    }
    let tables = tables(&objects);
    let sample = stats::sample(db, &tables)
        .await
        .map_err(|err| format!("reading the usage statistics: {err}"))?;
    let logs = usage.inner.logs.take();
    if let Some((before_tables, before)) = previous
        && before_tables == tables
    {
        let verdicts = judge(db.engine(), &objects, &before, &sample, &logs);
        usage.record(&verdicts, SystemTime::now());
    }
    Ok(Some((tables, sample)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Record;

    fn usage() -> Usage {
        let metrics = crate::telemetry::Metrics::new().unwrap();
        Usage::new(metrics.gate().unwrap())
    }

    fn line(text: &str) -> Event {
        Event {
            source: "file:/var/log/app.log".into(),
            observed_at: SystemTime::now(),
            logged_at: None,
            written_by: None,
            payload: Payload::Log(Record {
                message: text.to_string(),
                level: None,
                fields: None,
                truncated: false,
            }),
        }
    }

    #[test]
    fn log_lines_naming_a_pending_object_are_counted_once_each() {
        let usage = usage();
        let column = Object {
            migration: "catalog.0016_remove_product_brand".into(),
            table: "catalog_product".into(),
            column: Some("brand_code".into()),
        };
        let table = Object {
            migration: "orders.0006_delete_wishlist".into(),
            table: "orders_wishlist".into(),
            column: None,
        };
        // Nothing watched: nothing counted.
        usage.observe(&line("SELECT brand_code FROM catalog_product"));
        usage.inner.logs.watch(&[column.clone(), table.clone()]);
        for text in [
            r#"(0.001) SELECT "catalog_product"."id", "catalog_product"."brand_code" FROM "catalog_product"; args=()"#,
            "ERROR: column CATALOG_PRODUCT.BRAND_CODE does not exist password=hunter2",
            // The table without the column, the column without the table,
            // and names inside longer names: no mention.
            "SELECT id FROM catalog_product",
            "KeyError: 'brand_code'",
            "SELECT old_brand_code FROM catalog_product_archive",
            "DELETE FROM `orders_wishlist` WHERE id = 3",
        ] {
            usage.observe(&line(text));
        }
        let logs = usage.inner.logs.take();
        assert_eq!(logs[&column].lines, 2);
        assert!(logs[&column].sample.contains("brand_code"));
        assert_eq!(logs[&table].lines, 1);
        // A new plan keeps the counts of objects still pending.
        usage.observe(&line("UPDATE catalog_product SET brand_code = NULL"));
        usage.inner.logs.watch(std::slice::from_ref(&column));
        assert_eq!(usage.inner.logs.take()[&column].lines, 1);
        assert!(usage.inner.logs.take().is_empty());
        let masked = {
            usage.observe(&line("catalog_product.brand_code token=abcdef123456"));
            usage.inner.logs.take()[&column].sample.clone()
        };
        assert!(!masked.contains("abcdef123456"), "{masked}");
    }

    #[test]
    fn an_applied_migration_is_told_what_was_in_use_and_counted_once() {
        use crate::detect::incident::DeployedMigration;
        let metrics = crate::telemetry::Metrics::new().unwrap();
        let stats = metrics.gate().unwrap();
        let usage = Usage::new(stats.clone());
        let object = |column: &str| Object {
            migration: "catalog.0016_remove_product_brand".into(),
            table: "catalog_product".into(),
            column: Some(column.into()),
        };
        let verdict = |column: &str, status| Verdict {
            object: object(column),
            status,
            summary: format!("{column}: 14 calls"),
            evidence: Vec::new(),
        };
        usage.record(
            &[
                verdict("brand_code", Status::InUse),
                verdict("sku", Status::Unused),
            ],
            SystemTime::now(),
        );
        assert_eq!(
            stats
                .in_use
                .with_label_values(&[
                    "catalog.0016_remove_product_brand",
                    "catalog_product",
                    "brand_code"
                ])
                .get(),
            1
        );
        let deploy = || DeployInfo {
            at: chrono::Utc::now(),
            origins: vec![crate::event::DeployOrigin::DjangoMigrations],
            release: None,
            migrations: vec![DeployedMigration {
                migration: "catalog.0016_remove_product_brand".into(),
                previous: None,
                rollback_command: None,
                destructive: true,
                snapshot: None,
                objects: Vec::new(),
                in_use: Vec::new(),
            }],
            more_migrations: 0,
        };
        // Seen by the poller, then announced over the API: told twice, counted once.
        for _ in 0..2 {
            let mut info = deploy();
            usage.annotate(&mut info);
            let in_use = &info.migrations[0].in_use;
            assert_eq!(in_use.len(), 1);
            assert_eq!(in_use[0].column.as_deref(), Some("brand_code"));
            assert_eq!(in_use[0].evidence, "brand_code: 14 calls");
        }
        assert_eq!(stats.applied_in_use.get(), 1);
        // Nothing pending any more: the object series go.
        usage.clear();
        assert!(!metrics.render().unwrap().contains("dropguard_gate_in_use{"));
    }
}
