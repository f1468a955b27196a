//! The detector: deploys open watch windows; errors naming what a deploy dropped
//! or renamed are tied to it; thresholds and spikes over the pre-deploy baseline
//! open one incident per deploy, which then grows with the evidence.
//!
//! Pure and synchronous: time is whatever the caller says it is (a virtual clock
//! in tests, the wall clock in the daemon), and nothing here reads a source,
//! touches a disk or sends an alert.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use super::errors::{self, Proof};
use super::incident::{
    Change, DeployInfo, DeployedMigration, DroppedObject, Incident, ObjectEvidence, RateEvidence,
    Sample, State, Transition, Trigger,
};
use super::mask;
use super::signatures::{Missing, Signatures};
use crate::event::{Event, Payload, Record};

/// The baseline is the error rate over at most this many windows before a deploy.
const BASELINE_WINDOWS: u32 = 10;
/// Deploys this close to a watched one are the same deploy (one `migrate` run
/// seen over several polls, or announced and then seen applied).
const MERGE_GAP: Duration = Duration::from_secs(60);
/// Errors naming an object, kept this long in case their deploy is seen late
/// (the poller's interval, an announcement after the fact).
const LATE_DEPLOY: Duration = Duration::from_secs(120);
const RECENT_CAP: usize = 1000;
/// Migrations that dropped and renamed nothing kept by name in one watched
/// deploy; more are only counted (`more_migrations`), so that announcements
/// naming thousands of them cost neither memory nor `watched.json` rewrites.
const MAX_PLAIN_MIGRATIONS: usize = 1000;
const MAX_SAMPLES: usize = 5;
const SAMPLE_CHARS: usize = 2000;

/// What the detector is told by the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: String,
    pub window: Duration,
    pub min_errors: u64,
    pub spike_factor: f64,
    pub watch_for: Duration,
}

/// An error event tied to a dropped object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correlated {
    pub migration: String,
    pub table: String,
    /// Empty when the error names the table.
    pub column: String,
}

/// What one call changed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each object an event was tied to (once per event).
    pub correlated: Vec<Correlated>,
    /// Incidents opened by this call.
    pub opened: Vec<Incident>,
    /// Incidents whose evidence grew.
    pub updated: Vec<Incident>,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.correlated.extend(other.correlated);
        self.opened.extend(other.opened);
        self.updated.extend(other.updated);
    }
}

/// An error seen recently, kept for a deploy that is seen late.
struct Recent {
    at: SystemTime,
    source: String,
    text: String,
    missing: Vec<Missing>,
    proof: Proof,
    written_by: Option<SystemTime>,
}

/// One deploy's watch window.
struct Watch {
    deploy: DeployInfo,
    start: SystemTime,
    /// When the last deploy merged into it was seen; merges are measured from here.
    last_deploy: SystemTime,
    until: SystemTime,
    objects: Vec<DroppedObject>,
    /// Error events per second before the deploy; `None` without enough history.
    baseline: Option<f64>,
    /// Where each migration kept is in `deploy.migrations`, by name.
    index: HashMap<String, usize>,
    /// How many kept migrations dropped and renamed nothing.
    plain: usize,
    /// Rate series' mean before the deploy.
    series_baseline: HashMap<String, f64>,
    /// Times of correlated error events within the sliding window.
    correlated: VecDeque<SystemTime>,
    /// Times of all error events since the deploy, within the sliding window.
    errors: VecDeque<SystemTime>,
    total_correlated: u64,
    /// Of those, the ones read from a database driver's traceback.
    traceback_correlated: u64,
    evidence: Vec<ObjectEvidence>,
    samples: Vec<Sample>,
    rates: Vec<RateEvidence>,
    incident: Option<Incident>,
}

pub struct Detector {
    settings: Settings,
    signatures: Signatures,
    /// When the first event was seen: how much history a baseline can have.
    since: Option<SystemTime>,
    /// Error events per whole second (Unix seconds), for baselines.
    history: VecDeque<(u64, u64)>,
    /// Rate samples per series, for baselines.
    rate_history: HashMap<String, VecDeque<(SystemTime, f64)>>,
    recent: VecDeque<Recent>,
    watches: Vec<Watch>,
    /// The watched deploys changed since [`take_watched_changed`](Self::take_watched_changed).
    watched_changed: bool,
}

impl Detector {
    pub fn new(settings: Settings, signatures: Signatures) -> Self {
        Self {
            settings,
            signatures,
            since: None,
            history: VecDeque::new(),
            rate_history: HashMap::new(),
            recent: VecDeque::new(),
            watches: Vec::new(),
            watched_changed: false,
        }
    }

    /// Watch windows still open.
    pub fn watching(&self) -> usize {
        self.watches.len()
    }

    /// The deploys being watched, each with `at` set to where its window
    /// starts: what [`resume`](Self::resume) takes back after a restart.
    pub fn watched(&self) -> Vec<DeployInfo> {
        self.watches
            .iter()
            .map(|w| DeployInfo {
                at: time(w.start),
                ..w.deploy.clone()
            })
            .collect()
    }

    /// Keeps watching, after a restart, the deploys of incidents (so that their
    /// errors grow them) and the `deploys` that were watched without one yet,
    /// while their windows last. Their baselines are gone: spikes are not
    /// measured for them.
    pub fn resume(&mut self, incidents: &[Incident], deploys: &[DeployInfo], now: SystemTime) {
        self.resume_incidents(incidents, now);
        for deploy in deploys {
            let start: SystemTime = deploy.at.into();
            let until = start + self.settings.watch_for;
            let known = self.watches.iter().any(|w| w.shares(deploy));
            if until > now && !known {
                self.watches.push(Watch::new(deploy.clone(), start, until));
            }
        }
    }

