//! The deploy watcher, in two parts the daemon spawns side by side:
//!
//! - [`run_poller`] turns new rows of `django_migrations` into one
//!   [`Payload::Deploy`] event per poll that finds any. It keeps a cursor (the
//!   last id handed on) in `<state.dir>/deploys.json`. Its very first run starts
//!   at the table's current end: history is not a deploy. Later runs resume from
//!   the cursor, so migrations applied while dropguard was stopped still arrive.
//!   A database before its first `migrate` has no table; the cursor then starts
//!   at 0 and the first migrate's rows are a deploy.
//! - [`watch_migrations`] signals changes to the migration files (a release's
//!   files copied in before `migrate`), so that whoever listens can preserve the
//!   data at risk before it is gone.
//!
//! Database failures are operational: logged, counted (`kind = poll`) and
//! retried at the next interval; only a damaged cursor file stops the poller,
//! because guessing a position would either replay history as deploys or skip
//! real ones. What a deploy means is the detector's business, and preserving is
//! an action's: neither is imported here.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::SourceStats;
use crate::config::Config;
use crate::db::{Adapter, DbError, MigrationRecord};
use crate::event::{Deploy, DeployOrigin, Event, Payload};
// The directories the migration discovery skips are not watched either.
use crate::migrations::is_skipped_dir;

/// The `source` of deploy events and the label of this source's counters.
pub const SOURCE: &str = "deploys:django_migrations";

/// The cursor's file name in the state dir.
pub const CURSOR_FILE: &str = "deploys.json";

/// A burst of file changes is over after this long without another one.
const QUIET: Duration = Duration::from_millis(300);
/// A burst that never goes quiet (a long copy) is signalled after this long,
/// then again once it ends.
const BURST_LIMIT: Duration = Duration::from_secs(3);
/// How often directories are listed where notifications do not work, and how
/// often a watched directory is checked for having become another one (a
/// `current -> releases/N` symlink switched by the deploy).
const LISTING_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(
        "{}: {message}; move it away to start watching deploys from the database's last applied migration",
        path.display()
    )]
    Cursor { path: PathBuf, message: String },
}

/// Where the poller's cursor is kept.
pub fn cursor_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CURSOR_FILE)
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum OnDisk {
    #[serde(rename = "1")]
    V1 {
        /// Every row of `django_migrations` up to this id was handed on.
        last_id: i64,
    },
}

