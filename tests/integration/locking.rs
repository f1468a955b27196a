//! Several dropguards on one database: a migration is preserved once.

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::db::execute;
use crate::harness::{BIN, ENGINES, EngineKind, TestDb, Workspace};

const ROWS: u32 = 200_000;

fn fill_sql(kind: EngineKind) -> String {
    match kind {
        EngineKind::Postgres => {
            format!("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g")
        }
        EngineKind::Mysql => format!(
            "SET SESSION max_recursive_iterations = 1000000; INSERT INTO big WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {ROWS}) SELECT n, MD5(n) FROM seq"
        ),
        EngineKind::Sqlite => format!(
            "INSERT INTO big WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {ROWS}) SELECT n, hex(randomblob(16)) FROM seq"
        ),
    }
}

#[tokio::test]
async fn two_instances_racing_take_one_snapshot_on_every_engine() {
    for kind in ENGINES {
        let db = TestDb::create(kind, "race");
        execute(
            &db,
            &[
                "CREATE TABLE big (id INTEGER PRIMARY KEY, payload VARCHAR(40))".to_string(),
                fill_sql(kind),
            ],
        )
        .await;
        let ws = Workspace::new();
        let sql = ws.path().join("sql");
        std::fs::create_dir(&sql).unwrap();
        std::fs::write(sql.join("0001_drop_big.up.sql"), "DROP TABLE big;").unwrap();
        let config = ws.write_config(&format!(
            "environment = \"test\"\n[database]\nurl = \"{}\"\n[sql]\ndir = \"sql\"\n[state]\ndir = \"state\"\n",
            db.url
        ));
        // Both start at once, sharing the database and the vault.
        let racers: Vec<_> = (0..2)
            .map(|_| {
                Command::new(BIN)
                    .args([
                        "preserve",
                        "--migration",
                        "0001_drop_big",
                        "--json",
                        "--config",
                    ])
                    .arg(&config)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawning dropguard preserve")
            })
            .collect();
        let outputs: Vec<_> = racers
            .into_iter()
            .map(|child| child.wait_with_output().expect("waiting for preserve"))
            .collect();
        let mut reused = 0;
        for output in &outputs {
            assert!(
                output.status.success(),
                "{kind:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let taken: Value = serde_json::from_slice(&output.stdout).expect("JSON");
            assert_eq!(taken[0]["rows"], ROWS, "{kind:?}: {taken}");
            if taken[0]["reused"] == true {
                reused += 1;
            }
        }
        assert_eq!(
            reused, 1,
            "{kind:?}: exactly one instance reuses the other's snapshot"
        );
        let list = Command::new(BIN)
            .args(["snapshots", "list", "--json", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let list: Value = serde_json::from_slice(&list.stdout).unwrap();
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{kind:?}: {list}");
    }
}
