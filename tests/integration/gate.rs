//! The usage gate on real servers: the fixture project at catalog 0015 (0016
//! drops `catalog_product.brand_code`), a workload of the previous release
//! still selecting the column, `dropguard gate` between the deploy and
//! `migrate`, and the daemon's continuous check.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::django_support::{django, django_project, python};
use crate::harness::{Daemon, EngineKind, TestDb, Workspace, block_on, stderr, stdout};

const MIGRATION: &str = "catalog.0016_remove_product_brand";

/// The fixture project migrated to catalog 0015 and seeded.
fn seeded_before_the_drop(db: &TestDb) {
    django(&db.url, &["manage.py", "migrate", "-v0"]);
    django(&db.url, &["manage.py", "migrate", "catalog", "0015", "-v0"]);
    django(&db.url, &["seed.py"]);
}

/// Runs one statement on the test database as its admin (`postgres`/`root`).
fn exec(db: &TestDb, sql: &str) {
    use sqlx::{AssertSqlSafe, Connection};
    block_on(async {
        match db.kind {
            EngineKind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
            }
            EngineKind::Mysql => {
                let mut conn = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
            }
            EngineKind::Sqlite => unreachable!("no server"),
        }
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
    });
}

fn config(ws: &Workspace, url: &str, extra: &str) -> PathBuf {
    ws.write_config(&format!(
        r#"
environment = "test"
[database]
url = "{url}"
[django]
project_dir = "{project}"
[state]
dir = "{state}"
[server]
listen = "127.0.0.1:0"
grace_period = "5s"
{extra}
"#,
        project = django_project().display(),
        state = ws.path().join("state").display(),
    ))
}

fn gate(ws: &Workspace, window: &str, json: bool) -> Output {
    let mut args = vec!["gate", "--window", window];
    if json {
        args.push("--json");
    }
    ws.run(&args)
}

fn report(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "gate --json printed no JSON ({err}):\n{}\n{}",
            stdout(output),
            stderr(output)
        )
    })
}

