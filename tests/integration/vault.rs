//! `preserve` and `snapshots` as an operator uses them, on every engine.

use serde_json::Value;

use crate::db::execute;
use crate::harness::{ENGINES, EngineKind, TestDb, Workspace, stderr, stdout};

fn config_for(ws: &Workspace, db: &TestDb) {
    ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"{}\"\n[state]\ndir = \"state\"\n",
        db.url
    ));
}

fn json_of(ws: &Workspace, args: &[&str]) -> Value {
    let output = ws.run(args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?}: {}",
        stderr(&output)
    );
    serde_json::from_str(&stdout(&output))
        .unwrap_or_else(|err| panic!("{args:?} printed no JSON ({err}): {}", stdout(&output)))
}

#[tokio::test]
async fn ad_hoc_preserve_lists_shows_and_verifies_on_every_engine() {
    for kind in ENGINES {
        let db = TestDb::create(kind, "vault");
        execute(
            &db,
            &[
                "CREATE TABLE product (id INTEGER PRIMARY KEY, sku VARCHAR(20), legacy_code VARCHAR(20))".to_string(),
                "INSERT INTO product VALUES (1, 'a', 'L1'), (2, 'b', NULL), (3, 'c', 'L3')".to_string(),
            ],
        )
        .await;
        let ws = Workspace::new();
        config_for(&ws, &db);

        let taken = json_of(
            &ws,
            &[
                "preserve",
                "--table",
                "product",
                "--columns",
                "legacy_code",
                "--json",
            ],
        );
        let id = taken[0]["id"].as_str().expect("snapshot id").to_string();
        assert_eq!(taken[0]["rows"], 3, "{kind:?}: {taken}");
        let whole = json_of(&ws, &["preserve", "--table", "product", "--json"]);
        let whole_id = whole[0]["id"].as_str().unwrap().to_string();

        let list = json_of(&ws, &["snapshots", "list", "--json"]);
        let items = list.as_array().expect("a JSON array");
        assert_eq!(items.len(), 2, "{kind:?}: {list}");
        assert_eq!(items[0]["id"], id.as_str(), "sorted by time");
        for item in items {
            for field in ["id", "migration", "created_at", "objects", "complete"] {
                assert!(
                    item.get(field).is_some(),
                    "{kind:?}: {field} missing in {item}"
                );
            }
            assert_eq!(item["complete"], true);
        }
        assert_eq!(items[0]["objects"][0]["table"], "product");
        assert_eq!(
            items[0]["objects"][0]["columns"],
            serde_json::json!(["legacy_code"])
        );
        assert_eq!(items[0]["objects"][0]["rows"], 3);
        assert_eq!(items[1]["objects"][0]["columns"], serde_json::json!([]));

        let manifest = json_of(&ws, &["snapshots", "show", &id, "--json"]);
        assert_eq!(manifest["environment"], "test");
        assert_eq!(
            manifest["objects"][0]["primary_key"],
            serde_json::json!(["id"])
        );

        let verified = ws.run(&["snapshots", "verify", &whole_id]);
        assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));
        assert!(
            stdout(&verified).contains("verified"),
            "{}",
            stdout(&verified)
        );

        // Damage the data file: verify says so and fails.
        let snapshot_dir = ws.path().join("state/vault").join(&whole_id);
        let data = std::fs::read_dir(&snapshot_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "zst"))
            .expect("a data file");
        let mut bytes = std::fs::read(&data).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        std::fs::write(&data, bytes).unwrap();
        let damaged = ws.run(&["snapshots", "verify", &whole_id]);
        assert_eq!(
            damaged.status.code(),
            Some(1),
            "{kind:?}: {}",
            stdout(&damaged)
        );
        assert!(stdout(&damaged).contains("DAMAGED"), "{}", stdout(&damaged));
    }
}

#[tokio::test]
async fn preserve_errors_name_the_table_and_the_next_step() {
    let db = TestDb::create(EngineKind::Sqlite, "vaulterr");
    execute(&db, &["CREATE TABLE nokey (a TEXT, b TEXT)".to_string()]).await;
    let ws = Workspace::new();
    config_for(&ws, &db);
    let missing = ws.run(&["preserve", "--table", "no_such_table"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("table no_such_table does not exist"),
        "{}",
        stderr(&missing)
    );
    let column = ws.run(&["preserve", "--table", "nokey", "--columns", "zz"]);
    assert!(
        stderr(&column).contains("table nokey has no column zz"),
        "{}",
        stderr(&column)
    );
    let nokey = ws.run(&["preserve", "--table", "nokey", "--columns", "b"]);
    assert!(
        stderr(&nokey).contains("has no primary key"),
        "{}",
        stderr(&nokey)
    );
    let unknown = ws.run(&["snapshots", "show", "not-an-id"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("snapshots list"),
        "{}",
        stderr(&unknown)
    );
    // Nothing half-written is listed after the failures.
    let list = json_of(&ws, &["snapshots", "list", "--json"]);
    assert_eq!(list, serde_json::json!([]));
}