    fn resume_incidents(&mut self, incidents: &[Incident], now: SystemTime) {
        for incident in incidents {
            let start: SystemTime = incident.deploy.at.into();
            let until = start + self.settings.watch_for;
            if until <= now || matches!(incident.state, State::Dismissed | State::Restored) {
                continue;
            }
            let mut watch = Watch::new(incident.deploy.clone(), start, until);
            watch.total_correlated = incident.errors;
            watch.traceback_correlated = incident.traceback_errors;
            watch.evidence = incident.objects.clone();
            watch.samples = incident.samples.clone();
            watch.rates = incident.rates.clone();
            watch.incident = Some(incident.clone());
            self.watches.push(watch);
        }
    }

    /// A deploy, resolved: what its migrations dropped and whether each was
    /// preserved. `deploy.at` is when it happened; `now` is when it was seen.
    pub fn deploy(&mut self, deploy: DeployInfo, now: SystemTime) -> Outcome {
        self.expire(now);
        let at: SystemTime = deploy.at.into();
        // A deploy time from another clock is trusted only when plausible.
        let start = if at <= now && now.duration_since(at).unwrap_or_default() <= LATE_DEPLOY {
            at
        } else {
            now
        };
        let mut outcome = Outcome::default();
        let merge_into = self.watches.iter().position(|w| {
            w.shares(&deploy)
                || start.duration_since(w.last_deploy).unwrap_or_default() <= MERGE_GAP
        });
        let index = match merge_into {
            Some(index) => {
                let watch = &mut self.watches[index];
                self.watched_changed |= watch.merge(deploy);
                watch.last_deploy = watch.last_deploy.max(start);
                if let Some(incident) = &mut watch.incident {
                    incident.deploy = watch.deploy.clone();
                    incident.updated_at = time(now);
                }
                index
            }
            None => {
                let mut watch = Watch::new(deploy, start, start + self.settings.watch_for);
                watch.baseline = self.baseline(start);
                watch.series_baseline = self.series_baseline(start);
                self.watches.push(watch);
                self.watched_changed = true;
                self.watches.len() - 1
            }
        };
        let watch = &mut self.watches[index];
        let unpreserved: Vec<String> = watch
            .deploy
            .migrations
            .iter()
            .filter(|m| m.destructive && m.snapshot.is_none())
            .map(|m| m.migration.clone())
            .collect();
        if !unpreserved.is_empty() {
            let note = format!(
                "{} applied without a complete snapshot of the data it dropped",
                unpreserved.join(", ")
            );
            outcome.merge(watch.trigger(Trigger::Unpreserved, note, now, &self.settings));
        }
        // Errors seen just before the deploy was known belong to it too.
        let late: Vec<(SystemTime, String, String, Vec<Missing>, Proof)> = self
            .recent
            .iter()
            .filter(|r| r.at >= start && r.written_by.is_none_or(|w| w >= start))
            .map(|r| {
                let (source, text) = (r.source.clone(), r.text.clone());
                (r.at, source, text, r.missing.clone(), r.proof)
            })
            .collect();
        let watch = &mut self.watches[index];
        for (at, source, text, missing, proof) in late {
            outcome.merge(watch.correlate(&missing, proof, at, &source, &text, &self.settings));
        }
        outcome
    }

    /// A log record or a rate, seen at `at`.
    pub fn observe(&mut self, event: &Event, at: SystemTime) -> Outcome {
        self.expire(at);
        self.since.get_or_insert(at);
        match &event.payload {
            Payload::Log(record) => self.log(record, &event.source, at, event.written_by),
            Payload::Rate { series, per_second } => self.rate(series, *per_second, at),
            Payload::Deploy(_) => Outcome::default(),
        }
    }

    /// Moves the incident `id` to `state` (an alert was sent, a restore began),
    /// noting why in its history, so that later growth keeps the new state.
    /// Returns the incident as it now is; `None` when it is no longer watched.
    pub fn mark(
        &mut self,
        id: &str,
        state: State,
        note: String,
        at: SystemTime,
    ) -> Option<Incident> {
        self.update(id, |incident| transition(incident, state, note, at))
    }

    /// Applies `change` to the watched incident `id`, so that later growth keeps
    /// it; returns the incident as it now is, `None` when it is no longer watched.
    pub fn update(&mut self, id: &str, change: impl FnOnce(&mut Incident)) -> Option<Incident> {
        let incident = self
            .watches
            .iter_mut()
            .find_map(|w| w.incident.as_mut().filter(|i| i.id == id))?;
        change(incident);
        Some(incident.clone())
    }

    /// Closes watch windows that are over.
    pub fn tick(&mut self, now: SystemTime) {
        self.expire(now);
    }

    fn expire(&mut self, now: SystemTime) {
        let before = self.watches.len();
        self.watches.retain(|w| w.until > now);
        self.watched_changed |= self.watches.len() != before;
    }

    /// Whether the watched deploys ([`watched`](Self::watched)) changed since
    /// the last call: what is worth saving.
    pub fn take_watched_changed(&mut self) -> bool {
        std::mem::take(&mut self.watched_changed)
    }

    /// `written_by`: when the record is known to have been on disk already; a
    /// record written before a deploy is never tied to it, however late read.
    fn log(
        &mut self,
        record: &Record,
        source: &str,
        at: SystemTime,
        written_by: Option<SystemTime>,
    ) -> Outcome {
        // Only errors count, and only their own text names objects: a client's
        // text in a URL or a warning names nothing (see `errors`).
        let (missing, proof) = match errors::error_text(record) {
            Some(error) => (self.signatures.find(error.text.as_bytes()), error.proof),
            None => {
                let found = errors::user_pattern_matches(record, &self.signatures);
                if found.is_empty() {
                    return Outcome::default();
                }
                (found, Proof::Pattern)
            }
        };
        let text = record.message.as_str();
        self.count_error(at);
        let mut outcome = Outcome::default();
        for watch in &mut self.watches {
            if at < watch.start || written_by.is_some_and(|w| w < watch.start) {
                continue;
            }
            watch.push_error(at, self.settings.window);
            if !missing.is_empty() {
                outcome.merge(watch.correlate(&missing, proof, at, source, text, &self.settings));
            }
            outcome.merge(watch.check_log_spike(at, &self.settings));
        }
        if !missing.is_empty() {
            self.recent.push_back(Recent {
                at,
                source: source.to_string(),
                text: mask::sample(text, SAMPLE_CHARS),
                missing,
                proof,
                written_by,
            });
            while self.recent.len() > RECENT_CAP
                || self.recent.front().is_some_and(|r| r.at + LATE_DEPLOY < at)
            {
                self.recent.pop_front();
            }
        }
        outcome
    }

