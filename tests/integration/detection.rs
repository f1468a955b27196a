//! The runbook's monitoring step on a real Django app: `dropguard run` beside the
//! fixture project, its log written by an "old replica" (the previous release's
//! models, Django's own logging of the exceptions), the deploy seen in
//! `django_migrations`, the incident read back through the API.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::django_support::{django, django_project};
use crate::harness::{Daemon, EngineKind, TestDb, Workspace, free_port, stderr, stdout};

const MIGRATION: &str = "catalog.0016_remove_product_brand";

fn config(ws: &Workspace, db: &TestDb, log: &Path, auto_preserve: bool) -> std::path::PathBuf {
    config_with(ws, db, log, auto_preserve, "")
}

/// The configuration with `extra` TOML appended; a `[server]` table in `extra`
/// replaces the default one (a free port).
fn config_with(
    ws: &Workspace,
    db: &TestDb,
    log: &Path,
    auto_preserve: bool,
    extra: &str,
) -> std::path::PathBuf {
    ws.write_config(&format!(
        r#"
environment = "test"
[database]
url = "{url}"
[django]
project_dir = "{project}"
[state]
dir = "{state}"
[[logs.file]]
path = "{log}"
read_from = "beginning"
multiline_timeout = "300ms"
poll_interval = "200ms"
[deploys]
poll_interval = "200ms"
[preserve]
auto = {auto_preserve}
[detect]
window = "60s"
min_errors = 5
{server}
{extra}
"#,
        server = if extra.contains("[server]") {
            ""
        } else {
            "[server]\nlisten = \"127.0.0.1:0\"\ngrace_period = \"5s\""
        },
        url = db.url,
        project = django_project().display(),
        state = ws.path().join("state").display(),
        log = log.display(),
    ))
}

fn incidents(daemon: &Daemon) -> Vec<Value> {
    let (status, body) = daemon.get("/api/v1/incidents");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .expect("incidents JSON")
        .as_array()
        .expect("an array")
        .clone()
}

