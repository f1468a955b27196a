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

/// A small tmpfs at `at`, the vault's disk; unmounted on drop.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            mounted.status.success(),
            "this test mounts a small tmpfs as the vault's disk and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        Self {
            at: at.to_path_buf(),
        }
    }

    /// A tmpfs of 1 MiB filled to the last byte: writes stop with ENOSPC.
    fn full(at: &Path) -> Self {
        let disk = Self::mount(at, "1m");
        let filled = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}", at.join("filler").display()))
            .output()
            .unwrap();
        assert!(!filled.status.success(), "the tmpfs did not fill up");
        disk
    }

    /// `ro` or `rw`, as a filesystem going read-only or an operator's fix.
    fn remount(&self, mode: &str) {
        let remounted = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.at)
            .output()
            .unwrap();
        assert!(
            remounted.status.success(),
            "{}",
            String::from_utf8_lossy(&remounted.stderr)
        );
    }
}

impl Drop for Tmpfs {
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
    let _disk = Tmpfs::full(&ws.path().join("state/vault"));

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
    // Not ready, naming the full disk, before any snapshot fails (issue 17, item 10).
    wait_until(
        "/readyz naming the full vault",
        Duration::from_secs(20),
        || {
            let (status, body) = daemon.get("/readyz");
            status == 503 && body.contains("No space left on device")
        },
    );
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

/// A TCP forwarder to the shared PostgreSQL server that can be cut (live
/// connections closed, new ones accepted and closed at once) and restored,
/// without touching the server other tests use. Counts the connections it
/// turned away, and when.
///
/// It can also freeze: live connections stop forwarding anything and new ones
/// are accepted and never answered, a server that hangs while holding its
/// connections open (issue 17, item 9).
struct Proxy {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
    refused: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    frozen: tokio::sync::watch::Sender<bool>,
    /// Connections held open, unanswered, while frozen.
    held: std::sync::Arc<std::sync::Mutex<Vec<tokio::net::TcpStream>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Proxy {
    fn start(upstream: &'static str, open: bool) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(open));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let (frozen, _) = tokio::sync::watch::channel(false);
        let refused = Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_open, cut, turned_away) = (open.clone(), cuts.clone(), refused.clone());
        let (freeze, holding) = (frozen.clone(), held.clone());
        runtime.spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if *freeze.borrow() {
                    holding.lock().unwrap().push(client);
                    continue;
                }
                if !is_open.load(Ordering::SeqCst) {
                    turned_away.lock().unwrap().push(Instant::now());
                    drop(client);
                    continue;
                }
                let mut cut = cut.subscribe();
                let mut freeze = freeze.subscribe();
                let holding = holding.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let frozen = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                        _ = cut.changed() => false,
                        _ = freeze.wait_for(|frozen| *frozen) => true,
                    };
                    if frozen {
                        holding.lock().unwrap().extend([client, server]);
                    }
                });
            }
        });
        Self {
            port,
            open,
            cuts,
            refused,
            frozen,
            held,
            _runtime: runtime,
        }
    }

    /// Stops forwarding: every connection, live or new, is held open and
    /// never answered.
    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again; the connections held meanwhile are closed.
    fn thaw(&self) {
        self.frozen.send_replace(false);
        self.held.lock().unwrap().clear();
    }

    /// Closes every forwarded connection and turns new ones away.
    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn refused(&self) -> Vec<Instant> {
        self.refused.lock().unwrap().clone()
    }
}

