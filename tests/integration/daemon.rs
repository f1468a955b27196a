//! `dropguard run`: serves /metrics and health, turns ready, stops cleanly on SIGTERM.

use std::time::Duration;

use crate::harness::{Daemon, Workspace, stderr};

#[test]
fn serves_metrics_turns_ready_and_exits_0_on_sigterm() {
    let ws = Workspace::new();
    let config = ws.sqlite_config("[server]\nlisten = \"127.0.0.1:0\"\ngrace_period = \"3s\"\n");
    let daemon = Daemon::start(&config);
    daemon.wait_ready();

    let (status, body) = daemon.get("/metrics");
    assert_eq!(status, 200);
    let version = env!("CARGO_PKG_VERSION");
    let build_info = body
        .lines()
        .find(|line| line.starts_with("dropguard_build_info{"))
        .unwrap_or_else(|| panic!("no dropguard_build_info in:\n{body}"));
    assert!(
        build_info.contains(&format!("version=\"{version}\"")) && build_info.ends_with(" 1"),
        "{build_info}"
    );
    assert!(
        body.contains("process_resident_memory_bytes"),
        "no process metrics:\n{body}"
    );

    let (status, body) = daemon.get("/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = daemon.get("/readyz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = daemon.get("/nope");
    assert_eq!(status, 404);
    assert!(body.contains("\"error\""), "errors are JSON: {body}");

    assert!(ws.path().join("state").is_dir(), "the state dir is created");

    let stopped = daemon.terminate(Duration::from_secs(5));
    assert!(stopped.status.success(), "exit status {:?}", stopped.status);
    assert!(
        stopped.took < Duration::from_secs(3),
        "took {:?}, beyond the 3 s grace period",
        stopped.took
    );
    let logs = stopped.logs.join("\n");
    assert!(logs.contains("\"signal\":\"SIGTERM\""), "{logs}");
    assert!(logs.contains("\"message\":\"stopped\""), "{logs}");
}

#[test]
fn port_in_use_is_named() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let ws = Workspace::new();
    ws.sqlite_config(&format!("[server]\nlisten = \"{addr}\"\n"));
    let output = ws.run(&["run"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains(&format!("cannot listen on {addr} (server.listen)")),
        "{err}"
    );
    assert!(err.contains("Address already in use"), "{err}");
}

#[test]
fn stops_on_sigterm_even_with_an_idle_client_connected() {
    let ws = Workspace::new();
    let config = ws.sqlite_config("[server]\nlisten = \"127.0.0.1:0\"\ngrace_period = \"2s\"\n");
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    // A keep-alive client that sends half a request and then nothing.
    let mut idle = std::net::TcpStream::connect(&daemon.addr).unwrap();
    std::io::Write::write_all(&mut idle, b"GET /metrics HTTP/1.1\r\n").unwrap();
    let stopped = daemon.terminate(Duration::from_secs(6));
    assert!(stopped.status.success(), "exit status {:?}", stopped.status);
    assert!(
        stopped.took < Duration::from_secs(4),
        "took {:?}",
        stopped.took
    );
}

#[test]
fn the_daemon_tails_configured_log_files_and_counts_their_events() {
    let ws = Workspace::new();
    let logs = ws.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(
        logs.join("web.log"),
        "before start: skipped (read_from = end)\n",
    )
    .unwrap();
    let glob = logs.join("*.log").display().to_string();
    let config = ws.sqlite_config(&format!(
        "[[logs.file]]\npath = \"{glob}\"\npoll_interval = \"100ms\"\nmultiline = \"none\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\ngrace_period = \"3s\"\n"
    ));
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    std::thread::sleep(Duration::from_millis(300));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(logs.join("web.log"))
        .unwrap();
    use std::io::Write;
    writeln!(file, "one\ntwo\nthree").unwrap();
    let wanted = format!("dropguard_source_events_total{{source=\"{glob}\"}} 3");
    let started = std::time::Instant::now();
    loop {
        let (_, body) = daemon.get("/metrics");
        if body.contains(&wanted) {
            assert!(
                body.contains(&format!("dropguard_source_files{{source=\"{glob}\"}} 1")),
                "{body}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no {wanted} in:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = daemon.terminate(Duration::from_secs(5));
    assert!(stopped.status.success(), "{:?}", stopped.logs);
    let checkpoints: Vec<_> = std::fs::read_dir(ws.path().join("state/checkpoints"))
        .unwrap()
        .collect();
    assert_eq!(checkpoints.len(), 1, "a checkpoint file for the glob");
}

#[test]
fn a_damaged_checkpoint_file_keeps_its_source_not_ready_and_says_why() {
    let ws = Workspace::new();
    let glob = ws.path().join("logs/*.log").display().to_string();
    let checkpoints = dropguard::sources::file::checkpoint_path(&ws.path().join("state"), &glob);
    std::fs::create_dir_all(checkpoints.parent().unwrap()).unwrap();
    std::fs::write(&checkpoints, "{ damaged").unwrap();
    let config = ws.sqlite_config(&format!(
        "[[logs.file]]\npath = \"{glob}\"\n[server]\nlisten = \"127.0.0.1:0\"\ngrace_period = \"3s\"\n"
    ));
    let daemon = Daemon::start(&config);
    let started = std::time::Instant::now();
    let body = loop {
        let (status, body) = daemon.get("/readyz");
        if status == 503 && body.contains("move it away") {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "readiness never named the damaged checkpoint file: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(body.contains("logs.file"), "{body}");
    assert_eq!(
        std::fs::read_to_string(&checkpoints).unwrap(),
        "{ damaged",
        "the file is left for the operator to look at"
    );
    let stopped = daemon.terminate(Duration::from_secs(5));
    assert!(stopped.status.success(), "{:?}", stopped.logs);
}
