//! The runbook's "record the data, roll back, put it back", on the fixture Django
//! project driven by its own `manage.py`, on SQLite, PostgreSQL and MariaDB: data
//! dropped by real migrations comes back exactly, twice in a row.

use serde_json::Value;

use crate::django_support::{django, django_project};
use crate::harness::{ENGINES, TestDb, Workspace, stderr, stdout};

/// Migrates part of the way, leaving the release's destructive migrations pending.
pub const BEFORE_RELEASE: [[&str; 2]; 4] = [
    ["catalog", "0010"],
    ["orders", "0003"],
    ["legacy", "0003"],
    ["accounts", "0002"],
];

/// What the release destroys, as `dump.py` specs (table, or table:columns).
pub const AT_RISK: [&str; 9] = [
    "accounts_user:display_nick",
    "catalog_product_tags",
    "catalog_product:weight_grams",
    "catalog_product:brand_code",
    "catalog_digitalproduct",
    "orders_order:sales_rep_id",
    "shop_ShippingRate",
    "orders_wishlist",
    "orders_wishlist_products",
];

fn json_of(ws: &Workspace, args: &[&str]) -> Value {
    let output = ws.run(args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?}: {}\n{}",
        stderr(&output),
        stdout(&output)
    );
    serde_json::from_str(&stdout(&output))
        .unwrap_or_else(|err| panic!("{args:?} printed no JSON ({err}): {}", stdout(&output)))
}

fn dump(url: &str) -> Value {
    dump_at(&django_project(), url, &AT_RISK)
}

/// `dump.py` of `specs` (table, or table:columns) in the project at `project`.
pub fn dump_at(project: &std::path::Path, url: &str, specs: &[&str]) -> Value {
    let mut args = vec!["dump.py"];
    args.extend(specs);
    serde_json::from_str(&crate::django_support::django_at(project, url, &args))
        .expect("dump.py JSON")
}

fn migrate_to(url: &str, targets: &[[&str; 2]]) {
    for [app, name] in targets {
        django(url, &["manage.py", "migrate", app, name, "-v0"]);
    }
}

