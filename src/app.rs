//! The only wiring: builds each stage from the configuration, connects them, spawns
//! them, tracks readiness, and shuts them down in order.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use futures_util::future::{BoxFuture, FutureExt, TryFutureExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actions::alerts::{self, Alerts, Links, Outbox, Timing, receivers as alert_receivers};
use crate::config::Config;
use crate::detection;
use crate::event::{Deploy, DeployOrigin, Event, Payload};
use crate::health::{ComponentHandle, Readiness};
use crate::http::{self, HttpState};
use crate::incidents::{Book, Store};
use crate::sources::{self, SourceStats};
use crate::telemetry::Metrics;

/// Events waiting between the sources and the detector; a full queue makes
/// the sources wait (files stay where they are, Kafka offsets uncommitted).
const EVENT_QUEUE: usize = 4096;

/// Runs the daemon until SIGTERM or SIGINT, then drains within `server.grace_period`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Installed before anything starts: a SIGTERM during start-up must still
    // drain, not kill.
    let signals = Signals::install()?;
    serve(config, signals.wait().boxed(), None).await
}

/// Runs the daemon until `stop` resolves (it names the reason), then drains
/// within `server.grace_period`; `bound` hears the address the HTTP server
/// listens on. For a daemon inside another command (`dropguard demo`).
pub async fn serve(
    config: Config,
    stop: BoxFuture<'static, &'static str>,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("registering metrics")?;
    let readiness = Readiness::default();
    // Not ready until everything below is started.
    let startup = readiness.register("startup");
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

    create_state_dir(&config.state.dir)?;
    let journal = Store::new(&config.state.dir);
    let incidents = Book::new(journal.load_all().with_context(|| {
        format!(
            "loading the incident journal in {} (a damaged file moved out of it lets the daemon start without that incident)",
            journal.dir().display()
        )
    })?);
    let listener = bind(config.server.listen).await?;
    let local = listener
        .local_addr()
        .context("reading the bound HTTP address")?;
    tracing::info!(addr = %local, environment = %config.environment, "listening");
    if let Some(bound) = bound {
        let _ = bound.send(local);
    }

    let (events, received) = mpsc::channel(EVENT_QUEUE);
    let (commands, asked) = mpsc::channel(16);
    let vault = open_vault_to_read(&config);
    let state = Arc::new(HttpState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        incidents: incidents.clone(),
        deploys: events.clone(),
        api_token: config.server.api_token.clone(),
        commands: commands.clone(),
        vault: vault.clone(),
        loopback: local.ip().is_loopback(),
    });
    tracker.spawn(http::serve(
        listener,
        state,
        shutdown.clone(),
        readiness.register("http"),
    ));
    let stats = metrics
        .sources()
        .context("registering the sources' metrics")?;
    spawn_sources(&config, &tracker, &readiness, &events, &stats, &shutdown);
    let vault_stats = metrics.vault().context("registering the vault's metrics")?;
    let usage = if config.django.is_some() || config.sql.is_some() {
        let usage = crate::gate::watch::Usage::new(
            metrics
                .gate()
                .context("registering the usage gate's metrics")?,
        );
        if config.preserve.auto {
            tracker.spawn(check_vault(
                crate::commands::vault_dir(&config),
                readiness.register("vault"),
                config.server.readiness_interval.0,
                shutdown.clone(),
            ));
        }
        tracker.spawn(watch_deploys(
            Arc::new(config.clone()),
            tracker.clone(),
            (
                readiness.register("deploys"),
                readiness.register("database"),
            ),
            events.clone(),
            (stats.clone(), vault_stats),
            usage.clone(),
            shutdown.clone(),
        ));
        Some(usage)
    } else {
        None
    };
    drop(events);
    let alerts = if config.alerts.any() {
        let alerts = Alerts::new(
            Outbox::new(&config.state.dir),
            alert_receivers(&config.alerts),
            Links::new(local),
            metrics
                .alerts()
                .context("registering the alerts' metrics")?,
        );
        tracker.spawn(supervise(
            readiness.register("alerts"),
            alerts::run(
                alerts.clone(),
                Timing::with_max_retry(config.alerts.max_retry_interval.0),
                shutdown.clone(),
            )
            .boxed(),
        ));
        Some(alerts)
    } else {
        None
    };
    let detect_health = readiness.register("detect");
    let parts = detection::Parts {
        config: Arc::new(config.clone()),
        book: incidents,
        store: journal,
        stats: metrics
            .detection()
            .context("registering detection's metrics")?,
        vault,
        alerts,
        restores: metrics
            .restores()
            .context("registering the restore workflow's metrics")?,
        commands,
        usage,
        health: detect_health.clone(),
    };
    tracker.spawn(supervise(
        detect_health,
        detection::run(parts, received, asked, shutdown.clone()).boxed(),
    ));
    tracker.close();
    startup.ready();
    release_startup_code();

    let signal = stop.await;
    tracing::info!(signal, grace_period = ?config.server.grace_period.0, "shutting down");
    readiness.start_draining();
    shutdown.cancel();
    if tokio::time::timeout(config.server.grace_period.0, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_period = ?config.server.grace_period.0,
            "grace period over with work still running; exiting anyway"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Hands the executable's code pages back to the kernel once start-up is over
/// (`MADV_PAGEOUT`): configuration, clap, the regexes' compilation and the
/// rest of start-up touched most of a 40 MB text segment, and a sidecar that
/// then waits would keep it all resident in every pod. What the daemon runs
/// afterwards faults back in from the page cache. Best effort: a kernel older
/// than 5.4 refuses it, and nothing else changes.
fn release_startup_code() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let mut released = 0usize;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        // offset, device, inode, then the path.
        let path = fields.nth(3);
        if path.map(std::path::Path::new) != Some(exe.as_path()) || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: madvise(2) with MADV_PAGEOUT on a read-only file mapping of
        // our own executable, as /proc/self/maps lists it: the kernel drops
        // clean pages it can read again; no memory's content changes.
        let done = unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end.saturating_sub(start),
                libc::MADV_PAGEOUT,
            )
        };
        if done == 0 {
            released += end.saturating_sub(start);
        }
    }
    tracing::debug!(bytes = released, "start-up code handed back to the kernel");
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} (server.listen); stop whatever holds it or choose another address"
        )
    })
}