/// The one object of the plan: catalog_product.brand_code.
fn brand_code(report: &Value) -> &Value {
    let objects = report["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 1, "{report:#}");
    let object = &objects[0];
    assert_eq!(object["migration"], MIGRATION);
    assert_eq!(object["table"], "catalog_product");
    assert_eq!(object["column"], "brand_code");
    object
}

/// A Python process of the fixture project, killed on drop.
struct Workload(Child);

impl Workload {
    /// The previous release (the models before 0016): lists products with
    /// their brand, which selects `catalog_product.brand_code`, every 50 ms
    /// for up to `seconds`. Returns once its first request is logged.
    fn old_release(db: &TestDb, dir: &Path, seconds: u32) -> Self {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = dir.join(format!("old-release-{run}.log"));
        fs::write(&log, "").unwrap();
        let workload = Self::old_release_logging_to(db, &log, seconds);
        let started = Instant::now();
        while fs::read_to_string(&log).unwrap_or_default().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the old release's workload never ran a request"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        workload
    }

    /// The new release (today's models, without the field): lists products,
    /// which reads `catalog_product` but not `brand_code`. Returns once it runs.
    fn new_release(db: &TestDb, seconds: u32) -> Self {
        let code = format!(
            "import sys, time\n\
             from catalog.models import Product\n\
             print('ready', flush=True)\n\
             for _ in range({}):\n    list(Product.objects.all()[:20])\n    time.sleep(0.05)\n",
            seconds * 20
        );
        let mut child = Command::new(python())
            .args(["manage.py", "shell", "-c", &code])
            .current_dir(django_project())
            .env("DROPGUARD_TEST_DATABASE_URL", &db.url)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the new release's workload");
        // Django's shell may first say what it imported.
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let ready = lines
            .map_while(Result::ok)
            .take(20)
            .any(|line| line.trim() == "ready");
        assert!(ready, "the new release's workload did not start");
        Self(child)
    }

    /// Stops it and waits until its process (and so its session) is gone.
    fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The gate fails naming the column while the old release selects it, and
/// passes once only the new release (which still reads the table) runs.
fn the_column_is_in_use_until_the_old_release_stops(kind: EngineKind) {
    let ws = Workspace::new();
    let db = TestDb::create(kind, "gate");
    seeded_before_the_drop(&db);
    match kind {
        EngineKind::Postgres => exec(&db, "CREATE EXTENSION pg_stat_statements"),
        // Digests of every test database share one table of 5000 rows by
        // default; a full one hides new statements (the gate then says
        // unknown, rightly). Start this test with room.
        _ => exec(
            &db,
            "TRUNCATE TABLE performance_schema.events_statements_summary_by_digest",
        ),
    }
    config(&ws, &db.url, "");

    let old = Workload::old_release(&db, ws.path(), 30);
    let output = gate(&ws, "2s", true);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = report(&output);
    assert_eq!(report["status"], "in_use");
    let object = brand_code(&report);
    assert_eq!(object["status"], "in_use", "{object:#}");
    let source = match kind {
        EngineKind::Postgres => "pg_stat_statements",
        _ => "performance_schema",
    };
    let statement = object["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "statement")
        .unwrap_or_else(|| panic!("no statement evidence: {object:#}"));
    assert_eq!(statement["source"], source);
    assert!(statement["calls"].as_u64().unwrap() >= 5, "{statement:#}");
    let text = statement["statement"].as_str().unwrap();
    assert!(
        text.contains("brand_code") && text.contains("catalog_product"),
        "{text}"
    );
    let summary = object["summary"].as_str().unwrap();
    assert!(
        summary.contains("calls") && summary.contains("brand_code"),
        "{summary}"
    );
    assert_eq!(report["statistics"]["statements"]["state"], "available");
    assert_eq!(report["statistics"]["table_counters"]["state"], "available");
    old.stop();

    let new = Workload::new_release(&db, 30);
    let output = gate(&ws, "2s", false);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}\n{}", stderr(&output));
    assert!(
        text.contains("catalog_product.brand_code  unused"),
        "{text}"
    );
    assert!(text.contains(&format!("dropped by {MIGRATION}")), "{text}");
    // The new release still reads the table, just not the column.
    assert!(
        text.contains("by statements not naming the column"),
        "{text}"
    );
    assert!(text.contains("migrate can run"), "{text}");
    new.stop();
}

#[test]
fn postgres_gate_fails_naming_the_column_while_the_old_release_selects_it() {
    the_column_is_in_use_until_the_old_release_stops(EngineKind::Postgres);
}

#[test]
fn mariadb_gate_fails_naming_the_column_while_the_old_release_selects_it() {
    the_column_is_in_use_until_the_old_release_stops(EngineKind::Mysql);
}

#[test]
fn postgres_without_pg_stat_statements_the_gate_says_so_and_never_says_unused_for_a_read_table() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Postgres, "gate_nopgss");
    seeded_before_the_drop(&db);
    config(&ws, &db.url, "");

    // The table is read, and without statement texts nobody can tell which
    // columns: unknown, with the statement that enables them.
    let old = Workload::old_release(&db, ws.path(), 30);
    let output = gate(&ws, "2s", true);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let report = report(&output);
    assert_eq!(report["status"], "unknown");
    let statements = &report["statistics"]["statements"];
    assert_eq!(statements["state"], "unavailable", "{statements:#}");
    assert_eq!(statements["source"], "pg_stat_statements");
    assert!(
        statements["fix"]
            .as_str()
            .unwrap()
            .contains("CREATE EXTENSION pg_stat_statements;"),
        "{statements:#}"
    );
    let object = brand_code(&report);
    assert_eq!(object["status"], "unknown");
    let summary = object["summary"].as_str().unwrap();
    assert!(
        summary.contains("CREATE EXTENSION pg_stat_statements")
            && summary.contains("catalog_product"),
        "{summary}"
    );
    let table = object["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "table")
        .unwrap_or_else(|| panic!("no table counters: {object:#}"));
    assert_eq!(table["source"], "pg_stat_user_tables");
    assert!(table["scans"].as_u64().unwrap() > 0, "{table:#}");
    old.stop();
    // A PostgreSQL backend hands its table counters over when it exits (and
    // at most once a second while it runs): let the old release's land
    // before the next window opens.
    std::thread::sleep(Duration::from_secs(1));

    // Once nothing reads the table, its columns cannot be in use: the table
    // counters settle it; the report still says what is missing.
    let output = gate(&ws, "2s", false);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}\n{}", stderr(&output));
    assert!(
        text.contains("catalog_product.brand_code  unused"),
        "{text}"
    );
    assert!(
        text.contains("statements (pg_stat_statements): unavailable"),
        "{text}"
    );
    assert!(
        text.contains("to enable: CREATE EXTENSION pg_stat_statements;"),
        "{text}"
    );
}

/// A role created for one test; dropped after the test's database.
struct Role(String);

impl Drop for Role {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::panic::catch_unwind(|| {
            use sqlx::{AssertSqlSafe, Connection};
            block_on(async move {
                let url = std::env::var("DROPGUARD_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE IF EXISTS {name}")))
                        .execute(&mut conn)
                        .await;
                }
            })
        });
    }
}

