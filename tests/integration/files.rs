//! The file source against real files on disk: rotation both ways while a writer
//! appends, a restart in the middle, deletion, an unreadable file. Every test
//! writes numbered lines and checks each arrives exactly once.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dropguard::config::Duration as ConfigDuration;
use dropguard::config::{FileLogConfig, JsonFields, LogFormat, Multiline, ReadFrom};
use dropguard::sources::{Event, SourceStats, file};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

fn config(glob: &Path, multiline: Multiline) -> FileLogConfig {
    FileLogConfig {
        path: glob.display().to_string(),
        read_from: ReadFrom::Beginning,
        format: LogFormat::Auto,
        fields: JsonFields::default(),
        multiline,
        multiline_start: None,
        multiline_timeout: ConfigDuration(Duration::from_millis(200)),
        max_event_bytes: 64 * 1024,
        poll_interval: ConfigDuration(Duration::from_millis(100)),
        symlinks_into: Vec::new(),
    }
}

/// One running file source, collecting what it hands on.
struct Running {
    events: Arc<Mutex<Vec<Event>>>,
    stats: SourceStats,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(config: FileLogConfig, state: &Path) -> Self {
        Self::start_with(config, state, false, usize::MAX)
    }

    /// `without_dac_override`: the source runs without root's power to read any
    /// file, as dropguard's own user would (the tests run as root here).
    /// `stall_after` events, the consumer stops taking more until shutdown, so
    /// the source is stopped while it waits to hand one on.
    fn start_with(
        config: FileLogConfig,
        state: &Path,
        without_dac_override: bool,
        stall_after: usize,
    ) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let stats = SourceStats::detached().unwrap();
        let shutdown = CancellationToken::new();
        let (sink, thread_stats, token, state) = (
            events.clone(),
            stats.clone(),
            shutdown.clone(),
            state.to_path_buf(),
        );
        let thread = std::thread::spawn(move || {
            if without_dac_override {
                drop_dac_override();
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (tx, mut rx) = tokio::sync::mpsc::channel(64);
                let source =
                    tokio::spawn(file::run(config, state, tx, thread_stats, token.clone()));
                let mut taken = 0;
                while let Some(event) = rx.recv().await {
                    sink.lock().unwrap().push(event);
                    taken += 1;
                    if taken == stall_after {
                        token.cancelled().await;
                    }
                }
                source.await.unwrap().unwrap();
            });
        });
        Self {
            events,
            stats,
            shutdown,
            thread: Some(thread),
        }
    }

    fn messages(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.text().to_string())
            .collect()
    }

    fn wait_for(&self, what: &str, done: impl Fn(&[String]) -> bool) {
        let started = Instant::now();
        loop {
            let messages = self.messages();
            if done(&messages) {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "timed out waiting for {what}; got {} events, last: {:?}",
                messages.len(),
                messages.last()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> Vec<String> {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.messages()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Clears CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from this thread (and the
/// threads it starts), so file permissions apply to it as to any user.
fn drop_dac_override() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !((1 << 1) | (1 << 2));
        assert_eq!(libc::syscall(libc::SYS_capset, &header, data.as_ptr()), 0);
    }
}

fn line(n: usize) -> String {
    format!("line {n:06} {}", "x".repeat(n % 40))
}

/// How often each numbered line arrived.
fn counts(messages: &[String]) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for message in messages {
        let n: usize = message[5..11].parse().unwrap();
        *counts.entry(n).or_default() += 1;
    }
    counts
}

fn assert_exactly_once(messages: &[String], total: usize) {
    let counts = counts(messages);
    let missing: Vec<usize> = (0..total).filter(|n| !counts.contains_key(n)).collect();
    let repeated: Vec<(&usize, &usize)> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        missing.is_empty() && repeated.is_empty() && counts.len() == total,
        "missing {} lines (first {:?}), repeated {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        repeated.iter().take(5).collect::<Vec<_>>()
    );
}

fn seen(total: usize) -> impl Fn(&[String]) -> bool {
    move |messages: &[String]| counts(messages).len() >= total
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A writer appending numbered lines `range` to `path`, like an app logging.
/// `rotate_at` lines make it call `rotate` first (with the writer paused).
fn write_lines(
    path: PathBuf,
    range: std::ops::Range<usize>,
    rotate_at: Vec<usize>,
    rotate: impl Fn(usize) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for n in range {
            if rotate_at.contains(&n) {
                rotate(n);
            }
            append(&path, &format!("{}\n", line(n)));
            if n % 50 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
    })
}

#[test]
fn rename_and_create_rotation_while_writing_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    fs::write(&log, "").unwrap();
    let source = Running::start(config(&log, Multiline::None), &dir.path().join("state"));
    let rotated = log.clone();
    let writer = write_lines(log.clone(), 0..3000, vec![1000, 2000], move |n| {
        fs::rename(&rotated, rotated.with_extension(format!("log.{n}"))).unwrap();
    });
    writer.join().unwrap();
    source.wait_for("3000 lines", seen(3000));
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&source.stop(), 3000);
}

