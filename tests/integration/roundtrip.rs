//! Exact round-trip, by property: random rows of every type each engine has go
//! through preserve → table recreated empty (the rollback) → restore, and the
//! database's own rendering of every row is the same before and after.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sqlx::{AssertSqlSafe, Connection, Row};

use dropguard::actions::{preserve, restore};
use dropguard::config::DatabaseUrl;
use dropguard::db;
use dropguard::vault::{Reason, SnapshotId, Vault};

use crate::harness::{EngineKind, TestDb, block_on};

/// One generated row; each engine stores what its types can hold.
#[derive(Debug, Clone)]
struct Sample {
    small: i16,
    int: i32,
    big: i64,
    unsigned: u64,
    /// Digits of a numeric(20,6): integer part and fraction.
    numeric: (i64, u32),
    real: f32,
    double: f64,
    flag: bool,
    /// NULL, or text with quotes, backslashes, newlines, unicode, or empty.
    text: Option<String>,
    bytes: Vec<u8>,
    /// Days from 1970-01-01 and microseconds of the day.
    day: i32,
    micros: u64,
    /// Time-zone offset in minutes.
    offset: i32,
    json_key: String,
    json_value: i64,
    uuid: u128,
    ip: (u32, u8),
    words: Vec<String>,
    choice: usize,
    set_bits: u8,
}

fn tricky_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        Just(Some("quote ' double \" back \\ new\nline\ttab".to_string())),
        "[a-zA-Z0-9 éü日本語🦀'\"\\\\\n]{0,40}".prop_map(Some),
    ]
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.1),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        -1e300f64..1e300f64,
    ]
}

fn finite_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(0.1f32),
        Just(-0.0f32),
        Just(f32::MAX),
        -1e30f32..1e30f32
    ]
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        (any::<i16>(), any::<i32>(), any::<i64>(), any::<u64>()),
        (
            (-99_999_999_999_999i64..99_999_999_999_999i64),
            0u32..1_000_000,
        ),
        (finite_f32(), finite_f64(), any::<bool>(), tricky_text()),
        (
            proptest::collection::vec(any::<u8>(), 0..32),
            -200_000i32..200_000,
            0u64..86_400_000_000,
            -720i32..840,
        ),
        (
            "[a-z]{1,8}",
            any::<i64>(),
            any::<u128>(),
            (any::<u32>(), 0u8..=32),
        ),
        (
            proptest::collection::vec("[a-z ,\"{}]{0,6}", 0..4),
            0usize..3,
            any::<u8>(),
        ),
    )
        .prop_map(
            |(
                (small, int, big, unsigned),
                numeric,
                (real, double, flag, text),
                (bytes, day, micros, offset),
                (json_key, json_value, uuid, ip),
                (words, choice, set_bits),
            )| Sample {
                small,
                int,
                big,
                unsigned,
                numeric,
                real,
                double,
                flag,
                text,
                bytes,
                day,
                micros,
                offset,
                json_key,
                json_value,
                uuid,
                ip,
                words,
                choice,
                set_bits,
            },
        )
}

/// The civil date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Sample {
    fn numeric_text(&self) -> String {
        format!("{}.{:06}", self.numeric.0, self.numeric.1)
    }

    fn date(&self) -> String {
        civil(i64::from(self.day))
    }

    /// A date in MySQL's DATE range (years 1000-9999), from the same draw.
    fn mysql_date(&self) -> String {
        const YEAR_1000: i64 = -354_285;
        civil(YEAR_1000 + i64::from(self.day).rem_euclid(2_000_000))
    }

    fn time(&self) -> String {
        let s = self.micros / 1_000_000;
        format!(
            "{:02}:{:02}:{:02}.{:06}",
            s / 3600,
            s / 60 % 60,
            s % 60,
            self.micros % 1_000_000
        )
    }

    fn offset_text(&self) -> String {
        let sign = if self.offset < 0 { '-' } else { '+' };
        format!(
            "{sign}{:02}:{:02}",
            self.offset.abs() / 60,
            self.offset.abs() % 60
        )
    }

    fn json(&self) -> String {
        serde_json::json!({ self.json_key.clone(): self.json_value, "text": self.text, "list": [1, 2.5, null] }).to_string()
    }

    fn uuid_text(&self) -> String {
        let h = format!("{:032x}", self.uuid);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    fn ip_text(&self) -> String {
        let [a, b, c, d] = self.ip.0.to_be_bytes();
        format!("{a}.{b}.{c}.{d}/32")
    }
}