/// The sum of every series of `name` whose labels contain `label` (0 if none).
fn sum_of(daemon: &Daemon, name: &str, label: &str) -> f64 {
    let (_, body) = daemon.get("/metrics");
    body.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn unpreserved_incident(daemon: &Daemon) -> Option<Value> {
    let (_, body) = daemon.get("/api/v1/incidents");
    serde_json::from_str::<Value>(&body)
        .ok()?
        .as_array()?
        .iter()
        .find(|i| i["triggers"][0] == "unpreserved")
        .cloned()
}

#[test]
fn a_database_down_at_start_and_mid_run_is_waited_for_with_backoff_and_caught_up_with() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Postgres, "dbdown");
    django(&db.url, &["manage.py", "migrate", "-v0"]);
    django(&db.url, &["manage.py", "migrate", "catalog", "0015", "-v0"]);
    django(&db.url, &["seed.py"]);
    let proxy = Proxy::start("127.0.0.1:5432", false);
    let name = db.url.rsplit_once('/').unwrap().1.to_string();
    let via_proxy = format!("postgres://postgres@127.0.0.1:{}/{name}", proxy.port);
    let config = ws.write_config(&format!(
        r#"
environment = "test"
[database]
url = "{via_proxy}"
[django]
project_dir = "{project}"
[state]
dir = "{state}"
[deploys]
poll_interval = "200ms"
[preserve]
auto = false
[server]
listen = "127.0.0.1:0"
grace_period = "5s"
"#,
        project = django_project().display(),
        state = ws.path().join("state").display(),
    ));

    // Down at start: up, not ready, and saying which database it waits for.
    let started = Instant::now();
    let daemon = Daemon::start(&config);
    wait_until(
        "readiness naming the database",
        Duration::from_secs(10),
        || {
            let (status, body) = daemon.get("/readyz");
            status == 503 && body.contains("cannot connect to") && body.contains(&name)
        },
    );
    std::thread::sleep(Duration::from_secs(6).saturating_sub(started.elapsed()));
    assert_eq!(daemon.get("/healthz").0, 200);
    let (status, body) = daemon.get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("127.0.0.1:{}/{name}", proxy.port)),
        "{body}"
    );
    let attempts = proxy.refused();
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(attempts.len() >= 3, "tried {} times in 6 s", attempts.len());
    assert!(
        gaps.windows(2)
            .all(|g| g[1] > g[0] + Duration::from_millis(200)),
        "the waits between attempts do not grow: {gaps:?}"
    );
    proxy.restore();
    let back = Instant::now();
    daemon.wait_ready();
    let ready_after = back.elapsed();
    assert!(
        ready_after < Duration::from_secs(10),
        "ready {ready_after:?} after the database came back"
    );

    // Cut mid-run: the release is applied meanwhile, straight to the server.
    let cursor = dropguard::sources::deploys::cursor_path(&ws.path().join("state"));
    wait_until("the deploy cursor", Duration::from_secs(10), || {
        cursor.exists()
    });
    std::thread::sleep(Duration::from_secs(1));
    proxy.cut();
    django(&db.url, &["manage.py", "migrate", "catalog", "0016", "-v0"]);
    // A poll waits up to the pool's 10 s connect timeout before it fails.
    wait_until(
        "the poller to notice the cut",
        Duration::from_secs(25),
        || sum_of(&daemon, "dropguard_source_errors_total", "\"poll\"") >= 1.0,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(daemon.get("/healthz").0, 200);
    assert!(
        unpreserved_incident(&daemon).is_none(),
        "seen through a cut path?"
    );
    proxy.restore();
    let restored = Instant::now();
    wait_until(
        "the deploy applied during the cut",
        Duration::from_secs(30),
        || unpreserved_incident(&daemon).is_some(),
    );
    let caught_up = restored.elapsed();
    let incident = unpreserved_incident(&daemon).unwrap();
    assert_eq!(
        incident["deploy"]["migrations"][0]["migration"],
        "catalog.0016_remove_product_brand"
    );
    assert!(sum_of(&daemon, "dropguard_deploys_total", "") >= 1.0);
    let stopped = daemon.terminate(Duration::from_secs(10));
    assert!(stopped.status.success());
    eprintln!(
        "database down (test took {:?}): {} attempts at start, gaps {gaps:?}; ready {ready_after:?} after restore; \
         mid-run deploy seen {caught_up:?} after restore",
        started.elapsed(),
        attempts.len()
    );
}

