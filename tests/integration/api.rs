//! The HTTP API as CI and scripts use it (`POST /api/v1/deploys`,
//! `GET /api/v1/incidents[/ID]`), and `dropguard incidents list|show` over the
//! same journal.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Daemon, Workspace, stderr, stdout};

const TOKEN: &str = "api-t0ken-never-shown";
const ID: &str = "01JDQ2Z7X3M4N5P6Q7R8S9T0VW";
const UNKNOWN_ID: &str = "01JDQ2Z7X3M4N5P6Q7R8S9T0VX";

fn start(ws: &Workspace, server_extra: &str) -> Daemon {
    let config = ws.sqlite_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ngrace_period = \"3s\"\n{server_extra}"
    ));
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    daemon
}

fn announce(daemon: &Daemon, authorization: Option<&str>, body: &str) -> crate::harness::Reply {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(value) = authorization {
        headers.push(("Authorization", value));
    }
    daemon.request("POST", "/api/v1/deploys", &headers, body.as_bytes())
}

/// An incident as the daemon journals it: every field of the model, filled.
fn incident() -> Value {
    json!({
        "id": ID,
        "state": "alerted",
        "environment": "test",
        "opened_at": "2026-11-25T16:22:38Z",
        "updated_at": "2026-11-25T16:23:05Z",
        "headline": "12 errors naming catalog_item.legacy_code after catalog.0003_retire_legacy_fields",
        "triggers": ["errors"],
        "deploy": {
            "at": "2026-11-25T16:20:00Z",
            "origins": ["django_migrations", "api"],
            "release": "v1.2.3",
            "migrations": [{
                "migration": "catalog.0003_retire_legacy_fields",
                "previous": "0002_item_sku",
                "rollback_command": "python manage.py migrate catalog 0002_item_sku",
                "destructive": true,
                "snapshot": { "id": "20261125T161900Z-catalog.0003_retire_legacy_fields", "rows": 1500 },
                "objects": [{
                    "table": "catalog_item",
                    "columns": ["legacy_code"],
                    "change": "dropped",
                    "migration": "catalog.0003_retire_legacy_fields"
                }]
            }]
        },
        "errors": 12,
        "traceback_errors": 12,
        "objects": [{
            "table": "catalog_item",
            "column": "legacy_code",
            "change": "dropped",
            "migration": "catalog.0003_retire_legacy_fields",
            "errors": 12,
            "first_seen": "2026-11-25T16:22:30Z",
            "last_seen": "2026-11-25T16:23:01Z",
            "sources": ["file:/var/log/app/web.log"]
        }],
        "rates": [{
            "series": "errors in logs",
            "per_second": 0.4,
            "baseline_per_second": 0.01
        }],
        "samples": [{
            "at": "2026-11-25T16:22:30Z",
            "source": "file:/var/log/app/web.log",
            "text": "django.db.utils.ProgrammingError: column catalog_item.legacy_code does not exist"
        }],
        "history": [
            { "at": "2026-11-25T16:22:38Z", "state": "open", "note": "12 errors within 60s" },
            { "at": "2026-11-25T16:23:05Z", "state": "alerted", "note": "sent to slack" }
        ]
    })
}

/// Writes the incident into the journal in its versioned on-disk form.
fn journal(ws: &Workspace, incident: &Value) {
    let dir = ws.path().join("state/incidents");
    std::fs::create_dir_all(&dir).unwrap();
    let mut stored = json!({ "version": "1" });
    stored
        .as_object_mut()
        .unwrap()
        .extend(incident.as_object().unwrap().clone());
    let id = incident["id"].as_str().unwrap();
    std::fs::write(
        dir.join(format!("{id}.json")),
        serde_json::to_vec_pretty(&stored).unwrap(),
    )
    .unwrap();
}

#[test]
fn without_an_api_token_deploys_are_taken_on_loopback_only() {
    // Listening on every address: refused.
    let ws = Workspace::new();
    let config = ws.sqlite_config("[server]\nlisten = \"0.0.0.0:0\"\ngrace_period = \"3s\"\n");
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    let reply = announce(
        &daemon,
        Some("Bearer anything"),
        r#"{"migrations": ["a.b"]}"#,
    );
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.error().contains("server.api_token"), "{}", reply.body);
    drop(daemon);

    // Listening on loopback only (a sidecar's neighbours): taken.
    let ws = Workspace::new();
    let daemon = start(&ws, "");
    let reply = announce(&daemon, None, r#"{"migrations": ["a.b"]}"#);
    assert_eq!(reply.status, 202, "{}", reply.body);
}