#[test]
fn postgres_a_role_without_pg_read_all_stats_is_told_the_grant() {
    let role = Role(format!("dg_gate_{}", std::process::id()));
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Postgres, "gate_role");
    exec(&db, "CREATE EXTENSION pg_stat_statements");
    seeded_before_the_drop(&db);
    exec(
        &db,
        &format!(
            "DROP ROLE IF EXISTS {r}; CREATE ROLE {r} LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {r}",
            r = role.0
        ),
    );
    let url = db.url.replacen("postgres@", &format!("{}@", role.0), 1);
    config(&ws, &url, "");

    let old = Workload::old_release(&db, ws.path(), 30);
    let output = gate(&ws, "2s", true);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let report = report(&output);
    let grant = format!("GRANT pg_read_all_stats TO \"{}\";", role.0);
    let statements = &report["statistics"]["statements"];
    assert_eq!(statements["state"], "partial", "{statements:#}");
    assert_eq!(statements["fix"], grant.as_str());
    let object = brand_code(&report);
    assert_eq!(object["status"], "unknown");
    assert!(
        object["summary"].as_str().unwrap().contains(&grant),
        "{object:#}"
    );

    // With the grant, the same workload is seen for what it is.
    exec(&db, &format!("GRANT pg_read_all_stats TO {}", role.0));
    let output = gate(&ws, "2s", true);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(brand_code(&self::report(&output))["status"], "in_use");
    old.stop();
}

#[test]
fn mariadb_a_user_without_performance_schema_access_is_told_the_grant() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Mysql, "gate_user");
    seeded_before_the_drop(&db);
    let user = format!("dg_gate_{}", std::process::id());
    let database = db.url.rsplit('/').next().unwrap().to_string();
    exec(
        &db,
        &format!(
            "DROP USER IF EXISTS '{user}'@'%'; CREATE USER '{user}'@'%'; GRANT ALL ON `{database}`.* TO '{user}'@'%'"
        ),
    );
    let url = db.url.replacen("root@", &format!("{user}@"), 1);
    config(&ws, &url, "");
    let output = gate(&ws, "1s", true);
    exec(&db, &format!("DROP USER IF EXISTS '{user}'@'%'"));
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let report = report(&output);
    let grant = format!("GRANT SELECT ON performance_schema.* TO '{user}'@'%';");
    for kind in ["table_counters", "statements"] {
        let statistics = &report["statistics"][kind];
        assert_eq!(statistics["state"], "unavailable", "{statistics:#}");
        assert_eq!(statistics["fix"], grant.as_str(), "{statistics:#}");
    }
    let object = brand_code(&report);
    assert_eq!(object["status"], "unknown");
    assert!(
        object["summary"].as_str().unwrap().contains(&grant),
        "{object:#}"
    );
}