/// DDL, a parameterized INSERT, and a query rendering every row as the database's
/// own text, for one engine.
struct Shape {
    create: &'static str,
    render: &'static str,
}

fn shape(kind: EngineKind) -> Shape {
    match kind {
        EngineKind::Postgres => Shape {
            create: "CREATE TABLE rt (id bigint PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, n numeric(20,6), f4 real, f8 double precision, b boolean, t text, vc varchar(60), by bytea, d date, tm time, ts timestamp, tstz timestamptz, iv interval, j json, jb jsonb, u uuid, ip inet, arr text[], iarr integer[])",
            render: "SELECT rt::text FROM rt ORDER BY id",
        },
        EngineKind::Mysql => Shape {
            create: "CREATE TABLE rt (id bigint PRIMARY KEY, ti tinyint, si smallint, i int, bi bigint, ubi bigint unsigned, n decimal(20,6), f float, d double, bo tinyint(1), vc varchar(60), tx text, bl blob, dt date, tm time(6), dtt datetime(6), j json, e enum('a','b','c d'), st set('x','y','z'), bt bit(8)) CHARACTER SET utf8mb4",
            render: "SELECT JSON_ARRAY(id, ti, si, i, bi, ubi, CAST(n AS CHAR), CAST(f AS CHAR), CAST(d AS CHAR), bo, vc, tx, HEX(bl), CAST(dt AS CHAR), CAST(tm AS CHAR), CAST(dtt AS CHAR), CAST(j AS CHAR), e, st, bt + 0) FROM rt ORDER BY id",
        },
        EngineKind::Sqlite => Shape {
            create: "CREATE TABLE rt (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n NUMERIC, loose)",
            render: "SELECT quote(id) || '|' || quote(i) || '|' || quote(r) || '|' || printf('%!.17g', r) || '|' || quote(t) || '|' || quote(b) || '|' || quote(n) || '|' || typeof(n) || '|' || quote(loose) || '|' || typeof(loose) FROM rt ORDER BY id",
        },
    }
}

