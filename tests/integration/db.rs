//! The database adapters against real servers: PostgreSQL, MariaDB, SQLite files.

use dropguard::config::DatabaseUrl;
use dropguard::db;
use sqlx::{AssertSqlSafe, Connection};

use crate::harness::{ENGINES, EngineKind, TestDb};

/// A table name that would be an injection if it were ever formatted unquoted.
const HOSTILE: &str = "x\"; DROP TABLE victim; --";

pub async fn execute(test_db: &TestDb, statements: &[String]) {
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

/// Runs one statement on a test database from sync code.
pub fn block_on_sql(test_db: &TestDb, sql: &str) {
    crate::harness::block_on(execute(test_db, &[sql.to_string()]));
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

#[tokio::test]
async fn streams_rows_in_key_order_with_exact_values_on_every_engine() {
    use dropguard::vault::Value;
    use futures_util::TryStreamExt;

    for kind in ENGINES {
        let test_db = TestDb::create(kind, "stream");
        let (ddl, insert) = match kind {
            EngineKind::Postgres => (
                "CREATE TABLE t (id BIGINT PRIMARY KEY, flag BOOLEAN, amount NUMERIC(12,2), ratio DOUBLE PRECISION, name VARCHAR(40), raw BYTEA, at TIMESTAMPTZ, doc JSONB, tags TEXT[])",
                "INSERT INTO t VALUES (2, true, 10.50, -0.0, '', '\\x00ff', '2026-01-02 03:04:05.678+02', '{\"b\": 1, \"a\": [1, 2]}', ARRAY['x','y z']), (1, NULL, NULL, 0.1, 'é\"''\\n', NULL, NULL, NULL, NULL)",
            ),
            EngineKind::Mysql => (
                "CREATE TABLE t (id BIGINT PRIMARY KEY, flag TINYINT(1), amount DECIMAL(12,2), ratio DOUBLE, name VARCHAR(40), raw BLOB, at DATETIME(6), big BIGINT UNSIGNED, mood ENUM('happy','sad'))",
                "INSERT INTO t VALUES (2, 1, 10.50, -0.0, '', X'00ff', '2026-01-02 03:04:05.678000', 18446744073709551615, 'sad'), (1, NULL, NULL, 0.1, 'é\"''\\\\n', NULL, NULL, NULL, NULL)",
            ),
            EngineKind::Sqlite => (
                "CREATE TABLE t (id INTEGER PRIMARY KEY, flag BOOLEAN, amount DECIMAL(12,2), ratio REAL, name VARCHAR(40), raw BLOB, at DATETIME, loose)",
                "INSERT INTO t VALUES (2, 1, '10.50', -0.0, '', X'00ff', '2026-01-02 03:04:05.678', 42), (1, NULL, NULL, 0.1, 'é\"''\\n', NULL, NULL, 'forty-two')",
            ),
        };
        execute(&test_db, &[ddl.to_string(), insert.to_string()]).await;
        let adapter = db::connect(&DatabaseUrl::new(test_db.url.clone()))
            .await
            .unwrap();
        let table = adapter.introspect("t").await.unwrap().unwrap();
        let rows: Vec<Vec<Value>> = adapter
            .stream_rows(&table, &[])
            .try_collect()
            .await
            .unwrap();
        assert_eq!(rows.len(), 2, "{kind:?}");
        assert_eq!(rows[0][0], Value::Int(1), "{kind:?}: ordered by key");
        assert_eq!(rows[1][0], Value::Int(2), "{kind:?}");
        assert_eq!(rows[0][2], Value::Null, "{kind:?}: NULL stays NULL");
        assert_eq!(
            rows[1][4],
            Value::Text(String::new()),
            "{kind:?}: empty string is not NULL"
        );
        assert_eq!(rows[1][5], Value::Bytes(vec![0, 255]), "{kind:?}");
        assert_eq!(
            rows[0][3],
            Value::Float(0.1),
            "{kind:?}: floats read exactly"
        );
        match kind {
            EngineKind::Postgres => {
                assert_eq!(rows[1][2], Value::Decimal("10.50".into()));
                assert_eq!(rows[1][1], Value::Bool(true));
                assert_eq!(
                    rows[1][6],
                    Value::TimestampTz("2026-01-02 01:04:05.678+00".into())
                );
                assert_eq!(rows[1][7], Value::Json("{\"a\": [1, 2], \"b\": 1}".into()));
                assert_eq!(
                    rows[1][8],
                    Value::Other {
                        type_name: "text[]".into(),
                        text: "{x,\"y z\"}".into()
                    }
                );
                assert_eq!(
                    rows[0][4],
                    Value::Text("é\"'\\n".into()),
                    "a literal backslash"
                );
            }
            EngineKind::Mysql => {
                assert_eq!(rows[1][2], Value::Decimal("10.50".into()));
                assert_eq!(rows[1][1], Value::Int(1));
                assert_eq!(
                    rows[1][6],
                    Value::Timestamp("2026-01-02 03:04:05.678000".into())
                );
                assert_eq!(rows[1][7], Value::UInt(u64::MAX));
                assert!(matches!(&rows[1][8], Value::Other { text, .. } if text == "sad"));
            }
            EngineKind::Sqlite => {
                // NUMERIC affinity stored '10.50' as a real: what is stored is kept.
                assert_eq!(rows[1][2], Value::Float(10.5), "storage class kept");
                assert_eq!(rows[1][7], Value::Int(42));
                assert_eq!(rows[0][7], Value::Text("forty-two".into()));
            }
        }
        // Only some columns: the key comes first.
        let some: Vec<Vec<Value>> = adapter
            .stream_rows(&table, &["name".to_string()])
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            some[1],
            vec![Value::Int(2), Value::Text(String::new())],
            "{kind:?}"
        );
        let missing = adapter
            .stream_rows(&table, &["nope".to_string()])
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert!(
            missing.to_string().contains("table t has no column nope"),
            "{missing}"
        );
        adapter.close().await;
    }
}

/// The deploy watcher's two reads: the last id of `django_migrations` and the rows
/// after an id, on a table Django itself created and filled, plus one row of a
/// known `applied` time to check it is read as UTC to the microsecond.
#[test]
fn django_migrations_are_read_after_an_id_on_every_engine() {
    use std::time::{Duration, SystemTime};

    use crate::django_support::django;
    use crate::harness::block_on;

    for kind in ENGINES {
        let test_db = TestDb::create(kind, "miglog");
        // Before the first migrate there is no table: nothing applied, no error.
        block_on(async {
            // The SQLite file must exist for the adapter to open it.
            execute(
                &test_db,
                &["CREATE TABLE unrelated (id INTEGER)".to_string()],
            )
            .await;
            let adapter = db::connect(&DatabaseUrl::new(test_db.url.clone()))
                .await
                .unwrap();
            assert_eq!(
                adapter.django_migrations_max_id().await.unwrap(),
                0,
                "{kind:?}"
            );
            assert!(
                adapter.django_migrations_after(0).await.unwrap().is_empty(),
                "{kind:?}"
            );
            adapter.close().await;
        });

        let before = SystemTime::now() - Duration::from_secs(5);
        django(
            &test_db.url,
            &["manage.py", "migrate", "contenttypes", "-v0"],
        );
        let after = SystemTime::now() + Duration::from_secs(5);
        let known = match kind {
            EngineKind::Postgres => "2026-11-25 17:22:38.250001+01",
            EngineKind::Mysql | EngineKind::Sqlite => "2026-11-25 16:22:38.250001",
        };
        block_on(async {
            execute(
                &test_db,
                &[format!(
                    "INSERT INTO django_migrations (app, name, applied) VALUES ('zz', 'known', '{known}')"
                )],
            )
            .await;
            let adapter = db::connect(&DatabaseUrl::new(test_db.url.clone()))
                .await
                .unwrap();
            let max = adapter.django_migrations_max_id().await.unwrap();
            let all = adapter.django_migrations_after(0).await.unwrap();
            let names: Vec<String> = all
                .iter()
                .map(|r| format!("{}.{}", r.app, r.name))
                .collect();
            assert_eq!(
                names,
                [
                    "contenttypes.0001_initial",
                    "contenttypes.0002_remove_content_type_name",
                    "zz.known"
                ],
                "{kind:?}"
            );
            assert!(
                all.windows(2).all(|w| w[0].id < w[1].id),
                "{kind:?}: {all:?}"
            );
            assert_eq!(all.last().map(|r| r.id), Some(max), "{kind:?}");
            for record in &all[..2] {
                let applied = record.applied.expect("applied is read");
                assert!(
                    before <= applied && applied <= after,
                    "{kind:?}: {record:?} not applied between {before:?} and {after:?}"
                );
            }
            // 2026-11-25T16:22:38.250001Z
            let exact = SystemTime::UNIX_EPOCH
                + Duration::from_secs(1_795_623_758)
                + Duration::from_micros(250_001);
            assert_eq!(all[2].applied, Some(exact), "{kind:?}");

            let rest = adapter.django_migrations_after(all[0].id).await.unwrap();
            assert_eq!(rest, all[1..], "{kind:?}");
            assert!(
                adapter
                    .django_migrations_after(max)
                    .await
                    .unwrap()
                    .is_empty(),
                "{kind:?}"
            );
            adapter.close().await;
        });
    }
}

/// The read that proves a restore on PostgreSQL (binary COPY, numbers and times
/// printed by dropguard rather than the server) must sum to exactly what the
/// same rows read as values sum to, over the whole range of every type, in one
/// part or in several.
#[tokio::test]
async fn postgres_read_back_checksum_is_the_checksum_of_the_rows_read_as_values() {
    use dropguard::vault::Checksummer;
    use futures_util::TryStreamExt;

    let test_db = TestDb::create(EngineKind::Postgres, "readback");
    let ddl = "CREATE TABLE t (id BIGINT PRIMARY KEY, n NUMERIC, n2 NUMERIC(20,6), d DATE, \
               ts TIMESTAMP, tz TIMESTAMPTZ, tz3 TIMESTAMP(3) WITH TIME ZONE, r REAL, \
               f DOUBLE PRECISION, s SMALLINT, i INTEGER, flag BOOLEAN, t TEXT, \
               v VARCHAR(40), b BYTEA, j JSONB, a INTEGER[], ip INET, span INTERVAL, u UUID)";
    // Random values over each type's whole range, with a different scale per row.
    let random = "INSERT INTO t SELECT g, \
        round(((random() - 0.5) * 10 ^ (g % 40 - 12))::numeric, g % 25), \
        round(((random() - 0.5) * 10 ^ (g % 14))::numeric, 6), \
        date '4713-11-24 BC' + (random() * (date '5874897-12-31' - date '4713-11-24 BC'))::int, \
        timestamp '4713-11-25 00:00:00 BC' + random() * interval '298000 years' \
          + (random() * 1e6)::int * interval '1 microsecond', \
        timestamptz '4713-11-25 00:00:00+00 BC' + random() * interval '298000 years' \
          + (g % 7 * 10 ^ (g % 6))::int * interval '1 microsecond', \
        now() + (random() - 0.5) * interval '3000 years', \
        (random() - 0.5)::real * 10 ^ (g % 30), (random() - 0.5) * 10 ^ (g % 300), \
        (g % 65536 - 32768)::smallint, (g * 7919)::integer, g % 3 = 0, \
        repeat(E'\\\\ \\t\"é', g % 5), md5(g::text), decode(md5(g::text), 'hex'), \
        jsonb_build_object('k', g, 'l', ARRAY[g, -g]), ARRAY[g, NULL, -g], \
        ('10.' || g % 256 || '.0.1/' || g % 33)::inet, (g || ' days ' || g % 86400 || ' seconds')::interval, \
        md5(g::text)::uuid \
        FROM generate_series(1, 30000) g";
    // The ends of every range, the special values, and NULLs.
    let edges = "INSERT INTO t (id, n, n2, d, ts, tz, tz3) VALUES \
        (-1, 'NaN', 0, '4713-11-24 BC', '4713-11-24 00:00:00 BC', '4713-11-24 00:00:00+00 BC', '0001-01-01 00:00:00+00 BC'), \
        (-2, 'Infinity', -0.000001, '5874897-12-31', '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', '1999-12-31 23:59:59.999+00'), \
        (-3, '-Infinity', 99999999999999.999999, 'infinity', 'infinity', 'infinity', '-infinity'), \
        (-4, 0, 0.5, '-infinity', '-infinity', '-infinity', '2000-01-01 00:00:00.1+00'), \
        (-5, 0.000, -0.5, '0001-01-01', '0001-01-01 00:00:00', '0001-12-31 23:59:59.000001+00 BC', '1970-01-01 00:00:00+00'), \
        (-6, -0.5, 1, '2000-02-29', '2000-01-01 00:00:00.100000', '1900-02-28 12:00:00.05+00', NULL), \
        (-7, 1e-130, 10, '1999-12-31', '1999-12-31 23:59:59.999999', '9999-12-31 23:59:59+00', NULL), \
        (-8, 123456789012345678901234567890.123456789012345678900, 100.1, '10000-01-01', '10000-01-01 00:00:00', '10000-01-01 00:00:00+00', NULL), \
        (-9, power(10::numeric, 300), NULL, NULL, NULL, NULL, NULL), \
        (-10, -9999.0001, -10000, '0001-01-01 BC', '0001-01-01 00:00:00 BC', '0001-01-01 00:00:00+00 BC', NULL), \
        (-11, NULL, NULL, NULL, NULL, NULL, NULL)";
    execute(&test_db, &[ddl.into(), random.into(), edges.into()]).await;

    let adapter = db::connect(&DatabaseUrl::new(test_db.url.clone()))
        .await
        .unwrap();
    let table = adapter.introspect("t").await.unwrap().unwrap();
    let mut as_values = Checksummer::new();
    let mut rows = adapter.stream_rows(&table, &[]);
    while let Some(row) = rows.try_next().await.unwrap() {
        as_values.add_row(&row).unwrap();
    }
    drop(rows);
    assert_eq!(as_values.rows(), 30_011);
    for parts in [1, 2, 3] {
        let read_back = adapter
            .checksum_rows(&table, &[], parts)
            .await
            .unwrap()
            .expect("PostgreSQL computes the checksum itself");
        assert_eq!(
            read_back.checksum(),
            as_values.checksum(),
            "{parts} part(s)"
        );
    }
    adapter.close().await;
}

/// Preserve on MySQL/MariaDB writes rows encoded straight from the server's
/// bytes; they must be, byte for byte, the encoding of the values `stream_rows`
/// reads, for every type and NULL.
#[tokio::test]
async fn mysql_rows_encoded_in_place_are_the_encoding_of_the_rows_read_as_values() {
    use dropguard::vault::encode_row;
    use futures_util::TryStreamExt;

    let test_db = TestDb::create(EngineKind::Mysql, "encoded");
    let ddl = "CREATE TABLE t (id BIGINT PRIMARY KEY, tiny TINYINT, u BIGINT UNSIGNED, \
               bits BIT(12), f FLOAT, d DOUBLE, n DECIMAL(30,10), v VARCHAR(40), \
               txt MEDIUMTEXT, b VARBINARY(16), blb BLOB, j JSON, day DATE, at DATETIME(6), \
               ts TIMESTAMP(3) NULL, tm TIME(6), mood ENUM('happy','sad'), tags SET('a','b','c'), \
               yr YEAR)";
    let random = "INSERT INTO t SELECT seq, seq % 256 - 128, seq * 2654435761, seq % 4096, \
        (seq - 500) / 7.0, (seq - 500) / 3.0e10, (seq - 500) * 12345.6789012345, \
        CONCAT('é\"''\\\\', seq), REPEAT('ab\\n', seq % 7), UNHEX(MD5(seq)), UNHEX(REPEAT(MD5(seq), 3)), \
        JSON_OBJECT('k', seq, 'l', JSON_ARRAY(seq, -seq)), \
        DATE_ADD('1000-01-01', INTERVAL seq * 3 DAY), \
        TIMESTAMPADD(MICROSECOND, seq * 123457, '1970-01-01 00:00:00'), \
        TIMESTAMPADD(SECOND, seq * 997, '1990-06-01 00:00:00'), \
        SEC_TO_TIME((seq - 500) * 613.5), IF(seq % 2 = 0, 'happy', 'sad'), \
        IF(seq % 3 = 0, 'a,c', ''), 1901 + seq % 255 \
        FROM (SELECT CAST(seq AS SIGNED) AS seq FROM seq_1_to_1000) s";
    let edges = "INSERT INTO t (id, tiny, u, bits, f, d, n, v, txt, b, blb) VALUES \
        (-1, -128, 18446744073709551615, b'111111111111', -0.0, -0.0, -99999999999999999999.9999999999, '', '', X'', X''), \
        (-2, 127, 0, b'0', 3.4e38, 1.7976931348623157e308, 0, NULL, NULL, NULL, NULL), \
        (-3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)";
    execute(&test_db, &[ddl.into(), random.into(), edges.into()]).await;

    let adapter = db::connect(&DatabaseUrl::new(test_db.url.clone()))
        .await
        .unwrap();
    let table = adapter.introspect("t").await.unwrap().unwrap();
    let as_values: Vec<Vec<u8>> = adapter
        .stream_rows(&table, &[])
        .map_ok(|row| {
            let mut out = Vec::new();
            encode_row(&row, &mut out).unwrap();
            out
        })
        .try_collect()
        .await
        .unwrap();
    let encoded: Vec<Vec<u8>> = adapter
        .stream_encoded(&table, &[])
        .expect("MySQL encodes rows in place")
        .try_collect()
        .await
        .unwrap();
    assert_eq!(as_values.len(), 1003);
    assert_eq!(encoded.len(), as_values.len());
    for (i, (encoded, as_values)) in encoded.iter().zip(&as_values).enumerate() {
        assert_eq!(encoded, as_values, "row {i}");
    }
    adapter.close().await;
}

/// A read-back that fails part-way (here: the table is locked past the
/// session's lock_timeout) leaves no pooled connection inside its read-only
/// transaction: every connection the pool hands out afterwards can write.
#[tokio::test]
async fn a_failed_postgres_read_back_gives_no_connection_back_inside_its_transaction() {
    let test_db = TestDb::create(EngineKind::Postgres, "readfail");
    execute(
        &test_db,
        &[
            "CREATE TABLE t (id BIGINT PRIMARY KEY, note TEXT)".into(),
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g".into(),
        ],
    )
    .await;
    let url = format!("{}?options=-c%20lock_timeout%3D300", test_db.url);
    let adapter = db::connect(&DatabaseUrl::new(url)).await.unwrap();
    let table = adapter.introspect("t").await.unwrap().unwrap();

    let mut holder = sqlx::PgConnection::connect(&test_db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    for parts in [1, 2] {
        let err = adapter
            .checksum_rows(&table, &[], parts)
            .await
            .expect_err("the table is locked");
        assert!(err.to_string().contains("lock timeout"), "{err}");
    }
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();

    // Hold as many sessions as the pool has connections, so each is used.
    let mut sessions = Vec::new();
    for i in 0..4 {
        let mut session = adapter.begin().await.unwrap();
        session
            .execute(
                &format!("INSERT INTO t VALUES ({}, 'after')", 2000 + i),
                &[],
                "writing after the failed read",
            )
            .await
            .unwrap_or_else(|err| panic!("session {i}: {err}"));
        sessions.push(session);
    }
    for session in sessions {
        session.commit().await.unwrap();
    }
    assert_eq!(adapter.count_rows("t").await.unwrap(), 1004);
    adapter.close().await;
}