fn create_state_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the state directory {} (state.dir)", dir.display()))
}

/// SIGTERM and SIGINT, handled from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The vault the detector and the API look snapshots up in. One that cannot be
/// opened for writing (its filesystem went read-only) is still read, so the
/// snapshots already in it count; with none at all, every destructive deploy
/// counts as unpreserved.
fn open_vault_to_read(config: &Config) -> Option<crate::vault::Vault> {
    let err = match crate::commands::open_vault(config) {
        Ok(vault) => return Some(vault),
        Err(err) => err,
    };
    match crate::vault::Vault::open_read_only(crate::commands::vault_dir(config)) {
        Ok(vault) => {
            tracing::error!(error = %err, "cannot open the vault for writing; reading the snapshots already in it, new ones cannot be taken");
            Some(vault)
        }
        Err(_) => {
            tracing::error!(error = %err, "cannot open the vault; deploys will count as unpreserved");
            None
        }
    }
}

/// Starts one task per configured source. Each is ready once started; one that
/// cannot start (a damaged checkpoint file, a Kafka client that cannot be made)
/// stays not ready with the reason, and `/readyz` says so.
fn spawn_sources(
    config: &Config,
    tracker: &TaskTracker,
    readiness: &Readiness,
    tx: &mpsc::Sender<Event>,
    stats: &SourceStats,
    stop: &CancellationToken,
) {
    let spawn = |name: &'static str, run: BoxFuture<'static, Result<(), String>>| {
        tracker.spawn(supervise(readiness.register(name), run));
    };
    for file in &config.logs.file {
        let run = sources::file::run(
            file.clone(),
            config.state.dir.clone(),
            tx.clone(),
            stats.clone(),
            stop.clone(),
        );
        spawn("logs.file", run.map_err(|err| err.to_string()).boxed());
    }
    for kafka in &config.logs.kafka {
        let run = sources::kafka::run(kafka.clone(), tx.clone(), stats.clone(), stop.clone());
        spawn("logs.kafka", run.map_err(|err| err.to_string()).boxed());
    }
    // Deploy announcements on Kafka: the consumer hands its records to a task that
    // reads each as an announcement.
    for kafka in &config.deploys.kafka {
        let (records, received) = mpsc::channel(64);
        let run = sources::kafka::run(kafka.clone(), records, stats.clone(), stop.clone());
        spawn("deploys.kafka", run.map_err(|err| err.to_string()).boxed());
        tracker.spawn(announcements(
            kafka.topic.clone(),
            received,
            tx.clone(),
            stats.clone(),
        ));
    }
    // The metrics sources retry every failure; they only end on shutdown.
    for scrape in &config.metrics.scrape {
        let run =
            sources::metrics::run_scrape(scrape.clone(), tx.clone(), stats.clone(), stop.clone());
        spawn("metrics.scrape", run.map(Ok).boxed());
    }
    for query in &config.metrics.query {
        let run =
            sources::metrics::run_query(query.clone(), tx.clone(), stats.clone(), stop.clone());
        spawn("metrics.query", run.map(Ok).boxed());
    }
}

