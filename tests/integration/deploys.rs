//! The deploy watcher against the real thing: Django's own `manage.py migrate`
//! writing `django_migrations` on SQLite, PostgreSQL and MariaDB, and a release's
//! migration file copied into a project while automatic preservation watches it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dropguard::actions::autopreserve::{self, MigrationState, Status};
use dropguard::config::DatabaseUrl;
use dropguard::db::{self, Adapter};
use dropguard::event::{DeployOrigin, Event, Payload};
use dropguard::sources::SourceStats;
use dropguard::sources::deploys::{self, DeployError, SOURCE};
use dropguard::vault::{Reason, Value};
use serde_json::Value as Json;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::block_on_sql;
use crate::django_support::{copy_project, django, django_at};
use crate::harness::{ENGINES, EngineKind, TestDb, Workspace, stderr, stdout};

const POLL: Duration = Duration::from_millis(100);

/// Runs `future` on `rt` for at most `limit`.
fn within<F: std::future::Future>(
    rt: &Runtime,
    limit: Duration,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    rt.block_on(async { tokio::time::timeout(limit, future).await })
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a runtime")
}

/// A running `run_poller`.
struct Poller {
    task: JoinHandle<Result<(), DeployError>>,
    shutdown: CancellationToken,
    events: mpsc::Receiver<Event>,
    stats: SourceStats,
}

impl Poller {
    fn start(rt: &Runtime, url: &str, state_dir: &Path) -> Self {
        let adapter = rt
            .block_on(db::connect(&DatabaseUrl::new(url)))
            .unwrap_or_else(|err| panic!("{url}: {err}"));
        let adapter: Arc<dyn Adapter> = Arc::from(adapter);
        let (tx, events) = mpsc::channel(16);
        let stats = SourceStats::detached().unwrap();
        let shutdown = CancellationToken::new();
        let task = rt.spawn(deploys::run_poller(
            adapter,
            POLL,
            state_dir.to_path_buf(),
            tx,
            stats.clone(),
            shutdown.clone(),
        ));
        Self {
            task,
            shutdown,
            events,
            stats,
        }
    }

    /// The migrations of the next deploy event, checked to be one.
    fn next_deploy(&mut self, rt: &Runtime, what: &str) -> (Vec<String>, Event) {
        let event = within(rt, Duration::from_secs(15), self.events.recv())
            .unwrap_or_else(|_| panic!("no deploy event within 15 s of {what}"))
            .expect("the poller is running");
        assert_eq!(&*event.source, SOURCE, "{what}");
        let Payload::Deploy(deploy) = &event.payload else {
            panic!("{what}: not a deploy: {event:?}");
        };
        assert_eq!(deploy.origin, DeployOrigin::DjangoMigrations, "{what}");
        (deploy.migrations.clone(), event)
    }

    /// No event for a while (many poll intervals).
    fn assert_quiet(&mut self, rt: &Runtime, what: &str) {
        let got = within(rt, Duration::from_millis(800), self.events.recv());
        if let Ok(event) = got {
            panic!("{what}: unexpected event {event:?}");
        }
    }

    fn poll_errors(&self) -> u64 {
        self.stats.errors.with_label_values(&[SOURCE, "poll"]).get()
    }

    fn stop(self, rt: &Runtime) -> Result<(), DeployError> {
        self.shutdown.cancel();
        within(rt, Duration::from_secs(5), self.task)
            .expect("the poller stops within 5 s of shutdown")
            .expect("the poller did not panic")
    }
}

/// Waits for the poller's first run to set its cursor, and returns it.
fn wait_for_cursor(state_dir: &Path) -> i64 {
    let path = deploys::cursor_path(state_dir);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let json: Json = serde_json::from_str(&text).expect("the cursor is JSON");
            assert_eq!(json["version"], "1", "{text}");
            return json["last_id"].as_i64().expect("last_id");
        }
        assert!(
            Instant::now() < deadline,
            "no cursor at {} within 15 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn migrate(url: &str, app: &str, target: &str) {
    django(url, &["manage.py", "migrate", app, target, "-v0"]);
}

