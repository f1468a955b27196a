//! The whole runbook on the real thing, as a team would live it: the fixture
//! Django project (migrations made by `makemigrations`) at its previous release
//! with real data, `dropguard run` beside it, the release's files copied in
//! (dropguard preserves before `migrate`), `manage.py migrate`, an old replica
//! still on the previous release logging Django's real tracebacks, one alert on a
//! Slack-compatible receiver, the rollback with `manage.py migrate <app>
//! <previous>`, the restore (by the CLI, or by an approval that runs the
//! rollback too), the data equal to the pre-release data, a second restore that
//! changes nothing, and a clean SIGTERM. On SQLite, PostgreSQL and MariaDB, and
//! once more with the logs delivered through Kafka (librdkafka's mock cluster).
//!
//! The release drops a column with a custom `db_column` (accounts.User.nickname,
//! catalog.Product.brand), ForeignKey columns, ManyToMany join tables, a model
//! with a custom `db_table` (orders.ShippingRate), and a column through RunSQL
//! inside SeparateDatabaseAndState (legacy.ImportBatch.checksum).
//!
//! The figures a user cares about are printed (`cargo test e2e -- --nocapture`)
//! and recorded in BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::alerts::{Receiver, Reply};
use crate::django_support::{copy_project, django_at, python};
use crate::harness::{Daemon, EngineKind, TestDb, Workspace, free_port, stderr, stdout};
use crate::restore::{AT_RISK, BEFORE_RELEASE, dump_at};