#[test]
fn sqlite_keeps_no_statistics_and_only_the_logs_can_tell() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "gate");
    seeded_before_the_drop(&db);
    config(&ws, &db.url, "");
    let started = Instant::now();
    let output = gate(&ws, "1m", false);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(3), "{text}\n{}", stderr(&output));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "without statistics or logs there is nothing to wait for"
    );
    assert!(
        text.contains("catalog_product.brand_code  unknown"),
        "{text}"
    );
    assert!(text.contains("SQLite keeps no usage statistics"), "{text}");
    assert!(text.contains("not sampled"), "{text}");

    // A log line naming the column during the window (Django's SQL logging).
    let log = ws.path().join("app.log");
    fs::write(&log, "(0.001) SELECT \"catalog_product\".\"brand_code\" FROM \"catalog_product\"; args=() before the window\n").unwrap();
    config(
        &ws,
        &db.url,
        &format!("[[logs.file]]\npath = \"{}\"\n", log.display()),
    );
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            append(
                &log,
                "(0.001) SELECT \"catalog_product\".\"id\", \"catalog_product\".\"brand_code\" FROM \"catalog_product\" LIMIT 21; args=(); alias=default\n",
            );
            append(
                &log,
                "(0.001) SELECT \"catalog_product\".\"id\" FROM \"catalog_product\"; args=()\n",
            );
        })
    };
    let output = gate(&ws, "2s", true);
    writer.join().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report = report(&output);
    let object = brand_code(&report);
    assert_eq!(object["status"], "in_use");
    assert_eq!(object["summary"], "1 log line naming it");
    let logs = &object["evidence"][0];
    assert_eq!(logs["kind"], "logs");
    assert!(
        logs["sample"].as_str().unwrap().contains("LIMIT 21"),
        "{logs:#}"
    );
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .expect("appending to the log");
}

