//! Abuse (issue 11): hostile identifiers are only ever names, vault files are
//! owner-only, and the database URL's TLS settings are honoured.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::harness::{ENGINES, EngineKind, TestDb, Workspace, block_on, exec, stderr, stdout};

const HOSTILE: &str = r#"x"; DROP TABLE y; --"#;

fn quoted(kind: EngineKind, name: &str) -> String {
    match kind {
        EngineKind::Mysql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

#[test]
fn a_table_named_like_an_injection_is_preserved_and_restored_as_a_name_on_every_engine() {
    for kind in ENGINES {
        let db = TestDb::create(kind, "hostile");
        let table = quoted(kind, HOSTILE);
        block_on(async {
            exec(kind, &db.url, "CREATE TABLE y (id integer PRIMARY KEY)").await;
            exec(kind, &db.url, "INSERT INTO y VALUES (1)").await;
            exec(
                kind,
                &db.url,
                &format!("CREATE TABLE {table} (id integer PRIMARY KEY, note varchar(40))"),
            )
            .await;
            exec(
                kind,
                &db.url,
                &format!("INSERT INTO {table} VALUES (1, 'a'), (2, 'b; DROP TABLE y')"),
            )
            .await;
        });
        let ws = Workspace::new();
        ws.write_config(&format!(
            "environment = \"test\"\n[database]\nurl = \"{}\"\n[state]\ndir = \"state\"\n",
            db.url
        ));
        let taken = ws.run(&["preserve", "--table", HOSTILE, "--json"]);
        assert_eq!(taken.status.code(), Some(0), "{kind:?}: {}", stderr(&taken));
        let taken: Value = serde_json::from_str(&stdout(&taken)).unwrap();
        assert_eq!(taken[0]["rows"], 2, "{kind:?}: {taken}");
        let id = taken[0]["id"].as_str().unwrap().to_string();
        block_on(exec(kind, &db.url, &format!("DELETE FROM {table}")));
        let restored = ws.run(&["restore", "--snapshot", &id]);
        assert_eq!(
            restored.status.code(),
            Some(0),
            "{kind:?}: {}",
            stderr(&restored)
        );
        let rows: Vec<Vec<String>> = block_on(exec(
            kind,
            &db.url,
            &format!("SELECT CAST(id AS char(8)), note FROM {table} ORDER BY id"),
        ))
        .into_iter()
        .map(|row| row.into_iter().map(|v| v.trim().to_string()).collect())
        .collect();
        assert_eq!(
            rows,
            [["1", "a"], ["2", "b; DROP TABLE y"]].map(|r| r.map(String::from).to_vec()),
            "{kind:?}"
        );
        // y is untouched.
        let y = block_on(exec(
            kind,
            &db.url,
            "SELECT CAST(COUNT(*) AS char(8)) FROM y",
        ));
        assert_eq!(y[0][0].trim(), "1", "{kind:?}");

        // Vault files are owner-only.
        for entry in walkdir::WalkDir::new(ws.path().join("state")) {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode();
            assert_eq!(
                mode & 0o077,
                0,
                "{kind:?}: {} is mode {mode:o}, readable beyond its owner",
                entry.path().display()
            );
        }
    }
}

#[test]
fn tls_settings_in_the_database_url_are_honoured() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path().join("sql")).unwrap();
    let config = |url: &str| {
        ws.write_config(&format!(
            "environment = \"test\"\n[database]\nurl = \"{url}\"\n[state]\ndir = \"state\"\n[sql]\ndir = \"sql\"\n"
        ));
    };
    // The local PostgreSQL serves TLS (Debian's snakeoil certificate): required
    // TLS connects; verifying against a CA file that is not there fails.
    config("postgres://postgres@127.0.0.1:5432/postgres?sslmode=require");
    let scan = ws.run(&["scan"]);
    assert_eq!(scan.status.code(), Some(0), "{}", stderr(&scan));
    config(
        "postgres://postgres@127.0.0.1:5432/postgres?sslmode=verify-full&sslrootcert=/nonexistent/root.crt",
    );
    let scan = ws.run(&["scan"]);
    assert_eq!(scan.status.code(), Some(1));
    assert!(
        stderr(&scan).contains("cannot connect"),
        "{}",
        stderr(&scan)
    );
    // The local MariaDB has TLS off: requiring it must fail, not fall back.
    config("mysql://root@127.0.0.1:3306/mysql?ssl-mode=required");
    let scan = ws.run(&["scan"]);
    assert_eq!(scan.status.code(), Some(1), "{}", stdout(&scan));
    let err = stderr(&scan);
    assert!(
        err.contains("cannot connect") && err.to_lowercase().contains("tls"),
        "{err}"
    );
    // The cause once, not repeated down a chain.
    assert_eq!(
        err.matches("server does not support TLS").count(),
        1,
        "{err}"
    );
}