/// The value of one series on /metrics (0 when absent).
fn metric(daemon: &Daemon, series: &str) -> f64 {
    let (_, body) = daemon.get("/metrics");
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn old_replica(db: &TestDb, log: &Path, kind: &str, count: usize) {
    django(
        &db.url,
        &[
            "old_replica.py",
            &log.display().to_string(),
            kind,
            &count.to_string(),
            "0.05",
        ],
    );
}

/// The fixture project migrated to catalog 0015 (0016 drops
/// `catalog_product.brand_code`) and seeded.
fn seeded_before_the_drop(db: &TestDb) {
    django(&db.url, &["manage.py", "migrate", "-v0"]);
    django(&db.url, &["manage.py", "migrate", "catalog", "0015", "-v0"]);
    django(&db.url, &["seed.py"]);
}

/// The fixture project seeded at catalog 0015, dropguard running beside it with
/// `extra` config, and the pending drop (0016) preserved by dropguard on its own,
/// before migrate runs.
fn before_the_drop(ws: &Workspace, db: &TestDb, log: &Path, extra: &str) -> Daemon {
    seeded_before_the_drop(db);
    fs::write(log, "").unwrap();
    let daemon = Daemon::start(&config_with(ws, db, log, true, extra));
    daemon.wait_ready();
    wait_until(
        "the automatic snapshot of 0016",
        Duration::from_secs(30),
        || {
            let listed = ws.run(&["snapshots", "list", "--json"]);
            let snapshots: Value = serde_json::from_slice(&listed.stdout).unwrap_or(Value::Null);
            snapshots.as_array().is_some_and(|list| {
                list.iter()
                    .any(|s| s["migration"] == MIGRATION && s["complete"] == true)
            })
        },
    );
    daemon
}

/// `manage.py migrate catalog 0016` (the drop), and the daemon seeing it as a
/// deploy in `django_migrations`.
fn migrate_the_drop(daemon: &Daemon, db: &TestDb) {
    django(&db.url, &["manage.py", "migrate", "catalog", "0016", "-v0"]);
    wait_until("the deploy", Duration::from_secs(20), || {
        metric(
            daemon,
            r#"dropguard_deploys_total{origin="django_migrations"}"#,
        ) >= 1.0
    });
}

fn errors_of_an_old_replica_open_one_incident_naming_the_dropped_column(kind: EngineKind) {
    let ws = Workspace::new();
    let db = TestDb::create(kind, "detect");
    let log = ws.path().join("app.log");
    let daemon = before_the_drop(&ws, &db, &log, "");

    // Before the deploy: the app's ordinary errors, at the rate the old replica
    // will fail at later.
    old_replica(&db, &log, "ordinary", 10);
    let events = r#"dropguard_source_events_total{source=""#;
    wait_until("the ordinary errors read", Duration::from_secs(20), || {
        metric(&daemon, &format!("{events}{}\"}}", log.display())) >= 10.0
    });
    assert!(
        incidents(&daemon).is_empty(),
        "ordinary errors opened an incident"
    );

    migrate_the_drop(&daemon, &db);
    assert!(
        incidents(&daemon).is_empty(),
        "a preserved migration opened an incident by itself"
    );

    // The old replica still selects the dropped column; the app's other errors go on.
    old_replica(&db, &log, "ordinary", 10);
    old_replica(&db, &log, "brand", 8);
    wait_until("the incident", Duration::from_secs(20), || {
        incidents(&daemon)
            .first()
            .is_some_and(|i| i["errors"].as_u64() == Some(8))
    });
    let listed = incidents(&daemon);
    assert_eq!(listed.len(), 1, "one incident per deploy: {listed:#?}");
    let incident = &listed[0];
    assert_eq!(incident["state"], "open");
    assert_eq!(incident["triggers"], serde_json::json!(["errors"]));
    let objects = incident["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{objects:#?}");
    assert_eq!(objects[0]["table"], "catalog_product");
    assert_eq!(objects[0]["column"], "brand_code");
    assert_eq!(objects[0]["migration"], MIGRATION);
    assert_eq!(objects[0]["errors"], 8);
    let headline = incident["headline"].as_str().unwrap();
    assert!(
        headline.contains("catalog_product.brand_code") && headline.contains(MIGRATION),
        "{headline}"
    );
    let migration = &incident["deploy"]["migrations"][0];
    assert_eq!(migration["migration"], MIGRATION);
    assert_eq!(
        migration["rollback_command"],
        "python manage.py migrate catalog 0015_delete_digitalproduct"
    );
    assert!(migration["snapshot"]["id"].is_string(), "{migration:#?}");
    let sample = incident["samples"][0]["text"].as_str().unwrap();
    assert!(
        sample.contains("no such column")
            || sample.contains("Unknown column")
            || sample.contains("does not exist"),
        "{sample}"
    );
    let correlated = format!(
        r#"dropguard_correlated_errors_total{{column="brand_code",migration="{MIGRATION}",table="catalog_product"}}"#
    );
    assert_eq!(metric(&daemon, &correlated), 8.0);
    assert_eq!(metric(&daemon, r#"dropguard_incidents{state="open"}"#), 1.0);

    // A restart keeps it, and the journal is what the CLI reads.
    let id = incident["id"].as_str().unwrap().to_string();
    let stopped = daemon.terminate(Duration::from_secs(10));
    assert!(stopped.status.success());
    let daemon = Daemon::start(&config(&ws, &db, &log, true));
    daemon.wait_ready();
    let again = incidents(&daemon);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["id"], id.as_str());
    assert_eq!(again[0]["errors"], 8);
    // The deploy is still watched: new errors grow the same incident.
    old_replica(&db, &log, "brand", 2);
    wait_until(
        "the incident to grow after the restart",
        Duration::from_secs(20),
        || {
            incidents(&daemon)
                .first()
                .is_some_and(|i| i["errors"].as_u64() == Some(10))
        },
    );
    assert_eq!(incidents(&daemon).len(), 1);
}

#[test]
fn sqlite_errors_of_an_old_replica_open_one_incident_naming_the_dropped_column() {
    errors_of_an_old_replica_open_one_incident_naming_the_dropped_column(EngineKind::Sqlite);
}

#[test]
fn mariadb_errors_of_an_old_replica_open_one_incident_naming_the_dropped_column() {
    errors_of_an_old_replica_open_one_incident_naming_the_dropped_column(EngineKind::Mysql);
}

#[test]
fn a_drop_applied_before_its_snapshot_opens_an_incident_at_once() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "unpreserved");
    seeded_before_the_drop(&db);
    let log = ws.path().join("app.log");
    fs::write(&log, "").unwrap();
    let daemon = Daemon::start(&config(&ws, &db, &log, false));
    daemon.wait_ready();
    django(&db.url, &["manage.py", "migrate", "catalog", "0016", "-v0"]);
    wait_until("the incident", Duration::from_secs(20), || {
        !incidents(&daemon).is_empty()
    });
    let listed = incidents(&daemon);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["triggers"], serde_json::json!(["unpreserved"]));
    let headline = listed[0]["headline"].as_str().unwrap();
    assert!(
        headline.contains("without preservation")
            && headline.contains("catalog_product.brand_code"),
        "{headline}"
    );
    assert_eq!(
        metric(
            &daemon,
            r#"dropguard_incidents_opened_total{trigger="unpreserved"}"#
        ),
        1.0
    );
}