async fn insert(kind: EngineKind, url: &str, rows: &[Sample]) -> Result<(), sqlx::Error> {
    match kind {
        EngineKind::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            for (id, s) in rows.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO rt VALUES ($1, $2, $3, $4, $5::numeric, $6, $7, $8, $9, $10, $11, $12::date, $13::time, ($12 || ' ' || $13)::timestamp, ($12 || ' ' || $13 || $14)::timestamptz, ($15 || ' days ' || $13)::interval, $16::json, $16::jsonb, $17::uuid, $18::inet, $19, $20)",
                )
                .bind(id as i64)
                .bind(s.small)
                .bind(s.int)
                .bind(s.big)
                .bind(s.numeric_text())
                .bind(s.real)
                .bind(s.double)
                .bind(s.flag)
                .bind(s.text.clone())
                .bind(s.text.clone().map(|t| t.chars().take(60).collect::<String>().replace('\0', "")))
                .bind(s.bytes.clone())
                .bind(s.date())
                .bind(s.time())
                .bind(s.offset_text())
                .bind(s.day.to_string())
                .bind(s.json())
                .bind(s.uuid_text())
                .bind(s.ip_text())
                .bind(s.words.clone())
                .bind(vec![s.int, -1, 0])
                .execute(&mut conn)
                .await?;
            }
        }
        EngineKind::Mysql => {
            let mut conn = sqlx::MySqlConnection::connect(url).await?;
            for (id, s) in rows.iter().enumerate() {
                let choices = ["a", "b", "c d"];
                let set: Vec<&str> = ["x", "y", "z"]
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| s.set_bits & (1 << i) != 0)
                    .map(|(_, v)| *v)
                    .collect();
                // DATE and DATETIME hold years 1000-9999.
                let date = s.mysql_date();
                sqlx::query(
                    "INSERT INTO rt VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(id as i64)
                .bind(s.small as i8)
                .bind(s.small)
                .bind(s.int)
                .bind(s.big)
                .bind(s.unsigned)
                .bind(s.numeric_text())
                .bind(s.real)
                .bind(s.double)
                .bind(s.flag)
                .bind(s.text.clone().map(|t| t.chars().take(60).collect::<String>()))
                .bind(s.text.clone())
                .bind(s.bytes.clone())
                .bind(date.clone())
                .bind(s.time())
                .bind(format!("{date} {}", s.time()))
                .bind(s.json())
                .bind(choices[s.choice])
                .bind(set.join(","))
                .bind(s.set_bits)
                .execute(&mut conn)
                .await?;
            }
        }
        EngineKind::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
            for (id, s) in rows.iter().enumerate() {
                let query = sqlx::query("INSERT INTO rt VALUES (?, ?, ?, ?, ?, ?, ?)")
                    .bind(id as i64)
                    .bind(s.big)
                    .bind(s.double)
                    .bind(s.text.clone())
                    .bind(s.bytes.clone())
                    .bind(s.numeric_text());
                // The untyped column holds whatever storage class the row brings.
                let query = match s.choice {
                    0 => query.bind(s.big),
                    1 => query.bind(s.text.clone()),
                    _ => query.bind(s.bytes.clone()),
                };
                query.execute(&mut conn).await?;
            }
        }
    }
    Ok(())
}

async fn statements(kind: EngineKind, url: &str, sql: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    macro_rules! run {
        ($conn:expr) => {{
            let mut conn = $conn;
            let mut out = Vec::new();
            for statement in sql {
                let rows = sqlx::query(AssertSqlSafe(*statement))
                    .fetch_all(&mut conn)
                    .await?;
                for row in rows {
                    out.push(row.try_get::<String, _>(0)?);
                }
            }
            out
        }};
    }
    Ok(match kind {
        EngineKind::Postgres => run!(sqlx::PgConnection::connect(url).await?),
        EngineKind::Mysql => run!(sqlx::MySqlConnection::connect(url).await?),
        EngineKind::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            run!(sqlx::SqliteConnection::connect_with(&options.create_if_missing(true)).await?)
        }
    })
}

/// An ad-hoc preserve of every column of `table`.
fn whole_table(table: &str) -> preserve::Request {
    preserve::Request {
        migration: None,
        rollback_command: None,
        reason: Reason::AdHoc,
        environment: "test".to_string(),
        targets: vec![preserve::Target {
            table: table.to_string(),
            columns: Vec::new(),
        }],
    }
}