#[test]
fn slack_down_for_two_minutes_gets_the_alert_once_when_it_is_back() {
    let started = Instant::now();
    use crate::alerts::{Receiver, Reply};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const REFUSING: Duration = Duration::from_secs(60);
    const FAILING: Duration = Duration::from_secs(62);
    let ws = Workspace::new();
    // Bound but never listening: connections are refused, and no other test can
    // take the port until Slack comes back on it.
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let port = refusing.local_addr().unwrap().port();
    let config = ws.write_config(&format!(
        r#"
environment = "test"
[database]
url = "sqlite://{db}"
[django]
project_dir = "{project}"
[state]
dir = "state"
[preserve]
auto = false
[alerts]
max_retry_interval = "10s"
[alerts.slack]
webhook_url = "http://127.0.0.1:{port}/services/T0/B0/DOWN"
[server]
listen = "127.0.0.1:0"
grace_period = "5s"
"#,
        db = ws.path().join("app.db").display(),
        project = django_project().display(),
    ));
    crate::django_support::sqlite_exec(&ws.path().join("app.db"), "SELECT 1");
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    let reply = daemon.request(
        "POST",
        "/api/v1/deploys",
        &[("Content-Type", "application/json")],
        br#"{"migrations": ["catalog.0016_remove_product_brand"]}"#,
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    wait_until("the incident", Duration::from_secs(20), || {
        unpreserved_incident(&daemon).is_some()
    });
    let down = Instant::now();
    let depth = "dropguard_alert_outbox_depth";
    let mut samples = 0;
    // Refusing connections, then answering 503: healthy, ready, one pending.
    let watch = |until: Duration, samples: &mut usize| {
        while down.elapsed() < until {
            assert_eq!(daemon.get("/healthz").0, 200);
            let (status, body) = daemon.get("/readyz");
            assert_eq!(status, 200, "{body}");
            assert_eq!(metric(&daemon, depth), 1.0, "at {:?}", down.elapsed());
            *samples += 1;
            std::thread::sleep(Duration::from_secs(5));
        }
    };
    watch(REFUSING, &mut samples);
    drop(refusing);
    let accepting = Arc::new(AtomicBool::new(false));
    let slack = Receiver::start_on(port, {
        let accepting = accepting.clone();
        move |_| {
            Reply::status(if accepting.load(Ordering::SeqCst) {
                200
            } else {
                503
            })
        }
    });
    watch(REFUSING + FAILING, &mut samples);
    let refused_for = down.elapsed();
    accepting.store(true, Ordering::SeqCst);
    let back = Instant::now();
    wait_until("the delivery", Duration::from_secs(30), || {
        !slack.accepted().is_empty()
    });
    let delivered_after = back.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let accepted = slack.accepted();
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    let id = unpreserved_incident(&daemon).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        accepted[0].idempotency_key.as_deref(),
        Some(format!("{id}-opened-slack").as_str())
    );
    let failed_503 = slack
        .seen()
        .iter()
        .filter(|s| s.answered == Some(503))
        .count();
    assert!(failed_503 >= 2, "{failed_503} requests were answered 503");
    let retries = metric(
        &daemon,
        r#"dropguard_alerts_failed_total{reason="retry",receiver="slack"}"#,
    );
    assert!(
        retries as usize > failed_503,
        "connection refusals counted too: {retries}"
    );
    assert_eq!(
        metric(&daemon, r#"dropguard_alerts_sent_total{receiver="slack"}"#),
        1.0
    );
    assert_eq!(metric(&daemon, depth), 0.0);
    assert_eq!(daemon.get("/readyz").0, 200);
    let stopped = daemon.terminate(Duration::from_secs(10));
    assert!(stopped.status.success());
    eprintln!(
        "slack down {refused_for:?} ({samples} samples of depth 1); {retries} failed tries \
         ({failed_503} answered 503); delivered {delivered_after:?} after it came back; \
         test took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_read_only_vault_fails_the_snapshot_cleanly_and_the_drop_is_reported_unprotected() {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "rovault");
    django(&db.url, &["manage.py", "migrate", "-v0"]);
    django(&db.url, &["manage.py", "migrate", "catalog", "0015", "-v0"]);
    django(&db.url, &["seed.py"]);
    let config = config(&ws, &db);
    // The vault worked (one snapshot in it), then its filesystem went read-only.
    let disk = Tmpfs::mount(&ws.path().join("state/vault"), "4m");
    let taken = ws.run(&["preserve", "--table", "django_migrations", "--json"]);
    assert_eq!(taken.status.code(), Some(0), "{}", stderr(&taken));
    disk.remount("ro");
    let listed_before = ws.run(&["snapshots", "list", "--json"]);
    assert_eq!(
        listed_before.status.code(),
        Some(0),
        "{}",
        stderr(&listed_before)
    );
    let before: Value = serde_json::from_str(&stdout(&listed_before)).unwrap();
    assert_eq!(before.as_array().unwrap().len(), 1, "{before:#}");
    assert_eq!(before[0]["complete"], true);
    let earlier = before[0]["id"].as_str().unwrap().to_string();

    // By hand: the cause is named, nothing new is listed, the old one still verifies.
    let preserve = ws.run(&[
        "preserve",
        "--migration",
        "catalog.0016_remove_product_brand",
    ]);
    assert_eq!(preserve.status.code(), Some(1), "{}", stdout(&preserve));
    let err = stderr(&preserve);
    assert!(err.contains("Read-only file system"), "{err}");
    let unchanged = || {
        let listed = ws.run(&["snapshots", "list", "--json"]);
        assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
        let listed: Value = serde_json::from_str(&stdout(&listed)).unwrap();
        assert_eq!(listed, before, "the listing changed on a read-only vault");
    };
    unchanged();
    let verified = ws.run(&["snapshots", "verify", &earlier]);
    assert_eq!(verified.status.code(), Some(0), "{}", stderr(&verified));
    // Restore only reads the vault: it runs from the read-only one (the rows
    // are all still there, so it finds them unchanged and writes nothing).
    let restored = ws.run(&["restore", "--snapshot", &earlier, "--json"]);
    assert_eq!(restored.status.code(), Some(0), "{}", stderr(&restored));
    let report: Value = serde_json::from_str(&stdout(&restored)).unwrap();
    assert_eq!(report["objects"][0]["written"], 0, "{report:#}");
    assert_eq!(
        report["objects"][0]["unchanged"], report["objects"][0]["snapshot_rows"],
        "{report:#}"
    );
    unchanged();

    // The daemon: not ready and saying why, the failure counted, the migration
    // reported unprotected, and once it is applied anyway, an incident says its
    // data was not preserved.
    let daemon = Daemon::start(&config);
    wait_until("the failed snapshot", Duration::from_secs(30), || {
        metric(&daemon, r#"dropguard_snapshots_total{outcome="failed"}"#) >= 1.0
            && metric(&daemon, "dropguard_unprotected_migrations") == 1.0
    });
    let (status, body) = daemon.get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Read-only file system"), "{body}");
    assert_eq!(daemon.get("/healthz").0, 200);
    django(&db.url, &["manage.py", "migrate", "catalog", "0016", "-v0"]);
    wait_until("the unpreserved incident", Duration::from_secs(40), || {
        unpreserved_incident(&daemon).is_some()
    });
    let incident = unpreserved_incident(&daemon).unwrap();
    assert_eq!(
        incident["deploy"]["migrations"][0]["migration"],
        "catalog.0016_remove_product_brand"
    );
    assert!(
        incident["deploy"]["migrations"][0]["snapshot"].is_null(),
        "{incident:#}"
    );
    unchanged();

    // The disk writable again: a later pass (at most 30 s after a failed one)
    // opens the vault, and the daemon says it is ready without a restart.
    disk.remount("rw");
    wait_until(
        "ready once the vault opens",
        Duration::from_secs(45),
        || daemon.get("/readyz").0 == 200,
    );
    let stopped = daemon.terminate(Duration::from_secs(10));
    assert!(stopped.status.success());
}

/// A database server that accepts connections and never answers: a plain TCP
/// listener holding every connection open. Stops holding them on drop.
struct Silent {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Silent {
    fn start() -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { port, stop }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs `dropguard ARGS` with this workspace's config, killing it after
/// `limit`: `None` when it had not ended by then.
fn run_within(ws: &Workspace, args: &[&str], limit: Duration) -> Option<std::process::Output> {
    let mut child = Command::new(crate::harness::BIN)
        .args(args)
        .arg("--config")
        .arg(ws.config_path())
        .env_remove("DROPGUARD_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}

/// Issue 17, item 9: `scan`, `preserve`, `restore` and `gate` against a server
/// that accepts connections and never answers (PostgreSQL and MySQL URLs) end
/// within `database.connect_timeout`, exit 1, and say what they waited for.
#[test]
fn scan_preserve_restore_and_gate_give_up_on_a_database_that_never_answers_and_say_what_they_waited_for()
 {
    let silent = Silent::start();
    let ws = Workspace::new();
    std::fs::create_dir(ws.path().join("sql")).unwrap();
    std::fs::write(
        ws.path().join("sql/0001_drop_gifts.sql"),
        "DROP TABLE gift;",
    )
    .unwrap();
    for scheme in ["postgres", "mysql"] {
        let url = format!("{scheme}://app:hunter2@127.0.0.1:{}/shop", silent.port);
        ws.write_config(&format!(
            "environment = \"test\"\n[database]\nurl = \"{url}\"\nconnect_timeout = \"1s\"\nstatement_timeout = \"1s\"\n[sql]\ndir = \"sql\"\n[state]\ndir = \"state\"\n"
        ));
        let masked = format!("{scheme}://app:********@127.0.0.1:{}/shop", silent.port);
        for args in [
            &["scan"][..],
            &["preserve"],
            &["restore", "--snapshot", "01JDQ2Z7X3M4N5P6Q7R8S9T0VW"],
            &["gate", "--window", "1s"],
        ] {
            let started = Instant::now();
            let output = run_within(&ws, args, Duration::from_secs(20))
                .unwrap_or_else(|| panic!("{scheme} {args:?} did not end within 20 s"));
            let took = started.elapsed();
            let err = stderr(&output);
            assert_eq!(output.status.code(), Some(1), "{scheme} {args:?}: {err}");
            assert!(
                took < Duration::from_secs(6),
                "{scheme} {args:?} took {took:?} with a 1 s connect deadline"
            );
            assert!(
                err.contains(&format!(
                    "cannot connect to {masked}: no answer within 1s (database.connect_timeout)"
                )),
                "{scheme} {args:?}: {err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}

/// Issue 17, item 9: the daemon facing a database that accepts connections
/// and never answers is not stuck at "starting": `/readyz` names the database,
/// the wait and the setting, and a log line says so.
#[test]
fn the_daemon_names_a_database_that_never_answers_on_readyz_and_in_its_log() {
    let silent = Silent::start();
    let ws = Workspace::new();
    std::fs::create_dir(ws.path().join("sql")).unwrap();
    let config = ws.write_config(&format!(
        r#"
environment = "test"
[database]
url = "postgres://app@127.0.0.1:{port}/shop"
connect_timeout = "1s"
[sql]
dir = "sql"
[state]
dir = "state"
[server]
listen = "127.0.0.1:0"
grace_period = "3s"
"#,
        port = silent.port
    ));
    let daemon = Daemon::start(&config);
    let reason = format!(
        "cannot connect to postgres://app@127.0.0.1:{}/shop: no answer within 1s (database.connect_timeout)",
        silent.port
    );
    wait_until(
        "/readyz naming the database",
        Duration::from_secs(10),
        || {
            let (status, body) = daemon.get("/readyz");
            status == 503 && body.contains(&reason)
        },
    );
    let (_, body) = daemon.get("/readyz");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        report["components"]["database"]["state"], "not_ready",
        "{report:#}"
    );
    assert_eq!(
        report["components"]["deploys"]["state"], "not_ready",
        "not silently starting: {report:#}"
    );
    let stopped = daemon.terminate(Duration::from_secs(10));
    assert!(stopped.status.success());
    assert!(
        stopped
            .logs
            .iter()
            .any(|line| line.contains("cannot connect to the database") && line.contains(&reason)),
        "{:#?}",
        stopped.logs
    );
}

/// Issue 17, item 9: a database that answered, then stops answering mid-session
/// (its connections held open), fails the call waiting on it within
/// `statement_timeout + connect_timeout`, naming the database and what waited;
/// a statement that takes longer than `statement_timeout` on a server that
/// answers is waited for (a big preserve or restore is not cut short).
#[test]
fn a_call_to_a_database_that_stops_answering_fails_in_time_and_a_slow_one_that_answers_is_waited_for()
 {
    use dropguard::config::DatabaseUrl;
    use dropguard::db::{self, Deadlines};
    use futures_util::StreamExt;
    let test_db = TestDb::create(EngineKind::Postgres, "frozen");
    crate::harness::block_on(crate::db::execute(
        &test_db,
        &[
            "CREATE TABLE gift (id INTEGER PRIMARY KEY, note TEXT)".to_string(),
            "INSERT INTO gift SELECT g, 'note' FROM generate_series(1, 100) g".to_string(),
        ],
    ));
    let proxy = Proxy::start("127.0.0.1:5432", true);
    let name = test_db.url.rsplit_once('/').unwrap().1.to_string();
    let url = DatabaseUrl::new(format!(
        "postgres://postgres@127.0.0.1:{}/{name}",
        proxy.port
    ));
    let deadlines = Deadlines {
        connect: Duration::from_secs(1),
        statement: Duration::from_secs(1),
    };
    crate::harness::block_on(async {
        let adapter = db::connect_with(&url, deadlines).await.unwrap();
        // Slower than the statement deadline, on a server that answers: waited for.
        let started = Instant::now();
        let slept = adapter
            .count("SELECT COUNT(*) FROM pg_sleep(1.6)", "sleeping on purpose")
            .await;
        assert_eq!(slept.unwrap(), 1, "a slow statement was cut short");
        assert!(started.elapsed() >= Duration::from_millis(1600));

        let table = adapter.introspect("gift").await.unwrap().unwrap();
        assert_eq!(adapter.count_rows("gift").await.unwrap(), 100);
        let mut rows = adapter.stream_rows(&table, &[]);
        assert!(rows.next().await.unwrap().is_ok());
        drop(rows);

        // Frozen while a statement is in flight: its answer never comes.
        let database = format!("the database at {}", url.masked());
        let started = Instant::now();
        let (answer, ()) = tokio::join!(
            adapter.count("SELECT COUNT(*) FROM pg_sleep(1.5)", "a slow count"),
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                proxy.freeze();
            }
        );
        let err = answer
            .expect_err("an answer through a frozen path?")
            .to_string();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "gave up after {took:?}");
        assert!(
            err.starts_with(&format!(
                "{database} stopped answering: a slow count got no answer for"
            )) && err.contains("(database.statement_timeout), and a SELECT 1 on a new connection: no answer within 1s (database.connect_timeout)"),
            "{err}"
        );

        let started = Instant::now();
        let err = adapter
            .count("SELECT COUNT(*) FROM gift", "counting the gifts")
            .await
            .expect_err("an answer through a frozen path?")
            .to_string();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "gave up after {took:?} with 1 s deadlines"
        );
        // The pool's idle connection is checked before use, so the wait can
        // end there (no connection) or in the statement (no answer).
        assert!(
            err.starts_with(&format!("{database} stopped answering: counting the gifts got no answer for"))
                && err.contains("(database.statement_timeout)")
                && err.contains("no answer within 1s (database.connect_timeout)")
                || err.starts_with(&format!("{database} gave counting the gifts no connection within 1s (database.connect_timeout)")),
            "{err}"
        );
        // A stream waiting for its next row, and a transaction, give up the same way.
        let started = Instant::now();
        let streamed = adapter.stream_rows(&table, &[]).next().await.unwrap();
        assert!(streamed.is_err(), "a row through a frozen path?");
        let begun = adapter.begin().await;
        assert!(begun.is_err(), "a transaction through a frozen path?");
        assert!(started.elapsed() < Duration::from_secs(10));
        proxy.thaw();
        adapter.close().await;
    });
}

/// Issue 17, items 9 and 10: the daemon checks the database every
/// `server.readiness_interval`; one that stops answering while the daemon
/// runs turns `/readyz` 503 naming it, logged once, and ready again once it
/// answers.
#[test]
fn readyz_turns_not_ready_when_the_database_stops_answering_while_running_and_ready_when_it_returns()
 {
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Postgres, "dbhang");
    crate::harness::block_on(crate::db::execute(&db, &["SELECT 1".to_string()]));
    let proxy = Proxy::start("127.0.0.1:5432", true);
    let name = db.url.rsplit_once('/').unwrap().1.to_string();
    std::fs::create_dir(ws.path().join("sql")).unwrap();
    let config = ws.write_config(&format!(
        r#"
environment = "test"
[database]
url = "postgres://postgres@127.0.0.1:{port}/{name}"
connect_timeout = "1s"
statement_timeout = "1s"
[sql]
dir = "sql"
[state]
dir = "state"
[server]
listen = "127.0.0.1:0"
grace_period = "3s"
readiness_interval = "200ms"
"#,
        port = proxy.port
    ));
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    proxy.freeze();
    let frozen = Instant::now();
    wait_until(
        "/readyz naming the lost database",
        Duration::from_secs(10),
        || {
            let (status, body) = daemon.get("/readyz");
            status == 503
                && body.contains(&format!(
                    "the database at postgres://postgres@127.0.0.1:{}/{name} does not answer",
                    proxy.port
                ))
                && body.contains("no answer within 1s (database.connect_timeout)")
        },
    );
    let noticed = frozen.elapsed();
    assert_eq!(daemon.get("/healthz").0, 200);
    proxy.thaw();
    let thawed = Instant::now();
    daemon.wait_ready();
    let back = thawed.elapsed();
    let stopped = daemon.terminate(Duration::from_secs(10));
    assert!(stopped.status.success());
    let lost = stopped
        .logs
        .iter()
        .filter(|line| line.contains("the database stopped answering"))
        .count();
    assert_eq!(lost, 1, "logged once: {:#?}", stopped.logs);
    assert!(
        stopped
            .logs
            .iter()
            .any(|line| line.contains("the database answers again")),
        "{:#?}",
        stopped.logs
    );
    eprintln!("lost database noticed after {noticed:?}, ready {back:?} after it answered again");
}

/// Issue 17, item 10: a vault whose disk is full turns `/readyz` 503, naming
/// the vault and the filesystem's reason, before any migration needs it; ready
/// again once the disk has room.
#[test]
fn readyz_turns_not_ready_when_the_vault_disk_is_full_and_ready_once_it_has_room() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.path().join("sql")).unwrap();
    let config = ws.write_config(
        r#"
environment = "test"
[database]
url = "sqlite://app.db"
[sql]
dir = "sql"
[state]
dir = "state"
[server]
listen = "127.0.0.1:0"
grace_period = "3s"
readiness_interval = "200ms"
"#,
    );
    crate::django_support::sqlite_exec(&ws.path().join("app.db"), "SELECT 1");
    let disk = Tmpfs::full(&ws.path().join("state/vault"));
    let daemon = Daemon::start(&config);
    wait_until(
        "/readyz naming the full vault",
        Duration::from_secs(10),
        || {
            let (status, body) = daemon.get("/readyz");
            status == 503
                && body.contains("the vault cannot be written")
                && body.contains("No space left on device")
        },
    );
    let (_, body) = daemon.get("/readyz");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        report["components"]["vault"]["state"], "not_ready",
        "{report:#}"
    );
    assert_eq!(daemon.get("/healthz").0, 200);
    std::fs::remove_file(disk.at.join("filler")).unwrap();
    daemon.wait_ready();
    let stopped = daemon.terminate(Duration::from_secs(10));
    assert!(stopped.status.success());
}
