//! `dropguard scan` against the real thing: the fixture Django project, migrated by
//! Django's own `manage.py` on SQLite, PostgreSQL and MariaDB. The oracle is the
//! live database: what each migration really dropped, seen by introspection.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::django_support::{django, django_project};
use crate::harness::{Daemon, ENGINES, EngineKind, TestDb, Workspace, stderr, stdout};

const PROJECT_APPS: [&str; 4] = ["accounts", "catalog", "orders", "legacy"];

/// What one migration destroyed: `table` for a dropped table, `table.column` for a
/// dropped column.
type Drops = BTreeMap<String, BTreeSet<String>>;

fn config_for(ws: &Workspace, db: &TestDb) {
    ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"{}\"\n[django]\nproject_dir = \"{}\"\nauth_user_model = \"accounts.User\"\n[state]\ndir = \"state\"\n",
        db.url,
        django_project().display()
    ));
}

fn scan_json(ws: &Workspace, args: &[&str]) -> Value {
    let mut full = vec!["scan", "--json"];
    full.extend_from_slice(args);
    let output = ws.run(&full);
    assert_eq!(
        output.status.code(),
        Some(0),
        "scan failed: {}",
        stderr(&output)
    );
    serde_json::from_str(&stdout(&output))
        .unwrap_or_else(|err| panic!("scan --json printed no JSON ({err}):\n{}", stdout(&output)))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Drops per migration according to dropguard's plan.
fn plan_drops(plan: &Value) -> Drops {
    let mut drops = Drops::new();
    for migration in plan["migrations"].as_array().expect("migrations array") {
        let name = migration["migration"]
            .as_str()
            .expect("migration name")
            .to_string();
        for op in migration["operations"].as_array().expect("operations") {
            let table = op["table"].as_str().unwrap_or_default();
            let entry = drops.entry(name.clone()).or_default();
            match op["kind"].as_str() {
                Some("drop_table") => {
                    entry.insert(table.to_string());
                }
                Some("drop_column") => {
                    for column in strings(&op["columns"]) {
                        entry.insert(format!("{table}.{column}"));
                    }
                }
                _ => {}
            }
        }
    }
    drops.retain(|_, set| !set.is_empty());
    drops
}

/// Renames per migration according to dropguard's plan: `table` → `new` and
/// `table.column` → `new`.
fn plan_renames(plan: &Value) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut renames: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for migration in plan["migrations"].as_array().expect("migrations array") {
        let name = migration["migration"].as_str().unwrap().to_string();
        for op in migration["operations"].as_array().unwrap() {
            let table = op["table"].as_str().unwrap_or_default();
            let new = op["new_name"].as_str().unwrap_or_default().to_string();
            let key = match op["kind"].as_str() {
                Some("rename_table") => table.to_string(),
                Some("rename_column") => format!("{table}.{}", strings(&op["columns"]).join(",")),
                _ => continue,
            };
            renames.entry(name.clone()).or_default().insert(key, new);
        }
    }
    renames
}