#[test]
fn each_migrate_is_one_deploy_and_a_restart_resumes_where_it_stopped_on_every_engine() {
    let rt = runtime();
    for kind in ENGINES {
        let db = TestDb::create(kind, "deploys");
        let state = tempfile::tempdir().unwrap();
        migrate(&db.url, "catalog", "0007");

        // History is not a deploy: the first run starts at the table's end.
        let mut poller = Poller::start(&rt, &db.url, state.path());
        assert!(wait_for_cursor(state.path()) > 0, "{kind:?}");
        poller.assert_quiet(&rt, &format!("{kind:?}: the first run"));

        let before = SystemTime::now() - Duration::from_secs(2);
        migrate(&db.url, "catalog", "0008");
        let after = SystemTime::now() + Duration::from_secs(2);
        let (migrations, event) = poller.next_deploy(&rt, "migrate catalog 0008");
        assert_eq!(
            migrations,
            ["catalog.0008_alter_product_options"],
            "{kind:?}"
        );
        let applied = event
            .logged_at
            .expect("the deploy carries its applied time");
        assert!(
            before <= applied && applied <= after,
            "{kind:?}: applied at {applied:?}, migrate ran between {before:?} and {after:?}"
        );
        poller.assert_quiet(&rt, &format!("{kind:?}: after one deploy"));
        poller.stop(&rt).expect("a clean stop");

        // Applied while dropguard was stopped: it arrives after the restart.
        migrate(&db.url, "catalog", "0009");
        let mut poller = Poller::start(&rt, &db.url, state.path());
        let (migrations, _) = poller.next_deploy(&rt, "the restart");
        assert_eq!(
            migrations,
            ["catalog.0009_digitalproduct_discontinuedproduct"],
            "{kind:?}"
        );
        poller.assert_quiet(&rt, &format!("{kind:?}: after the restart's deploy"));

        // A rollback deletes the last row: no deploy, and applying it again is one.
        migrate(&db.url, "catalog", "0008");
        poller.assert_quiet(&rt, &format!("{kind:?}: the rollback"));
        migrate(&db.url, "catalog", "0009");
        let (migrations, _) = poller.next_deploy(&rt, "migrating forward again");
        assert_eq!(
            migrations,
            ["catalog.0009_digitalproduct_discontinuedproduct"],
            "{kind:?}"
        );
        assert_eq!(poller.poll_errors(), 0, "{kind:?}");
        // Counted once handed on, a moment after the receiver has it.
        let events = poller.stats.events.with_label_values(&[SOURCE]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while events.get() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(events.get(), 2, "{kind:?}");
        poller.stop(&rt).expect("a clean stop");
    }
}

#[test]
fn before_the_first_migrate_nothing_is_an_error_and_the_first_migrate_is_a_deploy_on_every_engine()
{
    let rt = runtime();
    for kind in ENGINES {
        let db = TestDb::create(kind, "fresh");
        if kind == EngineKind::Sqlite {
            // The adapter opens the application's SQLite file, never creates it.
            block_on_sql(&db, "CREATE TABLE unrelated (id INTEGER)");
        }
        let state = tempfile::tempdir().unwrap();
        let mut poller = Poller::start(&rt, &db.url, state.path());
        assert_eq!(wait_for_cursor(state.path()), 0, "{kind:?}");
        poller.assert_quiet(&rt, &format!("{kind:?}: no django_migrations table"));
        assert_eq!(poller.poll_errors(), 0, "{kind:?}");

        // The cursor started at 0, so the first migrate's rows are a deploy.
        migrate(&db.url, "contenttypes", "0001");
        let (migrations, _) = poller.next_deploy(&rt, "the first migrate");
        assert_eq!(migrations, ["contenttypes.0001_initial"], "{kind:?}");
        poller.stop(&rt).expect("a clean stop");
    }
}

#[test]
fn an_unreadable_django_migrations_is_counted_and_retried_not_fatal_on_every_engine() {
    let rt = runtime();
    for kind in ENGINES {
        let db = TestDb::create(kind, "pollerr");
        let state = tempfile::tempdir().unwrap();
        migrate(&db.url, "contenttypes", "0001");
        let mut poller = Poller::start(&rt, &db.url, state.path());
        wait_for_cursor(state.path());

        // A new row the poller cannot read: its query names a column that is gone.
        block_on_sql(
            &db,
            "ALTER TABLE django_migrations RENAME COLUMN app TO app_moved",
        );
        block_on_sql(
            &db,
            "INSERT INTO django_migrations (app_moved, name, applied) VALUES ('zz', 'hidden', '2026-11-25 16:22:38')",
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while poller.poll_errors() < 2 {
            assert!(
                Instant::now() < deadline,
                "{kind:?}: failed polls were not counted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!poller.task.is_finished(), "{kind:?}: the poller gave up");

        // Readable again: the row arrives, once.
        block_on_sql(
            &db,
            "ALTER TABLE django_migrations RENAME COLUMN app_moved TO app",
        );
        let (migrations, _) = poller.next_deploy(&rt, "the table became readable");
        assert_eq!(migrations, ["zz.hidden"], "{kind:?}");
        poller.assert_quiet(&rt, &format!("{kind:?}: after recovery"));
        poller.stop(&rt).expect("a clean stop");
    }
}

#[test]
fn a_damaged_deploy_cursor_stops_the_poller_with_the_file_named() {
    let rt = runtime();
    let db = TestDb::create(EngineKind::Sqlite, "badcursor");
    block_on_sql(&db, "CREATE TABLE unrelated (id INTEGER)");
    let state = tempfile::tempdir().unwrap();
    let path = deploys::cursor_path(state.path());
    std::fs::write(&path, "{\"version\":\"1\",\"last_id\":").unwrap();
    let poller = Poller::start(&rt, &db.url, state.path());
    let err = within(&rt, Duration::from_secs(5), poller.task)
        .expect("the poller ends at once")
        .expect("no panic")
        .expect_err("a damaged cursor is an error")
        .to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("move it away"),
        "{err}"
    );
    // Left as it was, for the operator to look at.
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"version\":\"1\",\"last_id\":"
    );
}

const HELD_BACK: &str = "catalog/migrations/0016_remove_product_brand.py";
const HELD_BACK_ID: &str = "catalog.0016_remove_product_brand";

/// Waits until `status` satisfies `ready`.
fn wait_status(
    rt: &Runtime,
    status: &mut watch::Receiver<Status>,
    what: &str,
    ready: impl FnMut(&Status) -> bool,
) -> Status {
    within(rt, Duration::from_secs(60), status.wait_for(ready))
        .unwrap_or_else(|_| panic!("automatic preservation: no {what} within 60 s"))
        .expect("autopreserve is running")
        .clone()
}

#[test]
fn a_destructive_migration_copied_in_is_preserved_before_migrate_runs() {
    let rt = runtime();
    let db = TestDb::create(EngineKind::Sqlite, "autopreserve");
    let ws = Workspace::new();
    let app = ws.path().join("app");
    copy_project(&app);
    // The release's destructive migration is not in the project yet.
    let held = app.join(HELD_BACK);
    let release_file = std::fs::read(&held).unwrap();
    std::fs::remove_file(&held).unwrap();
    django_at(&app, &db.url, &["manage.py", "migrate", "-v0"]);
    let seeded: Json =
        serde_json::from_str(&django_at(&app, &db.url, &["seed.py"])).expect("seed JSON");
    let products = seeded["catalog_product"]["rows"].as_u64().unwrap();
    let brands = seeded["catalog_product"]["non_null"]["brand_code"]
        .as_u64()
        .unwrap();
    assert!(brands > 0, "{seeded}");

    ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"{}\"\n[django]\nproject_dir = \"{}\"\nauth_user_model = \"accounts.User\"\n[state]\ndir = \"state\"\n",
        db.url,
        app.display()
    ));
    let config = dropguard::config::load(&ws.config_path()).expect("a valid config");
    assert!(config.preserve.auto, "on by default");
    let vault = dropguard::commands::open_vault(&config).unwrap();
    let adapter: Arc<dyn Adapter> =
        Arc::from(rt.block_on(db::connect(&config.database.url)).unwrap());
    let (changed_tx, changed_rx) = mpsc::channel(4);
    let (status_tx, mut status) = watch::channel(Status::default());
    let shutdown = CancellationToken::new();
    assert_eq!(deploys::migration_dirs(&config), std::slice::from_ref(&app));
    let watcher = rt.spawn(deploys::watch_migrations(
        deploys::migration_dirs(&config),
        changed_tx,
        shutdown.clone(),
    ));
    let metrics = dropguard::telemetry::Metrics::new().unwrap();
    let vault_stats = metrics.vault().unwrap();
    let preserver = rt.spawn(autopreserve::run(
        config.clone(),
        adapter,
        vault.clone(),
        None,
        changed_rx,
        autopreserve::Reports {
            status: status_tx,
            stats: vault_stats.clone(),
        },
        shutdown.clone(),
    ));

    // Nothing pending at start: nothing preserved.
    let first = wait_status(&rt, &mut status, "first pass", |s| s.passes >= 1);
    assert_eq!(first.plan_error, None);
    assert!(first.migrations.is_empty(), "{first:?}");
    assert!(vault.list().unwrap().is_empty());
    // Let the watcher settle before the release arrives.
    std::thread::sleep(Duration::from_millis(300));

    // The release's files are copied in; `migrate` has not run.
    std::fs::write(&held, &release_file).unwrap();
    let preserved = wait_status(&rt, &mut status, "snapshot of catalog.0016", |s| {
        matches!(
            s.migrations.get(HELD_BACK_ID),
            Some(MigrationState::Preserved { .. })
        )
    });
    let Some(MigrationState::Preserved { snapshot }) = preserved.migrations.get(HELD_BACK_ID)
    else {
        unreachable!()
    };
    let manifest = vault
        .find_for_migration(HELD_BACK_ID)
        .unwrap()
        .expect("a complete snapshot in the vault");
    assert_eq!(manifest.id.to_string(), *snapshot);
    assert_eq!(manifest.reason, Reason::Plan);
    assert!(
        manifest
            .rollback_command
            .as_deref()
            .is_some_and(|c| c.contains("migrate catalog 0015_delete_digitalproduct")),
        "{:?}",
        manifest.rollback_command
    );
    assert_eq!(manifest.objects.len(), 1, "{:?}", manifest.objects);
    let object = &manifest.objects[0];
    assert_eq!(object.table, "catalog_product");
    assert_eq!(object.columns, ["brand_code"]);
    assert_eq!(object.rows, products);
    // The values themselves, read back from the vault.
    let rows: Vec<Vec<Value>> = vault
        .read_object(&manifest.id, 0)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let values = rows
        .iter()
        .filter(|row| matches!(row.last(), Some(Value::Text(_))))
        .count() as u64;
    assert_eq!(values, brands, "{rows:?}");
    assert!(vault.verify(&manifest.id).unwrap().is_ok());
    // Counted on /metrics.
    let exported = metrics.render().unwrap();
    assert!(
        exported.contains("dropguard_snapshots_total{outcome=\"complete\"} 1\n"),
        "{exported}"
    );
    assert!(
        exported.contains(&format!("dropguard_snapshot_rows_total {products}\n")),
        "{exported}"
    );
    assert_eq!(vault_stats.seconds.get_sample_count(), 1);
    assert_eq!(vault_stats.unprotected.get(), 0);
    // Django still has it pending: the snapshot came first.
    let plan = django_at(&app, &db.url, &["manage.py", "showmigrations", "catalog"]);
    assert!(plan.contains("[ ] 0016_remove_product_brand"), "{plan}");

    // Another change to the files: a pass, and no second snapshot.
    let passes = status.borrow().passes;
    let mut edited = release_file.clone();
    edited.extend_from_slice(b"\n# reviewed\n");
    std::fs::write(&held, &edited).unwrap();
    let later = wait_status(&rt, &mut status, "pass after an edit", |s| {
        s.passes > passes
    });
    assert_eq!(
        later.migrations.get(HELD_BACK_ID),
        Some(&MigrationState::Preserved {
            snapshot: snapshot.clone()
        })
    );
    assert_eq!(vault.list().unwrap().len(), 1);

    // Rows change before the deploy (here one goes): the snapshot no longer holds
    // what the table holds, and the next pass takes a new one.
    let path = db.url.strip_prefix("sqlite://").unwrap();
    crate::django_support::sqlite_exec(
        std::path::Path::new(path),
        "DELETE FROM orders_orderline WHERE product_id = (SELECT MAX(id) FROM catalog_product);\
         DELETE FROM catalog_product WHERE id = (SELECT MAX(id) FROM catalog_product);",
    );
    edited.extend_from_slice(b"# and again\n");
    std::fs::write(&held, &edited).unwrap();
    let fresh = wait_status(
        &rt,
        &mut status,
        "a new snapshot after the rows changed",
        |s| matches!(s.migrations.get(HELD_BACK_ID), Some(MigrationState::Preserved { snapshot: id }) if id != snapshot),
    );
    let Some(MigrationState::Preserved { snapshot: fresh_id }) = fresh.migrations.get(HELD_BACK_ID)
    else {
        unreachable!()
    };
    let newest = vault.find_for_migration(HELD_BACK_ID).unwrap().unwrap();
    assert_eq!(newest.id.to_string(), *fresh_id);
    assert_eq!(newest.objects[0].rows, products - 1);
    assert_eq!(vault.list().unwrap().len(), 2);

    // Now the deploy runs; the snapshot is what a user lists.
    django_at(&app, &db.url, &["manage.py", "migrate", "-v0"]);
    let output = ws.run(&["snapshots", "list", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let list: Json = serde_json::from_str(&stdout(&output)).unwrap();
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{list}");
    for entry in entries {
        assert_eq!(entry["migration"], HELD_BACK_ID);
        assert_eq!(entry["complete"], true);
    }
    assert!(
        entries.iter().any(|e| e["id"] == fresh_id.as_str()),
        "{list}"
    );

    shutdown.cancel();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the watcher stops")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), preserver)
            .await
            .expect("autopreserve stops")
            .unwrap();
    });
}