/// The saved cursor: `None` when there is no file (the first run).
fn load_cursor(path: &Path) -> Result<Option<i64>, DeployError> {
    let damaged = |message: String| DeployError::Cursor {
        path: path.to_path_buf(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(damaged(format!("cannot be read ({err})"))),
    };
    let OnDisk::V1 { last_id } = serde_json::from_str(&text)
        .map_err(|err| damaged(format!("is not a dropguard deploy cursor ({err})")))?;
    if last_id < 0 {
        return Err(damaged(format!("holds a negative id ({last_id})")));
    }
    Ok(Some(last_id))
}

/// Writes the cursor atomically: temporary file, fsync, rename, fsync of the
/// directory.
fn save_cursor(path: &Path, last_id: i64) -> io::Result<()> {
    let text = serde_json::to_vec_pretty(&OnDisk::V1 { last_id })?;
    crate::statefile::write_atomic(path, &text)
}

/// What one poll found.
#[derive(Debug)]
enum Polled {
    /// First run: the table ends at this id.
    Start(i64),
    /// The table now ends below the cursor: migrations were unapplied (a
    /// rollback deletes their rows) or the database was rebuilt.
    Rewound(i64),
    Nothing,
    /// New rows, in id order.
    Rows(Vec<MigrationRecord>),
}

async fn poll(db: &dyn Adapter, cursor: Option<i64>) -> Result<Polled, DbError> {
    let max = db.django_migrations_max_id().await?;
    let Some(cursor) = cursor else {
        return Ok(Polled::Start(max));
    };
    if max < cursor {
        return Ok(Polled::Rewound(max));
    }
    if max == cursor {
        return Ok(Polled::Nothing);
    }
    let rows = db.django_migrations_after(cursor).await?;
    Ok(if rows.is_empty() {
        Polled::Nothing
    } else {
        Polled::Rows(rows)
    })
}

/// The deploy event of one batch of rows: its time is the newest `applied`.
fn deploy_event(records: &[MigrationRecord]) -> Event {
    Event {
        source: SOURCE.into(),
        observed_at: SystemTime::now(),
        logged_at: records.iter().filter_map(|r| r.applied).max(),
        written_by: None,
        payload: Payload::Deploy(Deploy {
            migrations: records
                .iter()
                .map(|r| format!("{}.{}", r.app, r.name))
                .collect(),
            origin: DeployOrigin::DjangoMigrations,
            release: None,
        }),
    }
}

/// Polls `django_migrations` every `interval` until `shutdown` (or until `tx`'s
/// receiver is gone), sending one deploy event per poll that finds new rows and
/// saving the cursor in `state_dir` after each send.
///
/// Returns an error only at start, for a cursor file that cannot be read: it
/// names the file and says to move it away. Database failures never end it.
pub async fn run_poller(
    db: Arc<dyn Adapter>,
    interval: Duration,
    state_dir: PathBuf,
    tx: mpsc::Sender<Event>,
    stats: SourceStats,
    shutdown: CancellationToken,
) -> Result<(), DeployError> {
    let path = cursor_path(&state_dir);
    let mut cursor = load_cursor(&path)?;
    match cursor {
        Some(last_id) => tracing::info!(
            source = SOURCE,
            last_id,
            "watching django_migrations from the saved cursor"
        ),
        None => tracing::info!(
            source = SOURCE,
            "watching django_migrations; first run, starting at its last row"
        ),
    }
    // A cursor that moved but could not be written yet: retried every interval.
    let mut unsaved = false;
    // The last failure's text, so a long outage is logged once, not every interval.
    let mut failing: Option<String> = None;
    // tokio's interval panics on zero; validation rejects it, this keeps a bad
    // value from becoming a busy loop all the same.
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let polled = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            polled = poll(db.as_ref(), cursor) => polled,
        };
        let polled = match polled {
            Ok(polled) => {
                if failing.take().is_some() {
                    tracing::info!(source = SOURCE, "django_migrations readable again");
                }
                polled
            }
            Err(err) => {
                stats.errors.with_label_values(&[SOURCE, "poll"]).inc();
                let text = err.to_string();
                if failing.as_deref() != Some(text.as_str()) {
                    tracing::warn!(
                        source = SOURCE,
                        error = %text,
                        retry_in = ?interval,
                        "cannot read django_migrations; retrying every interval"
                    );
                } else {
                    tracing::debug!(source = SOURCE, error = %text, "django_migrations still unreadable");
                }
                failing = Some(text);
                continue;
            }
        };
        match polled {
            Polled::Nothing => {}
            Polled::Start(last_id) => {
                tracing::info!(
                    source = SOURCE,
                    last_id,
                    "deploy cursor set at the last applied migration"
                );
                cursor = Some(last_id);
                unsaved = true;
            }
            Polled::Rewound(last_id) => {
                tracing::warn!(
                    source = SOURCE,
                    cursor = cursor.unwrap_or_default(),
                    last_id,
                    "django_migrations ends below the deploy cursor: migrations were unapplied or the database was rebuilt; resuming from its last row"
                );
                cursor = Some(last_id);
                unsaved = true;
            }
            Polled::Rows(rows) => {
                let event = deploy_event(&rows);
                let (first_id, last_id) = (rows[0].id, rows[rows.len() - 1].id);
                if let Payload::Deploy(deploy) = &event.payload {
                    tracing::info!(
                        source = SOURCE,
                        migrations = deploy.migrations.len(),
                        first = %deploy.migrations[0],
                        last = %deploy.migrations[deploy.migrations.len() - 1],
                        first_id,
                        last_id,
                        "deploy seen in django_migrations"
                    );
                }
                tokio::select! {
                    biased;
                    // Not sent: the cursor stays, and the next run sends it.
                    () = shutdown.cancelled() => break,
                    sent = tx.send(event) => if sent.is_err() {
                        tracing::debug!(source = SOURCE, "event channel closed; deploy poller stopping");
                        break;
                    },
                }
                stats.events.with_label_values(&[SOURCE]).inc();
                cursor = Some(last_id);
                unsaved = true;
            }
        }
        if unsaved && let Some(last_id) = cursor {
            unsaved = !save(&path, last_id, &stats).await;
        }
    }
    if unsaved && let Some(last_id) = cursor {
        save(&path, last_id, &stats).await;
    }
    tracing::info!(source = SOURCE, "deploy poller stopped");
    Ok(())
}