/// Connects to the application's database (retrying: it may not be up yet, or a
/// SQLite file not created yet), then polls `django_migrations` for deploys,
/// checks the usage of what pending destructive migrations drop and, with
/// `preserve.auto`, preserves it as soon as their files appear. `database`
/// says whether the database answers: while connecting, then every
/// `server.readiness_interval`.
async fn watch_deploys(
    config: Arc<Config>,
    tracker: TaskTracker,
    (component, database): (ComponentHandle, ComponentHandle),
    events: mpsc::Sender<Event>,
    (stats, vault_stats): (SourceStats, crate::telemetry::VaultStats),
    usage: crate::gate::watch::Usage,
    stop: CancellationToken,
) {
    let mut failures: u32 = 0;
    component.not_ready("waiting for the database (see the database component)");
    let db: Arc<dyn crate::db::Adapter> = loop {
        let connecting = tokio::select! {
            connected = crate::db::open(&config.database) => connected,
            () = stop.cancelled() => return,
        };
        match connecting {
            Ok(db) => {
                if failures > 0 {
                    tracing::info!(attempts = failures + 1, "connected to the database");
                }
                break Arc::from(db);
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let wait = connect_backoff(failures);
                if failures == 1 {
                    tracing::error!(error = %err, retry_in = ?wait, "cannot connect to the database; retrying with backoff");
                } else {
                    tracing::debug!(error = %err, failures, retry_in = ?wait, "still cannot connect to the database");
                }
                // `err` names the database (its URL, password masked) and the cause.
                database.not_ready(format!(
                    "{err} (attempt {failures}; next in {})",
                    humantime::format_duration(wait)
                ));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    };
    database.ready();
    component.ready();
    tracker.spawn(check_database(
        db.clone(),
        database,
        config.server.readiness_interval.0,
        stop.clone(),
    ));
    tracker.spawn(crate::gate::watch::run(
        config.clone(),
        db.clone(),
        usage,
        stop.clone(),
    ));
    if config.preserve.auto {
        let vault = match crate::commands::open_vault(&config) {
            Ok(vault) => crate::actions::autopreserve::Target::Open(vault),
            Err(err) => {
                tracing::error!(error = %err, "cannot open the vault; pending destructive migrations are unprotected until it opens (tried again every pass)");
                component.not_ready(format!("cannot open the vault: {err}"));
                crate::actions::autopreserve::Target::Closed {
                    dir: crate::commands::vault_dir(&config),
                    component: component.clone(),
                }
            }
        };
        match crate::commands::remote(&config) {
            Ok(remote) => {
                let (changed_tx, changed_rx) = mpsc::channel(1);
                let (status, _) = tokio::sync::watch::channel(Default::default());
                tracker.spawn(sources::deploys::watch_migrations(
                    sources::deploys::migration_dirs(&config),
                    changed_tx,
                    stop.clone(),
                ));
                tracker.spawn(crate::actions::autopreserve::run(
                    (*config).clone(),
                    db.clone(),
                    vault,
                    remote,
                    changed_rx,
                    crate::actions::autopreserve::Reports {
                        status,
                        stats: vault_stats,
                    },
                    stop.clone(),
                ));
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot reach the vault's object store; nothing is preserved automatically");
                component.not_ready(format!("vault.url: {err}"));
            }
        }
    }
    if config.django.is_some() {
        let poller = sources::deploys::run_poller(
            db,
            config.deploys.poll_interval.0,
            config.state.dir.clone(),
            events,
            stats,
            stop,
        );
        if let Err(err) = poller.await {
            tracing::error!(error = %err, "the deploy poller stopped");
            component.not_ready(err.to_string());
        }
    }
}

/// Asks the database a `SELECT 1` on a new connection (within
/// `database.connect_timeout`) every `every`, until `stop`: `component` is
/// not ready, naming the database and the cause, while it does not answer, and
/// ready again once it does. A lost database is logged once, and its return.
async fn check_database(
    db: Arc<dyn crate::db::Adapter>,
    component: ComponentHandle,
    every: std::time::Duration,
    stop: CancellationToken,
) {
    let mut lost = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let answer = tokio::select! {
            answer = db.ping() => answer,
            () = stop.cancelled() => return,
        };
        match answer {
            Ok(()) => {
                if std::mem::take(&mut lost) {
                    tracing::info!("the database answers again");
                }
                component.ready();
            }
            Err(err) => {
                if !std::mem::replace(&mut lost, true) {
                    tracing::error!(error = %err, "the database stopped answering; /readyz says so until it answers again");
                }
                component.not_ready(err.to_string());
            }
        }
    }
}

/// Checks every `every` that the vault at `dir` takes a write (a small file
/// written, fsynced, removed), until `stop`: `component` is not ready, with the
/// filesystem's reason (full, read-only), while it does not, so a vault that
/// cannot take the next snapshot is seen before a migration needs one.
async fn check_vault(
    dir: std::path::PathBuf,
    component: ComponentHandle,
    every: std::time::Duration,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        let checked = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                crate::vault::Vault::open_read_only(&dir).and_then(|vault| vault.check_writable())
            })
            .await
        };
        match checked {
            Ok(Ok(())) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(vault = %dir.display(), "the vault takes writes again");
                }
                component.ready();
            }
            Ok(Err(err)) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::error!(vault = %dir.display(), error = %err, "the vault cannot be written; new snapshots will fail until it can");
                }
                component.not_ready(format!("the vault cannot be written: {err}"));
            }
            Err(err) => component.not_ready(format!("checking the vault failed: {err}")),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The wait after `failures` failed attempts to connect to the database at