/// One property case: rows in, preserved, table recreated empty, restored.
async fn round_trip(
    kind: EngineKind,
    test_db: &TestDb,
    vault: &Vault,
    rows: &[Sample],
) -> Result<(), String> {
    let shape = shape(kind);
    let fail = |what: &str, err: &dyn std::fmt::Display| format!("{kind:?} {what}: {err}");
    statements(
        kind,
        &test_db.url,
        &["DROP TABLE IF EXISTS rt", shape.create],
    )
    .await
    .map_err(|e| fail("create", &e))?;
    insert(kind, &test_db.url, rows)
        .await
        .map_err(|e| fail("insert", &e))?;
    let before = statements(kind, &test_db.url, &[shape.render])
        .await
        .map_err(|e| fail("render", &e))?;
    if before.len() != rows.len() {
        return Err(format!(
            "{kind:?}: {} rows rendered for {} inserted",
            before.len(),
            rows.len()
        ));
    }

    let adapter = db::connect(&DatabaseUrl::new(test_db.url.clone()))
        .await
        .map_err(|e| fail("connect", &e))?;
    let taken = preserve::preserve(adapter.as_ref(), vault, &whole_table("rt"))
        .await
        .map_err(|e| fail("preserve", &e))?;
    // The rollback: the table comes back empty.
    statements(kind, &test_db.url, &["DROP TABLE rt", shape.create])
        .await
        .map_err(|e| fail("recreate", &e))?;
    let id = SnapshotId::parse(&taken.id).map_err(|e| fail("id", &e))?;
    let report = restore::restore(
        adapter.as_ref(),
        vault,
        &id,
        "test",
        restore::Options::default(),
    )
    .await
    .map_err(|e| fail("restore", &e))?;
    adapter.close().await;
    let after = statements(kind, &test_db.url, &[shape.render])
        .await
        .map_err(|e| fail("render", &e))?;
    if before != after {
        return Err(format!(
            "{kind:?}: rows differ after restore\nbefore: {before:#?}\nafter:  {after:#?}"
        ));
    }
    if !rows.is_empty() && report.objects[0].verification != restore::Verification::Checksum {
        return Err(format!(
            "{kind:?}: not verified by checksum: {:?}",
            report.objects[0].verification
        ));
    }
    Ok(())
}

#[test]
fn every_type_round_trips_exactly_on_every_engine() {
    for kind in crate::harness::ENGINES {
        let test_db = TestDb::create(kind, "roundtrip");
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        let mut runner = TestRunner::new(Config {
            cases: 12,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&proptest::collection::vec(sample(), 0..12), |rows| {
            block_on(round_trip(kind, &test_db, &vault, &rows)).map_err(TestCaseError::fail)
        });
        if let Err(err) = result {
            panic!("{err}");
        }
    }
}

/// PostgreSQL loads in the binary format only while every value has an exact
/// binary form. A value without one (a timestamp past the years the encoder
/// reads) found after a megabyte of rows has gone in rolls the binary load back
/// to its savepoint, and the object goes in as text: every row exactly once.
#[test]
fn a_value_without_a_binary_form_sends_the_whole_object_through_text_exactly_once() {
    let test_db = TestDb::create(EngineKind::Postgres, "fallback");
    let url = test_db.url.clone();
    let create = "CREATE TABLE fb (id BIGINT PRIMARY KEY, at TIMESTAMP, note TEXT)";
    let render =
        "SELECT id || '|' || COALESCE(at::text, 'NULL') || '|' || note FROM fb ORDER BY id";
    block_on(async {
        statements(
            EngineKind::Postgres,
            &url,
            &[
                create,
                "INSERT INTO fb SELECT g, timestamp '2026-01-01' + g * interval '1 second', \
                 repeat(md5(g::text), 2) FROM generate_series(1, 70000) g",
                "UPDATE fb SET at = '294276-01-01 00:00:00' WHERE id = 60000",
            ],
        )
        .await
        .unwrap();
        let before = statements(EngineKind::Postgres, &url, &[render])
            .await
            .unwrap();
        assert_eq!(before.len(), 70_000);
        assert!(
            before[59_999].contains("294276-01-01"),
            "{}",
            before[59_999]
        );

        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        let adapter = db::connect(&DatabaseUrl::new(url.clone())).await.unwrap();
        let taken = preserve::preserve(adapter.as_ref(), &vault, &whole_table("fb"))
            .await
            .unwrap();
        statements(EngineKind::Postgres, &url, &["DROP TABLE fb", create])
            .await
            .unwrap();
        let report = restore::restore(
            adapter.as_ref(),
            &vault,
            &SnapshotId::parse(&taken.id).unwrap(),
            "test",
            restore::Options::default(),
        )
        .await
        .unwrap();
        adapter.close().await;
        assert_eq!(report.objects[0].written, 70_000);
        assert_eq!(
            report.objects[0].verification,
            restore::Verification::Checksum
        );
        let after = statements(EngineKind::Postgres, &url, &[render])
            .await
            .unwrap();
        assert!(before == after, "the rows differ after the text load");
    });
}