#[test]
fn dropped_tables_and_columns_come_back_exactly_after_rollback_on_every_engine() {
    for kind in ENGINES {
        let db = TestDb::create(kind, "restore");
        let ws = Workspace::new();
        ws.write_config(&format!(
            "environment = \"test\"\n[database]\nurl = \"{}\"\n[django]\nproject_dir = \"{}\"\nauth_user_model = \"accounts.User\"\n[state]\ndir = \"state\"\n",
            db.url,
            django_project().display()
        ));
        migrate_to(&db.url, &BEFORE_RELEASE);
        django(&db.url, &["seed.py"]);
        let before = dump(&db.url);
        for spec in AT_RISK {
            let rows = before[spec]
                .as_array()
                .unwrap_or_else(|| panic!("{kind:?}: {spec} not dumped"));
            assert!(!rows.is_empty(), "{kind:?}: {spec} was not seeded");
        }

        // Prepare: preserve the plan's at-risk data, one snapshot per migration.
        let taken = json_of(&ws, &["preserve", "--json"]);
        let snapshots: Vec<(String, String)> = taken
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["migration"].as_str().unwrap().to_string(),
                    s["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let names: Vec<&str> = snapshots.iter().map(|(m, _)| m.as_str()).collect();
        for expected in [
            "accounts.0003_remove_user_nickname",
            "catalog.0011_remove_product_tags",
            "catalog.0013_remove_product_weight_grams",
            "catalog.0016_remove_product_brand",
            "orders.0004_remove_order_sales_rep",
            "orders.0006_delete_wishlist",
        ] {
            assert!(
                names.contains(&expected),
                "{kind:?}: no snapshot for {expected}: {names:?}"
            );
        }

        // Deploy: the release drops them.
        django(&db.url, &["manage.py", "migrate", "-v0"]);
        assert!(
            dump(&db.url)["catalog_product_tags"].is_null(),
            "{kind:?}: the table is gone"
        );

        // Restoring before the rollback is refused, with the command to run.
        let (_, weight_id) = snapshots
            .iter()
            .find(|(m, _)| m == "catalog.0013_remove_product_weight_grams")
            .unwrap();
        let refused = ws.run(&["restore", "--snapshot", weight_id]);
        assert_eq!(refused.status.code(), Some(1), "{kind:?}");
        let err = stderr(&refused);
        assert!(err.contains("not rolled back"), "{kind:?}: {err}");
        assert!(
            err.contains("python manage.py migrate catalog 0012_delete_discontinuedproduct"),
            "{kind:?}: {err}"
        );

        // Roll back: reverse the migrations, then put the recorded data back.
        migrate_to(&db.url, &BEFORE_RELEASE);
        for round in ["first", "second"] {
            for (migration, id) in &snapshots {
                let report = json_of(&ws, &["restore", "--snapshot", id, "--json"]);
                for object in report["objects"].as_array().unwrap() {
                    let rows = object["snapshot_rows"].as_u64().unwrap();
                    assert_eq!(
                        object["conflicts"], 0,
                        "{kind:?} {migration} {round}: {object}"
                    );
                    assert_eq!(
                        object["missing"], 0,
                        "{kind:?} {migration} {round}: {object}"
                    );
                    if round == "second" {
                        assert_eq!(
                            object["written"], 0,
                            "{kind:?} {migration}: a second restore changes nothing: {object}"
                        );
                        assert_eq!(
                            object["unchanged"].as_u64(),
                            Some(rows),
                            "{kind:?} {migration}: {object}"
                        );
                    }
                    assert_ne!(
                        object["verification"]["method"], "not_run",
                        "{kind:?} {migration}"
                    );
                }
            }
            assert_eq!(
                dump(&db.url),
                before,
                "{kind:?}: after the {round} restore the data equals the pre-release data"
            );
        }
    }
}

#[test]
fn dry_run_writes_nothing_and_conflicts_are_left_alone_unless_forced() {
    let kind = crate::harness::EngineKind::Postgres;
    let db = TestDb::create(kind, "conflict");
    let ws = Workspace::new();
    ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"{}\"\n[django]\nproject_dir = \"{}\"\nauth_user_model = \"accounts.User\"\n[state]\ndir = \"state\"\n",
        db.url,
        django_project().display()
    ));
    migrate_to(&db.url, &BEFORE_RELEASE);
    django(&db.url, &["seed.py"]);
    let before = dump(&db.url);
    let taken = json_of(
        &ws,
        &[
            "preserve",
            "--migration",
            "catalog.0013_remove_product_weight_grams",
            "--json",
        ],
    );
    let id = taken[0]["id"].as_str().unwrap().to_string();
    django(&db.url, &["manage.py", "migrate", "catalog", "0013", "-v0"]);
    django(&db.url, &["manage.py", "migrate", "catalog", "0012", "-v0"]);

    let dry = json_of(&ws, &["restore", "--snapshot", &id, "--dry-run", "--json"]);
    assert_eq!(dry["dry_run"], true);
    assert!(dry["objects"][0]["written"].as_u64().unwrap() > 0, "{dry}");
    assert_ne!(
        dump(&db.url)["catalog_product:weight_grams"],
        before["catalog_product:weight_grams"],
        "dry run wrote"
    );

    // The old code writes a weight after the rollback: that row is a conflict.
    crate::db::block_on_sql(
        &db,
        "UPDATE catalog_product SET weight_grams = 999 WHERE id = (SELECT MAX(id) FROM catalog_product)",
    );
    let output = ws.run(&["restore", "--snapshot", &id, "--json"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "unresolved conflicts exit 1: {}",
        stderr(&output)
    );
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["objects"][0]["conflicts"], 1, "{report}");
    let forced = json_of(&ws, &["restore", "--snapshot", &id, "--force", "--json"]);
    assert_eq!(forced["objects"][0]["conflicts"], 1, "{forced}");
    assert_eq!(
        dump(&db.url)["catalog_product:weight_grams"],
        before["catalog_product:weight_grams"]
    );
}