/// Saves the cursor off the async threads; a failure is logged and counted
/// (`kind = checkpoint`) and `false` returned, to be retried.
async fn save(path: &Path, last_id: i64, stats: &SourceStats) -> bool {
    let target = path.to_path_buf();
    let saved = tokio::task::spawn_blocking(move || save_cursor(&target, last_id))
        .await
        .unwrap_or_else(|err| Err(io::Error::other(err.to_string())));
    match saved {
        Ok(()) => true,
        Err(err) => {
            stats
                .errors
                .with_label_values(&[SOURCE, "checkpoint"])
                .inc();
            tracing::warn!(
                source = SOURCE,
                path = %path.display(),
                last_id,
                error = %err,
                "cannot save the deploy cursor; retrying at the next interval"
            );
            false
        }
    }
}

/// The folders [`watch_migrations`] should watch for `config`: the Django
/// project dir and the plain SQL migrations dir, those configured.
pub fn migration_dirs(config: &Config) -> Vec<PathBuf> {
    config
        .django
        .iter()
        .map(|django| django.project_dir.clone())
        .chain(config.sql.iter().map(|sql| sql.dir.clone()))
        .collect()
}

/// Whether `path` is a file a migration tool reads: `<app>/migrations/*.py`
/// (Django) or `*.sql` (plain SQL folders).
fn is_migration_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.ends_with(".sql") {
        return true;
    }
    name.ends_with(".py")
        && path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|dir| dir == "migrations")
}

/// Whether a notification about `path` (below one of `roots`) can matter: a
/// migration file, or a directory created or moved in (its files may have
/// arrived before it was watched). Nothing below a skipped directory counts.
fn relevant(roots: &[PathBuf], path: &Path, created: bool) -> bool {
    let relative = roots
        .iter()
        .find_map(|root| path.strip_prefix(root).ok())
        .unwrap_or(path);
    let mut components = relative.components().peekable();
    while let Some(component) = components.next() {
        // The last component is the file itself, which may be hidden or not.
        if components.peek().is_some() && is_skipped_dir(&component.as_os_str().to_string_lossy()) {
            return false;
        }
    }
    if is_migration_file(path) {
        return true;
    }
    created
        && path
            .file_name()
            .is_some_and(|name| !is_skipped_dir(&name.to_string_lossy()))
        && path.is_dir()
}

/// Starts notifications on every dir; returns the watcher (to be kept alive) and
/// the dirs it could not watch, which are polled instead.
fn start_watching(
    dirs: &[PathBuf],
    wake: Arc<Notify>,
) -> (Option<notify::RecommendedWatcher>, Vec<PathBuf>) {
    use notify::{EventKind, Watcher, event::ModifyKind};
    let roots = dirs.to_vec();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let wanted = match event {
            // An error may mean lost notifications: look again.
            Err(_) => true,
            Ok(event) if event.need_rescan() => true,
            Ok(event) => {
                let created = matches!(
                    event.kind,
                    EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
                );
                !matches!(event.kind, EventKind::Access(_))
                    && event.paths.iter().any(|p| relevant(&roots, p, created))
            }
        };
        if wanted {
            wake.notify_one();
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(error = %err, every = ?LISTING_POLL, "no filesystem notifications; listing the migration folders instead");
            return (None, dirs.to_vec());
        }
    };
    let mut unwatched = Vec::new();
    for dir in dirs {
        if let Err(err) = watcher.watch(dir, notify::RecursiveMode::Recursive) {
            tracing::info!(dir = %dir.display(), error = %err, every = ?LISTING_POLL, "cannot watch the migration folder; listing it instead");
            unwatched.push(dir.clone());
        }
    }
    (Some(watcher), unwatched)
}

/// What the polling fallback compares: every migration file with its size and
/// modification time.
type Listing = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

fn list_migration_files(dirs: &[PathBuf]) -> Listing {
    let mut listing = Listing::new();
    for dir in dirs {
        let walker = walkdir::WalkDir::new(dir).into_iter().filter_entry(|e| {
            e.depth() == 0
                || !e.file_type().is_dir()
                || !is_skipped_dir(&e.file_name().to_string_lossy())
        });
        for entry in walker.filter_map(Result::ok) {
            if !entry.file_type().is_file() || !is_migration_file(entry.path()) {
                continue;
            }
            if let Ok(meta) = entry.metadata() {
                listing.insert(
                    entry.path().to_path_buf(),
                    (meta.len(), meta.modified().ok()),
                );
            }
        }
    }
    listing
}

