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