#[test]
fn deploys_need_the_bearer_token_and_a_valid_body() {
    let ws = Workspace::new();
    let daemon = start(&ws, &format!("api_token = \"{TOKEN}\"\n"));
    let good = format!("Bearer {TOKEN}");
    let body = r#"{"migrations": ["catalog.0003_retire_legacy_fields"], "release": "v1.2.3", "at": "2026-11-25T16:20:00Z"}"#;

    for authorization in [None, Some("Bearer wrong-token"), Some(TOKEN)] {
        let reply = announce(&daemon, authorization, body);
        assert_eq!(reply.status, 401, "{authorization:?}: {}", reply.body);
        assert_eq!(
            reply.headers.get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer"[..]),
            "{authorization:?}"
        );
        assert!(!reply.body.contains(TOKEN), "{}", reply.body);
    }

    let reply = announce(&daemon, Some(&good), body);
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({ "accepted": true, "migrations": ["catalog.0003_retire_legacy_fields"] })
    );

    let huge = format!(
        r#"{{"migrations": ["a.b"], "release": "{}"}}"#,
        "x".repeat(64 * 1024)
    );
    let reply = announce(&daemon, Some(&good), &huge);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.error().contains("64 KiB"), "{}", reply.body);

    let reply = announce(&daemon, Some(&good), r#"{"migrations": []}"#);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.error().starts_with("migrations:"), "{}", reply.body);

    let reply = announce(
        &daemon,
        Some(&good),
        r#"{"migrations": ["a.b"], "relase": "v1"}"#,
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.error().contains("relase"), "{}", reply.body);

    let reply = daemon.request("GET", "/api/v1/deploys", &[], b"");
    assert_eq!(reply.status, 405, "{}", reply.body);
    assert_eq!(reply.headers["allow"], "POST");

    // The server still answers after the refused bodies.
    assert_eq!(announce(&daemon, Some(&good), body).status, 202);

    let stopped = daemon.terminate(Duration::from_secs(5));
    assert!(stopped.status.success(), "{:?}", stopped.logs);
    let logs = stopped.logs.join("\n");
    assert!(!logs.contains(TOKEN), "the token was logged:\n{logs}");
    assert!(logs.contains("deploy announced over the API"), "{logs}");
}

#[test]
fn incidents_of_a_fresh_daemon_are_none_and_ids_are_checked() {
    let ws = Workspace::new();
    let daemon = start(&ws, "");
    let (status, body) = daemon.get("/api/v1/incidents");
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!([]));

    let reply = daemon.request("GET", &format!("/api/v1/incidents/{UNKNOWN_ID}"), &[], b"");
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert!(reply.error().contains(UNKNOWN_ID), "{}", reply.body);

    let reply = daemon.request("GET", "/api/v1/incidents/..%2F..%2Fetc", &[], b"");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.error().contains("not an incident id"),
        "{}",
        reply.body
    );

    let reply = daemon.request("POST", "/api/v1/incidents", &[], b"");
    assert_eq!(reply.status, 405, "{}", reply.body);
    assert_eq!(reply.headers["allow"], "GET, HEAD");

    let reply = daemon.request("GET", "/api/v1/nothing", &[], b"");
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert!(reply.error().contains("/api/v1/nothing"), "{}", reply.body);
}

