//! The database adapters against real servers: PostgreSQL, MariaDB, SQLite files.

use dropguard::config::DatabaseUrl;
use dropguard::db;
use sqlx::{AssertSqlSafe, Connection};

use crate::harness::{ENGINES, EngineKind, TestDb};

/// A table name that would be an injection if it were ever formatted unquoted.
const HOSTILE: &str = "x\"; DROP TABLE victim; --";

async fn execute(test_db: &TestDb, statements: &[String]) {
    macro_rules! run_all {
        ($conn:expr) => {{
            let mut conn = $conn.await.expect("connecting");
            for sql in statements {
                sqlx::raw_sql(AssertSqlSafe(sql.as_str()))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|err| panic!("{sql}: {err}"));
            }
        }};
    }
    match test_db.kind {
        EngineKind::Postgres => run_all!(sqlx::PgConnection::connect(&test_db.url)),
        EngineKind::Mysql => run_all!(sqlx::MySqlConnection::connect(&test_db.url)),
        EngineKind::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions =
                test_db.url.parse().expect("sqlite url");
            run_all!(sqlx::SqliteConnection::connect_with(
                &options.create_if_missing(true)
            ))
        }
    }
}

#[tokio::test]
async fn counts_rows_and_values_with_hostile_names_on_every_engine() {
    for kind in ENGINES {
        let test_db = TestDb::create(kind, "adapter");
        let engine = db::Engine::from_url(&test_db.url).expect("engine");
        let table = engine.quote(HOSTILE);
        let victim_col = engine.quote("a b");
        execute(
            &test_db,
            &[
                "CREATE TABLE victim (id INTEGER PRIMARY KEY)".to_string(),
                format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY, {victim_col} VARCHAR(10), c VARCHAR(10))"),
                format!("INSERT INTO {table} (id, {victim_col}, c) VALUES (1, 'x', NULL), (2, NULL, NULL), (3, '', 'y')"),
            ],
        )
        .await;

        let adapter = db::connect(&DatabaseUrl::new(test_db.url.clone()))
            .await
            .unwrap_or_else(|err| panic!("{kind:?}: {err}"));
        assert!(adapter.table_exists(HOSTILE).await.unwrap(), "{kind:?}");
        assert!(
            !adapter.table_exists("no_such_table").await.unwrap(),
            "{kind:?}"
        );
        assert_eq!(adapter.count_rows(HOSTILE).await.unwrap(), 3, "{kind:?}");
        // The empty string is a value, NULL is not.
        let one = ["a b".to_string()];
        assert_eq!(
            adapter.count_non_null(HOSTILE, &one).await.unwrap(),
            2,
            "{kind:?}"
        );
        let both = ["a b".to_string(), "c".to_string()];
        assert_eq!(
            adapter.count_non_null(HOSTILE, &both).await.unwrap(),
            2,
            "{kind:?}"
        );
        assert!(
            adapter.table_exists("victim").await.unwrap(),
            "{kind:?}: victim dropped"
        );
        // No django_migrations table: nothing applied yet.
        assert!(
            adapter.applied_migrations().await.unwrap().is_empty(),
            "{kind:?}"
        );
        assert!(
            !adapter.server_version().await.unwrap().is_empty(),
            "{kind:?}"
        );
        adapter.close().await;
    }
}

#[tokio::test]
async fn unreachable_database_is_named_with_its_password_masked() {
    let url = DatabaseUrl::new("postgres://app:hunter2@127.0.0.1:1/shop");
    let err = match db::connect(&url).await {
        Ok(_) => panic!("connected to port 1"),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains("cannot connect to postgres://app:********@127.0.0.1:1/shop"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn introspects_columns_keys_and_foreign_keys_on_every_engine() {
    for kind in ENGINES {
        let test_db = TestDb::create(kind, "introspect");
        let (serial, text) = match kind {
            EngineKind::Postgres => ("BIGSERIAL", "TEXT"),
            EngineKind::Mysql => ("BIGINT AUTO_INCREMENT", "TEXT"),
            EngineKind::Sqlite => ("INTEGER", "TEXT"),
        };
        execute(
            &test_db,
            &[
                format!("CREATE TABLE parent (id {serial} PRIMARY KEY, name VARCHAR(40) NOT NULL)"),
                "CREATE TABLE pair (a INTEGER NOT NULL, b VARCHAR(10) NOT NULL, PRIMARY KEY (a, b))".to_string(),
                format!(
                    "CREATE TABLE child (id {serial} PRIMARY KEY, parent_id BIGINT NOT NULL, note {text}, price NUMERIC(12,2), pa INTEGER, pb VARCHAR(10), \
                     FOREIGN KEY (parent_id) REFERENCES parent (id), FOREIGN KEY (pa, pb) REFERENCES pair (a, b))"
                ),
            ],
        )
        .await;
        let adapter = db::connect(&DatabaseUrl::new(test_db.url.clone()))
            .await
            .unwrap();
        assert!(
            adapter.introspect("missing").await.unwrap().is_none(),
            "{kind:?}"
        );
        let child = adapter
            .introspect("child")
            .await
            .unwrap()
            .expect("child exists");
        let names: Vec<&str> = child.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["id", "parent_id", "note", "price", "pa", "pb"],
            "{kind:?}"
        );
        assert_eq!(child.primary_key, ["id"], "{kind:?}");
        assert_eq!(child.generated_key.as_deref(), Some("id"), "{kind:?}");
        let note = &child.columns[2];
        assert!(note.nullable, "{kind:?}");
        assert!(!child.columns[1].nullable, "{kind:?}");
        let price = child.columns[3].declared_type.to_lowercase();
        assert!(
            price.contains("12") && price.contains('2'),
            "{kind:?}: {price}"
        );
        let mut fks = child.foreign_keys.clone();
        fks.sort_by(|a, b| a.referenced_table.cmp(&b.referenced_table));
        assert_eq!(fks.len(), 2, "{kind:?}: {fks:?}");
        assert_eq!(fks[0].referenced_table, "pair");
        assert_eq!(fks[0].columns, ["pa", "pb"], "{kind:?}");
        assert_eq!(fks[0].referenced_columns, ["a", "b"], "{kind:?}");
        assert_eq!(fks[1].referenced_table, "parent");
        assert_eq!(fks[1].columns, ["parent_id"]);
        let pair = adapter.introspect("pair").await.unwrap().unwrap();
        assert_eq!(pair.primary_key, ["a", "b"], "{kind:?}");
        assert_eq!(pair.generated_key, None, "{kind:?}");
        adapter.close().await;
    }
}