#[test]
fn with_preserve_auto_off_nothing_is_preserved() {
    let rt = runtime();
    let db = TestDb::create(EngineKind::Sqlite, "autooff");
    // catalog.0016 (dropping catalog_product.brand_code) stays pending.
    migrate(&db.url, "catalog", "0015");
    let ws = Workspace::new();
    ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"{}\"\n[django]\nproject_dir = \"{}\"\nauth_user_model = \"accounts.User\"\n[state]\ndir = \"state\"\n[preserve]\nauto = false\n",
        db.url,
        crate::django_support::django_project().display()
    ));
    let config = dropguard::config::load(&ws.config_path()).expect("a valid config");
    let vault = dropguard::commands::open_vault(&config).unwrap();
    let adapter: Arc<dyn Adapter> =
        Arc::from(rt.block_on(db::connect(&config.database.url)).unwrap());
    let (_changed_tx, changed_rx) = mpsc::channel(1);
    let (status_tx, status) = watch::channel(Status::default());
    within(
        &rt,
        Duration::from_secs(5),
        autopreserve::run(
            config,
            adapter,
            vault.clone(),
            None,
            changed_rx,
            autopreserve::Reports {
                status: status_tx,
                stats: dropguard::telemetry::Metrics::new()
                    .unwrap()
                    .vault()
                    .unwrap(),
            },
            CancellationToken::new(),
        ),
    )
    .expect("returns at once");
    assert_eq!(status.borrow().passes, 0);
    assert!(vault.list().unwrap().is_empty());
}