#[test]
fn a_journaled_incident_is_served_by_the_api_and_shown_by_the_cli() {
    let ws = Workspace::new();
    let incident = incident();
    journal(&ws, &incident);
    let daemon = start(&ws, "");

    let (status, body) = daemon.get("/api/v1/incidents");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!([incident])
    );
    let (status, body) = daemon.get(&format!("/api/v1/incidents/{}", ID.to_ascii_lowercase()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), incident);

    let output = ws.run(&["incidents", "list", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&output)).unwrap(),
        json!([incident])
    );

    let output = ws.run(&["incidents", "list"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = stdout(&output);
    let row = table
        .lines()
        .find(|line| line.starts_with(ID))
        .unwrap_or_else(|| panic!("no row for {ID}:\n{table}"));
    for wanted in ["alerted", "2026-11-25T16:22:38Z", "12 errors naming"] {
        assert!(row.contains(wanted), "{wanted} missing from {row}");
    }

    let output = ws.run(&["incidents", "show", ID, "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&output)).unwrap(),
        incident
    );

    let output = ws.run(&["incidents", "show", &ID.to_ascii_lowercase()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    for wanted in [
        "12 errors naming catalog_item.legacy_code",
        "alerted",
        "release v1.2.3",
        "catalog.0003_retire_legacy_fields  (destructive)",
        "rollback: python manage.py migrate catalog 0002_item_sku",
        "snapshot: 20261125T161900Z-catalog.0003_retire_legacy_fields (1500 rows)",
        "catalog_item.legacy_code (dropped by catalog.0003_retire_legacy_fields): 12 errors, \
         first 2026-11-25T16:22:30Z, last 2026-11-25T16:23:01Z",
        "column catalog_item.legacy_code does not exist",
        "sent to slack",
    ] {
        assert!(text.contains(wanted), "{wanted:?} missing from:\n{text}");
    }
}

#[test]
fn incidents_show_of_an_unknown_or_invalid_id_exits_1_and_points_to_list() {
    let ws = Workspace::new();
    ws.sqlite_config("");
    let output = ws.run(&["incidents", "list"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("No incidents."),
        "{}",
        stdout(&output)
    );
    let output = ws.run(&["incidents", "list", "--json"]);
    assert_eq!(stdout(&output).trim(), "[]");

    for (id, wanted) in [
        (UNKNOWN_ID, format!("no incident {UNKNOWN_ID}")),
        (
            "../../etc/passwd",
            "\"../../etc/passwd\" is not an incident id".to_string(),
        ),
    ] {
        let output = ws.run(&["incidents", "show", id]);
        assert_eq!(output.status.code(), Some(1), "{id}");
        let err = stderr(&output);
        assert!(err.contains(&wanted), "{id}: {err}");
        assert!(err.contains("dropguard incidents list"), "{id}: {err}");
        assert!(stdout(&output).is_empty(), "{id}");
    }
}

#[test]
fn a_damaged_incident_file_stops_the_daemon_and_is_named() {
    let ws = Workspace::new();
    let dir = ws.path().join("state/incidents");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{ID}.json")), "{ damaged").unwrap();
    ws.sqlite_config("[server]\nlisten = \"127.0.0.1:0\"\n");
    let output = ws.run(&["run"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("loading the incident journal in"), "{err}");
    assert!(err.contains(&format!("{ID}.json")), "{err}");
    assert!(!err.contains("listening"), "no port is bound first: {err}");
}

#[test]
fn an_incident_is_dismissed_through_the_api_and_the_cli_and_its_receivers_told() {
    let slack = crate::alerts::Receiver::start(|_| crate::alerts::Reply::status(200));
    let ws = Workspace::new();
    journal(&ws, &incident());
    // The CLI finds the daemon at server.listen: a fixed free port.
    let port = crate::harness::free_port();
    let config = ws.sqlite_config(&format!(
        "[alerts.slack]\nwebhook_url = \"{}\"\n[server]\nlisten = \"127.0.0.1:{port}\"\napi_token = \"{TOKEN}\"\n",
        slack.url("/services/T0/B0/SECRET")
    ));
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    let path = format!("/api/v1/incidents/{ID}/dismiss");

    let reply = daemon.request("POST", &path, &[], b"");
    assert_eq!(reply.status, 401, "{}", reply.body);
    let reply = daemon.request(
        "POST",
        &format!("/api/v1/incidents/{UNKNOWN_ID}/dismiss"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    );
    assert_eq!(reply.status, 404, "{}", reply.body);

    let output = ws.run(&["incidents", "dismiss", &ID.to_ascii_lowercase()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains(&format!("Incident {ID} dismissed.")));

    let (status, body) = daemon.get(&format!("/api/v1/incidents/{ID}"));
    assert_eq!(status, 200);
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["state"], "dismissed");
    assert_eq!(
        shown["history"].as_array().unwrap().last().unwrap()["state"],
        "dismissed"
    );
    // Journaled: the CLI reads the journal without the daemon.
    let listed = ws.run(&["incidents", "show", ID, "--json"]);
    let journaled: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(journaled["state"], "dismissed");

    // Twice is refused, named.
    let again = ws.run(&["incidents", "dismiss", ID]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already dismissed"),
        "{}",
        stderr(&again)
    );

    // Slack hears of it once.
    let started = std::time::Instant::now();
    while slack.accepted().is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no follow-up reached Slack"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let messages = slack.accepted();
    assert_eq!(
        messages.len(),
        1,
        "{:?}",
        messages.iter().map(|m| &m.body).collect::<Vec<_>>()
    );
    assert!(
        messages[0].body.contains("Dismissed"),
        "{}",
        messages[0].body
    );
    assert!(!messages[0].body.contains(TOKEN));
}

#[test]
fn incidents_dismiss_without_a_daemon_or_a_token_says_what_to_do() {
    let ws = Workspace::new();
    let port = crate::harness::free_port();
    ws.sqlite_config(&format!("[server]\nlisten = \"0.0.0.0:{port}\"\n"));
    let output = ws.run(&["incidents", "dismiss", ID]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("server.api_token"),
        "{}",
        stderr(&output)
    );

    ws.sqlite_config(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\napi_token = \"{TOKEN}\"\n"
    ));
    let output = ws.run(&["incidents", "dismiss", ID]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("cannot reach the daemon") && err.contains("dropguard run"),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "{err}");
}

#[test]
fn snapshots_are_listed_by_the_api_as_the_cli_lists_them() {
    let ws = Workspace::new();
    ws.sqlite_config("");
    crate::django_support::sqlite_exec(
        &ws.path().join("app.db"),
        "CREATE TABLE legacy_item (id INTEGER PRIMARY KEY, code TEXT);\
         INSERT INTO legacy_item (code) VALUES ('a'), ('b'), (NULL);",
    );
    let preserved = ws.run(&["preserve", "--table", "legacy_item"]);
    assert!(preserved.status.success(), "{}", stderr(&preserved));
    let daemon = start(&ws, "");
    let (status, body) = daemon.get("/api/v1/snapshots");
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed[0]["objects"][0]["table"], "legacy_item");
    assert_eq!(listed[0]["objects"][0]["rows"], 3);
    assert_eq!(listed[0]["complete"], true);
    let cli: Value =
        serde_json::from_slice(&ws.run(&["snapshots", "list", "--json"]).stdout).unwrap();
    assert_eq!(listed, cli);
    let reply = daemon.request("POST", "/api/v1/snapshots", &[], b"");
    assert_eq!(reply.status, 405);
}

#[test]
fn a_restore_approval_is_refused_with_the_reason_when_dropguard_cannot_run_it() {
    let ws = Workspace::new();
    journal(&ws, &incident());
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let path = format!("/api/v1/incidents/{ID}/restore");

    // restore.mode = "manual" (the default): the alert carries the commands.
    let daemon = start(&ws, &format!("api_token = \"{TOKEN}\"\n"));
    let reply = daemon.request("POST", &path, &auth, b"");
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(
        reply.error().contains("restore.mode is manual"),
        "{}",
        reply.body
    );
    drop(daemon);

    // approve: the incident's snapshot is not in this vault.
    let daemon = start(
        &ws,
        &format!("api_token = \"{TOKEN}\"\n[restore]\nmode = \"approve\"\n"),
    );
    let reply = daemon.request("POST", &path, &[], b"");
    assert_eq!(reply.status, 401, "{}", reply.body);
    let reply = daemon.request("POST", &path, &auth, b"{\"forse\": true}");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.error().contains("forse"), "{}", reply.body);
    let reply = daemon.request(
        "POST",
        &format!("/api/v1/incidents/{UNKNOWN_ID}/restore"),
        &auth,
        b"",
    );
    assert_eq!(reply.status, 404, "{}", reply.body);
    let reply = daemon.request("POST", &path, &auth, b"{\"force\": false}");
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(
        reply.error().contains("cannot be restored")
            && reply
                .error()
                .contains("20261125T161900Z-catalog.0003_retire_legacy_fields"),
        "{}",
        reply.body
    );
    // Nothing changed.
    let (_, body) = daemon.get(&format!("/api/v1/incidents/{ID}"));
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["state"], "alerted");
    assert!(shown.get("restore").is_none(), "{shown:#}");
}

/// Issue 17, item 4: 40 announcements of 4,000 unique names each stalled
/// detection, grew the daemon to 311 MB and `watched.json` to 18 MB. Names must
/// be migration names and one announcement carries at most 2,000; the watched
/// deploy keeps the first thousand that dropped nothing and counts the rest.
#[test]
fn announcements_are_bounded_and_thousands_of_names_keep_watched_json_small() {
    let ws = Workspace::new();
    let daemon = start(&ws, "");
    for body in [
        r#"{"migrations": ["not a migration"]}"#.to_string(),
        serde_json::json!({ "migrations": (0..2001).map(|i| format!("app.m{i}")).collect::<Vec<_>>() })
            .to_string(),
    ] {
        let reply = announce(&daemon, None, &body);
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert!(reply.error().starts_with("migrations"), "{}", reply.body);
    }
    for round in 0..40 {
        let names: Vec<String> = (0..2000).map(|i| format!("app.m{round}_{i}")).collect();
        let reply = announce(
            &daemon,
            None,
            &serde_json::json!({ "migrations": names }).to_string(),
        );
        assert_eq!(reply.status, 202, "{}", reply.body);
    }
    let watched = ws.path().join("state/incidents/watched.json");
    let started = std::time::Instant::now();
    let deploys = loop {
        let text = std::fs::read_to_string(&watched).unwrap_or_default();
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let deploys = parsed["deploys"].as_array().cloned().unwrap_or_default();
        let counted: u64 = deploys
            .iter()
            .map(|d| {
                d["migrations"].as_array().map_or(0, |m| m.len() as u64)
                    + d["more_migrations"].as_u64().unwrap_or(0)
            })
            .sum();
        if counted == 80_000 {
            assert!(
                text.len() < 256 * 1024,
                "watched.json is {} bytes",
                text.len()
            );
            break deploys;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the 40 announcements were not all watched within 60 s: {counted} names"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        deploys.len(),
        1,
        "announcements a moment apart are one deploy"
    );
    assert_eq!(deploys[0]["migrations"].as_array().unwrap().len(), 1000);
}

/// Issue 17, item 10: load balancers check health with HEAD; every GET route
/// answers it as GET, without the body.
#[test]
fn head_on_health_and_every_get_route_answers_as_get_without_a_body() {
    let ws = Workspace::new();
    let daemon = start(&ws, "");
    for path in ["/healthz", "/readyz", "/metrics", "/api/v1/incidents"] {
        let get = daemon.request("GET", path, &[], b"");
        let head = daemon.request("HEAD", path, &[], b"");
        assert_eq!(head.status, get.status, "{path}: {}", head.body);
        assert_eq!(head.status, 200, "{path}");
        assert!(head.body.is_empty(), "{path}: {}", head.body);
        assert_eq!(
            head.headers
                .get("content-length")
                .map(|v| v.to_str().unwrap().to_string()),
            Some(get.body.len().to_string()),
            "{path}"
        );
    }
    let wrong = daemon.request("DELETE", "/healthz", &[], b"");
    assert_eq!(wrong.status, 405);
    assert_eq!(
        wrong.headers.get("allow").map(|v| v.as_bytes()),
        Some(&b"GET, HEAD"[..])
    );
}

/// Issue 17, item 10: off loopback the GET API (incidents carry log samples)
/// needs the bearer token too; `/metrics`, `/healthz`, `/readyz` stay open, the
/// CLI sends the token, and `check-config` says which rule applies.
#[test]
fn off_loopback_reading_incidents_needs_the_token_and_check_config_says_so() {
    let ws = Workspace::new();
    journal(&ws, &incident());
    let port = crate::harness::free_port();
    let config = ws.sqlite_config(&format!(
        "[server]\nlisten = \"0.0.0.0:{port}\"\napi_token = \"{TOKEN}\"\ngrace_period = \"3s\"\n"
    ));
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    let bearer = format!("Bearer {TOKEN}");
    for path in [
        "/api/v1/incidents".to_string(),
        format!("/api/v1/incidents/{ID}"),
        "/api/v1/snapshots".to_string(),
    ] {
        for authorization in [None, Some("Bearer wrong-token")] {
            let mut headers = Vec::new();
            if let Some(value) = authorization {
                headers.push(("Authorization", value));
            }
            let reply = daemon.request("GET", &path, &headers, b"");
            assert_eq!(
                reply.status, 401,
                "{path} {authorization:?}: {}",
                reply.body
            );
            assert!(
                !reply.body.contains("legacy_code"),
                "{path}: {}",
                reply.body
            );
            assert!(!reply.body.contains(TOKEN), "{path}: {}", reply.body);
        }
        let reply = daemon.request("GET", &path, &[("Authorization", &bearer)], b"");
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(daemon.get(path).0, 200, "{path}");
    }
    // The CLI reads through the API with the token.
    let listed = ws.run(&["incidents", "list", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    assert!(!stderr(&listed).contains("journal"), "{}", stderr(&listed));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&listed)).unwrap()[0]["id"],
        ID
    );
    let checked = ws.run(&["check-config"]);
    assert_eq!(checked.status.code(), Some(0), "{}", stderr(&checked));
    let shown = stdout(&checked);
    assert!(
        shown.contains(&format!(
            "server.listen 0.0.0.0:{port} is not a loopback address"
        )) && shown.contains("GET included"),
        "{shown}"
    );
    assert!(!shown.contains(TOKEN), "{shown}");

    // On loopback, as before: reads are open to local callers, and check-config says so.
    let ws = Workspace::new();
    let daemon = start(&ws, &format!("api_token = \"{TOKEN}\"\n"));
    assert_eq!(daemon.get("/api/v1/incidents").0, 200);
    let shown = stdout(&ws.run(&["check-config"]));
    assert!(
        shown.contains("is a loopback address: GET /api/v1/... is open to local callers"),
        "{shown}"
    );
}