#[test]
fn copytruncate_rotation_while_writing_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    fs::write(&log, "").unwrap();
    let source = Arc::new(Running::start(
        config(&log, Multiline::None),
        &dir.path().join("state"),
    ));
    let (watching, rotated) = (source.clone(), log.clone());
    // logrotate's copytruncate: copy, then truncate in place; the writer keeps its
    // file open in append mode and goes on at once, so the file grows back
    // before the source may look again.
    let writer = write_lines(log.clone(), 0..3000, vec![1000, 2000], move |n| {
        watching.wait_for("the lines before the rotation", seen(n));
        fs::copy(&rotated, rotated.with_extension(format!("log.{n}"))).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&rotated)
            .unwrap()
            .set_len(0)
            .unwrap();
    });
    writer.join().unwrap();
    source.wait_for("3000 lines", seen(3000));
    std::thread::sleep(Duration::from_millis(300));
    let source = Arc::try_unwrap(source).ok().unwrap();
    assert_exactly_once(&source.stop(), 3000);
}

#[test]
fn a_restart_in_the_middle_with_rotation_while_stopped_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("app.log");
    fs::write(&log, "").unwrap();
    let cfg = config(&log, Multiline::Python);

    let first = Running::start(cfg.clone(), &state);
    let writer = write_lines(log.clone(), 0..1000, vec![], |_| {});
    first.wait_for("the first 300 lines", seen(300));
    let mut messages = first.stop(); // while the writer is still going
    writer.join().unwrap();
    // While stopped: a traceback half written, then the file rotated away, and a
    // new file begun.
    append(
        &log,
        "line 001000 ERROR boom\nTraceback (most recent call last):\n  File \"x.py\", line 1\n",
    );
    let rotated = dir.path().join("app.log.1");
    fs::rename(&log, &rotated).unwrap();
    append(&log, &format!("{}\n", line(1001)));

    let second = Running::start(cfg, &state);
    // The rotated file's end is read too: the traceback completes there when the
    // app (before rotation) wrote its last line.
    append(&rotated, "ValueError: boom\n");
    let writer = write_lines(log.clone(), 1002..2000, vec![], |_| {});
    writer.join().unwrap();
    let before = messages.clone();
    second.wait_for("all 2000 lines over both runs", move |m| {
        counts(&[before.as_slice(), m].concat()).len() >= 2000
    });
    std::thread::sleep(Duration::from_millis(400));
    let after = second.stop();
    let traceback: Vec<&String> = after.iter().filter(|m| m.contains("Traceback")).collect();
    assert_eq!(traceback.len(), 1, "{traceback:?}");
    assert!(traceback[0].starts_with("line 001000 ERROR boom\nTraceback"));
    assert!(
        traceback[0].ends_with("ValueError: boom"),
        "{:?}",
        traceback[0]
    );
    messages.extend(after);
    assert_exactly_once(&messages, 2000);
}

#[test]
fn a_stop_while_the_consumer_is_behind_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("app.log");
    let text: String = (0..5000).map(|n| format!("{}\n", line(n))).collect();
    fs::write(&log, text).unwrap();
    let cfg = config(&log, Multiline::Python);

    // The whole file is one read; the consumer takes 100 events and stops, so the
    // source is stopped in the middle of handing that read on.
    let first = Running::start_with(cfg.clone(), &state, false, 100);
    first.wait_for("the first 100 lines", seen(100));
    let mut messages = first.stop();
    assert!(
        messages.len() < 5000,
        "the stall did not hold the source back"
    );

    let second = Running::start(cfg, &state);
    let before = messages.clone();
    second.wait_for("all 5000 lines over both runs", move |m| {
        counts(&[before.as_slice(), m].concat()).len() >= 5000
    });
    std::thread::sleep(Duration::from_millis(400));
    messages.extend(second.stop());
    assert_exactly_once(&messages, 5000);
}