    fn rate(&mut self, series: &str, per_second: f64, at: SystemTime) -> Outcome {
        let keep = self.settings.window * BASELINE_WINDOWS;
        let samples = self.rate_history.entry(series.to_string()).or_default();
        samples.push_back((at, per_second));
        while samples.front().is_some_and(|(t, _)| *t + keep < at) {
            samples.pop_front();
        }
        let mut outcome = Outcome::default();
        for watch in &mut self.watches {
            if at < watch.start {
                continue;
            }
            outcome.merge(watch.check_rate_spike(series, per_second, at, &self.settings));
        }
        outcome
    }

    fn count_error(&mut self, at: SystemTime) {
        let second = unix_seconds(at);
        match self.history.back_mut() {
            Some((s, count)) if *s == second => *count += 1,
            _ => self.history.push_back((second, 1)),
        }
        let keep = (self.settings.window * BASELINE_WINDOWS).as_secs() + 1;
        while self.history.front().is_some_and(|(s, _)| s + keep < second) {
            self.history.pop_front();
        }
    }

    /// Error events per second before `start`, over as much of the baseline
    /// period as was observed; `None` with less than one window of history.
    fn baseline(&self, start: SystemTime) -> Option<f64> {
        let since = self.since?;
        let observed = start.duration_since(since).ok()?;
        let period = observed.min(self.settings.window * BASELINE_WINDOWS);
        if period < self.settings.window {
            return None;
        }
        let from = unix_seconds(start - period);
        let to = unix_seconds(start);
        let errors: u64 = self
            .history
            .iter()
            .filter(|(s, _)| *s >= from && *s < to)
            .map(|(_, c)| c)
            .sum();
        Some(errors as f64 / period.as_secs_f64())
    }

    fn series_baseline(&self, start: SystemTime) -> HashMap<String, f64> {
        let from = start
            .checked_sub(self.settings.window * BASELINE_WINDOWS)
            .unwrap_or(start);
        self.rate_history
            .iter()
            .filter_map(|(series, samples)| {
                let before: Vec<f64> = samples
                    .iter()
                    .filter(|(t, _)| *t >= from && *t < start)
                    .map(|(_, v)| *v)
                    .collect();
                (!before.is_empty()).then(|| {
                    (
                        series.clone(),
                        before.iter().sum::<f64>() / before.len() as f64,
                    )
                })
            })
            .collect()
    }
}

impl Watch {
    fn new(mut deploy: DeployInfo, start: SystemTime, until: SystemTime) -> Self {
        let migrations = std::mem::take(&mut deploy.migrations);
        let mut watch = Self {
            deploy,
            start,
            last_deploy: start,
            until,
            objects: Vec::new(),
            index: HashMap::new(),
            plain: 0,
            baseline: None,
            series_baseline: HashMap::new(),
            correlated: VecDeque::new(),
            errors: VecDeque::new(),
            total_correlated: 0,
            traceback_correlated: 0,
            evidence: Vec::new(),
            samples: Vec::new(),
            rates: Vec::new(),
            incident: None,
        };
        for migration in migrations {
            watch.add(migration);
        }
        watch
    }

    /// Keeps `migration` in the deploy: every one that dropped or renamed
    /// something, the others up to [`MAX_PLAIN_MIGRATIONS`] (then only counted).
    /// Returns whether the deploy changed.
    fn add(&mut self, migration: DeployedMigration) -> bool {
        if let Some(&at) = self.index.get(&migration.migration) {
            // A later sighting may know the snapshot an earlier one did not.
            let known = &mut self.deploy.migrations[at];
            if known.snapshot.is_none() && migration.snapshot.is_some() {
                known.snapshot = migration.snapshot;
                return true;
            }
            return false;
        }
        let plain = migration.objects.is_empty() && !migration.destructive;
        if plain && self.plain >= MAX_PLAIN_MIGRATIONS {
            self.deploy.more_migrations += 1;
            return true;
        }
        self.plain += usize::from(plain);
        self.objects.extend(migration.objects.iter().cloned());
        self.index
            .insert(migration.migration.clone(), self.deploy.migrations.len());
        self.deploy.migrations.push(migration);
        true
    }

    /// Whether `deploy` names a migration this watch holds.
    fn shares(&self, deploy: &DeployInfo) -> bool {
        deploy
            .migrations
            .iter()
            .any(|m| self.index.contains_key(&m.migration))
    }

    /// Merges a later sighting; returns whether the deploy changed.
    fn merge(&mut self, deploy: DeployInfo) -> bool {
        let mut changed = false;
        for origin in deploy.origins {
            if !self.deploy.origins.contains(&origin) {
                self.deploy.origins.push(origin);
                changed = true;
            }
        }
        if self.deploy.release.is_none() && deploy.release.is_some() {
            self.deploy.release = deploy.release;
            changed = true;
        }
        self.deploy.more_migrations += deploy.more_migrations;
        changed |= deploy.more_migrations > 0;
        for migration in deploy.migrations {
            changed |= self.add(migration);
        }
        changed
    }