const TOKEN: &str = "e2e-t0ken";
/// The release's destructive migrations dropguard must preserve.
const PRESERVED: [&str; 8] = [
    "accounts.0003_remove_user_nickname",
    "catalog.0011_remove_product_tags",
    "catalog.0013_remove_product_weight_grams",
    "catalog.0016_remove_product_brand",
    "orders.0004_remove_order_sales_rep",
    "orders.0005_delete_shippingrate",
    "orders.0006_delete_wishlist",
    "legacy.0005_remove_importbatch_checksum",
];
/// What the old replica's views read, as the errors name it.
const NAMED: [&str; 6] = [
    "accounts_user.display_nick",
    "catalog_product.brand_code",
    "catalog_product_tags",
    "orders_order.sales_rep_id",
    "shop_ShippingRate",
    "legacy_importbatch.checksum",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logs {
    File,
    Kafka,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestoreBy {
    /// `manage.py migrate <app> <previous>` by hand, then `dropguard restore`.
    Cli,
    /// `dropguard incidents approve`: the daemon rolls back and restores.
    Approval,
}

/// What the run measured.
struct Figures {
    /// From the release's files landing to every snapshot complete.
    preserved: Duration,
    /// From the first error line written (with Kafka: handed to the broker) to
    /// the alert accepted by the receiver.
    alerted: Duration,
}

/// The release: each app's migrations after the previous release.
fn release_files(project: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for [app, last] in BEFORE_RELEASE {
        let last: u32 = last.parse().unwrap();
        for entry in std::fs::read_dir(project.join(app).join("migrations")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let number: Option<u32> = name.get(..4).and_then(|n| n.parse().ok());
            // legacy.0003 (previous release) names orders.0004 in `run_before`,
            // so that file shipped before; it is pending, not applied.
            if number.is_some_and(|n| n > last) && name != "0004_remove_order_sales_rep.py" {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json_ok(ws: &Workspace, args: &[&str]) -> Value {
    let output = ws.run(args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?}: {}\n{}",
        stderr(&output),
        stdout(&output)
    );
    serde_json::from_str(&stdout(&output)).unwrap()
}

/// The log records of a Django log file (a record line and its traceback).
fn records(log: &str) -> Vec<String> {
    let starts_record =
        |line: &str| line.len() > 23 && line.as_bytes()[4] == b'-' && line.as_bytes()[19] == b',';
    let mut out: Vec<String> = Vec::new();
    for line in log.lines() {
        match out.last_mut() {
            Some(record) if !starts_record(line) => {
                record.push('\n');
                record.push_str(line);
            }
            _ => out.push(line.to_string()),
        }
    }
    out
}

/// The wall time of a record's `asctime` (Python logs local time).
fn logged_at(record: &str) -> SystemTime {
    let naive = chrono::NaiveDateTime::parse_from_str(&record[..23], "%Y-%m-%d %H:%M:%S,%3f")
        .expect("an asctime");
    let local = naive
        .and_local_timezone(chrono::Local)
        .single()
        .expect("an unambiguous local time");
    SystemTime::from(local)
}

fn runbook(kind: EngineKind, logs: Logs, restore_by: RestoreBy) -> Figures {
    let ws = Workspace::new();
    let db = TestDb::create(kind, "e2e");
    let project = ws.path().join("project");
    copy_project(&project);
    let django = |args: &[&str]| django_at(&project, &db.url, args);
    // The previous release: its migrations applied, real data in.
    let held = ws.path().join("release");
    std::fs::create_dir_all(&held).unwrap();
    let release: Vec<(PathBuf, PathBuf)> = release_files(&project)
        .into_iter()
        .map(|file| {
            let aside = held.join(format!(
                "{}-{}",
                file.parent()
                    .unwrap()
                    .parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy(),
                file.file_name().unwrap().to_string_lossy()
            ));
            std::fs::rename(&file, &aside).unwrap();
            (aside, file)
        })
        .collect();
    assert!(release.len() >= 14, "{release:?}");
    for [app, name] in BEFORE_RELEASE {
        django(&["manage.py", "migrate", app, name, "-v0"]);
    }
    django(&["seed.py"]);
    let at_risk: Vec<&str> = AT_RISK
        .iter()
        .copied()
        .chain(["legacy_importbatch:checksum"])
        .collect();
    let before = dump_at(&project, &db.url, &at_risk);
    for spec in &at_risk {
        let rows = before[spec].as_array().map_or(0, Vec::len);
        assert!(rows > 0, "{kind:?}: {spec} was not seeded");
    }

    let slack = Receiver::start(|_| Reply::status(200));
    let log = ws.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let kafka = (logs == Logs::Kafka).then(|| crate::kafka::MockKafka::start(&[("app-logs", 2)]));
    let logs_config = match &kafka {
        None => format!(
            "[[logs.file]]\npath = \"{}\"\nread_from = \"beginning\"\nmultiline_timeout = \"300ms\"\npoll_interval = \"200ms\"",
            log.display()
        ),
        Some(kafka) => format!(
            "[[logs.kafka]]\nbrokers = \"{}\"\ntopic = \"app-logs\"\ngroup_id = \"dropguard-e2e\"\nauto_offset_reset = \"earliest\"\nformat = \"json\"",
            kafka.bootstrap
        ),
    };
    let rollback = format!(
        "env DROPGUARD_TEST_DATABASE_URL={} PYTHONDONTWRITEBYTECODE=1 {} manage.py migrate {{app}} {{previous}}",
        db.url,
        python().display()
    );
    let config = ws.write_config(&format!(
        r#"
environment = "e2e"
[database]
url = "{url}"
[django]
project_dir = "{project}"
auth_user_model = "accounts.User"
[state]
dir = "{state}"
{logs_config}
[deploys]
poll_interval = "200ms"
[detect]
window = "60s"
min_errors = 5
[alerts.slack]
webhook_url = "{slack}"
[restore]
mode = "approve"
rollback_command = '''{rollback}'''
[server]
listen = "127.0.0.1:{port}"
api_token = "{TOKEN}"
grace_period = "5s"
"#,
        url = db.url,
        project = project.display(),
        state = ws.path().join("state").display(),
        slack = slack.url("/services/T0/B0/E2E"),
        port = free_port(),
    ));
    let daemon = Daemon::start(&config);
    daemon.wait_ready();

    // The release lands, code first: dropguard preserves before migrate runs.
    let landed = Instant::now();
    for (aside, file) in &release {
        std::fs::rename(aside, file).unwrap();
    }
    let snapshots: Vec<(String, String)> = wait_for(
        "a complete snapshot of every destructive migration",
        Duration::from_secs(60),
        || {
            let (_, body) = daemon.get("/api/v1/snapshots");
            let listed: Value = serde_json::from_str(&body).ok()?;
            let complete: Vec<(String, String)> = listed
                .as_array()?
                .iter()
                .filter(|s| s["complete"] == true)
                .map(|s| {
                    (
                        s["migration"].as_str().unwrap_or_default().to_string(),
                        s["id"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            PRESERVED
                .iter()
                .all(|m| complete.iter().any(|(c, _)| c == m))
                .then_some(complete)
        },
    );
    let preserved = landed.elapsed();
    let pending = django(&["manage.py", "showmigrations", "catalog"]);
    assert!(
        pending.contains("[ ] 0016_remove_product_brand"),
        "{pending}"
    );

    django(&["manage.py", "migrate", "-v0"]);
    wait_for("the deploy", Duration::from_secs(20), || {
        let (_, metrics) = daemon.get("/metrics");
        metrics
            .lines()
            .any(|l| {
                l.starts_with(r#"dropguard_deploys_total{origin="django_migrations"}"#)
                    && !l.ends_with(" 0")
            })
            .then_some(())
    });

    // The old replica fails on every dropped object it still reads.
    django(&[
        "old_replica.py",
        &log.display().to_string(),
        "release",
        "1",
        "0.05",
    ]);
    let written = std::fs::read_to_string(&log).unwrap();
    let errors: Vec<String> = records(&written)
        .into_iter()
        .filter(|r| r.contains(" ERROR django.request "))
        .collect();
    assert_eq!(errors.len(), NAMED.len(), "{written}");
    // When the first error reached where dropguard reads it: written to the
    // file, or (Kafka) handed to the broker by the shipper.
    let mut first_error = logged_at(&errors[0]);
    if let Some(kafka) = &kafka {
        first_error = SystemTime::now();
        // The log shipper: one JSON message per record, traceback included.
        for record in &errors {
            let message = serde_json::json!({
                "time": chrono::DateTime::<chrono::Utc>::from(logged_at(record)).to_rfc3339(),
                "level": "ERROR",
                "logger": "django.request",
                "message": record,
            });
            crate::harness::block_on(kafka.produce("app-logs", None, &message.to_string(), None));
        }
    }
    let alert = wait_for("the alert", Duration::from_secs(30), || {
        slack.accepted().into_iter().next()
    });
    let alerted_at = SystemTime::now() - alert.at.elapsed();
    let alerted = alerted_at
        .duration_since(first_error)
        .unwrap_or(Duration::ZERO);
    let incidents: Value = serde_json::from_str(&daemon.get("/api/v1/incidents").1).unwrap();
    let incidents = incidents.as_array().unwrap();
    assert_eq!(
        incidents.len(),
        1,
        "one deploy, one incident: {incidents:#?}"
    );
    let incident = &incidents[0];
    let id = incident["id"].as_str().unwrap().to_string();
    assert!(alert.body.contains(&id), "{}", alert.body);
    for named in [
        "catalog_product.brand_code",
        "catalog.0016_remove_product_brand",
    ] {
        assert!(
            alert.body.contains(named),
            "{named} missing: {}",
            alert.body
        );
    }
    // Every error ties to its dropped object, once the log is read through.
    let tied = wait_for("every error tied", Duration::from_secs(20), || {
        let (_, body) = daemon.get(&format!("/api/v1/incidents/{id}"));
        let now: Value = serde_json::from_str(&body).ok()?;
        (now["errors"].as_u64() == Some(NAMED.len() as u64)).then_some(now)
    });
    let objects = serde_json::to_string(&tied["objects"]).unwrap();
    for named in NAMED {
        let (table, column) = named.split_once('.').unwrap_or((named, ""));
        assert!(
            objects.contains(&format!("\"table\":\"{table}\""))
                && (column.is_empty() || objects.contains(&format!("\"column\":\"{column}\""))),
            "{named} not among the incident's objects: {objects}"
        );
    }

    // Roll back and put the data back.
    match restore_by {
        RestoreBy::Cli => {
            for [app, name] in BEFORE_RELEASE.iter().rev() {
                django(&["manage.py", "migrate", app, name, "-v0"]);
            }
            for (migration, snapshot) in &snapshots {
                let report = json_ok(&ws, &["restore", "--snapshot", snapshot, "--json"]);
                for object in report["objects"].as_array().unwrap() {
                    assert_eq!(object["conflicts"], 0, "{migration}: {object}");
                    assert_eq!(object["missing"], 0, "{migration}: {object}");
                }
            }
        }
        RestoreBy::Approval => {
            let approved = ws.run(&["incidents", "approve", &id]);
            assert_eq!(
                approved.status.code(),
                Some(0),
                "{}\n{}",
                stdout(&approved),
                stderr(&approved)
            );
            wait_for("the resolved message", Duration::from_secs(20), || {
                (slack.accepted().len() >= 2).then_some(())
            });
            let messages = slack.accepted();
            assert!(
                messages[1].body.contains("Restored"),
                "{}",
                messages[1].body
            );
        }
    }
    assert_eq!(
        dump_at(&project, &db.url, &at_risk),
        before,
        "{kind:?}: the data after the restore differs from the pre-release data"
    );
    // A second restore changes nothing.
    for (migration, snapshot) in &snapshots {
        let report = json_ok(&ws, &["restore", "--snapshot", snapshot, "--json"]);
        for object in report["objects"].as_array().unwrap() {
            assert_eq!(object["written"], 0, "{migration}: {object}");
        }
    }
    assert_eq!(dump_at(&project, &db.url, &at_risk), before);
    let alerts = slack.accepted();
    let expected = if restore_by == RestoreBy::Approval {
        2
    } else {
        1
    };
    assert_eq!(
        alerts.len(),
        expected,
        "{:#?}",
        alerts.iter().map(|a| &a.body).collect::<Vec<_>>()
    );

    let stopped = daemon.terminate(Duration::from_secs(15));
    assert!(stopped.status.success(), "{:?}", stopped.status);
    let figures = Figures { preserved, alerted };
    println!(
        "e2e {kind:?} logs={logs:?} restore={restore_by:?}: release files to snapshots complete {:.2} s; first error line to alert {:.3} s",
        figures.preserved.as_secs_f64(),
        figures.alerted.as_secs_f64()
    );
    figures
}

#[test]
fn e2e_sqlite_logs_from_a_file_restored_by_the_cli() {
    runbook(EngineKind::Sqlite, Logs::File, RestoreBy::Cli);
}

#[test]
fn e2e_postgres_logs_from_a_file_restored_by_an_approval() {
    runbook(EngineKind::Postgres, Logs::File, RestoreBy::Approval);
}

#[test]
fn e2e_mariadb_logs_from_a_file_restored_by_an_approval() {
    runbook(EngineKind::Mysql, Logs::File, RestoreBy::Approval);
}

#[test]
fn e2e_sqlite_logs_through_kafka_restored_by_an_approval() {
    runbook(EngineKind::Sqlite, Logs::Kafka, RestoreBy::Approval);
}
