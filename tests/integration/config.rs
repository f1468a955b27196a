//! Configuration errors as the operator meets them: `check-config` and `run` name
//! every problem and exit 64.

use crate::harness::{Workspace, run_with_env, stderr, stdout};

const EXIT_CONFIG: Option<i32> = Some(64);

fn check(ws: &Workspace) -> (Option<i32>, String) {
    let output = ws.run(&["check-config"]);
    (output.status.code(), stderr(&output))
}

#[test]
fn unknown_key_is_named_with_path_and_line() {
    let ws = Workspace::new();
    ws.sqlite_config("[detect]\nwindow = \"60s\"\nmin_eror = 5\n");
    let (code, err) = check(&ws);
    assert_eq!(code, EXIT_CONFIG);
    assert!(
        err.contains("unknown key detect.min_eror (line 8)"),
        "{err}"
    );
}

#[test]
fn missing_environment_variable_is_named() {
    let ws = Workspace::new();
    ws.sqlite_config("[server]\napi_token = \"${DROPGUARD_TEST_UNSET_TOKEN}\"\n");
    let (code, err) = check(&ws);
    assert_eq!(code, EXIT_CONFIG);
    assert!(
        err.contains(
            "server.api_token (line 7): environment variable DROPGUARD_TEST_UNSET_TOKEN is not set"
        ),
        "{err}"
    );

    let output = run_with_env(
        &["check-config"],
        &ws.config_path(),
        &[("DROPGUARD_TEST_UNSET_TOKEN", "tok-123456")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!stdout(&output).contains("tok-123456"), "the token leaked");
}

#[test]
fn bad_duration_is_explained() {
    let ws = Workspace::new();
    ws.sqlite_config("[detect]\nwatch_for = \"half an hour\"\n");
    let (code, err) = check(&ws);
    assert_eq!(code, EXIT_CONFIG);
    assert!(
        err.contains("detect.watch_for (line 7): invalid duration \"half an hour\""),
        "{err}"
    );
    assert!(err.contains("\"500ms\", \"60s\" or \"30m\""), "{err}");
}

#[test]
fn every_cross_field_problem_is_listed() {
    let ws = Workspace::new();
    ws.write_config(
        "environment = \"stage\"\n[database]\nurl = \"mongodb://db/app\"\n[django]\nproject_dir = \"no-such-project\"\n[[metrics.scrape]]\nurl = \"ftp://x/metrics\"\n",
    );
    let (code, err) = check(&ws);
    assert_eq!(code, EXIT_CONFIG);
    assert!(err.contains("has 3 problems"), "{err}");
    assert!(
        err.contains("database.url (line 3): unsupported database scheme \"mongodb\""),
        "{err}"
    );
    assert!(
        err.contains("django.project_dir (line 5): directory"),
        "{err}"
    );
    assert!(
        err.contains("metrics.scrape[0].url (line 7): must be an http:// or https:// URL"),
        "{err}"
    );
}

#[test]
fn bad_listen_address_is_rejected() {
    let ws = Workspace::new();
    ws.sqlite_config("[server]\nlisten = \"localhost:99999\"\n");
    let (code, err) = check(&ws);
    assert_eq!(code, EXIT_CONFIG);
    assert!(
        err.contains("server.listen (line 7): invalid listen address"),
        "{err}"
    );
}

#[test]
fn missing_config_file_says_how_to_point_at_one() {
    let ws = Workspace::new();
    let (code, err) = check(&ws);
    assert_eq!(code, EXIT_CONFIG);
    assert!(
        err.contains("file not found") && err.contains("--config"),
        "{err}"
    );
}

#[test]
fn check_config_prints_the_normalized_config_with_secrets_masked() {
    let ws = Workspace::new();
    ws.write_config(
        "environment = \"prod\"\n[database]\nurl = \"postgres://app:pg-secret-pw@db:5432/shop\"\n[state]\ndir = \"./state/../state\"\n[alerts.slack]\nwebhook_url = \"https://hooks.slack.com/services/T0/B0/slack-secret-path\"\n[server]\napi_token = \"api-secret-token\"\n",
    );
    let output = ws.run(&["check-config"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let shown = stdout(&output);
    for secret in ["pg-secret-pw", "slack-secret-path", "api-secret-token"] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
    let table: toml::Table = toml::from_str(&shown).expect("check-config prints TOML");
    assert_eq!(
        table["database"]["url"].as_str(),
        Some("postgres://app:********@db:5432/shop")
    );
    let state = ws.path().join("state");
    assert_eq!(
        table["state"]["dir"].as_str(),
        Some(state.to_str().unwrap())
    );
    assert_eq!(table["detect"]["window"].as_str(), Some("1m"));
}

#[test]
fn run_with_a_bad_config_exits_64_before_binding() {
    // The listen address is held by this test: had the daemon tried to bind before
    // validating, it would fail on the port, not on the config.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let ws = Workspace::new();
    ws.sqlite_config(&format!(
        "[server]\nlisten = \"{addr}\"\n[detect]\nmin_errors = 0\n"
    ));
    let output = ws.run(&["run"]);
    assert_eq!(output.status.code(), EXIT_CONFIG, "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("detect.min_errors (line 9)"), "{err}");
    assert!(!err.contains("cannot listen"), "{err}");
}

#[test]
fn check_config_masks_a_password_given_as_a_url_parameter_and_the_vault_endpoint_userinfo() {
    let ws = Workspace::new();
    ws.write_config(
        "environment = \"prod\"\n[database]\nurl = \"mysql://root@db:3306/edxapp?ssl-mode=required&password=qp-secret-1&sslpassword=ssl-secret-2\"\n[state]\ndir = \"state\"\n[vault]\nurl = \"s3://snapshots/prod\"\nendpoint = \"https://minio:endpoint-secret-3@minio.internal:9000?token=endpoint-token-4\"\n",
    );
    let output = ws.run(&["check-config"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let shown = stdout(&output);
    for secret in [
        "qp-secret-1",
        "ssl-secret-2",
        "endpoint-secret-3",
        "endpoint-token-4",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
    let table: toml::Table = toml::from_str(&shown).expect("check-config prints TOML");
    assert_eq!(
        table["database"]["url"].as_str(),
        Some(
            "mysql://root@db:3306/edxapp?ssl-mode=required&password=********&sslpassword=********"
        )
    );
    assert_eq!(
        table["vault"]["endpoint"].as_str(),
        Some("https://minio:********@minio.internal:9000/?token=********")
    );

    // Credentials in vault.url would be taken for the bucket's name: refused, unshown.
    ws.write_config(
        "environment = \"prod\"\n[database]\nurl = \"sqlite://app.db\"\n[state]\ndir = \"state\"\n[vault]\nurl = \"s3://AKID:bucket-secret-5@snapshots/prod\"\n",
    );
    let (code, err) = check(&ws);
    assert_eq!(code, EXIT_CONFIG);
    assert!(
        err.contains("vault.url (line 7): carries credentials"),
        "{err}"
    );
    assert!(!err.contains("bucket-secret-5"), "{err}");
}

/// `check-config --config PATH`, its address space capped at 1 GiB (a reader of
/// `/dev/zero` fails instead of taking the machine's memory) and killed after 10 s.
fn check_config_at(path: &std::path::Path) -> (Option<i32>, String, std::time::Duration) {
    use std::os::unix::process::CommandExt;
    let started = std::time::Instant::now();
    let mut command = std::process::Command::new(crate::harness::BIN);
    command
        .args(["check-config", "--config"])
        .arg(path)
        .env_remove("DROPGUARD_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit(2) is async-signal-safe; nothing else runs in the child.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = command.spawn().expect("running dropguard");
    loop {
        if let Some(status) = child.try_wait().expect("waiting for dropguard") {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code(), err, started.elapsed());
        }
        if started.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "check-config on {} still running after 10 s",
                path.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_fifo_or_dev_zero_as_the_config_is_refused_promptly_with_the_reason() {
    let ws = Workspace::new();
    let fifo = ws.path().join("dropguard.toml");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    for (path, wanted) in [
        (fifo.as_path(), "is a FIFO (named pipe), not a regular file"),
        (
            std::path::Path::new("/dev/zero"),
            "is a character device, not a regular file",
        ),
    ] {
        let (code, err, took) = check_config_at(path);
        assert_eq!(code, EXIT_CONFIG, "{err}");
        assert!(err.contains(wanted), "{err}");
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    }
}

#[test]
fn every_type_error_of_a_config_is_reported_in_one_run() {
    let ws = Workspace::new();
    ws.sqlite_config(
        "[detect]\nmin_errors = \"five\"\nwindow = \"a minute\"\n[server]\nlisten = \"localhost\"\n[[logs.file]]\npath = \"/var/log/a.log\"\nmax_event_bytes = -1\n[[logs.file]]\npath = 7\n[restore]\nmode = \"sometimes\"\n",
    );
    let (code, err) = check(&ws);
    assert_eq!(code, EXIT_CONFIG);
    for wanted in [
        "has 6 problems",
        "detect.min_errors (line 7):",
        "detect.window (line 8): invalid duration \"a minute\"",
        "server.listen (line 10): invalid listen address \"localhost\"",
        "logs.file[0].max_event_bytes (line 13):",
        "logs.file[1].path (line 15):",
        "restore.mode (line 17):",
    ] {
        assert!(err.contains(wanted), "{wanted:?} missing from:\n{err}");
    }
}