async fn list_off_thread(dirs: Vec<PathBuf>) -> Listing {
    tokio::task::spawn_blocking(move || list_migration_files(&dirs))
        .await
        .unwrap_or_default()
}

/// What each dir resolves to (symlinks followed); `None` when it does not exist.
fn resolve(dirs: &[PathBuf]) -> Vec<Option<PathBuf>> {
    dirs.iter().map(|d| std::fs::canonicalize(d).ok()).collect()
}

/// Watches `dirs` (the Django project dir, the SQL migrations dir) recursively
/// until `shutdown` or until `changed`'s receiver is gone, sending one `()` per
/// burst of changes to migration files (`*/migrations/*.py`, `*.sql`): after
/// 300 ms without another change, or 3 s into a burst that does not end.
///
/// Uses filesystem notifications; a dir that cannot be watched (no inotify
/// watches left, not there yet) is listed every 2 s instead, comparing the size
/// and modification time of its migration files. A dir that comes to resolve
/// elsewhere (a `current` symlink switched to a new release) is watched anew and
/// counts as a change. Nothing is sent at start: the listener looks once by
/// itself.
pub async fn watch_migrations(
    dirs: Vec<PathBuf>,
    changed: mpsc::Sender<()>,
    shutdown: CancellationToken,
) {
    watch_with(dirs, changed, shutdown, true).await;
}

