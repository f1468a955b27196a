//! The detector at work in the daemon: events in, deploys resolved (what they
//! dropped, whether it was preserved), incidents journaled and shared with the
//! API, detection's metrics kept.
//!
//! The decisions are [`Detector`]'s; this task only feeds it, with the wall
//! clock, and keeps what it concludes. An opened incident is journaled before
//! the next event is read; later growth is journaled at most once a second.
//! With alert receivers configured, an opened incident's alerts are queued in
//! the outbox right after it is journaled, and it becomes `alerted`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::actions::alerts::{self, Alerts};
use crate::actions::workflow;
use crate::config::Config;
use crate::config::RestoreMode;
use crate::detect::correlate::transition;
use crate::detect::incident::{Incident, RestoreRun, RunStatus, State};
use crate::detect::{Detector, Outcome, Settings, Signatures};
use crate::event::{Event, Payload};
use crate::health::ComponentHandle;
use crate::incidents::{Book, Command, Refusal, Store};
use crate::telemetry::{DetectStats, RestoreStats};
use crate::vault::Vault;

/// How often growing incidents are journaled and watch windows expired.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// What the task needs besides its events.
pub struct Parts {
    pub config: Arc<Config>,
    pub book: Book,
    pub store: Store,
    pub stats: DetectStats,
    /// The local vault, to find each deploy's snapshots; `None` when it cannot
    /// be opened (every destructive deploy then counts as unpreserved).
    pub vault: Option<Vault>,
    /// The alert outbox; `None` when no receiver is configured.
    pub alerts: Option<Alerts>,
    pub restores: RestoreStats,
    /// The task's own command queue: restore workflows journal through it.
    pub commands: mpsc::Sender<Command>,
    /// The usage gate: sees every log record, and says which objects of an
    /// applied migration were still in use; `None` without migrations to watch.
    pub usage: Option<crate::gate::watch::Usage>,
    /// This task's line on `/readyz`: not ready while it is far behind.
    pub health: ComponentHandle,
}

/// Detection this far behind its sources turns `/readyz` red: errors read now
/// open their incident that late.
const BEHIND: Duration = Duration::from_secs(30);

/// Runs until `shutdown`, then handles what is already queued and journals
/// everything before returning.
pub async fn run(
    parts: Parts,
    mut events: mpsc::Receiver<Event>,
    mut commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let settings = Settings {
        environment: parts.config.environment.clone(),
        window: parts.config.detect.window.0,
        min_errors: parts.config.detect.min_errors,
        spike_factor: parts.config.detect.spike_factor,
        watch_for: parts.config.detect.watch_for.0,
    };
    // Validated with the configuration; an error here is a bug, reported on /readyz.
    let signatures = Signatures::with_patterns(&parts.config.detect.patterns)
        .map_err(|err| format!("detect.patterns: {err}"))?;
    let mut task = Task {
        detector: Detector::new(settings, signatures),
        parts,
        dirty: BTreeSet::new(),
        restoring: BTreeSet::new(),
        auto: BTreeSet::new(),
        auto_waiting: BTreeSet::new(),
        shutdown: shutdown.clone(),
        lagging: false,
    };
    let known = task.parts.book.list();
    let watched = task.parts.store.load_watched().unwrap_or_else(|err| {
        tracing::error!(error = %err, "cannot read the deploys watched before the restart; they are no longer watched");
        Vec::new()
    });
    task.detector.resume(&known, &watched, SystemTime::now());
    // An incident journaled as open just before a crash has no alert queued
    // yet; queuing is idempotent, so this only fills that gap.
    let watch_for = task.parts.config.detect.watch_for.0;
    for incident in known.iter().filter(|i| i.state == State::Open) {
        let opened: SystemTime = incident.opened_at.into();
        if opened + watch_for > SystemTime::now() {
            task.alert(incident).await;
        }
    }
    // Likewise an incident journaled as dismissed or restored just before a
    // crash may have no follow-up queued: queue it (again, idempotently).
    for incident in &known {
        let event = match incident.state {
            State::Dismissed => alerts::Event::Dismissed,
            State::Restored => alerts::Event::Restored,
            _ => continue,
        };
        let updated: SystemTime = incident.updated_at.into();
        if updated + watch_for > SystemTime::now() {
            task.follow_up(event, incident).await;
        }
    }
    // A restore that was running when the daemon stopped resumes at its first
    // step not done.
    for incident in &known {
        if let Some(run) = incident
            .restore
            .clone()
            .filter(|r| r.status == RunStatus::Running && incident.state != State::Dismissed)
        {
            tracing::info!(incident = %incident.id, "resuming the restore that was running when dropguard stopped");
            task.start_workflow(&incident.id, run);
        }
    }
    task.gauges();
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    task.behind(&event, events.len());
                    task.handle(event).await;
                }
                None => break,
            },
            Some(command) = commands.recv() => task.command(command).await,
            _ = flush.tick() => {
                task.detector.tick(SystemTime::now());
                task.flush().await;
                task.gauges();
            }
            () = shutdown.cancelled() => {
                // What the sources already handed on is still seen.
                while let Ok(event) = events.try_recv() {
                    task.handle(event).await;
                }
                break;
            }
        }
    }
    task.flush().await;
    Ok(())
}