#[test]
fn replay_with_a_deploy_names_the_incident_that_would_have_opened() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "replay");
    seeded_before_the_drop(&db);
    let log = ws.path().join("app.log");
    config(&ws, &db, &log, true);
    let preserved = ws.run(&["preserve", "--migration", MIGRATION]);
    assert!(
        preserved.status.success(),
        "{}",
        crate::harness::stderr(&preserved)
    );
    old_replica(&db, &log, "ordinary", 10);
    old_replica(&db, &log, "brand", 3);
    django(&db.url, &["manage.py", "migrate", "catalog", "0016", "-v0"]);
    std::thread::sleep(Duration::from_millis(20));
    let deployed = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_millis(20));
    old_replica(&db, &log, "ordinary", 10);
    old_replica(&db, &log, "brand", 6);

    let replay = |deploy: &str| -> Value {
        let output = ws.run(&[
            "replay",
            "--json",
            &log.display().to_string(),
            "--deploy",
            &format!("{MIGRATION}@{deploy}"),
        ]);
        assert!(
            output.status.success(),
            "{}",
            crate::harness::stderr(&output)
        );
        serde_json::from_slice(&output.stdout).expect("replay JSON")
    };
    let report = replay(&deployed);
    let incidents = report["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    // Only the errors after the deploy are its doing.
    assert_eq!(incidents[0]["errors"], 6);
    assert_eq!(incidents[0]["triggers"], serde_json::json!(["errors"]));
    assert_eq!(incidents[0]["objects"][0]["column"], "brand_code");
    assert_eq!(
        incidents[0]["deploy"]["migrations"][0]["migration"],
        MIGRATION
    );
    assert_eq!(report["untimed"], 0);

    // A deploy after all of it: nothing to tie.
    let later = (chrono::Utc::now() + chrono::Duration::minutes(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(replay(&later)["incidents"], serde_json::json!([]));
}

#[test]
fn an_incident_is_alerted_once_on_slack_with_the_object_the_migration_and_the_rollback() {
    let slack = crate::alerts::Receiver::start(|_| crate::alerts::Reply::status(200));
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "alert");
    let log = ws.path().join("app.log");
    let extra = format!(
        "[alerts.slack]\nwebhook_url = \"{}\"\n",
        slack.url("/services/T0/B0/SECRET")
    );
    let daemon = before_the_drop(&ws, &db, &log, &extra);
    migrate_the_drop(&daemon, &db);
    old_replica(&db, &log, "brand", 6);
    wait_until("the Slack message", Duration::from_secs(30), || {
        !slack.accepted().is_empty()
    });
    wait_until(
        "the incident to be alerted",
        Duration::from_secs(10),
        || {
            incidents(&daemon)
                .first()
                .is_some_and(|i| i["state"] == "alerted")
        },
    );
    // More errors grow the incident; they are not alerted again in this release.
    std::thread::sleep(Duration::from_millis(1500));
    let seen = slack.seen();
    assert_eq!(seen.len(), 1, "one message per state change: {seen:#?}");
    assert_eq!(seen[0].path, "/services/T0/B0/SECRET");
    let message: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert!(message["text"].is_string(), "{message:#}");
    let shown = message["blocks"].to_string();
    for expected in [
        "`catalog_product.brand_code` — ",
        MIGRATION,
        "python manage.py migrate catalog 0015_delete_digitalproduct",
    ] {
        assert!(
            shown.contains(expected),
            "{expected} missing from {message:#}"
        );
    }
    let incident = &incidents(&daemon)[0];
    assert_eq!(
        incident["history"].as_array().unwrap().last().unwrap()["state"],
        "alerted"
    );
    assert_eq!(
        metric(&daemon, r#"dropguard_alerts_sent_total{receiver="slack"}"#),
        1.0
    );
    let (_, metrics) = daemon.get("/metrics");
    assert!(
        !metrics.contains("SECRET"),
        "the webhook path leaked into /metrics"
    );
    assert_eq!(
        metric(&daemon, r#"dropguard_incidents{state="alerted"}"#),
        1.0
    );
    let stopped = daemon.terminate(Duration::from_secs(10));
    assert!(stopped.status.success());
    assert!(
        stopped.logs.iter().all(|line| !line.contains("SECRET")),
        "the webhook path leaked into the log"
    );
}

/// Issue 7's "done": an incident on the real Django app reaches a
/// Slack-compatible receiver; an approval runs the rollback command, brings the
/// data back exactly and posts the resolved message. The first approval fails
/// (the rollback command is not allowed to run yet) and the second resumes at
/// the failed step.
#[test]
fn an_approval_rolls_back_restores_the_data_and_posts_the_resolved_message() {
    const TOKEN: &str = "approve-t0ken";
    let slack = crate::alerts::Receiver::start(|_| crate::alerts::Reply::status(200));
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "approve");
    let log = ws.path().join("app.log");
    let allowed = ws.path().join("rollback-allowed");
    // Through a shell on purpose (`sh -c`, as an operator would write it): the
    // rollback fails until the flag file exists.
    let rollback = format!(
        r#"sh -c 'if ! test -f {allowed}; then echo rollback not allowed yet >&2; exit 3; fi; exec env DROPGUARD_TEST_DATABASE_URL={url} {python} manage.py migrate "$0" "$1"' {{app}} {{previous}}"#,
        allowed = allowed.display(),
        url = db.url,
        python = crate::django_support::python().display(),
    );
    let extra = format!(
        r#"
[alerts.slack]
webhook_url = "{slack}"
[restore]
mode = "approve"
rollback_command = '''{rollback}'''
[server]
listen = "127.0.0.1:{port}"
grace_period = "5s"
api_token = "{TOKEN}"
"#,
        slack = slack.url("/services/T0/B0/SECRET"),
        port = free_port(),
    );
    let daemon = before_the_drop(&ws, &db, &log, &extra);
    let before = django(&db.url, &["dump.py", "catalog_product:brand_code"]);
    assert!(before.contains("brand_code"), "{before}");

    migrate_the_drop(&daemon, &db);
    old_replica(&db, &log, "brand", 8);
    wait_until("the alert", Duration::from_secs(20), || {
        !slack.accepted().is_empty()
    });
    let id = incidents(&daemon)[0]["id"].as_str().unwrap().to_string();
    let alert = &slack.accepted()[0].body;
    assert!(
        alert.contains("catalog_product") && alert.contains(MIGRATION),
        "{alert}"
    );

    // Without the token the approval is refused; with it, the first run stops
    // at the rollback, named, with the command's output kept.
    let refused = daemon.request("POST", &format!("/api/v1/incidents/{id}/restore"), &[], b"");
    assert_eq!(refused.status, 401, "{}", refused.body);
    let first = ws.run(&["incidents", "approve", &id]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let said = stdout(&first);
    assert!(
        said.contains("The restore stopped") && said.contains("exited with code 3"),
        "{said}"
    );
    let (_, body) = daemon.get(&format!("/api/v1/incidents/{id}"));
    let failed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(failed["state"], "restoring");
    assert_eq!(failed["restore"]["status"], "failed");
    let step = &failed["restore"]["steps"][0];
    assert_eq!(step["step"], "rollback");
    assert_eq!(step["status"], "failed");
    assert_eq!(step["command"]["exit_code"], 3);
    assert!(
        step["command"]["output"]
            .as_str()
            .unwrap()
            .contains("rollback not allowed yet"),
        "{step:#}"
    );

    // Allowed now: the same approval resumes at the rollback and finishes.
    fs::write(&allowed, "").unwrap();
    let second = ws.run(&["incidents", "approve", &id]);
    let said = stdout(&second);
    assert_eq!(second.status.code(), Some(0), "{said}\n{}", stderr(&second));
    for wanted in [
        "rollback of catalog.0016_remove_product_brand",
        "schema check",
        "restore of catalog_product.brand_code",
        "verification",
        "notification",
        "restored: the data is back and verified",
    ] {
        assert!(said.contains(wanted), "{wanted:?} missing from:\n{said}");
    }
    assert_eq!(
        django(&db.url, &["dump.py", "catalog_product:brand_code"]),
        before,
        "the data after the restore differs from before the release"
    );
    let (_, body) = daemon.get(&format!("/api/v1/incidents/{id}"));
    let restored: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(restored["state"], "restored");
    assert_eq!(restored["restore"]["status"], "done");
    let steps = restored["restore"]["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["status"] == "done"), "{steps:#?}");
    assert!(
        steps[0]["command"]["output"]
            .as_str()
            .unwrap()
            .contains("Unapplying catalog.0016_remove_product_brand"),
        "{:#}",
        steps[0]
    );
    let object = steps.iter().find(|s| s["step"] == "restore").unwrap();
    assert_eq!(object["rows"]["conflicts"], 0);
    assert_eq!(object["rows"]["verification"], "checksum");
    assert_eq!(
        metric(&daemon, r#"dropguard_restores_total{outcome="restored"}"#),
        1.0
    );
    assert_eq!(
        metric(&daemon, r#"dropguard_restores_total{outcome="failed"}"#),
        1.0
    );

    // Slack hears that it is restored, once.
    wait_until("the resolved message", Duration::from_secs(20), || {
        slack.accepted().len() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let messages = slack.accepted();
    assert_eq!(
        messages.len(),
        2,
        "{:#?}",
        messages.iter().map(|m| &m.body).collect::<Vec<_>>()
    );
    assert!(
        messages[1].body.contains("Restored"),
        "{}",
        messages[1].body
    );
    assert!(!messages[1].body.contains(TOKEN));

    // A restored incident is final.
    let again = ws.run(&["incidents", "approve", &id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already restored"),
        "{}",
        stderr(&again)
    );
}

/// `restore.mode = "auto"`: the restore starts when the incident opens. The
/// daemon is killed (SIGKILL) while the rollback command runs; the next start
/// resumes at that step, and the data comes back exactly, announced once.
#[test]
fn auto_mode_restores_on_its_own_and_resumes_after_a_kill() {
    let slack = crate::alerts::Receiver::start(|_| crate::alerts::Reply::status(200));
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "auto");
    let log = ws.path().join("app.log");
    // Slow enough to be killed in the middle of.
    let rollback = format!(
        r#"sh -c 'sleep 2; exec env DROPGUARD_TEST_DATABASE_URL={url} {python} manage.py migrate "$0" "$1"' {{app}} {{previous}}"#,
        url = db.url,
        python = crate::django_support::python().display(),
    );
    let extra = format!(
        r#"
[alerts.slack]
webhook_url = "{slack}"
[restore]
mode = "auto"
rollback_command = '''{rollback}'''
"#,
        slack = slack.url("/services/T0/B0/SECRET"),
    );
    let daemon = before_the_drop(&ws, &db, &log, &extra);
    let before = django(&db.url, &["dump.py", "catalog_product:brand_code"]);
    migrate_the_drop(&daemon, &db);
    old_replica(&db, &log, "brand", 8);
    wait_until("the rollback to start", Duration::from_secs(20), || {
        incidents(&daemon).first().is_some_and(|i| {
            i["state"] == "restoring" && i["restore"]["steps"][0]["status"] == "running"
        })
    });
    let id = incidents(&daemon)[0]["id"].as_str().unwrap().to_string();
    drop(daemon); // SIGKILL, mid-rollback

    let daemon = Daemon::start(&config_with(&ws, &db, &log, true, &extra));
    daemon.wait_ready();
    // The incident turns `restored` in the run's last step, a moment before the
    // run itself is marked done: wait for both.
    wait_until("the resumed restore", Duration::from_secs(60), || {
        incidents(&daemon)
            .first()
            .is_some_and(|i| i["state"] == "restored" && i["restore"]["status"] == "done")
    });
    let (_, body) = daemon.get(&format!("/api/v1/incidents/{id}"));
    let restored: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(restored["restore"]["status"], "done", "{restored:#}");
    assert_eq!(restored["restore"]["requested_by"], "auto");
    assert_eq!(
        django(&db.url, &["dump.py", "catalog_product:brand_code"]),
        before,
        "the data after the restore differs from before the release"
    );
    let states: Vec<&str> = restored["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["open", "alerted", "restoring", "restored"]);

    wait_until("the resolved message", Duration::from_secs(20), || {
        slack.accepted().len() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let bodies: Vec<String> = slack.accepted().into_iter().map(|m| m.body).collect();
    assert_eq!(bodies.len(), 2, "one alert, one follow-up: {bodies:#?}");
    assert!(bodies[1].contains("Restored"), "{}", bodies[1]);
}

/// Issue 17, item 2: text any client can make the app log (a URL in Django's
/// own `Not Found` warning, a search quoted at INFO) named the dropped column,
/// opened incidents, and with `restore.mode = "auto"` ran the rollback. Now
/// only errors count; and an incident opened by error lines that carry no
/// traceback of the database's (an app logging a client's input as an error)
/// waits for an approval even in auto mode. The old replica's real tracebacks
/// then start the rollback on their own, as before.
#[test]
fn forged_log_lines_open_nothing_and_never_start_an_automatic_rollback() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "forged");
    let log = ws.path().join("app.log");
    let marker = ws.path().join("rolled-back");
    let extra = format!(
        "[restore]\nmode = \"auto\"\nrollback_command = \"touch {}\"\n",
        marker.display()
    );
    let daemon = before_the_drop(&ws, &db, &log, &extra);
    migrate_the_drop(&daemon, &db);
    let events = format!(
        r#"dropguard_source_events_total{{source="{}"}}"#,
        log.display()
    );

    old_replica(&db, &log, "forged", 10);
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(
            "WARNING django.request Not Found: /no such column: catalog_product.brand_code"
        ),
        "Django logged the request differently: {text}"
    );
    wait_until("the forged lines read", Duration::from_secs(20), || {
        metric(&daemon, &events) >= 20.0
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        incidents(&daemon).is_empty(),
        "forged lines opened an incident: {:#?}",
        incidents(&daemon)
    );

    // Errors by their level open an incident, but no automatic rollback.
    old_replica(&db, &log, "forged_error", 6);
    wait_until("the incident", Duration::from_secs(20), || {
        incidents(&daemon)
            .first()
            .is_some_and(|i| i["errors"].as_u64() == Some(6))
    });
    std::thread::sleep(Duration::from_secs(1));
    let incident = &incidents(&daemon)[0];
    assert_eq!(incident["traceback_errors"], 0, "{incident:#}");
    assert!(incident["restore"].is_null(), "{incident:#}");
    assert!(
        !marker.exists(),
        "the rollback command ran on error lines a client can forge"
    );

    // The database's own errors, in the tracebacks Django logs, start it.
    old_replica(&db, &log, "brand", 5);
    wait_until("the automatic rollback", Duration::from_secs(20), || {
        marker.exists()
    });
    let incident = &incidents(&daemon)[0];
    assert_eq!(incident["traceback_errors"], 5, "{incident:#}");
    assert_eq!(incident["restore"]["requested_by"], "auto", "{incident:#}");
}

/// Issue 17, item 5: a deploy whose snapshot was still being looked for (up to
/// 15 s with `preserve.auto`) held the detection task past the grace period at
/// SIGTERM; the daemon exited with the deploy never resolved and the incident
/// it opens never journaled, and its events were not read again after the
/// restart. Now the look ends at shutdown: the deploy resolves as it stands
/// and its incident is journaled within the grace period.
#[test]
fn a_deploy_being_resolved_at_sigterm_is_journaled_within_the_grace_period() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "sigterm");
    let log = ws.path().join("app.log");
    let daemon = before_the_drop(&ws, &db, &log, "");
    // Applied before dropguard ran, so nothing preserved it: resolving it looks
    // for its snapshot again for up to 15 s.
    let unpreserved = "catalog.0015_delete_digitalproduct";
    let reply = daemon.request(
        "POST",
        "/api/v1/deploys",
        &[("Content-Type", "application/json")],
        format!(r#"{{"migrations": ["{unpreserved}"]}}"#).as_bytes(),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let stopped = daemon.terminate(Duration::from_secs(30));
    assert!(stopped.status.success(), "{:?}", stopped.status);
    assert!(
        stopped.took < Duration::from_secs(5),
        "SIGTERM took {:?} with a 5 s grace period",
        stopped.took
    );
    let listed = ws.run(&["incidents", "list", "--json"]);
    let journaled: Value = serde_json::from_slice(&listed.stdout).unwrap_or(Value::Null);
    let journaled = journaled.as_array().cloned().unwrap_or_default();
    assert_eq!(journaled.len(), 1, "{}", stdout(&listed));
    assert_eq!(
        journaled[0]["triggers"][0], "unpreserved",
        "{:#}",
        journaled[0]
    );
    assert!(
        !stopped.logs.iter().any(|l| l.contains("panicked")),
        "{:#?}",
        stopped.logs
    );
}

/// Issue 17, item 6: samples carried `Authorization: Token X`, `('password', 'X')`,
/// `passwd X` and the end of `password: 'a b'` to Slack and the API. Through the
/// daemon, the incident's samples hide each while keeping the column the error names.
#[test]
fn incident_samples_hide_secrets_in_every_usual_form_and_keep_the_missing_column() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "samples");
    let log = ws.path().join("app.log");
    fs::write(&log, "").unwrap();
    // The database has no django_migrations: the deploy is announced instead.
    let daemon = Daemon::start(&config_with(&ws, &db, &log, false, ""));
    let deployed = daemon.request(
        "POST",
        "/api/v1/deploys",
        &[("Content-Type", "application/json")],
        format!(r#"{{"migrations": ["{MIGRATION}"]}}"#).as_bytes(),
    );
    assert_eq!(deployed.status, 202, "{}", deployed.body);
    std::thread::sleep(Duration::from_millis(50));
    let secrets = [
        "query-secret-1",
        "tuple-secret-2",
        "pw-secret-3",
        "secret-4",
        "header-secret-5",
        "json-secret-6",
    ];
    let mut text = String::new();
    for _ in 0..5 {
        let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S,%3f");
        text.push_str(&format!(
            "{now} ERROR django.request Internal Server Error: /catalog/?user=bob&password=query-secret-1\n\
             Traceback (most recent call last):\n\
             \x20 File \"/srv/app/catalog/views.py\", line 12, in detail\n\
             \x20   legacy.login(('password', 'tuple-secret-2'), 'cmd: passwd pw-secret-3', \"password: 'spaced secret-4'\")\n\
             \x20 File \"/srv/app/catalog/views.py\", line 19, in fetch\n\
             \x20   requests.get(url, headers={{\"Authorization\": \"Token header-secret-5\"}}, json={{\"api_key\": \"json-secret-6\"}})\n\
             django.db.utils.OperationalError: no such column: catalog_product.brand_code\n"
        ));
    }
    fs::write(&log, text).unwrap();
    wait_until("five samples", Duration::from_secs(20), || {
        incidents(&daemon)
            .first()
            .and_then(|i| i["samples"].as_array().map(Vec::len))
            .is_some_and(|n| n >= 5)
    });
    let (_, body) = daemon.get("/api/v1/incidents");
    for secret in secrets {
        assert!(!body.contains(secret), "{secret} in the API:\n{body}");
    }
    for sample in incidents(&daemon)[0]["samples"].as_array().unwrap() {
        let sample = sample["text"].as_str().unwrap();
        assert!(
            sample.contains("no such column: catalog_product.brand_code")
                && sample.contains("Internal Server Error: /catalog/"),
            "{sample}"
        );
    }
    // The journal, which `incidents show` reads, holds the same masked samples.
    let journal: String = fs::read_dir(ws.path().join("state/incidents"))
        .unwrap()
        .map(|entry| fs::read_to_string(entry.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(journal.contains("catalog_product.brand_code"), "{journal}");
    for secret in secrets {
        assert!(!journal.contains(secret), "{secret} in the journal");
    }
}