/// [`watch_migrations`], with notifications turned off for tests of the fallback.
async fn watch_with(
    dirs: Vec<PathBuf>,
    changed: mpsc::Sender<()>,
    shutdown: CancellationToken,
    notifications: bool,
) {
    let wake = Arc::new(Notify::new());
    let (mut watcher, mut unwatched) = if notifications {
        start_watching(&dirs, wake.clone())
    } else {
        (None, dirs.clone())
    };
    let mut listing = list_off_thread(unwatched.clone()).await;
    let mut resolved = resolve(&dirs);
    tracing::info!(dirs = ?dirs, listed = ?unwatched, "watching the migration folders");
    loop {
        // Wait for the first change of a burst.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = wake.notified() => {}
            () = tokio::time::sleep(LISTING_POLL) => {
                let now = resolve(&dirs);
                if now != resolved {
                    tracing::info!(dirs = ?dirs, "a migration folder now resolves elsewhere; watching it anew");
                    resolved = now;
                    drop(watcher.take());
                    (watcher, unwatched) = if notifications {
                        start_watching(&dirs, wake.clone())
                    } else {
                        (None, dirs.clone())
                    };
                    listing = list_off_thread(unwatched.clone()).await;
                } else if unwatched.is_empty() {
                    continue;
                } else {
                    let now = list_off_thread(unwatched.clone()).await;
                    if now == listing {
                        continue;
                    }
                    listing = now;
                }
            }
        }
        // Let the burst end.
        let started = Instant::now();
        loop {
            let quiet = QUIET.min(BURST_LIMIT.saturating_sub(started.elapsed()));
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(quiet) => break,
            }
        }
        if !unwatched.is_empty() {
            listing = list_off_thread(unwatched.clone()).await;
        }
        tracing::debug!(dirs = ?dirs, "migration files changed");
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            sent = changed.send(()) => if sent.is_err() {
                break;
            },
        }
    }
    drop(watcher);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_cursor_loads_back_and_a_missing_one_is_a_first_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = cursor_path(&dir.path().join("state"));
        assert_eq!(load_cursor(&path).unwrap(), None);
        save_cursor(&path, 42).unwrap();
        assert_eq!(load_cursor(&path).unwrap(), Some(42));
        save_cursor(&path, 0).unwrap();
        assert_eq!(load_cursor(&path).unwrap(), Some(0));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": \"1\""), "{text}");
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn a_damaged_cursor_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = cursor_path(dir.path());
        for text in [
            "{not json",
            r#"{"version":"9","last_id":3}"#,
            r#"{"version":"1","last_id":-4}"#,
        ] {
            std::fs::write(&path, text).unwrap();
            let err = load_cursor(&path).unwrap_err().to_string();
            assert!(
                err.contains("deploys.json") && err.contains("move it away"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn deploy_events_name_the_migrations_in_order_at_the_newest_applied_time() {
        let at = |s| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let record = |id, app: &str, name: &str, applied| MigrationRecord {
            id,
            app: app.into(),
            name: name.into(),
            applied,
        };
        let event = deploy_event(&[
            record(7, "catalog", "0013_remove_product_weight_grams", at(100)),
            record(8, "orders", "0004_remove_order_sales_rep", at(160)),
            record(9, "legacy", "0009_drop_erp_export_queue", None),
        ]);
        assert_eq!(&*event.source, SOURCE);
        assert_eq!(event.logged_at, at(160));
        let Payload::Deploy(deploy) = event.payload else {
            panic!("not a deploy: {event:?}");
        };
        assert_eq!(
            deploy.migrations,
            [
                "catalog.0013_remove_product_weight_grams",
                "orders.0004_remove_order_sales_rep",
                "legacy.0009_drop_erp_export_queue"
            ]
        );
        assert_eq!(deploy.origin, DeployOrigin::DjangoMigrations);
    }

    #[test]
    fn only_migration_files_and_new_directories_matter() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(".hidden-root");
        std::fs::create_dir_all(root.join("shop/newapp")).unwrap();
        std::fs::create_dir_all(root.join("__pycache__")).unwrap();
        let roots = [root.clone()];
        let yes = [
            "shop/migrations/0002_drop.py",
            "lms/djangoapps/courseware/migrations/0010_x.py",
            "sql/0003_drop_sku.sql",
            "sql/0003_drop_sku.up.sql",
        ];
        for path in yes {
            assert!(relevant(&roots, &root.join(path), false), "{path}");
        }
        let no = [
            "shop/models.py",
            "shop/migrations/__pycache__/0002_drop.cpython-311.pyc",
            "shop/migrations/0002_drop.py.swp",
            "node_modules/pkg/migrations/0001.py",
            ".git/migrations/0001.py",
            "venv/lib/site-packages/django/contrib/auth/migrations/0001_initial.py",
            "logs/app.log",
        ];
        for path in no {
            assert!(!relevant(&roots, &root.join(path), true), "{path}");
        }
        // A directory moved in counts; one changed in place or skipped does not.
        assert!(relevant(&roots, &root.join("shop/newapp"), true));
        assert!(!relevant(&roots, &root.join("shop/newapp"), false));
        assert!(!relevant(&roots, &root.join("__pycache__"), true));
    }

    async fn expect_signal(rx: &mut mpsc::Receiver<()>, what: &str) {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no change signalled after {what}"))
            .expect("watcher still running");
    }

    async fn expect_silence(rx: &mut mpsc::Receiver<()>, what: &str) {
        let got = tokio::time::timeout(Duration::from_millis(700), rx.recv()).await;
        assert!(got.is_err(), "a change was signalled after {what}");
    }

    /// Notifications and the listing fallback behave the same way to a user.
    async fn signals_bursts(notifications: bool) {
        let dir = tempfile::tempdir().unwrap();
        let migrations = dir.path().join("shop/migrations");
        std::fs::create_dir_all(&migrations).unwrap();
        std::fs::write(migrations.join("0001_initial.py"), "x = 1\n").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(watch_with(
            vec![dir.path().to_path_buf()],
            tx,
            shutdown.clone(),
            notifications,
        ));
        // Let the watcher start before anything changes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        expect_silence(&mut rx, "start").await;

        // A release's files copied in at once: one signal.
        for n in 2..6 {
            std::fs::write(migrations.join(format!("000{n}_step.py")), "x = 2\n").unwrap();
        }
        expect_signal(&mut rx, "copying four migrations").await;
        expect_silence(&mut rx, "the burst ended").await;

        // What is not a migration file changes nothing.
        std::fs::write(dir.path().join("shop/models.py"), "y = 1\n").unwrap();
        std::fs::create_dir_all(migrations.join("__pycache__")).unwrap();
        std::fs::write(migrations.join("__pycache__/0002_step.pyc"), "z").unwrap();
        expect_silence(&mut rx, "writing models.py and bytecode").await;

        // An edit and a removal do.
        std::fs::write(migrations.join("0002_step.py"), "x = 22222\n").unwrap();
        expect_signal(&mut rx, "editing a migration").await;
        std::fs::remove_file(migrations.join("0003_step.py")).unwrap();
        expect_signal(&mut rx, "removing a migration").await;

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the watcher stops on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn notifications_signal_one_change_per_burst_of_migration_files() {
        signals_bursts(true).await;
    }

    #[tokio::test]
    async fn listing_signals_changes_where_notifications_do_not_work() {
        signals_bursts(false).await;
    }
}