/// Credentials a database URL can carry besides the userinfo's password.
const QUERY_PASSWORD: &str = "qp-secret-7741";
const SSL_PASSWORD: &str = "sslpw-secret-7742";
const USERINFO_PASSWORD: &str = "ui-secret-7743";

#[test]
fn a_password_in_the_database_url_query_never_shows_in_readyz_logs_or_cli_errors() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path().join("sql")).unwrap();
    // Port 1: nothing listens, so the daemon reports the database in /readyz and its log.
    let url = format!(
        "postgres://app:{USERINFO_PASSWORD}@127.0.0.1:1/shop?sslmode=prefer&password={QUERY_PASSWORD}&sslpassword={SSL_PASSWORD}"
    );
    let config = ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"{url}\"\n[state]\ndir = \"state\"\n[sql]\ndir = \"sql\"\n[server]\nlisten = \"127.0.0.1:0\"\ngrace_period = \"2s\"\n"
    ));
    let secrets = [QUERY_PASSWORD, SSL_PASSWORD, USERINFO_PASSWORD];

    let daemon = crate::harness::Daemon::start(&config);
    let started = std::time::Instant::now();
    let body = loop {
        let (status, body) = daemon.get("/readyz");
        if status == 503 && body.contains("cannot connect to") {
            break body;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "readiness never named the database: {status} {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // The reader still sees which database, and that a password was given.
    assert!(
        body.contains("127.0.0.1:1/shop") && body.contains("password=********"),
        "{body}"
    );
    let stopped = daemon.terminate(std::time::Duration::from_secs(10));
    let logs = stopped.logs.join("\n");
    assert!(logs.contains("cannot connect to the database"), "{logs}");
    for secret in secrets {
        assert!(!body.contains(secret), "{secret} in /readyz: {body}");
        assert!(!logs.contains(secret), "{secret} in the log:\n{logs}");
    }

    // The CLI's error and log say the same, masked.
    let scan = ws.run(&["scan"]);
    assert_eq!(scan.status.code(), Some(1), "{}", stdout(&scan));
    let err = stderr(&scan);
    assert!(
        err.contains("cannot connect to postgres://app:********@127.0.0.1:1/shop"),
        "{err}"
    );
    for secret in secrets {
        assert!(!err.contains(secret), "{secret} in scan's stderr: {err}");
        assert!(!stdout(&scan).contains(secret), "{secret} in scan's stdout");
    }
}

#[test]
fn credentials_in_the_vault_endpoint_never_show_in_object_store_errors() {
    let ws = Workspace::new();
    // Nothing listens on port 1: object_store retries, then fails quoting its request URL.
    ws.sqlite_config(
        "[vault]\nurl = \"s3://snapshots/prod\"\nendpoint = \"http://akid:vault-secret-7744@127.0.0.1:1?X-Amz-Security-Token=vault-token-7745\"\nallow_http = true\n",
    );
    let output = crate::harness::run_with_env(
        &["snapshots", "list"],
        &ws.config_path(),
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let err = stderr(&output);
    assert!(err.contains("object store s3://snapshots/prod"), "{err}");
    for secret in ["vault-secret-7744", "vault-token-7745"] {
        assert!(!err.contains(secret), "{secret} shown: {err}");
        assert!(!stdout(&output).contains(secret), "{secret} shown");
    }
}