#[test]
fn a_file_deleted_and_recreated_is_read_again_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let lines = |range: std::ops::Range<usize>| -> String {
        range.map(|n| format!("{}\n", line(n))).collect()
    };
    fs::write(&log, lines(0..100)).unwrap();
    let source = Running::start(config(&log, Multiline::None), &dir.path().join("state"));
    source.wait_for("the first file", seen(100));
    fs::remove_file(&log).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    fs::write(&log, lines(100..200)).unwrap();
    source.wait_for("the recreated file", seen(200));
    std::thread::sleep(Duration::from_millis(300));
    assert_exactly_once(&source.stop(), 200);
}

#[test]
fn read_from_end_skips_what_was_there_on_the_first_run_only() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("app.log");
    fs::write(&log, format!("{}\n", line(0))).unwrap();
    let mut cfg = config(&dir.path().join("*.log"), Multiline::None);
    cfg.read_from = ReadFrom::End;
    let source = Running::start(cfg.clone(), &state);
    std::thread::sleep(Duration::from_millis(300));
    append(&log, &format!("{}\n", line(1)));
    // A file appearing while running is new: read from its start.
    fs::write(dir.path().join("other.log"), format!("{}\n", line(2))).unwrap();
    source.wait_for("lines 1 and 2", seen(2));
    let mut messages = source.stop();
    // Written while stopped: read after the restart, not skipped as "the end".
    append(&log, &format!("{}\n", line(3)));
    let source = Running::start(cfg, &state);
    source.wait_for("line 3", |m| !m.is_empty());
    std::thread::sleep(Duration::from_millis(300));
    messages.extend(source.stop());
    let counts = counts(&messages);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3],
        "{messages:?}"
    );
    assert!(counts.values().all(|c| *c == 1));
}

#[test]
fn an_unreadable_file_is_counted_and_the_others_go_on() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("a.log");
    let open = dir.path().join("b.log");
    fs::write(&locked, format!("{}\n", line(0))).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    fs::write(&open, format!("{}\n", line(1))).unwrap();
    let source = Running::start_with(
        config(&dir.path().join("*.log"), Multiline::None),
        &dir.path().join("state"),
        true,
        usize::MAX,
    );
    source.wait_for("the readable file", |m| !m.is_empty());
    let errors = source
        .stats
        .errors
        .with_label_values(&[&format!("{}/*.log", dir.path().display()), "open"]);
    assert_eq!(
        errors.get(),
        1,
        "one failure, counted once however often it is retried"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(errors.get(), 1);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o644)).unwrap();
    source.wait_for("the file once readable", seen(2));
    assert_exactly_once(&source.stop(), 2);
}

#[test]
fn a_10_mb_line_is_cut_to_the_limit_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let mut text = "y".repeat(10 << 20);
    text.push('\n');
    text.push_str(&format!("{}\n", line(1)));
    fs::write(&log, text).unwrap();
    let source = Running::start(config(&log, Multiline::None), &dir.path().join("state"));
    source.wait_for("both events", |m| m.len() >= 2);
    let label = log.display().to_string();
    assert_eq!(source.stats.truncated.with_label_values(&[&label]).get(), 1);
    let messages = source.stop();
    assert_eq!(messages[0].len(), 64 * 1024);
    assert_eq!(messages[1], line(1));
}

