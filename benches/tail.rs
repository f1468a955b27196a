//! Benchmark of the file source: append-to-event latency and memory while a
//! writer appends 100,000 lines/s, then while a single 10 MB line arrives.
//!
//!     cargo bench --bench tail [-- SECONDS]      (default 10)
//!
//! Each line carries the time it was written; the latency is the time from the
//! write to the event reaching the channel's receiver. Peak RSS is the process'
//! VmHWM (writer included), read from /proc.

use std::io::Write;
use std::time::{Duration, Instant};

use dropguard::config::{Duration as ConfigDuration, FileLogConfig, Multiline, ReadFrom};
use dropguard::sources::{SourceStats, file};
use tokio_util::sync::CancellationToken;

const RATE: u64 = 100_000;

fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("app.log");
    std::fs::write(&log, "").expect("creating the log");
    let mut config = FileLogConfig::defaults();
    config.path = log.display().to_string();
    config.read_from = ReadFrom::Beginning;
    config.multiline = Multiline::None;
    config.poll_interval = ConfigDuration(Duration::from_millis(250));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let epoch = Instant::now();
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let source = runtime.spawn(file::run(
        config,
        dir.path().join("state"),
        tx,
        SourceStats::detached().expect("counters"),
        shutdown.clone(),
    ));

    // The writer: batches every millisecond, RATE lines a second in all.
    let writer_log = log.clone();
    let total = RATE * seconds;
    let writer = std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&writer_log)
            .expect("opening the log");
        let per_tick = RATE / 1000;
        let mut written = 0;
        let start = Instant::now();
        while written < total {
            let mut batch = String::new();
            for _ in 0..per_tick {
                let now = epoch.elapsed().as_nanos();
                batch.push_str(&format!(
                    "{now} 2026-11-25 16:22:38,250 INFO django.server \"GET /catalog/{written}/ HTTP/1.1\" 200 5123\n"
                ));
                written += 1;
            }
            file.write_all(batch.as_bytes()).expect("writing");
            let due = start + Duration::from_micros(written * 1_000_000 / RATE);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    });

    let mut latencies = Vec::with_capacity(total as usize);
    runtime.block_on(async {
        while (latencies.len() as u64) < total {
            let Some(event) = rx.recv().await else { break };
            let received = epoch.elapsed().as_nanos();
            let written: u128 = event
                .text()
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("a timestamped line");
            latencies.push(received.saturating_sub(written) as u64);
        }
    });
    writer.join().expect("writer");
    let steady_rss = peak_rss_kib();
    latencies.sort_unstable();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1e6;
    println!(
        "{} lines at {RATE}/s over {seconds} s: latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; peak RSS {:.1} MiB",
        latencies.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0),
        steady_rss as f64 / 1024.0
    );

    // One 10 MB line, then a short one: memory must not follow the line's size.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("opening the log");
    let mut huge = "z".repeat(10 << 20);
    huge.push('\n');
    file.write_all(huge.as_bytes()).expect("writing");
    drop(huge);
    file.write_all(b"0 after\n").expect("writing");
    let started = Instant::now();
    runtime.block_on(async {
        let mut seen = 0;
        while seen < 2 {
            let Some(_) = rx.recv().await else { break };
            seen += 1;
        }
    });
    println!(
        "a 10 MB line: its (truncated) event in {:.1} ms; peak RSS {:.1} MiB (the writer's 10 MB buffer included)",
        started.elapsed().as_secs_f64() * 1e3,
        peak_rss_kib() as f64 / 1024.0
    );
    shutdown.cancel();
    let _ = runtime.block_on(source);
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