/// Runs blocking `work` off the async threads. During shutdown, once the
/// runtime no longer starts blocking tasks, it runs here instead: what must be
/// journaled is journaled. `None` when it panicked.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let slot = Arc::new(std::sync::Mutex::new(Some(work)));
    let taken = slot.clone();
    let ran = tokio::task::spawn_blocking(move || {
        let work = taken.lock().ok()?.take()?;
        Some(work())
    })
    .await;
    match ran {
        Ok(Some(value)) => Some(value),
        Err(err) if err.is_panic() => {
            tracing::error!(error = %err, "a journal or vault task panicked");
            None
        }
        // Cancelled before it started: the runtime is shutting down.
        _ => {
            let work = slot.lock().ok()?.take()?;
            Some(work())
        }
    }
}

/// How long a deploy's destructive migration may still be being preserved when
/// its rows appear: automatic preservation reads the tables before `migrate`
/// can drop them, but publishes the snapshot a moment later (and on SQLite a
/// read does not hold `migrate` back at all).
const PRESERVE_GRACE: Duration = Duration::from_secs(15);
const PRESERVE_RECHECK: Duration = Duration::from_millis(500);

/// What the deploy dropped and whether it was preserved; with `preserve.auto`,
/// a missing snapshot is looked for again for up to [`PRESERVE_GRACE`] before
/// the deploy counts as unpreserved.
async fn resolve(
    config: Arc<Config>,
    vault: Option<Vault>,
    deploy: crate::event::Deploy,
    at: SystemTime,
    shutdown: &CancellationToken,
) -> Option<crate::detect::incident::DeployInfo> {
    let (shared, files_vault) = (config.clone(), vault.clone());
    let mut info =
        blocking(move || crate::resolve::deploy(&shared, files_vault.as_ref(), &deploy, at))
            .await?;
    // Only the snapshots are looked for again: the files said what was dropped.
    let waited = Instant::now();
    while config.preserve.auto && waited.elapsed() < PRESERVE_GRACE {
        let missing: Vec<String> = info
            .migrations
            .iter()
            .filter(|m| m.destructive && m.snapshot.is_none())
            .map(|m| m.migration.clone())
            .collect();
        let Some(vault) = vault.clone().filter(|_| !missing.is_empty()) else {
            break;
        };
        // Shutting down: the deploy is kept as it resolved, not waited on.
        tokio::select! {
            () = tokio::time::sleep(PRESERVE_RECHECK) => {}
            () = shutdown.cancelled() => break,
        }
        let found = blocking(move || {
            missing
                .into_iter()
                .map(|m| {
                    let snapshot = crate::resolve::snapshot(&vault, &m);
                    (m, snapshot)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        for (name, snapshot) in found {
            if let Some(m) = info.migrations.iter_mut().find(|m| m.migration == name) {
                m.snapshot = snapshot;
            }
        }
    }
    Some(info)
}

struct Task {
    detector: Detector,
    parts: Parts,
    /// Incidents changed since they were last journaled.
    dirty: BTreeSet<String>,
    /// Incidents whose restore workflow is running.
    restoring: BTreeSet<String>,
    /// Incidents `restore.mode = "auto"` has started (or tried to) restore.
    auto: BTreeSet<String>,
    /// Incidents auto mode said it waits for stronger evidence on.
    auto_waiting: BTreeSet<String>,
    shutdown: CancellationToken,
    /// Whether `/readyz` says detection is behind its sources.
    lagging: bool,
}

impl Task {
    /// How far behind its sources detection is, as metrics and on `/readyz`.
    /// `/readyz` changes only when detection falls behind or catches up: this
    /// runs for every event.
    fn behind(&mut self, event: &Event, queued: usize) {
        let waited = event.observed_at.elapsed().unwrap_or_default();
        let stats = &self.parts.stats;
        stats.lag_seconds.set(waited.as_secs_f64());
        stats.backlog.set(i64::try_from(queued).unwrap_or(i64::MAX));
        let lagging = waited > BEHIND;
        if lagging == self.lagging {
            return;
        }
        self.lagging = lagging;
        if lagging {
            self.parts.health.not_ready(format!(
                "detection is {}s behind its sources ({queued} events queued): errors read now open incidents that late",
                waited.as_secs()
            ));
        } else {
            self.parts.health.ready();
        }
    }

    async fn handle(&mut self, event: Event) {
        let started = Instant::now();
        let (kind, outcome) = match &event.payload {
            Payload::Deploy(deploy) => {
                let origin = deploy.origin.as_str();
                self.parts.stats.deploys.with_label_values(&[origin]).inc();
                let at = event.logged_at.unwrap_or(event.observed_at);
                let (config, vault, deploy) = (
                    self.parts.config.clone(),
                    self.parts.vault.clone(),
                    deploy.clone(),
                );
                let shutdown = self.shutdown.clone();
                let Some(mut info) = resolve(config, vault, deploy, at, &shutdown).await else {
                    tracing::error!("resolving a deploy panicked; it is not watched");
                    return;
                };
                if let Some(usage) = &self.parts.usage {
                    usage.annotate(&mut info);
                }
                tracing::info!(
                    origin,
                    migrations = ?info.migrations.iter().map(|m| m.migration.as_str()).collect::<Vec<_>>(),
                    dropped = info.migrations.iter().map(|m| m.objects.len()).sum::<usize>(),
                    "deploy"
                );
                let outcome = self.detector.deploy(info, event.observed_at);
                // Rewritten only when the deploy added something to watch.
                if self.detector.take_watched_changed() {
                    self.save_watched().await;
                }
                ("deploy", outcome)
            }
            Payload::Log(_) => {
                if let Some(usage) = &self.parts.usage {
                    usage.observe(&event);
                }
                ("log", self.detector.observe(&event, event.observed_at))
            }
            Payload::Rate { .. } => ("rate", self.detector.observe(&event, event.observed_at)),
        };
        self.keep(outcome).await;
        self.parts
            .stats
            .detect_seconds
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
    }

    async fn keep(&mut self, outcome: Outcome) {
        for c in &outcome.correlated {
            self.parts
                .stats
                .correlated
                .with_label_values(&[&c.migration, &c.table, &c.column])
                .inc();
        }
        for incident in outcome.opened {
            tracing::warn!(
                incident = %incident.id,
                headline = %incident.headline,
                trigger = incident.triggers.first().map_or("", |t| t.as_str()),
                "incident opened"
            );
            for trigger in &incident.triggers {
                self.parts
                    .stats
                    .opened
                    .with_label_values(&[trigger.as_str()])
                    .inc();
            }
            self.parts.book.put(incident.clone());
            // Journaled at once: an opened incident must survive a crash.
            self.save(incident.clone()).await;
            self.alert(&incident).await;
            self.auto_restore(&incident).await;
            self.gauges();
        }
        for incident in outcome.updated {
            self.dirty.insert(incident.id.clone());
            self.parts.book.put(incident.clone());
            self.auto_restore(&incident).await;
        }
    }

    /// With `restore.mode = "auto"`, starts the restore of `incident` once its
    /// evidence holds `detect.min_errors` errors raised by the database driver
    /// in a traceback: log text alone can be written by any client (a URL, a
    /// header), a driver's traceback cannot (see `detect::errors`). Until then
    /// it waits, as in `approve` mode, and says so once.
    async fn auto_restore(&mut self, incident: &Incident) {
        if self.parts.config.restore.mode != RestoreMode::Auto
            || self.auto.contains(&incident.id)
            || !matches!(incident.state, State::Open | State::Alerted)
            || incident.restore.is_some()
        {
            return;
        }
        let needed = self.parts.config.detect.min_errors.max(1);
        if incident.traceback_errors < needed {
            if self.auto_waiting.insert(incident.id.clone()) {
                tracing::warn!(
                    incident = %incident.id,
                    traceback_errors = incident.traceback_errors,
                    needed,
                    "restore.mode is auto, but the rollback waits for {needed} errors raised by the database in a traceback (log lines alone can be forged by a client); approve it with `dropguard incidents approve {}` if the evidence is real",
                    incident.id
                );
            }
            return;
        }
        self.auto.insert(incident.id.clone());
        match self.restore(&incident.id, false, "auto").await {
            Ok(_) => {
                tracing::warn!(incident = %incident.id, "restoring on its own (restore.mode = auto)")
            }
            Err(refusal) => {
                tracing::error!(incident = %incident.id, why = ?refusal, "restore.mode is auto, but this incident cannot be restored by dropguard")
            }
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Dismiss { id, reply } => {
                let answer = self.dismiss(&id).await;
                // The asker may have given up waiting; the dismissal stands.
                let _ = reply.send(answer);
            }
            Command::Restore {
                id,
                force,
                by,
                reply,
            } => {
                let answer = self.restore(&id, force, &by).await;
                let _ = reply.send(answer);
            }
            Command::Progress { id, run, reply } => {
                if run.status != RunStatus::Running {
                    self.restoring.remove(&id);
                }
                if let Some(incident) = self.change(&id, |i| i.restore = Some(run.clone())) {
                    self.save(incident).await;
                }
                self.gauges();
                let _ = reply.send(());
            }
            Command::Restored { id, reply } => {
                let now = SystemTime::now();
                let changed = self.change(&id, |incident| {
                    transition(
                        incident,
                        State::Restored,
                        "the data is back and verified against its snapshots".to_string(),
                        now,
                    )
                });
                if let Some(incident) = changed {
                    self.save(incident.clone()).await;
                    self.gauges();
                    let _ = reply.send(incident);
                }
            }
        }
    }

    /// Applies `change` to incident `id` wherever it lives (its watch, or only
    /// the book once the watch is over) and returns it; journaling is the
    /// caller's.
    fn change(&mut self, id: &str, mut change: impl FnMut(&mut Incident)) -> Option<Incident> {
        let incident = match self.detector.update(id, &mut change) {
            Some(incident) => incident,
            None => {
                let mut incident = self.parts.book.get(id)?;
                change(&mut incident);
                incident
            }
        };
        self.parts.book.put(incident.clone());
        Some(incident)
    }

    /// Starts the restore workflow of incident `id` (or resumes a failed one):
    /// refused in `manual` mode, while one runs, and once it is final. The
    /// incident is `restoring`, with its steps, journaled before the answer.
    async fn restore(&mut self, id: &str, force: bool, by: &str) -> Result<Incident, Refusal> {
        let known = self.parts.book.get(id).ok_or(Refusal::Unknown)?;
        if matches!(known.state, State::Dismissed | State::Restored) {
            return Err(Refusal::Final(known.state));
        }
        if self.parts.config.restore.mode == RestoreMode::Manual {
            return Err(Refusal::Manual);
        }
        if self.restoring.contains(id) {
            return Err(Refusal::Running);
        }
        let run = match known.restore.clone() {
            Some(mut run) => {
                workflow::retry(&mut run, by, force);
                run
            }
            None => {
                let Some(vault) = self.parts.vault.clone() else {
                    return Err(Refusal::Cannot(
                        "the vault could not be opened at start (the daemon's log says why); fix it and restart".to_string(),
                    ));
                };
                let (config, incident, asker) =
                    (self.parts.config.clone(), known.clone(), by.to_string());
                tokio::task::spawn_blocking(move || {
                    workflow::plan(&incident, &config, &vault, &asker, force)
                })
                .await
                .map_err(|err| Refusal::Cannot(format!("planning the restore panicked: {err}")))?
                .map_err(Refusal::Cannot)?
            }
        };
        let now = SystemTime::now();
        let note = match by {
            "auto" => "restore started on its own (restore.mode = auto)".to_string(),
            _ => format!("restore approved ({by})"),
        };
        let started = run.clone();
        let incident = self
            .change(id, |incident| {
                incident.restore = Some(started.clone());
                transition(incident, State::Restoring, note.clone(), now);
            })
            .ok_or(Refusal::Unknown)?;
        self.save(incident.clone()).await;
        self.start_workflow(id, run);
        self.gauges();
        Ok(incident)
    }

    fn start_workflow(&mut self, id: &str, run: RestoreRun) {
        self.restoring.insert(id.to_string());
        let context = workflow::Context {
            config: self.parts.config.clone(),
            alerts: self.parts.alerts.clone(),
            stats: self.parts.restores.clone(),
            journal: self.parts.commands.clone(),
        };
        tokio::spawn(workflow::execute(context, id.to_string(), run));
    }

    /// Dismisses an incident: journaled, its receivers told, its watch kept (its
    /// evidence still grows, its state stays).
    async fn dismiss(&mut self, id: &str) -> Result<Incident, Refusal> {
        let known = self.parts.book.get(id).ok_or(Refusal::Unknown)?;
        if matches!(known.state, State::Dismissed | State::Restored) {
            return Err(Refusal::Final(known.state));
        }
        if self.restoring.contains(id) {
            return Err(Refusal::Running);
        }
        let now = SystemTime::now();
        let incident = self
            .change(id, |incident| {
                transition(
                    incident,
                    State::Dismissed,
                    "dismissed over the API".to_string(),
                    now,
                )
            })
            .ok_or(Refusal::Unknown)?;
        self.save(incident.clone()).await;
        self.follow_up(alerts::Event::Dismissed, &incident).await;
        self.gauges();
        Ok(incident)
    }

    /// Queues the follow-up alerts of an incident that ended (`event`). A
    /// failure is logged; the next start queues them again.
    async fn follow_up(&self, event: alerts::Event, incident: &Incident) {
        let Some(outbox) = self.parts.alerts.clone() else {
            return;
        };
        let ended = incident.clone();
        let queued = blocking(move || outbox.enqueue(event, &ended)).await;
        if !matches!(queued, Some(Ok(_))) {
            tracing::error!(incident = %incident.id, event = event.as_str(), "cannot queue the incident's follow-up alerts; the next start tries again");
        }
    }

    /// Queues the alerts of an opened incident, then marks it alerted and
    /// journals that. A failure is logged; the next start queues it again.
    async fn alert(&mut self, incident: &Incident) {
        let Some(outbox) = self.parts.alerts.clone() else {
            return;
        };
        let opened = incident.clone();
        let queued = blocking(move || outbox.enqueue(alerts::Event::Opened, &opened)).await;
        match queued {
            Some(Ok(receivers)) if receivers > 0 => {
                let note = format!("alert queued for {receivers} receiver(s)");
                if let Some(alerted) =
                    self.detector
                        .mark(&incident.id, State::Alerted, note, SystemTime::now())
                {
                    self.parts.book.put(alerted.clone());
                    self.save(alerted).await;
                }
            }
            Some(Ok(_)) | None => {}
            Some(Err(err)) => {
                tracing::error!(incident = %incident.id, error = %err, "cannot queue the incident's alerts; the next start tries again (is the state dir writable?)");
            }
        }
    }

    async fn save_watched(&self) {
        let store = self.parts.store.clone();
        let watched = self.detector.watched();
        if let Some(Err(err)) = blocking(move || store.save_watched(&watched)).await {
            tracing::error!(error = %err, "cannot save the watched deploys; a restart would stop watching them");
        }
    }

    async fn flush(&mut self) {
        for id in std::mem::take(&mut self.dirty) {
            if let Some(incident) = self.parts.book.get(&id) {
                self.save(incident).await;
            }
        }
    }

    async fn save(&self, incident: Incident) {
        let store = self.parts.store.clone();
        let id = incident.id.clone();
        if let Some(Err(err)) = blocking(move || store.save(&incident)).await {
            tracing::error!(incident = %id, error = %err, "cannot journal the incident; a restart would lose its latest state (is the state dir writable?)");
        }
    }

    fn gauges(&self) {
        let stats = &self.parts.stats;
        stats
            .watch_windows
            .set(i64::try_from(self.detector.watching()).unwrap_or(i64::MAX));
        let incidents = self.parts.book.list();
        for state in crate::detect::incident::State::ALL {
            let count = incidents.iter().filter(|i| i.state == state).count();
            stats
                .incidents
                .with_label_values(&[state.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}