/// Drops per migration according to the database, as `oracle.py` saw them. The
/// oracle tells renames from drop-plus-create exactly on PostgreSQL only; elsewhere
/// a drop counts as a rename when the plan says so and the database shows the new
/// name appearing in the same migration.
fn oracle_drops(
    oracle_output: &str,
    renames: &BTreeMap<String, BTreeMap<String, String>>,
) -> Drops {
    let none = BTreeMap::new();
    let mut drops = Drops::new();
    for line in oracle_output.lines().filter(|l| !l.trim().is_empty()) {
        let step: Value = serde_json::from_str(line).expect("oracle line is JSON");
        let app = step["app"].as_str().expect("app");
        if !PROJECT_APPS.contains(&app) {
            continue;
        }
        let name = format!("{app}.{}", step["name"].as_str().expect("name"));
        let planned = renames.get(&name).unwrap_or(&none);
        let created = strings(&step["tables_created"]);
        let mut renamed: BTreeSet<String> = step["tables_renamed"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        renamed.extend(
            planned
                .iter()
                .filter(|(old, new)| !old.contains('.') && created.contains(new))
                .map(|(old, _)| old.clone()),
        );
        let entry = drops.entry(name).or_default();
        for table in strings(&step["tables_dropped"]) {
            if !renamed.contains(&table) {
                entry.insert(table);
            }
        }
        if let Some(columns) = step["columns_dropped"].as_object() {
            for (table, dropped) in columns {
                let added = strings(&step["columns_added"][table]);
                let mut renamed_columns: BTreeSet<String> = step["columns_renamed"][table]
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                renamed_columns.extend(planned.iter().filter_map(|(old, new)| {
                    let column = old.strip_prefix(&format!("{table}."))?;
                    added.contains(new).then(|| column.to_string())
                }));
                for column in strings(dropped) {
                    if !renamed_columns.contains(&column) {
                        entry.insert(format!("{table}.{column}"));
                    }
                }
            }
        }
    }
    drops.retain(|_, set| !set.is_empty());
    drops
}

#[test]
fn the_plan_drops_exactly_what_django_drops_on_every_engine() {
    for kind in ENGINES {
        let db = TestDb::create(kind, "oracle");
        let ws = Workspace::new();
        config_for(&ws, &db);
        // Offline first: the history needs no database, only the engine's naming rules.
        let plan = scan_json(&ws, &["--all"]);
        let oracle = django(&db.url, &["oracle.py"]);
        assert_eq!(
            plan_drops(&plan),
            oracle_drops(&oracle, &plan_renames(&plan)),
            "{kind:?}: left is dropguard's plan, right is what the database lost"
        );

        // And each drop is in the SQL Django's own `sqlmigrate` prints for that
        // migration (on SQLite a table rebuild also says DROP TABLE, so the schema
        // diff above is the oracle there; PostgreSQL's SQL names drops directly).
        if kind == EngineKind::Postgres {
            let sql_of: BTreeMap<String, String> = oracle
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|line| {
                    let step: Value = serde_json::from_str(line).unwrap();
                    let name = format!(
                        "{}.{}",
                        step["app"].as_str().unwrap(),
                        step["name"].as_str().unwrap()
                    );
                    let sql = strings(&step["sql"])
                        .join("\n")
                        .to_lowercase()
                        .replace(['"', '`'], "");
                    (name, sql)
                })
                .collect();
            for (migration, drops) in plan_drops(&plan) {
                let sql = &sql_of[&migration];
                for item in drops {
                    let item = item.to_lowercase();
                    let found = match item.split_once('.') {
                        Some((table, column)) => sql.lines().any(|l| {
                            l.contains(&format!("alter table {table}"))
                                && l.contains(&format!("drop column {column}"))
                        }),
                        None => sql.contains(&format!("drop table {item}")),
                    };
                    assert!(
                        found,
                        "{migration}: sqlmigrate does not drop {item}:\n{sql}"
                    );
                }
            }
        }

        // PostgreSQL's oracle tells renames exactly (by oid and attnum): every one
        // of them is in the plan as a rename, with the new name.
        if kind == EngineKind::Postgres {
            let planned = plan_renames(&plan);
            let mut checked = 0;
            for line in oracle.lines().filter(|l| !l.trim().is_empty()) {
                let step: Value = serde_json::from_str(line).unwrap();
                let app = step["app"].as_str().unwrap();
                if !PROJECT_APPS.contains(&app) {
                    continue;
                }
                let name = format!("{app}.{}", step["name"].as_str().unwrap());
                let mut seen = BTreeMap::new();
                if let Some(tables) = step["tables_renamed"].as_object() {
                    for (old, new) in tables {
                        seen.insert(old.clone(), new.as_str().unwrap().to_string());
                    }
                }
                if let Some(tables) = step["columns_renamed"].as_object() {
                    for (table, columns) in tables {
                        for (old, new) in columns.as_object().unwrap() {
                            seen.insert(
                                format!("{table}.{old}"),
                                new.as_str().unwrap().to_string(),
                            );
                        }
                    }
                }
                let ours = planned.get(&name).cloned().unwrap_or_default();
                for (old, new) in &seen {
                    // A renamed join table's FK column follows its model's rename.
                    assert_eq!(
                        ours.get(old),
                        Some(new),
                        "{name}: rename {old} -> {new} not in {ours:?}"
                    );
                    checked += 1;
                }
            }
            assert!(checked >= 4, "only {checked} renames seen by the oracle");
        }

        // What no schema diff shows: a DELETE without WHERE empties a table.
        let truncates: Vec<String> = plan["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| {
                let name = m["migration"].as_str().unwrap().to_string();
                m["operations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|op| op["kind"] == "truncate")
                    .map(move |op| format!("{name}:{}", op["table"].as_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            truncates.contains(
                &"legacy.0008_purge_erp_customer_and_sync_log:legacy_erpsynclog".to_string()
            ),
            "{kind:?}: {truncates:?}"
        );
    }
}

/// Migrates part of the way, leaving the destructive migrations pending.
fn migrate_to_before_release(url: &str) {
    for target in [
        ["catalog", "0010"],
        ["orders", "0003"],
        ["legacy", "0003"],
        ["accounts", "0002"],
    ] {
        django(url, &["manage.py", "migrate", target[0], target[1], "-v0"]);
    }
}

/// The migrations Django itself says are not applied.
fn django_unapplied(url: &str) -> BTreeSet<String> {
    django(url, &["manage.py", "showmigrations", "--plan"])
        .lines()
        .filter_map(|line| line.trim().strip_prefix("[ ]"))
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn scan_names_every_pending_drop_with_its_row_count_on_every_engine() {
    for kind in ENGINES {
        let db = TestDb::create(kind, "scan");
        let ws = Workspace::new();
        config_for(&ws, &db);
        migrate_to_before_release(&db.url);
        let seeded: Value =
            serde_json::from_str(&django(&db.url, &["seed.py"])).expect("seed JSON");

        let plan = scan_json(&ws, &[]);
        assert!(!plan["server_version"].as_str().unwrap_or("").is_empty());

        // Only pending migrations are in the plan, and every pending one that drops
        // something is.
        let unapplied = django_unapplied(&db.url);
        let planned: BTreeSet<String> = plan["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["migration"].as_str().unwrap().to_string())
            .collect();
        assert!(
            planned.is_subset(&unapplied),
            "{kind:?}: {planned:?} not all in {unapplied:?}"
        );

        let mut checked = 0;
        for migration in plan["migrations"].as_array().unwrap() {
            let name = migration["migration"].as_str().unwrap();
            let app = name.split('.').next().unwrap();
            let command = migration["rollback_command"].as_str().unwrap_or("");
            assert!(
                command.starts_with(&format!("python manage.py migrate {app} ")),
                "{kind:?} {name}: rollback {command:?}"
            );
            for op in migration["operations"].as_array().unwrap() {
                let table = op["table"].as_str().unwrap_or_default();
                let Some(expected) = seeded.get(table) else {
                    continue;
                };
                let rows = op["rows"].as_u64();
                match op["kind"].as_str().unwrap() {
                    "drop_table" | "truncate" => {
                        assert_eq!(rows, expected["rows"].as_u64(), "{kind:?} {name} {table}");
                        checked += 1;
                    }
                    "drop_column" => {
                        let columns = strings(&op["columns"]);
                        assert_eq!(columns.len(), 1, "{kind:?} {name}: {columns:?}");
                        let values = expected["non_null"][&columns[0]].as_u64();
                        assert_eq!(rows, values, "{kind:?} {name} {table}.{}", columns[0]);
                        assert_eq!(
                            strings(&op["primary_key"]),
                            vec!["id".to_string()],
                            "{kind:?} {name}"
                        );
                        checked += 1;
                    }
                    _ => {}
                }
            }
        }
        assert!(checked >= 8, "{kind:?}: only {checked} counted operations");

        // Dropped columns with NULLs: the count is of values, not rows.
        let weight = plan["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["migration"] == "catalog.0013_remove_product_weight_grams")
            .expect("catalog.0013 is pending");
        let op = &weight["operations"][0];
        assert_eq!(op["kind"], "drop_column");
        assert_eq!(op["table"], "catalog_product");
        assert_eq!(strings(&op["columns"]), vec!["weight_grams".to_string()]);
        assert_eq!(
            op["rows"].as_u64(),
            seeded["catalog_product"]["non_null"]["weight_grams"].as_u64()
        );
        assert!(
            op["rows"].as_u64() < seeded["catalog_product"]["rows"].as_u64(),
            "{kind:?}: the seed leaves one weight NULL"
        );

        // The table a human reads.
        let output = ws.run(&["scan"]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let text = stdout(&output);
        assert!(text.contains("catalog_product.weight_grams"), "{text}");
        assert!(
            text.contains("rollback: python manage.py migrate catalog 0010_"),
            "{text}"
        );
    }
}

#[test]
fn nothing_pending_after_a_full_migrate() {
    let db = TestDb::create(EngineKind::Sqlite, "full");
    let ws = Workspace::new();
    config_for(&ws, &db);
    django(&db.url, &["manage.py", "migrate", "-v0"]);
    let plan = scan_json(&ws, &[]);
    assert_eq!(
        plan["migrations"].as_array().map(Vec::len),
        Some(0),
        "{plan}"
    );
    let output = ws.run(&["scan"]);
    assert!(
        stdout(&output).contains("No destructive or breaking operations pending"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn bad_migration_files_are_reported_and_the_rest_still_scanned() {
    let project = tempfile::tempdir().unwrap();
    let migrations = project.path().join("shop/migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(migrations.join("__init__.py"), "").unwrap();
    std::fs::write(
        migrations.join("0001_initial.py"),
        "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    initial = True\n    dependencies = []\n    operations = [\n        migrations.CreateModel(\n            name='Item',\n            fields=[\n                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),\n                ('legacy', models.CharField(max_length=10, db_column='old_code')),\n            ],\n        ),\n    ]\n",
    )
    .unwrap();
    std::fs::write(
        migrations.join("0002_remove_item_legacy.py"),
        "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    dependencies = [('shop', '0001_initial')]\n    operations = [\n        migrations.RemoveField(model_name='item', name='legacy'),\n    ]\n",
    )
    .unwrap();
    std::fs::write(
        migrations.join("0003_dynamic.py"),
        "from django.db import migrations\n\n\ndef make_ops():\n    return []\n\n\nclass Migration(migrations.Migration):\n    dependencies = [('shop', '0002_remove_item_legacy')]\n    operations = make_ops()\n",
    )
    .unwrap();
    std::fs::write(migrations.join("0004_broken.py"), "class Migration(:\n").unwrap();
    std::fs::write(
        migrations.join("0005_latin1.py"),
        b"# caf\xe9\nclass Migration:\n    pass\n",
    )
    .unwrap();

    let ws = Workspace::new();
    ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"sqlite://app.db\"\n[django]\nproject_dir = \"{}\"\n[state]\ndir = \"state\"\n",
        project.path().display()
    ));
    let output = ws.run(&["scan", "--all"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("item") || text.contains("shop_item.old_code"),
        "{text}"
    );
    assert!(
        text.contains("shop_item.old_code"),
        "the db_column is resolved: {text}"
    );
    assert!(
        text.contains("0003_dynamic.py:10"),
        "dynamic operations located: {text}"
    );
    assert!(
        text.contains("0004_broken.py:1"),
        "syntax error located: {text}"
    );
    assert!(
        text.contains("0005_latin1.py"),
        "non-UTF-8 reported: {text}"
    );

    let strict = ws.run(&["scan", "--all", "--strict"]);
    assert_eq!(strict.status.code(), Some(1), "--strict fails on problems");
}

#[test]
fn plain_sql_migrations_are_analysed_and_pending_by_version() {
    let ws = Workspace::new();
    let dir = ws.path().join("sql");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("0001_init.up.sql"), "CREATE TABLE items (id INTEGER PRIMARY KEY, sku TEXT, note TEXT);\nCREATE TABLE old_log (id INTEGER PRIMARY KEY);\n").unwrap();
    std::fs::write(
        dir.join("0001_init.down.sql"),
        "DROP TABLE items; DROP TABLE old_log;",
    )
    .unwrap();
    std::fs::write(
        dir.join("0002_drop_sku.up.sql"),
        "ALTER TABLE items DROP COLUMN sku;",
    )
    .unwrap();
    std::fs::write(dir.join("0003_drop_log.up.sql"), "DROP TABLE old_log;").unwrap();
    let db_path = ws.path().join("app.db");
    let setup = "CREATE TABLE items (id INTEGER PRIMARY KEY, sku TEXT, note TEXT); INSERT INTO items VALUES (1,'a',NULL),(2,NULL,NULL),(3,'c','x'); CREATE TABLE old_log (id INTEGER PRIMARY KEY); INSERT INTO old_log VALUES (1),(2); CREATE TABLE schema_migrations (version BIGINT, dirty BOOLEAN); INSERT INTO schema_migrations VALUES (1, 0);";
    crate::django_support::sqlite_exec(&db_path, setup);
    ws.write_config("environment = \"test\"\n[database]\nurl = \"sqlite://app.db\"\n[sql]\ndir = \"sql\"\n[state]\ndir = \"state\"\n");
    let plan = scan_json(&ws, &[]);
    let ops: Vec<(String, String, Option<u64>)> = plan["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| {
            let name = m["migration"].as_str().unwrap().to_string();
            m["operations"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |op| {
                    (
                        name.clone(),
                        format!(
                            "{} {}{}",
                            op["kind"].as_str().unwrap(),
                            op["table"].as_str().unwrap(),
                            strings(&op["columns"])
                                .iter()
                                .map(|c| format!(".{c}"))
                                .collect::<String>()
                        ),
                        op["rows"].as_u64(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            (
                "0002_drop_sku".to_string(),
                "drop_column items.sku".to_string(),
                Some(2)
            ),
            (
                "0003_drop_log".to_string(),
                "drop_table old_log".to_string(),
                Some(2)
            ),
        ]
    );
}

#[test]
fn unreachable_database_fails_with_the_url_masked() {
    let ws = Workspace::new();
    ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"postgres://app:s3cret@127.0.0.1:1/shop\"\n[django]\nproject_dir = \"{}\"\n[state]\ndir = \"state\"\n",
        django_project().display()
    ));
    let output = ws.run(&["scan"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("cannot connect to postgres://app:********@127.0.0.1:1/shop"),
        "{err}"
    );
    assert!(!err.contains("s3cret"));
}

#[test]
fn scan_without_any_migration_source_says_what_to_configure() {
    let ws = Workspace::new();
    ws.sqlite_config("");
    let output = ws.run(&["scan", "--all"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("set django.project_dir"),
        "{}",
        stderr(&output)
    );
}

/// Every way a migration file can nest, far too deep: (file name, Python text).
/// The first two are the files that aborted the daemon, the third the size that
/// aborted `scan --all`.
fn deeply_nested_files() -> Vec<(&'static str, String)> {
    let indented: String = (0..400)
        .map(|i| format!("{}if x:\n", " ".repeat(i)))
        .collect();
    vec![
        ("0001_minus.py", format!("X = {}1\n", "-".repeat(4_000))),
        (
            "0002_lists.py",
            format!("X = {}{}\n", "[".repeat(2_000), "]".repeat(2_000)),
        ),
        (
            "0003_lists_30k.py",
            format!("X = {}{}\n", "[".repeat(15_000), "]".repeat(15_000)),
        ),
        (
            "0004_parentheses.py",
            format!("X = {}1{}\n", "(".repeat(2_000), ")".repeat(2_000)),
        ),
        (
            "0005_dicts.py",
            format!("X = {}1{}\n", "{1: ".repeat(2_000), "}".repeat(2_000)),
        ),
        ("0006_not.py", format!("X = {}x\n", "not ".repeat(2_000))),
        ("0007_power.py", format!("X = 1{}\n", "**1".repeat(4_000))),
        (
            "0008_attributes.py",
            format!("X = a{}\n", ".b".repeat(4_000)),
        ),
        ("0009_calls.py", format!("X = f{}\n", "()".repeat(4_000))),
        (
            "0010_subscripts.py",
            format!("X = x{}\n", "[0]".repeat(4_000)),
        ),
        (
            "0011_lambdas.py",
            format!("X = {}1\n", "lambda: ".repeat(2_000)),
        ),
        (
            "0012_conditionals.py",
            format!("X = {}1\n", "a if b else ".repeat(2_000)),
        ),
        (
            "0013_blocks.py",
            format!("{indented}{}pass\n", " ".repeat(400)),
        ),
        (
            "0014_f_strings.py",
            format!("X = {}1{}\n", "f'{".repeat(500), "}'".repeat(500)),
        ),
        // In the operations themselves, where they are evaluated.
        (
            "0015_operations.py",
            format!(
                "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    operations = [\n        migrations.RunSQL({}'SELECT 1'{}),\n    ]\n",
                "[".repeat(3_000),
                "]".repeat(3_000)
            ),
        ),
    ]
}

/// A project whose `shop` app drops `shop_item.old_code` in its pending 0002, with
/// every deeply nested file in a `deep` app and one in a plain SQL folder.
fn deeply_nested_project(ws: &Workspace) -> std::path::PathBuf {
    let project = ws.path().join("project");
    let shop = project.join("shop/migrations");
    std::fs::create_dir_all(&shop).unwrap();
    std::fs::write(shop.join("__init__.py"), "").unwrap();
    std::fs::write(
        shop.join("0001_initial.py"),
        "from django.db import migrations, models\n\n\nclass Migration(migrations.Migration):\n    initial = True\n    dependencies = []\n    operations = [\n        migrations.CreateModel(\n            name='Item',\n            fields=[\n                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),\n                ('legacy', models.CharField(max_length=10, null=True, db_column='old_code')),\n            ],\n        ),\n    ]\n",
    )
    .unwrap();
    std::fs::write(
        shop.join("0002_remove_item_legacy.py"),
        "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n    dependencies = [('shop', '0001_initial')]\n    operations = [\n        migrations.RemoveField(model_name='item', name='legacy'),\n    ]\n",
    )
    .unwrap();
    let deep = project.join("deep/migrations");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("__init__.py"), "").unwrap();
    for (name, text) in deeply_nested_files() {
        std::fs::write(deep.join(name), text).unwrap();
    }
    let sql = ws.path().join("sql");
    std::fs::create_dir_all(&sql).unwrap();
    std::fs::write(
        sql.join("0001_deep.up.sql"),
        format!(
            "UPDATE shop_item SET old_code = NULL WHERE id = {}1{};\nSELECT 1{};\n",
            "(".repeat(5_000),
            ")".repeat(5_000),
            " + 1".repeat(100_000)
        ),
    )
    .unwrap();
    crate::django_support::sqlite_exec(
        &ws.path().join("app.db"),
        "CREATE TABLE django_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, app VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL, applied DATETIME NOT NULL);\
         INSERT INTO django_migrations (app, name, applied) VALUES ('shop', '0001_initial', '2026-01-01 00:00:00');\
         CREATE TABLE shop_item (id INTEGER PRIMARY KEY, old_code VARCHAR(10));\
         INSERT INTO shop_item (old_code) VALUES ('a'), (NULL), ('c');",
    );
    project
}

/// Each deeply nested file appears in `text` as `file:line: nests ...`.
fn assert_deep_files_reported(text: &str) {
    for (name, _) in deeply_nested_files() {
        let line = if name == "0013_blocks.py" {
            // Where the blocks first nest too deep.
            "200"
        } else if name == "0015_operations.py" {
            "6"
        } else {
            "1"
        };
        let reported = format!("deep/migrations/{name}:{line}: nests ");
        assert!(
            text.lines()
                .any(|l| l.contains(&reported) && l.contains("dropguard reads at most 200")),
            "{reported} not in:\n{text}"
        );
    }
    assert!(
        text.contains("sql/0001_deep.up.sql:1: SQL not analysed (line 1): nests "),
        "{text}"
    );
}

#[test]
fn a_deeply_nested_migration_file_is_a_problem_not_a_crash() {
    let ws = Workspace::new();
    let project = deeply_nested_project(&ws);
    ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"sqlite://{}\"\n[django]\nproject_dir = \"{}\"\n[sql]\ndir = \"sql\"\n[state]\ndir = \"state\"\n",
        ws.path().join("app.db").display(),
        project.display()
    ));
    for args in [&["scan", "--all"][..], &["scan"][..]] {
        let output = ws.run(args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}\n{}",
            stdout(&output),
            stderr(&output)
        );
        let text = stdout(&output);
        assert_deep_files_reported(&text);
        // The rest of the project is still analysed.
        assert!(text.contains("shop_item.old_code"), "{args:?}: {text}");

        let mut strict = args.to_vec();
        strict.push("--strict");
        let output = ws.run(&strict);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{strict:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn the_daemon_keeps_running_beside_a_deeply_nested_migration_file() {
    let ws = Workspace::new();
    let project = deeply_nested_project(&ws);
    let config = ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"sqlite://{}\"\n[django]\nproject_dir = \"{}\"\n[state]\ndir = \"state\"\n[server]\nlisten = \"127.0.0.1:0\"\n",
        ws.path().join("app.db").display(),
        project.display()
    ));
    let daemon = Daemon::start(&config);
    // The pending drop is preserved only after a pass over every migration file,
    // the deeply nested ones included.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = daemon.get("/api/v1/snapshots");
        assert_eq!(status, 200, "{body}");
        let listed: Value = serde_json::from_str(&body).unwrap();
        if listed.as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["migration"] == "shop.0002_remove_item_legacy")
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot of shop.0002 within 30 s: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, body) = daemon.get("/healthz");
    assert_eq!(status, 200, "{body}");
    let stopped = daemon.terminate(std::time::Duration::from_secs(10));
    assert!(stopped.status.success(), "{:?}", stopped.status);
    let warned: Vec<&String> = stopped
        .logs
        .iter()
        .filter(|l| l.contains("migration file not analysed") && l.contains("nests "))
        .collect();
    assert_eq!(
        warned.len(),
        deeply_nested_files().len(),
        "{:#?}",
        stopped.logs
    );
}
