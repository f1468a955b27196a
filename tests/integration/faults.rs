//! Faults (issue 11): the vault's disk full. A real tmpfs, mounted small and
//! filled, is the vault: the snapshot fails with the cause named, nothing
//! half-written is listed, the daemon counts the failure and says the pending
//! migration is unprotected, and applying it opens an `unpreserved` incident.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::django_support::{django, django_project};
use crate::harness::{Daemon, EngineKind, TestDb, Workspace, stderr, stdout};

/// A tmpfs of 1 MiB at `at`, filled to the last byte; unmounted on drop.
struct FullDisk {
    at: PathBuf,
}

impl FullDisk {
    fn mount(at: &Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            mounted.status.success(),
            "this test mounts a small tmpfs as the vault's disk and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        let disk = Self {
            at: at.to_path_buf(),
        };
        // Fill it: writes stop with ENOSPC.
        let filled = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}", at.join("filler").display()))
            .output()
            .unwrap();
        assert!(!filled.status.success(), "the tmpfs did not fill up");
        disk
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn config(ws: &Workspace, db: &TestDb) -> PathBuf {
    ws.write_config(&format!(
        r#"
environment = "test"
[database]
url = "{url}"
[django]
project_dir = "{project}"
[state]
dir = "{state}"
[deploys]
poll_interval = "200ms"
[server]
listen = "127.0.0.1:0"
grace_period = "5s"
"#,
        url = db.url,
        project = django_project().display(),
        state = ws.path().join("state").display(),
    ))
}

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

#[test]
fn a_full_vault_disk_fails_the_snapshot_cleanly_and_the_drop_is_reported_unprotected() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "fullvault");
    django(&db.url, &["manage.py", "migrate", "-v0"]);
    django(&db.url, &["manage.py", "migrate", "catalog", "0015", "-v0"]);
    django(&db.url, &["seed.py"]);
    let config = config(&ws, &db);
    let _disk = FullDisk::mount(&ws.path().join("state/vault"));

    // By hand: the cause is named, nothing is listed.
    let preserve = ws.run(&[
        "preserve",
        "--migration",
        "catalog.0016_remove_product_brand",
    ]);
    assert_eq!(preserve.status.code(), Some(1), "{}", stdout(&preserve));
    let err = stderr(&preserve);
    assert!(err.contains("No space left on device"), "{err}");
    let listed = ws.run(&["snapshots", "list", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    assert_eq!(stdout(&listed).trim(), "[]", "a failed snapshot was listed");

    // The daemon: counted, the migration reported unprotected, and once it is
    // applied anyway, an incident says its data was not preserved.
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    wait_until("the failed snapshot", Duration::from_secs(30), || {
        metric(&daemon, r#"dropguard_snapshots_total{outcome="failed"}"#) >= 1.0
    });
    assert_eq!(metric(&daemon, "dropguard_unprotected_migrations"), 1.0);
    django(&db.url, &["manage.py", "migrate", "catalog", "0016", "-v0"]);
    wait_until("the unpreserved incident", Duration::from_secs(40), || {
        let (_, body) = daemon.get("/api/v1/incidents");
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|l| l.iter().any(|i| i["triggers"][0] == "unpreserved"))
    });
    let listed = ws.run(&["snapshots", "list", "--json"]);
    assert_eq!(stdout(&listed).trim(), "[]");
    let stopped = daemon.terminate(Duration::from_secs(10));
    assert!(stopped.status.success());
}