/// start: half a second, doubling, up to 30 s. A database a moment late (both
/// started together) is picked up at once; one down for long is not hammered.
fn connect_backoff(failures: u32) -> std::time::Duration {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(500);
    const MAX: std::time::Duration = std::time::Duration::from_secs(30);
    FIRST
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
        .min(MAX)
}

/// Turns the records of a deploy topic into deploy events; a message that is not
/// an announcement is logged and counted (`kind = announcement`), and skipped.
async fn announcements(
    topic: String,
    mut records: mpsc::Receiver<Event>,
    events: mpsc::Sender<Event>,
    stats: SourceStats,
) {
    while let Some(event) = records.recv().await {
        let Payload::Log(record) = &event.payload else {
            continue;
        };
        match crate::announce::from_record(record) {
            Ok(announcement) => {
                let deploy = Event {
                    source: event.source.clone(),
                    observed_at: event.observed_at,
                    logged_at: announcement.at,
                    written_by: None,
                    payload: Payload::Deploy(Deploy {
                        migrations: announcement.migrations,
                        origin: DeployOrigin::Kafka,
                        release: announcement.release,
                    }),
                };
                if events.send(deploy).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(source = %event.source, error = %err, "a deploy-topic message is not a deploy announcement; skipped");
                stats
                    .errors
                    .with_label_values(&[&topic, "announcement"])
                    .inc();
            }
        }
    }
}

/// Runs one source, marking it ready while it runs and reporting why it ended.
async fn supervise(component: ComponentHandle, run: BoxFuture<'static, Result<(), String>>) {
    component.ready();
    if let Err(err) = run.await {
        tracing::error!(error = %err, "a component stopped with an error");
        component.not_ready(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn database_connect_retries_back_off_from_half_a_second_to_30_s() {
        let waits: Vec<Duration> = (1..=9).map(connect_backoff).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            waits,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(16000),
                ms(30000),
                ms(30000),
                ms(30000)
            ]
        );
        assert_eq!(connect_backoff(u32::MAX), Duration::from_secs(30));
    }
}