/// Issue 17, item 8: a snapshot whose second object's data file is damaged (a
/// flipped byte, cut short, deleted, or swapped with the first object's) is
/// refused before anything is written: the first object is not committed and
/// then the second found damaged. The error names the damaged object and the
/// next step; the tables stay as the rollback left them.
#[tokio::test]
async fn a_damaged_snapshot_is_refused_before_any_object_is_written_on_sqlite_and_postgres() {
    use crate::harness::{EngineKind, exec};
    const ROWS: usize = 200;
    for kind in [EngineKind::Sqlite, EngineKind::Postgres] {
        let db = TestDb::create(kind, "damaged");
        let values = |word: &str| {
            (1..=ROWS)
                .map(|i| format!("({i}, '{word} {i}')"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        crate::db::execute(
            &db,
            &[
                "CREATE TABLE gift_first (id INTEGER PRIMARY KEY, note VARCHAR(40))".to_string(),
                "CREATE TABLE gift_second (id INTEGER PRIMARY KEY, note VARCHAR(40))".to_string(),
                format!("INSERT INTO gift_first VALUES {}", values("first")),
                format!("INSERT INTO gift_second VALUES {}", values("second")),
            ],
        )
        .await;
        let ws = Workspace::new();
        std::fs::create_dir(ws.path().join("sql")).unwrap();
        std::fs::write(
            ws.path().join("sql/0001_drop_gifts.up.sql"),
            "DROP TABLE gift_first;\nDROP TABLE gift_second;\n",
        )
        .unwrap();
        ws.write_config(&format!(
            "environment = \"test\"\n[database]\nurl = \"{}\"\n[sql]\ndir = \"sql\"\n[state]\ndir = \"state\"\n",
            db.url
        ));
        let taken = json_of(&ws, &["preserve", "--json"]);
        let id = taken[0]["id"].as_str().unwrap().to_string();
        let manifest = json_of(&ws, &["snapshots", "show", &id, "--json"]);
        let objects = manifest["objects"].as_array().unwrap();
        assert_eq!(objects.len(), 2, "{kind:?}: {manifest:#}");
        let snapshot_dir = ws.path().join("state/vault").join(&id);
        let file_of = |table: &str| {
            let object = objects.iter().find(|o| o["table"] == table).unwrap();
            snapshot_dir.join(object["file"].as_str().unwrap())
        };
        let (first, second) = (file_of("gift_first"), file_of("gift_second"));
        let pristine = (
            std::fs::read(&first).unwrap(),
            std::fs::read(&second).unwrap(),
        );

        // The migration ran and was rolled back: both tables are back, empty.
        exec(kind, &db.url, "DELETE FROM gift_first").await;
        exec(kind, &db.url, "DELETE FROM gift_second").await;
        let count = |table: &'static str| {
            let url = db.url.clone();
            async move {
                exec(
                    kind,
                    &url,
                    &format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"),
                )
                .await[0][0]
                    .clone()
            }
        };

        let damages: [(&str, &dyn Fn()); 4] = [
            ("a flipped byte", &|| {
                let mut bytes = pristine.1.clone();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x20;
                std::fs::write(&second, bytes).unwrap();
            }),
            ("a truncated file", &|| {
                std::fs::write(&second, &pristine.1[..pristine.1.len() / 2]).unwrap();
            }),
            ("a deleted file", &|| std::fs::remove_file(&second).unwrap()),
            ("swapped files", &|| {
                std::fs::write(&first, &pristine.1).unwrap();
                std::fs::write(&second, &pristine.0).unwrap();
            }),
        ];
        for (damage, apply) in damages {
            apply();
            let verified = ws.run(&["snapshots", "verify", &id]);
            assert!(
                stdout(&verified).contains("DAMAGED"),
                "{kind:?} {damage}: {}",
                stdout(&verified)
            );
            let refused = ws.run(&["restore", "--snapshot", &id]);
            let err = stderr(&refused);
            assert_eq!(refused.status.code(), Some(1), "{kind:?} {damage}: {err}");
            assert!(
                err.contains("table gift_second") && err.contains("nothing was written"),
                "{kind:?} {damage}: the damaged object is named: {err}"
            );
            assert!(
                err.contains(&format!("dropguard snapshots verify {id}")),
                "{kind:?} {damage}: the next step is named: {err}"
            );
            assert_eq!(
                (count("gift_first").await, count("gift_second").await),
                ("0".to_string(), "0".to_string()),
                "{kind:?} {damage}: a row was written from a damaged snapshot"
            );
            std::fs::write(&first, &pristine.0).unwrap();
            std::fs::write(&second, &pristine.1).unwrap();
        }

        // The same snapshot, intact again, restores both objects.
        let restored = json_of(&ws, &["restore", "--snapshot", &id, "--json"]);
        assert_eq!(
            restored["objects"][0]["written"], ROWS,
            "{kind:?}: {restored}"
        );
        assert_eq!(
            restored["objects"][1]["written"], ROWS,
            "{kind:?}: {restored}"
        );
        assert_eq!(count("gift_second").await, ROWS.to_string(), "{kind:?}");
    }
}
