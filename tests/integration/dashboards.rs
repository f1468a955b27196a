//! The dashboard, the alert rules and the live /metrics, checked with
//! Prometheus's own `promtool` (Debian's `prometheus` package; `.ci/run` installs
//! it), and held to the series dropguard exports.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::django_support::repo_root;
use crate::harness::{Daemon, Workspace, stderr, stdout};

const PROMTOOL: &str = "/usr/bin/promtool";

fn promtool(args: &[&str], cwd: &Path, input: Option<&str>) -> Output {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: install Debian's Prometheus with `apt-get install -y prometheus` (CI installs it)"
    );
    let mut child = Command::new(PROMTOOL)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(input.unwrap_or_default().as_bytes())
        .unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn dashboards() -> PathBuf {
    repo_root().join("dashboards")
}

/// The metric names a PromQL text uses (dropguard's, the process collector's,
/// and the scrape's `up`), histogram series reduced to their family.
fn series_in(text: &str, catalogue: &BTreeSet<String>) -> BTreeSet<String> {
    let pattern = regex::Regex::new(r"\b(?:dropguard|process)_[a-z0-9_]+|\bup\{").unwrap();
    pattern
        .find_iter(text)
        .map(|m| {
            let name = m.as_str().trim_end_matches('{');
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| catalogue.contains(*base))
                })
                .unwrap_or(name)
                .to_string()
        })
        .collect()
}

/// Every string under a key named `expr`, anywhere in the dashboard.
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| exprs(item, out)),
        _ => {}
    }
}

#[test]
fn a_live_metrics_page_passes_promtool_check_metrics() {
    let ws = Workspace::new();
    std::fs::write(ws.path().join("app.log"), "first line\n").unwrap();
    let config = ws.sqlite_config(&format!(
        "[[logs.file]]\npath = \"{}\"\nread_from = \"beginning\"\n[alerts.slack]\nwebhook_url = \"http://127.0.0.1:9/hook\"\n[server]\nlisten = \"127.0.0.1:0\"\n",
        ws.path().join("app.log").display()
    ));
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    let (status, body) = daemon.get("/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("dropguard_build_info"), "{body}");
    let checked = promtool(&["check", "metrics"], Path::new("."), Some(&body));
    assert!(
        checked.status.success() && stdout(&checked).trim().is_empty(),
        "promtool check metrics: {}{}\n{body}",
        stdout(&checked),
        stderr(&checked)
    );
}

#[test]
fn the_alert_rules_are_valid_fire_as_tested_and_use_only_exported_series() {
    let checked = promtool(&["check", "rules", "alerts.yml"], &dashboards(), None);
    assert!(
        checked.status.success(),
        "{}{}",
        stdout(&checked),
        stderr(&checked)
    );
    let tested = promtool(&["test", "rules", "alerts_test.yml"], &dashboards(), None);
    assert!(
        tested.status.success(),
        "{}{}",
        stdout(&tested),
        stderr(&tested)
    );

    let catalogue = dropguard::telemetry::Metrics::catalogue().unwrap();
    let rules = std::fs::read_to_string(dashboards().join("alerts.yml")).unwrap();
    let used = series_in(&rules, &catalogue);
    for wanted in [
        "up",
        "dropguard_alert_outbox_depth",
        "dropguard_snapshots_total",
        "dropguard_incidents_opened_total",
    ] {
        assert!(used.contains(wanted), "alerts.yml does not use {wanted}");
    }
    let unknown: Vec<_> = used
        .iter()
        .filter(|s| *s != "up" && !catalogue.contains(*s))
        .collect();
    assert!(
        unknown.is_empty(),
        "alerts.yml uses series dropguard does not export: {unknown:?}"
    );
}

#[test]
fn every_dashboard_query_is_valid_promql_over_exported_series_and_covers_them_all() {
    let text = std::fs::read_to_string(dashboards().join("dropguard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("dropguard.json is JSON");
    let mut found = Vec::new();
    exprs(&dashboard, &mut found);
    assert!(found.len() >= 20, "{found:?}");

    // Grafana's variables as Grafana would fill them, then every expression as
    // a recording rule, which promtool parses.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, expr) in found.iter().enumerate() {
        let filled = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "6h")
            .replace("$instance", ".+")
            .replace("$job", ".+");
        rules.push_str(&format!(
            "      - record: dashboard:expr_{n}\n        expr: {}\n",
            serde_json::to_string(&filled).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard_rules.yml"), &rules).unwrap();
    let checked = promtool(&["check", "rules", "dashboard_rules.yml"], dir.path(), None);
    assert!(
        checked.status.success(),
        "{}{}\n{rules}",
        stdout(&checked),
        stderr(&checked)
    );

    let catalogue = dropguard::telemetry::Metrics::catalogue().unwrap();
    let used = series_in(&text, &catalogue);
    let unknown: Vec<_> = used.iter().filter(|s| !catalogue.contains(*s)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses series dropguard does not export: {unknown:?}"
    );
    let unshown: Vec<_> = catalogue
        .iter()
        .filter(|name| name.starts_with("dropguard_") && !used.contains(*name))
        .collect();
    assert!(
        unshown.is_empty(),
        "dropguard exports these, the dashboard shows none of them: {unshown:?}"
    );
}