    fn push_error(&mut self, at: SystemTime, window: Duration) {
        self.errors.push_back(at);
        while self.errors.front().is_some_and(|t| *t + window <= at) {
            self.errors.pop_front();
        }
    }

    /// Ties an error naming `missing` objects to this deploy's dropped ones.
    fn correlate(
        &mut self,
        missing: &[Missing],
        proof: Proof,
        at: SystemTime,
        source: &str,
        text: &str,
        settings: &Settings,
    ) -> Outcome {
        let mut hits: Vec<(DroppedObject, Option<String>)> = Vec::new();
        for m in missing {
            for object in &self.objects {
                if let Some(column) = names(m, object)
                    && !hits
                        .iter()
                        .any(|(o, c)| o.table == object.table && *c == column)
                {
                    hits.push((object.clone(), column));
                }
            }
        }
        if hits.is_empty() {
            return Outcome::default();
        }
        let mut outcome = Outcome::default();
        let now = time(at);
        for (object, column) in hits {
            outcome.correlated.push(Correlated {
                migration: object.migration.clone(),
                table: object.table.clone(),
                column: column.clone().unwrap_or_default(),
            });
            match self
                .evidence
                .iter_mut()
                .find(|e| e.table == object.table && e.column == column)
            {
                Some(evidence) => {
                    evidence.errors += 1;
                    evidence.first_seen = evidence.first_seen.min(now);
                    evidence.last_seen = evidence.last_seen.max(now);
                    if !evidence.sources.iter().any(|s| s == source) {
                        evidence.sources.push(source.to_string());
                    }
                }
                None => self.evidence.push(ObjectEvidence {
                    table: object.table.clone(),
                    column,
                    change: object.change,
                    migration: object.migration.clone(),
                    errors: 1,
                    first_seen: now,
                    last_seen: now,
                    sources: vec![source.to_string()],
                }),
            }
        }
        self.total_correlated += 1;
        if proof == Proof::Traceback {
            self.traceback_correlated += 1;
        }
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(Sample {
                at: now,
                source: source.to_string(),
                text: mask::sample(text, SAMPLE_CHARS),
            });
        }
        self.correlated.push_back(at);
        while self
            .correlated
            .front()
            .is_some_and(|t| *t + settings.window <= at)
        {
            self.correlated.pop_front();
        }
        let counted = self
            .incident
            .as_ref()
            .is_some_and(|i| i.triggers.contains(&Trigger::Errors));
        if !counted && self.correlated.len() as u64 >= settings.min_errors {
            let note = format!(
                "{} errors naming dropped objects within {}",
                self.correlated.len(),
                humantime::format_duration(settings.window)
            );
            outcome.merge(self.trigger(Trigger::Errors, note, at, settings));
        } else if self.incident.is_some() {
            outcome.merge(self.refresh(at));
        }
        outcome
    }

    /// The rate of all error events against the baseline; it counts only once an
    /// error names one of this deploy's objects, so unrelated trouble after a
    /// deploy is not blamed on what it dropped.
    fn check_log_spike(&mut self, at: SystemTime, settings: &Settings) -> Outcome {
        let Some(baseline) = self.baseline else {
            return Outcome::default();
        };
        let in_window = self.errors.len() as u64;
        let per_second = in_window as f64 / settings.window.as_secs_f64();
        let spiking = self.total_correlated > 0
            && in_window >= settings.min_errors
            && per_second > settings.spike_factor * baseline;
        if !spiking {
            return Outcome::default();
        }
        self.note_rate("errors in logs", per_second, baseline);
        self.spike(at, per_second, baseline, "errors in logs", settings)
    }

    /// A metric's error rate against its pre-deploy mean. Metrics carry no
    /// object names: a spike right after a deploy that dropped data is evidence
    /// enough, provided it clears the same absolute floor as log errors.
    fn check_rate_spike(
        &mut self,
        series: &str,
        per_second: f64,
        at: SystemTime,
        settings: &Settings,
    ) -> Outcome {
        let Some(baseline) = self.series_baseline.get(series).copied() else {
            return Outcome::default();
        };
        let floor = settings.min_errors as f64 / settings.window.as_secs_f64();
        if per_second < floor || per_second <= settings.spike_factor * baseline {
            return Outcome::default();
        }
        self.note_rate(series, per_second, baseline);
        self.spike(at, per_second, baseline, series, settings)
    }

    fn note_rate(&mut self, series: &str, per_second: f64, baseline: f64) {
        match self.rates.iter_mut().find(|r| r.series == series) {
            Some(rate) => rate.per_second = rate.per_second.max(per_second),
            None => self.rates.push(RateEvidence {
                series: series.to_string(),
                per_second,
                baseline_per_second: baseline,
            }),
        }
    }

    fn spike(
        &mut self,
        at: SystemTime,
        per_second: f64,
        baseline: f64,
        series: &str,
        settings: &Settings,
    ) -> Outcome {
        let note = format!("{series}: {per_second:.2}/s against {baseline:.2}/s before the deploy");
        self.trigger(Trigger::Spike, note, at, settings)
    }

    /// Opens the incident, or adds `trigger` to it when it is new for it.
    fn trigger(
        &mut self,
        trigger: Trigger,
        note: String,
        at: SystemTime,
        settings: &Settings,
    ) -> Outcome {
        let now = time(at);
        let mut outcome = Outcome::default();
        if self
            .incident
            .as_ref()
            .is_some_and(|i| i.triggers.contains(&trigger))
        {
            return self.refresh(at);
        }
        match &mut self.incident {
            Some(incident) => {
                incident.triggers.push(trigger);
                incident.history.push(Transition {
                    at: now,
                    state: incident.state,
                    note,
                });
                self.fill(at);
                outcome.updated.extend(self.incident.clone());
            }
            None => {
                self.incident = Some(Incident {
                    id: crate::incidents::new_id(at),
                    state: State::Open,
                    environment: settings.environment.clone(),
                    opened_at: now,
                    updated_at: now,
                    headline: String::new(),
                    triggers: vec![trigger],
                    deploy: self.deploy.clone(),
                    errors: 0,
                    traceback_errors: 0,
                    objects: Vec::new(),
                    rates: Vec::new(),
                    samples: Vec::new(),
                    history: vec![Transition {
                        at: now,
                        state: State::Open,
                        note,
                    }],
                    restore: None,
                });
                self.fill(at);
                outcome.opened.extend(self.incident.clone());
            }
        }
        outcome
    }

    /// The open incident, brought up to date with the evidence.
    fn refresh(&mut self, at: SystemTime) -> Outcome {
        if self.incident.is_none() {
            return Outcome::default();
        }
        self.fill(at);
        Outcome {
            updated: self.incident.clone().into_iter().collect(),
            ..Outcome::default()
        }
    }

    fn fill(&mut self, at: SystemTime) {
        let Some(incident) = &mut self.incident else {
            return;
        };
        incident.updated_at = time(at);
        incident.deploy = self.deploy.clone();
        incident.errors = self.total_correlated;
        incident.traceback_errors = self.traceback_correlated;
        incident.objects = self.evidence.clone();
        incident.samples = self.samples.clone();
        incident.rates = self.rates.clone();
        incident.headline = headline(incident);
    }
}

