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