/// The value of one series on /metrics, `None` when absent.
fn metric(daemon: &Daemon, series: &str) -> Option<f64> {
    let (_, body) = daemon.get("/metrics");
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const IN_USE: &str = r#"dropguard_gate_in_use{column="brand_code",migration="catalog.0016_remove_product_brand",table="catalog_product"}"#;

#[test]
fn postgres_the_daemon_exports_use_and_the_incident_says_the_drop_was_applied_in_use() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Postgres, "gate_daemon");
    exec(&db, "CREATE EXTENSION pg_stat_statements");
    seeded_before_the_drop(&db);
    let log = ws.path().join("app.log");
    fs::write(&log, "").unwrap();
    let daemon = Daemon::start(&config(
        &ws,
        &db.url,
        &format!(
            r#"
[[logs.file]]
path = "{log}"
read_from = "beginning"
multiline_timeout = "300ms"
poll_interval = "200ms"
[deploys]
poll_interval = "200ms"
[gate]
interval = "1s"
"#,
            log = log.display()
        ),
    ));
    daemon.wait_ready();

    // dropguard preserves 0016 on its own at start (reading the table): its
    // own reads are no use.
    wait_until("the column judged unused", Duration::from_secs(30), || {
        metric(&daemon, IN_USE) == Some(0.0)
    });
    wait_until("the automatic snapshot", Duration::from_secs(30), || {
        let listed = ws.run(&["snapshots", "list", "--json"]);
        serde_json::from_slice::<Value>(&listed.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|list| list.iter().any(|s| s["migration"] == MIGRATION))
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        metric(&daemon, IN_USE),
        Some(0.0),
        "dropguard's own reads count as use"
    );

    // An old replica still selects the column; it goes on through the deploy,
    // logging Django's errors into the tailed log once the column is gone.
    let old = Workload::old_release_logging_to(&db, &log, 60);
    wait_until("the column judged in use", Duration::from_secs(20), || {
        metric(&daemon, IN_USE) == Some(1.0)
    });
    assert_eq!(
        metric(&daemon, r#"dropguard_gate_objects{status="in_use"}"#),
        Some(1.0)
    );
    django(&db.url, &["manage.py", "migrate", "catalog", "0016", "-v0"]);
    let incidents = || -> Vec<Value> {
        let (status, body) = daemon.get("/api/v1/incidents");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    wait_until("the incident", Duration::from_secs(30), || {
        !incidents().is_empty()
    });
    old.stop();
    let incident = &incidents()[0];
    let migration = &incident["deploy"]["migrations"][0];
    assert_eq!(migration["migration"], MIGRATION);
    let in_use = migration["in_use"]
        .as_array()
        .unwrap_or_else(|| panic!("{incident:#}"));
    assert_eq!(in_use.len(), 1, "{in_use:#?}");
    assert_eq!(in_use[0]["table"], "catalog_product");
    assert_eq!(in_use[0]["column"], "brand_code");
    assert!(
        in_use[0]["evidence"]
            .as_str()
            .unwrap()
            .contains("brand_code"),
        "{in_use:#?}"
    );
    assert_eq!(
        metric(&daemon, "dropguard_gate_applied_in_use_total"),
        Some(1.0)
    );
    let shown = ws.run(&["incidents", "show", incident["id"].as_str().unwrap()]);
    assert!(
        stdout(&shown).contains("still in use when applied: catalog_product.brand_code"),
        "{}{}",
        stdout(&shown),
        stderr(&shown)
    );
    // Nothing is pending any more: no object series.
    wait_until("the series to go", Duration::from_secs(10), || {
        metric(&daemon, IN_USE).is_none()
    });
}

impl Workload {
    /// [`Workload::old_release`] logging its requests (and, after the drop,
    /// Django's errors) into `log`.
    fn old_release_logging_to(db: &TestDb, log: &Path, seconds: u32) -> Self {
        let child = Command::new(python())
            .args(["old_replica.py", &log.display().to_string(), "brand"])
            .arg((seconds * 20).to_string())
            .arg("0.05")
            .current_dir(django_project())
            .env("DROPGUARD_TEST_DATABASE_URL", &db.url)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the old release's workload");
        Self(child)
    }
}

#[test]
fn sqlite_the_daemon_counts_log_lines_naming_a_pending_column() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "gate_logs");
    seeded_before_the_drop(&db);
    let log = ws.path().join("app.log");
    fs::write(&log, "").unwrap();
    let daemon = Daemon::start(&config(
        &ws,
        &db.url,
        &format!(
            r#"
[[logs.file]]
path = "{log}"
poll_interval = "200ms"
multiline = "none"
[preserve]
auto = false
[gate]
interval = "1s"
"#,
            log = log.display()
        ),
    ));
    daemon.wait_ready();
    wait_until("a first verdict", Duration::from_secs(20), || {
        metric(&daemon, r#"dropguard_gate_objects{status="unknown"}"#) == Some(1.0)
    });
    // Unknown: no series for the object.
    assert_eq!(metric(&daemon, IN_USE), None);
    let writer = std::thread::spawn({
        let log = log.clone();
        move || {
            for n in 0..30 {
                append(
                    &log,
                    &format!(
                        "(0.001) SELECT \"catalog_product\".\"brand_code\" FROM \"catalog_product\" WHERE id = {n}; args=()\n"
                    ),
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    wait_until("the column judged in use", Duration::from_secs(20), || {
        metric(&daemon, IN_USE) == Some(1.0)
    });
    writer.join().unwrap();
    // The lines stop: SQLite alone cannot tell, and says so.
    wait_until("the column unknown again", Duration::from_secs(20), || {
        metric(&daemon, IN_USE).is_none()
    });
    assert!(metric(&daemon, r#"dropguard_gate_checks_total{outcome="in_use"}"#).unwrap() >= 1.0);
}

/// A throwaway MariaDB server with `performance_schema` OFF (the server's
/// default in some packages), on a free port; shut down on drop.
struct ScratchMariadb {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ScratchMariadb {
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        // SAFETY: geteuid(2) has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let user: Vec<&str> = if root { vec!["--user=mysql"] } else { vec![] };
        if root {
            let status = Command::new("chown")
                .args(["mysql"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
        }
        // Debian keeps the server in /usr/sbin, not always on a user's PATH.
        let program = |name: &str| {
            ["/usr/sbin", "/usr/bin"]
                .iter()
                .map(|dir| Path::new(dir).join(name))
                .find(|path| path.exists())
                .unwrap_or_else(|| PathBuf::from(name))
        };
        let installed = Command::new(program("mariadb-install-db"))
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .args(&user)
            .arg(format!("--datadir={}", data.display()))
            .output()
            .expect("running mariadb-install-db");
        assert!(installed.status.success(), "{}", stderr(&installed));
        let port = crate::harness::free_port();
        let child = Command::new(program("mariadbd"))
            .args([
                "--no-defaults",
                "--bind-address=127.0.0.1",
                "--skip-log-error",
            ])
            .args(&user)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--port={port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mariadbd");
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the scratch MariaDB did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for ScratchMariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn mariadb_with_performance_schema_off_the_gate_says_so_and_never_says_unused() {
    let server = ScratchMariadb::start(&["--performance-schema=OFF"]);
    block_on(async {
        use sqlx::{AssertSqlSafe, Connection};
        let mut conn = sqlx::MySqlConnection::connect(&server.url("mysql"))
            .await
            .expect("connecting to the scratch MariaDB");
        sqlx::raw_sql(AssertSqlSafe(
            "CREATE DATABASE app; \
             CREATE TABLE app.catalog_product (id INT PRIMARY KEY, brand_code VARCHAR(10)); \
             INSERT INTO app.catalog_product VALUES (1, 'x')",
        ))
        .execute(&mut conn)
        .await
        .expect("creating the table");
    });
    let ws = Workspace::new();
    let migrations = ws.path().join("migrations");
    fs::create_dir_all(&migrations).unwrap();
    fs::write(
        migrations.join("0001_drop_brand.sql"),
        "ALTER TABLE catalog_product DROP COLUMN brand_code;\n",
    )
    .unwrap();
    ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"{}\"\n[sql]\ndir = \"{}\"\n[state]\ndir = \"{}\"\n",
        server.url("app"),
        migrations.display(),
        ws.path().join("state").display()
    ));
    let output = gate(&ws, "1s", true);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let report = report(&output);
    assert_eq!(report["status"], "unknown");
    for kind in ["table_counters", "statements"] {
        let statistics = &report["statistics"][kind];
        assert_eq!(statistics["state"], "unavailable", "{statistics:#}");
        assert!(
            statistics["reason"]
                .as_str()
                .unwrap()
                .contains("performance_schema is OFF"),
            "{statistics:#}"
        );
        assert!(
            statistics["fix"]
                .as_str()
                .unwrap()
                .contains("performance_schema = ON"),
            "{statistics:#}"
        );
    }
    let object = &report["objects"][0];
    assert_eq!(object["table"], "catalog_product");
    assert_eq!(object["column"], "brand_code");
    assert_eq!(object["status"], "unknown");
    assert!(
        object["summary"]
            .as_str()
            .unwrap()
            .contains("performance_schema = ON"),
        "{object:#}"
    );
}