/// Whether an error naming `missing` is about `object`; `Some(column)` tells
/// which column it named (`None`: the table).
fn names(missing: &Missing, object: &DroppedObject) -> Option<Option<String>> {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match (&missing.table, &missing.column) {
        (Some(table), None) => {
            (same(table, &object.table) && object.columns.is_empty()).then_some(None)
        }
        (table, Some(column)) => {
            let table_matches = table.as_ref().is_none_or(|t| same(t, &object.table));
            let column_matches =
                object.columns.is_empty() || object.columns.iter().any(|c| same(c, column));
            // A bare column name on a dropped whole table says nothing about it.
            let specific = table.is_some() || !object.columns.is_empty();
            (table_matches && column_matches && specific).then(|| Some(column.to_lowercase()))
        }
        (None, None) => None,
    }
}

fn headline(incident: &Incident) -> String {
    let migrations: Vec<&str> = incident
        .deploy
        .migrations
        .iter()
        .filter(|m| !m.objects.is_empty())
        .map(|m| m.migration.as_str())
        .collect();
    let after = if migrations.is_empty() {
        "the deploy".to_string()
    } else {
        migrations.join(", ")
    };
    let mut named: Vec<String> = incident
        .objects
        .iter()
        .map(|o| match &o.column {
            Some(column) => format!("{}.{column}", o.table),
            None => o.table.clone(),
        })
        .collect();
    named.dedup();
    let verb = |change: Change| match change {
        Change::Dropped => "dropped",
        Change::Renamed => "renamed",
    };
    if !named.is_empty() {
        let change = incident
            .objects
            .first()
            .map_or(Change::Dropped, |o| o.change);
        return format!(
            "{} errors naming {} {} by {after}",
            incident.errors,
            named.join(", "),
            verb(change)
        );
    }
    if incident.triggers.contains(&Trigger::Unpreserved) {
        let dropped: Vec<String> = incident
            .destructive()
            .filter(|m| m.snapshot.is_none())
            .flat_map(|m| m.objects.iter())
            .filter(|o| o.change == Change::Dropped)
            .map(|o| {
                if o.columns.is_empty() {
                    o.table.clone()
                } else {
                    format!("{}.{}", o.table, o.columns.join(","))
                }
            })
            .collect();
        return format!(
            "{after} dropped {} without preservation",
            dropped.join(", ")
        );
    }
    match incident.rates.first() {
        Some(rate) => format!(
            "error rate {:.2}/s after {after} (before: {:.2}/s)",
            rate.per_second, rate.baseline_per_second
        ),
        None => format!("errors after {after}"),
    }
}

/// Moves `incident` to `state`, noting why in its history.
pub fn transition(incident: &mut Incident, state: State, note: String, at: SystemTime) {
    incident.state = state;
    incident.updated_at = time(at);
    incident.history.push(Transition {
        at: time(at),
        state,
        note,
    });
}