#[test]
fn replay_names_the_missing_objects_of_old_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("web.log");
    fs::write(
        &log,
        r#"2026-11-25 16:22:37,001 INFO django.server "GET /catalog/7/ HTTP/1.1" 200 5123
2026-11-25 16:22:38,250 ERROR django.request Internal Server Error: /catalog/7/
Traceback (most recent call last):
  File "/srv/app/venv/lib/python3.11/site-packages/django/db/backends/utils.py", line 105, in _execute
    return self.cursor.execute(sql, params)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
psycopg.errors.UndefinedColumn: column catalog_product.notes does not exist
LINE 1: SELECT "catalog_product"."id", "catalog_product"."notes" FROM...
                                       ^

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/srv/app/catalog/views.py", line 12, in detail
    product = Product.objects.get(pk=pk)
django.db.utils.ProgrammingError: column catalog_product.notes does not exist
LINE 1: SELECT "catalog_product"."id", "catalog_product"."notes" FROM...
                                       ^
2026-11-25 16:22:39,001 INFO django.server "GET /catalog/7/ HTTP/1.1" 500 145
{"time": "2026-11-25T16:22:40Z", "level": "ERROR", "message": "django.db.utils.OperationalError: (1146, \"Table 'shop.legacy_coupon' doesn't exist\")"}
"#,
    )
    .unwrap();
    let report = replay_json(&dir.path().join("absent.toml"), &log);
    assert_eq!(report["events"], 4, "{report:#}");
    let matches = report["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 2, "{report:#}");
    assert_eq!(matches[0]["line"], 2);
    assert_eq!(matches[0]["time"], "2026-11-25T16:22:38.250Z");
    assert_eq!(matches[0]["missing"][0]["table"], "catalog_product");
    assert_eq!(matches[0]["missing"][0]["column"], "notes");
    assert_eq!(matches[1]["line"], 20);
    assert_eq!(matches[1]["missing"][0]["table"], "legacy_coupon");
    assert_eq!(matches[1]["missing"][0]["engine"], "mysql");
    let objects = report["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 2);

    let text = std::process::Command::new(env!("CARGO_BIN_EXE_dropguard"))
        .args([
            "--config",
            &dir.path().join("absent.toml").display().to_string(),
        ])
        .args(["replay", &log.display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("2 of 4 events name a missing table or column:"),
        "{text}"
    );
    assert!(
        text.contains("missing column catalog_product.notes: 1 error"),
        "{text}"
    );
}

#[test]
fn replay_of_a_large_file_read_in_halves_counts_and_numbers_like_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("big.log");
    let mut text = String::new();
    let mut line = 0u64;
    let mut events = 0u64;
    let mut expected_lines = Vec::new();
    for i in 0..120_000u64 {
        if i % 9_973 == 0 {
            expected_lines.push(line + 1);
            text.push_str(&format!(
                "2026-11-25 16:22:38,250 ERROR django.request Internal Server Error: /x/{i}/\n\
                 Traceback (most recent call last):\n  File \"views.py\", line 1, in x\n\
                 django.db.utils.OperationalError: no such table: legacy_coupon_{i}\n"
            ));
            line += 4;
        } else {
            text.push_str(&format!(
                "2026-11-25 16:22:38,250 INFO django.server \"GET /catalog/{i}/ HTTP/1.1\" 200 5123 {}\n",
                "x".repeat((i % 17) as usize)
            ));
            line += 1;
        }
        events += 1;
    }
    assert!(
        text.len() > 8 << 20,
        "large enough to be split: {}",
        text.len()
    );
    fs::write(&log, &text).unwrap();
    let report = replay_json(&dir.path().join("absent.toml"), &log);
    assert_eq!(report["events"], events);
    let lines: Vec<u64> = report["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, expected_lines);
}

#[test]
fn replay_uses_the_configured_patterns_and_file_settings() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    fs::write(
        &log,
        "2026-11-25T16:22:38Z app.errors.ObjectMissing: Orders_Order.Gift_Note\nsecond line\n",
    )
    .unwrap();
    let config = dir.path().join("dropguard.toml");
    fs::write(
        &config,
        "environment = \"test\"\n[database]\nurl = \"sqlite://app.db\"\n[state]\ndir = \"state\"\n\
         [[logs.file]]\npath = \"/var/log/app/*.log\"\nmultiline = \"start\"\nmultiline_start = '^\\d{4}-'\n\
         [detect]\npatterns = ['ObjectMissing: (?P<table>\\w+)\\.(?P<column>\\w+)']\n",
    )
    .unwrap();
    let report = replay_json(&config, &log);
    // multiline = "start": the second line joins the first.
    assert_eq!(report["events"], 1, "{report:#}");
    let missing = &report["matches"][0]["missing"][0];
    assert_eq!(missing["table"], "orders_order");
    assert_eq!(missing["column"], "gift_note");
    assert_eq!(missing["engine"], "custom");
}

/// `dropguard --config CONFIG replay --json LOG`, which must succeed; its report.
fn replay_json(config: &Path, log: &Path) -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dropguard"))
        .args(["--config", &config.display().to_string()])
        .args(["replay", "--json", &log.display().to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Issue 17, item 1: listing a watched directory raised an inotify `IN_OPEN`
/// on it, which woke the source, which listed the directory again: an idle
/// daemon with a file source used most of a core, forever. The daemon's CPU
/// time is read from /proc, so a busy machine cannot make this pass or fail.
#[test]
fn an_idle_daemon_with_a_file_source_uses_almost_no_cpu() {
    let ws = crate::harness::Workspace::new();
    let logs = ws.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    append(&logs.join("web.log"), "INFO started\n");
    append(&logs.join("worker.log"), "INFO started\n");
    let config = ws.sqlite_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[logs.file]]\npath = \"{}/*.log\"\n",
        logs.display()
    ));
    let daemon = crate::harness::Daemon::start(&config);
    daemon.wait_ready();
    // Past start-up's own work.
    std::thread::sleep(Duration::from_millis(500));
    let before = daemon.cpu_ticks();
    let idle = Duration::from_secs(3);
    std::thread::sleep(idle);
    let used = daemon.cpu_ticks() - before;
    // SAFETY: sysconf has no preconditions.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
    // 5% of a core at most (0.15 s in 3 s); the fault used 85-90%.
    assert!(
        used * 20 <= per_second * idle.as_secs(),
        "an idle daemon used {used} ticks of CPU in {idle:?} ({per_second} ticks a second)"
    );
}

/// Issue 17, item 12: the file source followed a symlink the glob matched to any
/// regular file (as root it read `/etc/shadow`). A link is followed only into
/// the glob's own directory and `symlinks_into`; any other is refused and
/// counted, while the other files go on.
#[test]
fn a_symlink_out_of_the_log_directory_is_not_read() {
    let ws = tempfile::tempdir().unwrap();
    let logs = ws.path().join("logs");
    let pods = ws.path().join("pods");
    let secrets = ws.path().join("etc");
    for dir in [&logs, &pods, &secrets] {
        fs::create_dir_all(dir).unwrap();
    }
    append(
        &secrets.join("shadow"),
        "root:SECRET-HASH:19000:0:99999:7:::\n",
    );
    append(&pods.join("web-0.log"), "from the pod\n");
    append(&logs.join("real.log"), "from the real file\n");
    append(
        &logs.join("rotated.1"),
        "from a file in the same directory\n",
    );
    std::os::unix::fs::symlink(secrets.join("shadow"), logs.join("shadow.log")).unwrap();
    std::os::unix::fs::symlink(pods.join("web-0.log"), logs.join("web-0.log")).unwrap();
    std::os::unix::fs::symlink(logs.join("rotated.1"), logs.join("inside.log")).unwrap();
    let mut config = config(&logs.join("*.log"), Multiline::None);
    config.symlinks_into = vec![pods.clone()];
    let running = Running::start(config, &ws.path().join("state"));
    running.wait_for("the readable files", |m| m.len() >= 3);
    std::thread::sleep(Duration::from_millis(300));
    let stats = running.stats.clone();
    let messages = running.stop();
    assert!(
        !messages.iter().any(|m| m.contains("SECRET")),
        "a symlink out of the log directory was read: {messages:?}"
    );
    for expected in [
        "from the pod",
        "from the real file",
        "from a file in the same directory",
    ] {
        assert!(
            messages.iter().any(|m| m == expected),
            "{expected}: {messages:?}"
        );
    }
    let glob = logs.join("*.log").display().to_string();
    assert_eq!(
        stats
            .errors
            .with_label_values(&[glob.as_str(), "open"])
            .get(),
        1
    );
}

/// Issue 17, item 7: a log file renamed out of the glob for a few seconds and
/// back was read again from its start (its checkpoint went with it after 2 s),
/// and its errors alerted again as a new incident. The checkpoint of a file the
/// source let go of is kept, so it resumes where it was.
#[test]
fn a_file_renamed_out_of_the_glob_and_back_is_not_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let path = logs.join("web.log");
    let away = logs.join("web.log.away");
    for n in 0..3 {
        append(&path, &format!("{}\n", line(n)));
    }
    let running = Running::start(
        config(&logs.join("*.log"), Multiline::None),
        &dir.path().join("state"),
    );
    running.wait_for("the first lines", seen(3));
    fs::rename(&path, &away).unwrap();
    // Let go of (2 s without growth, out of the glob), and checkpoints saved.
    std::thread::sleep(Duration::from_millis(3500));
    fs::rename(&away, &path).unwrap();
    append(&path, &format!("{}\n", line(3)));
    running.wait_for("the line written after it came back", seen(4));
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(&running.stop(), 4);
}

/// Issue 17, item 7: what a file already held when the source opened it is
/// marked as written by the file's modification time then, so a file read
/// again from its start never passes its old errors off as new ones; what is
/// appended afterwards is not marked.
#[test]
fn bytes_a_file_held_when_opened_carry_its_modification_time() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let path = logs.join("web.log");
    append(&path, &format!("{}\n{}\n", line(0), line(1)));
    let held_until = fs::metadata(&path).unwrap().modified().unwrap();
    let running = Running::start(
        config(&logs.join("*.log"), Multiline::None),
        &dir.path().join("state"),
    );
    running.wait_for("the lines it held", seen(2));
    append(&path, &format!("{}\n", line(2)));
    running.wait_for("the appended line", seen(3));
    let events = running.events.lock().unwrap().clone();
    drop(running);
    let written_by: Vec<_> = events.iter().map(|e| e.written_by).collect();
    assert_eq!(written_by, [Some(held_until), Some(held_until), None]);
}