fn time(at: SystemTime) -> DateTime<Utc> {
    at.into()
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::detect::incident::{DeployedMigration, SnapshotRef};
    use crate::event::DeployOrigin;

    const MIGRATION: &str = "catalog.0004_remove_product_notes";

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_000)
    }

    fn at(seconds: f64) -> SystemTime {
        if seconds >= 0.0 {
            t0() + Duration::from_secs_f64(seconds)
        } else {
            t0() - Duration::from_secs_f64(-seconds)
        }
    }

    fn detector() -> Detector {
        Detector::new(
            Settings {
                environment: "stage".into(),
                window: Duration::from_secs(60),
                min_errors: 5,
                spike_factor: 3.0,
                watch_for: Duration::from_secs(30 * 60),
            },
            Signatures::built_in(),
        )
    }

    fn object(table: &str, columns: &[&str], change: Change) -> DroppedObject {
        DroppedObject {
            table: table.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            change,
            migration: MIGRATION.into(),
        }
    }

    fn deploy_of(objects: Vec<DroppedObject>, snapshot: bool, origin: DeployOrigin) -> DeployInfo {
        DeployInfo {
            at: time(t0()),
            origins: vec![origin],
            release: None,
            migrations: vec![DeployedMigration {
                migration: MIGRATION.into(),
                previous: Some("0003_product_notes".into()),
                rollback_command: Some(
                    "python manage.py migrate catalog 0003_product_notes".into(),
                ),
                destructive: objects.iter().any(|o| o.change == Change::Dropped),
                snapshot: snapshot.then(|| SnapshotRef {
                    id: "01KAXYZ0000000000000000000".into(),
                    rows: 42,
                }),
                objects,
                in_use: Vec::new(),
            }],
            more_migrations: 0,
        }
    }

    fn notes_dropped() -> DeployInfo {
        deploy_of(
            vec![object("catalog_product", &["notes"], Change::Dropped)],
            true,
            DeployOrigin::DjangoMigrations,
        )
    }

    /// A Django 500 whose traceback ends in `exception`.
    fn traceback(exception: &str) -> String {
        format!(
            "ERROR django.request Internal Server Error: /items/\nTraceback (most recent call last):\n  File \"/srv/app/views.py\", line 9, in index\n{exception}"
        )
    }

    fn log(text: &str) -> Event {
        Event {
            source: Arc::from("file:/var/log/app/web.log"),
            observed_at: t0(),
            logged_at: None,
            written_by: None,
            payload: Payload::Log(Record {
                message: text.into(),
                level: None,
                fields: None,
                truncated: false,
            }),
        }
    }

    fn rate(series: &str, per_second: f64) -> Event {
        Event {
            source: Arc::from("scrape:http://127.0.0.1:8000/metrics"),
            observed_at: t0(),
            logged_at: None,
            written_by: None,
            payload: Payload::Rate {
                series: series.into(),
                per_second,
            },
        }
    }

    const MISSING_NOTES: &str = "2026-11-25 16:09:18,123 ERROR django.request Internal Server Error: /products/\nTraceback (most recent call last):\n  File \"/srv/app/views.py\", line 9, in index\npsycopg.errors.UndefinedColumn: column catalog_product.notes does not exist\nLINE 1: SELECT \"catalog_product\".\"notes\" FROM \"catalog_product\"\n\nThe above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\ndjango.db.utils.ProgrammingError: column catalog_product.notes does not exist\nLINE 1: SELECT \"catalog_product\".\"notes\" FROM \"catalog_product\"";
    const ORDINARY: &str = "2026-11-25 16:09:18,123 ERROR django.request Internal Server Error: /cart/\nTraceback (most recent call last):\nKeyError: 'basket'";

    /// Ordinary errors at `per_second` from `from` to `to` (seconds from t0).
    fn ordinary(d: &mut Detector, from: f64, to: f64, per_second: f64) -> Outcome {
        let mut outcome = Outcome::default();
        let mut s = from;
        while s < to {
            outcome.merge(d.observe(&log(ORDINARY), at(s)));
            s += 1.0 / per_second;
        }
        outcome
    }

    #[test]
    fn a_marked_incident_keeps_its_state_as_it_grows() {
        let mut d = detector();
        d.deploy(notes_dropped(), at(1.0));
        let mut opened = Vec::new();
        for i in 0..5 {
            opened.extend(
                d.observe(&log(MISSING_NOTES), at(10.0 + f64::from(i)))
                    .opened,
            );
        }
        let id = opened[0].id.clone();
        let marked = d
            .mark(&id, State::Alerted, "alert queued".into(), at(15.0))
            .unwrap();
        assert_eq!(marked.state, State::Alerted);
        assert_eq!(marked.history.last().unwrap().note, "alert queued");
        let later = d.observe(&log(MISSING_NOTES), at(20.0));
        assert_eq!(later.updated[0].state, State::Alerted);
        assert_eq!(later.updated[0].errors, 6);
        assert!(
            d.mark(
                "01JD0000000000000000000000",
                State::Alerted,
                String::new(),
                at(21.0)
            )
            .is_none()
        );
    }

    #[test]
    fn errors_naming_a_dropped_column_open_one_incident_that_then_grows() {
        let mut d = detector();
        ordinary(&mut d, -600.0, 0.0, 0.2);
        assert!(d.deploy(notes_dropped(), at(1.0)).opened.is_empty());
        for i in 0..4 {
            let outcome = d.observe(&log(MISSING_NOTES), at(10.0 + f64::from(i)));
            assert!(outcome.opened.is_empty(), "opened at error {}", i + 1);
            assert_eq!(
                outcome.correlated.len(),
                1,
                "a chained traceback counts once"
            );
        }
        let outcome = d.observe(&log(MISSING_NOTES), at(14.0));
        assert_eq!(outcome.opened.len(), 1);
        let incident = &outcome.opened[0];
        assert_eq!(incident.triggers, vec![Trigger::Errors]);
        assert_eq!(incident.errors, 5);
        assert_eq!(incident.objects.len(), 1);
        assert_eq!(incident.objects[0].table, "catalog_product");
        assert_eq!(incident.objects[0].column.as_deref(), Some("notes"));
        assert_eq!(incident.objects[0].migration, MIGRATION);
        assert!(
            incident.headline.contains("catalog_product.notes"),
            "{}",
            incident.headline
        );
        assert!(
            incident.headline.contains(MIGRATION),
            "{}",
            incident.headline
        );
        assert_eq!(incident.samples.len(), 5);

        let later = d.observe(&log(MISSING_NOTES), at(100.0));
        assert!(later.opened.is_empty(), "one incident per deploy");
        assert_eq!(later.updated.len(), 1);
        assert_eq!(later.updated[0].id, incident.id);
        assert_eq!(later.updated[0].errors, 6);
        assert_eq!(later.updated[0].objects[0].last_seen, time(at(100.0)));
    }

    #[test]
    fn ordinary_errors_at_the_same_rate_before_and_after_open_nothing() {
        let mut d = detector();
        ordinary(&mut d, -600.0, 0.0, 2.0);
        d.deploy(notes_dropped(), at(0.0));
        let after = ordinary(&mut d, 0.0, 1200.0, 2.0);
        assert!(after.opened.is_empty() && after.updated.is_empty());
        assert!(after.correlated.is_empty());
    }

    #[test]
    fn errors_spread_wider_than_the_window_stay_below_the_threshold() {
        let mut d = detector();
        d.deploy(notes_dropped(), at(0.0));
        for i in 0..20 {
            let outcome = d.observe(&log(MISSING_NOTES), at(20.0 * f64::from(i) + 1.0));
            assert!(outcome.opened.is_empty(), "at error {i}");
        }
    }

    #[test]
    fn errors_outside_the_watch_window_or_about_other_objects_are_not_tied() {
        let mut d = detector();
        // Long before the deploy: not its doing.
        for i in 0..10 {
            d.observe(&log(MISSING_NOTES), at(-1000.0 + f64::from(i)));
        }
        d.deploy(notes_dropped(), at(0.0));
        for i in 0..10 {
            let other =
                "django.db.utils.ProgrammingError: column catalog_product.sku does not exist";
            let outcome = d.observe(&log(other), at(10.0 + f64::from(i)));
            assert!(outcome.correlated.is_empty());
            // Same column name, another table.
            let outcome = d.observe(
                &log("django.db.utils.OperationalError: no such column: orders_order.notes"),
                at(10.5 + f64::from(i)),
            );
            assert!(outcome.correlated.is_empty());
        }
        assert_eq!(d.watching(), 1);
        d.tick(at(1801.0));
        assert_eq!(d.watching(), 0);
        for i in 0..10 {
            let outcome = d.observe(&log(MISSING_NOTES), at(1802.0 + f64::from(i)));
            assert!(outcome.correlated.is_empty() && outcome.opened.is_empty());
        }
    }

    #[test]
    fn errors_logged_before_the_deploy_was_seen_still_count() {
        let mut d = detector();
        // migrate ran at t0; the errors came at once; the poller saw the rows 2 s later.
        for i in 0..5 {
            d.observe(&log(MISSING_NOTES), at(0.2 + 0.2 * f64::from(i)));
        }
        let outcome = d.deploy(notes_dropped(), at(2.0));
        assert_eq!(outcome.opened.len(), 1);
        assert_eq!(outcome.opened[0].errors, 5);
    }

    #[test]
    fn a_destructive_migration_applied_without_a_snapshot_opens_an_incident_at_once() {
        let mut d = detector();
        let deploy = deploy_of(
            vec![object("catalog_legacyitem", &[], Change::Dropped)],
            false,
            DeployOrigin::DjangoMigrations,
        );
        let outcome = d.deploy(deploy, at(0.0));
        assert_eq!(outcome.opened.len(), 1);
        let incident = &outcome.opened[0];
        assert_eq!(incident.triggers, vec![Trigger::Unpreserved]);
        assert!(
            incident.headline.contains("without preservation"),
            "{}",
            incident.headline
        );
        // Errors later grow the same incident.
        let mut grown = Outcome::default();
        for i in 0..5 {
            grown.merge(d.observe(
                &log(&traceback(
                    "MySQLdb.ProgrammingError: (1146, \"Table 'shop.catalog_legacyitem' doesn't exist\")",
                )),
                at(5.0 + f64::from(i)),
            ));
        }
        assert!(grown.opened.is_empty());
        let last = grown.updated.last().unwrap();
        assert_eq!(last.id, incident.id);
        assert_eq!(last.triggers, vec![Trigger::Unpreserved, Trigger::Errors]);
        assert_eq!(last.objects[0].column, None);
    }

    /// Issue 17, item 4: 40 announcements of 4,000 names each were searched
    /// linearly per name and all kept, rewriting watched.json whole each time.
    #[test]
    fn announcements_naming_thousands_of_migrations_keep_a_bounded_deploy() {
        let mut d = detector();
        d.deploy(notes_dropped(), at(0.0));
        assert!(d.take_watched_changed());
        let plain = |n: usize| DeployedMigration::plain(&format!("app.m{n}"));
        for round in 0..40 {
            let mut announced = notes_dropped();
            announced.origins = vec![DeployOrigin::Api];
            announced
                .migrations
                .extend((0..4000).map(|i| plain(round * 4000 + i)));
            d.deploy(announced, at(1.0 + f64::from(round as u32)));
        }
        assert_eq!(d.watching(), 1);
        let watched = &d.watched()[0];
        // The dropping migration, then the first thousand others by name.
        assert_eq!(watched.migrations.len(), 1 + MAX_PLAIN_MIGRATIONS);
        assert_eq!(watched.migrations[0].migration, MIGRATION);
        assert_eq!(watched.more_migrations, 40 * 4000 - 1000);
        // The same names again add nothing: nothing to save.
        d.take_watched_changed();
        let mut again = notes_dropped();
        again.migrations.extend((0..10).map(plain));
        d.deploy(again, at(50.0));
        assert!(!d.take_watched_changed());
        // The dropped column is still watched.
        let mut outcome = Outcome::default();
        for i in 0..5 {
            outcome.merge(d.observe(&log(MISSING_NOTES), at(60.0 + f64::from(i))));
        }
        assert_eq!(outcome.opened.len(), 1);
    }

    /// Issue 17, item 7: a file read again from its start after a deploy
    /// (its checkpoint lost, descriptors exhausted) carried errors written long
    /// before it, which alerted as a new incident.
    #[test]
    fn errors_on_disk_before_the_deploy_are_never_its_doing_however_late_read() {
        let mut d = detector();
        d.deploy(notes_dropped(), at(0.0));
        let mut outcome = Outcome::default();
        for i in 0..10 {
            let mut old = log(MISSING_NOTES);
            // Read now, but the file held it 22 minutes before the deploy.
            old.written_by = Some(at(-1320.0));
            outcome.merge(d.observe(&old, at(10.0 + f64::from(i))));
        }
        assert!(outcome.opened.is_empty() && outcome.correlated.is_empty());
        // Written after the deploy: its doing.
        for i in 0..5 {
            let mut new = log(MISSING_NOTES);
            new.written_by = Some(at(5.0));
            outcome.merge(d.observe(&new, at(30.0 + f64::from(i))));
        }
        assert_eq!(outcome.opened.len(), 1);
        assert_eq!(outcome.opened[0].errors, 5);
    }

    #[test]
    fn a_deploy_seen_twice_is_one_deploy() {
        let mut d = detector();
        d.deploy(notes_dropped(), at(0.0));
        let mut announced = notes_dropped();
        announced.origins = vec![DeployOrigin::Api];
        announced.release = Some("v42".into());
        d.deploy(announced, at(3.0));
        assert_eq!(d.watching(), 1);
        let mut outcome = Outcome::default();
        for i in 0..5 {
            outcome.merge(d.observe(&log(MISSING_NOTES), at(10.0 + f64::from(i))));
        }
        let incident = &outcome.opened[0];
        assert_eq!(
            incident.deploy.origins,
            vec![DeployOrigin::DjangoMigrations, DeployOrigin::Api]
        );
        assert_eq!(incident.deploy.release.as_deref(), Some("v42"));
    }

    #[test]
    fn a_renamed_table_ties_errors_naming_its_old_name() {
        let mut d = detector();
        d.deploy(
            deploy_of(
                vec![object("catalog_item", &[], Change::Renamed)],
                true,
                DeployOrigin::DjangoMigrations,
            ),
            at(0.0),
        );
        let mut outcome = Outcome::default();
        for i in 0..5 {
            outcome.merge(d.observe(
                &log(&traceback(
                    "sqlite3.OperationalError: no such table: catalog_item",
                )),
                at(1.0 + f64::from(i)),
            ));
        }
        assert_eq!(outcome.opened.len(), 1);
        assert!(outcome.opened[0].headline.contains("renamed"));
    }

    #[test]
    fn an_error_spike_over_the_baseline_with_one_named_object_opens_an_incident() {
        let mut d = detector();
        ordinary(&mut d, -600.0, 0.0, 0.1);
        d.deploy(notes_dropped(), at(0.0));
        // Without an error naming a dropped object, a spike is someone else's.
        assert!(ordinary(&mut d, 0.0, 30.0, 2.0).opened.is_empty());
        let outcome = d.observe(&log(MISSING_NOTES), at(30.5));
        assert_eq!(outcome.opened.len(), 1);
        let incident = &outcome.opened[0];
        assert_eq!(incident.triggers, vec![Trigger::Spike]);
        assert_eq!(incident.rates[0].series, "errors in logs");
        assert!((incident.rates[0].baseline_per_second - 0.1).abs() < 0.01);
    }

    #[test]
    fn a_metric_error_rate_spike_after_the_deploy_opens_an_incident() {
        let mut d = detector();
        let series = "django_http_responses_total_by_status_total{status=~\"5..\"}";
        for i in 0..40 {
            d.observe(&rate(series, 0.05), at(-600.0 + 15.0 * f64::from(i)));
        }
        d.deploy(notes_dropped(), at(0.0));
        // Up, but not three times the baseline and under the floor: nothing.
        assert!(d.observe(&rate(series, 0.08), at(15.0)).opened.is_empty());
        let outcome = d.observe(&rate(series, 2.0), at(30.0));
        assert_eq!(outcome.opened.len(), 1);
        assert_eq!(outcome.opened[0].triggers, vec![Trigger::Spike]);
        assert!(outcome.opened[0].headline.contains("error rate 2.00/s"));
    }

    #[test]
    fn a_restart_resumes_the_open_incidents_of_deploys_still_watched() {
        let mut d = detector();
        d.deploy(notes_dropped(), at(0.0));
        let mut opened = Outcome::default();
        for i in 0..5 {
            opened.merge(d.observe(&log(MISSING_NOTES), at(1.0 + f64::from(i))));
        }
        let incident = opened.opened.pop().unwrap();

        let mut restarted = detector();
        restarted.resume(std::slice::from_ref(&incident), &d.watched(), at(60.0));
        assert_eq!(restarted.watching(), 1);
        let outcome = restarted.observe(&log(MISSING_NOTES), at(61.0));
        assert!(outcome.opened.is_empty());
        assert_eq!(outcome.updated[0].id, incident.id);
        assert_eq!(outcome.updated[0].errors, 6);

        let mut late = detector();
        late.resume(&[incident], &[], at(4000.0));
        assert_eq!(late.watching(), 0);
    }

    #[test]
    fn a_restart_keeps_watching_a_deploy_that_has_no_incident_yet() {
        let mut d = detector();
        d.deploy(notes_dropped(), at(0.0));
        d.observe(&log(MISSING_NOTES), at(1.0));
        let watched = d.watched();
        assert_eq!(watched.len(), 1);

        let mut restarted = detector();
        restarted.resume(&[], &watched, at(30.0));
        assert_eq!(restarted.watching(), 1);
        let mut outcome = Outcome::default();
        for i in 0..5 {
            outcome.merge(restarted.observe(&log(MISSING_NOTES), at(31.0 + f64::from(i))));
        }
        assert_eq!(outcome.opened.len(), 1);
        assert_eq!(outcome.opened[0].deploy.migrations[0].migration, MIGRATION);
        // Past its window, a saved deploy is let go.
        let mut late = detector();
        late.resume(&[], &watched, at(1801.0));
        assert_eq!(late.watching(), 0);
    }

    #[test]
    fn samples_are_masked() {
        let mut d = detector();
        d.deploy(notes_dropped(), at(0.0));
        let text = format!("{MISSING_NOTES}\nDATABASE_URL=postgres://app:hunter22@db/shop");
        let mut outcome = Outcome::default();
        for i in 0..5 {
            outcome.merge(d.observe(&log(&text), at(1.0 + f64::from(i))));
        }
        let sample = &outcome.opened[0].samples[0].text;
        assert!(!sample.contains("hunter22"), "{sample}");
    }
}
