//! Crash tests (issue 11): `kill -9` at seeded random points during `preserve`
//! and during `restore`, on SQLite and PostgreSQL. What must hold after every
//! kill: no snapshot is listed complete that fails `verify`; a table being
//! restored holds all of its rows or none of the restored ones (one transaction
//! per object); and afterwards a rerun of preserve succeeds and a rerun of
//! restore reaches the exact data.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{BIN, EngineKind, TestDb, Workspace, block_on, exec, stderr, stdout};

const KILLS: usize = 20;
const ROWS: u64 = 10_000;

/// xorshift64*: a seeded, reproducible sequence of kill points.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }
}

/// A table of `ROWS` rows, and its content as text, for comparing.
fn create_table(kind: EngineKind, url: &str) -> Vec<Vec<String>> {
    let generate = match kind {
        EngineKind::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
             INSERT INTO big (id, label, amount) SELECT i, 'row ' || i || ' ' || hex(randomblob(8)), i * 0.25 FROM n"
        ),
        _ => format!(
            "INSERT INTO big (id, label, amount) SELECT i, 'row ' || i || ' ' || md5(i::text), i * 0.25 FROM generate_series(1, {ROWS}) i"
        ),
    };
    block_on(async {
        exec(
            kind,
            url,
            "CREATE TABLE big (id bigint PRIMARY KEY, label varchar(80) NOT NULL, amount numeric(12,2) NOT NULL)",
        )
        .await;
        exec(kind, url, &generate).await;
    });
    content(kind, url)
}

fn content(kind: EngineKind, url: &str) -> Vec<Vec<String>> {
    block_on(exec(
        kind,
        url,
        "SELECT CAST(id AS text), label, CAST(amount AS text) FROM big ORDER BY id",
    ))
}

fn rows(kind: EngineKind, url: &str) -> u64 {
    block_on(exec(kind, url, "SELECT CAST(COUNT(*) AS text) FROM big"))[0][0]
        .parse()
        .unwrap()
}

fn spawn(ws: &Workspace, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(ws.config_path())
        .env("DROPGUARD_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning dropguard")
}

/// How long `args` takes when left alone: the range kill points are drawn from.
fn duration_of(ws: &Workspace, args: &[&str]) -> Duration {
    let started = Instant::now();
    let status = spawn(ws, args).wait().unwrap();
    assert!(status.success(), "{args:?}");
    started.elapsed()
}

fn kill_after(mut child: Child, after: Duration) {
    std::thread::sleep(after);
    let _ = child.kill(); // SIGKILL; it may have finished already
    child.wait().unwrap();
}

/// Every snapshot listed complete passes `verify` (each checked once, noted in
/// `verified`); returns how many are listed complete.
fn complete_snapshots_verify(
    ws: &Workspace,
    verified: &mut std::collections::BTreeSet<String>,
) -> usize {
    let listed = ws.run(&["snapshots", "list", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let snapshots: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let mut complete = 0;
    for snapshot in snapshots.as_array().unwrap() {
        if snapshot["complete"] != true {
            continue;
        }
        complete += 1;
        let id = snapshot["id"].as_str().unwrap();
        if verified.contains(id) {
            continue;
        }
        let checked = ws.run(&["snapshots", "verify", id]);
        assert_eq!(
            checked.status.code(),
            Some(0),
            "snapshot {id} is listed complete but fails verify: {}{}",
            stdout(&checked),
            stderr(&checked)
        );
        verified.insert(id.to_string());
    }
    complete
}

fn workspace(kind: EngineKind, label: &str) -> (Workspace, TestDb, Vec<Vec<String>>) {
    let ws = Workspace::new();
    let db = TestDb::create(kind, label);
    let before = create_table(kind, &db.url);
    ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"{}\"\n[state]\ndir = \"state\"\n",
        db.url
    ));
    (ws, db, before)
}

fn preserve_killed_at_random_points(kind: EngineKind, seed: u64) {
    let (ws, _db, _) = workspace(kind, "crashpreserve");
    let args = ["preserve", "--table", "big"];
    let span = duration_of(&ws, &args);
    let mut verified = std::collections::BTreeSet::new();
    let mut complete = complete_snapshots_verify(&ws, &mut verified);
    assert_eq!(complete, 1);
    let mut points = Seeded(seed);
    for _ in 0..KILLS {
        let after = Duration::from_micros(points.below(span.as_micros() as u64 * 5 / 4));
        kill_after(spawn(&ws, &args), after);
        let now = complete_snapshots_verify(&ws, &mut verified);
        assert!(now >= complete, "a complete snapshot vanished");
        complete = now;
    }
    // A rerun succeeds, and its snapshot verifies.
    let rerun = ws.run(&args);
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    assert_eq!(complete_snapshots_verify(&ws, &mut verified), complete + 1);
}

fn restore_killed_at_random_points(kind: EngineKind, seed: u64) {
    let (ws, db, before) = workspace(kind, "crashrestore");
    let taken = ws.run(&["preserve", "--table", "big", "--json"]);
    assert_eq!(taken.status.code(), Some(0), "{}", stderr(&taken));
    let taken: Value = serde_json::from_str(&stdout(&taken)).unwrap();
    let id = taken[0]["id"].as_str().unwrap().to_string();
    // The rollback left the table empty.
    block_on(exec(kind, &db.url, "DELETE FROM big"));
    let args = ["restore", "--snapshot", id.as_str()];
    let span = duration_of(&ws, &args);
    let mut points = Seeded(seed);
    for _ in 0..KILLS {
        block_on(exec(kind, &db.url, "DELETE FROM big"));
        let after = Duration::from_micros(points.below(span.as_micros() as u64 * 5 / 4));
        kill_after(spawn(&ws, &args), after);
        let found = rows(kind, &db.url);
        assert!(
            found == 0 || found == ROWS,
            "a killed restore left {found} of {ROWS} rows: not one transaction"
        );
        if found == ROWS {
            assert_eq!(
                content(kind, &db.url),
                before,
                "a committed restore differs"
            );
        }
    }
    // Whatever the last kill left, a rerun reaches the exact data.
    let rerun = ws.run(&args);
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    assert_eq!(content(kind, &db.url), before);
    assert_eq!(
        complete_snapshots_verify(&ws, &mut std::collections::BTreeSet::new()),
        1
    );
}

#[test]
fn sqlite_preserve_killed_at_random_points_never_lists_a_bad_snapshot() {
    preserve_killed_at_random_points(EngineKind::Sqlite, 0x5EED_0001);
}

#[test]
fn postgres_preserve_killed_at_random_points_never_lists_a_bad_snapshot() {
    preserve_killed_at_random_points(EngineKind::Postgres, 0x5EED_0002);
}

#[test]
fn sqlite_restore_killed_at_random_points_is_all_or_nothing_and_reruns_exactly() {
    restore_killed_at_random_points(EngineKind::Sqlite, 0x5EED_0003);
}

#[test]
fn postgres_restore_killed_at_random_points_is_all_or_nothing_and_reruns_exactly() {
    restore_killed_at_random_points(EngineKind::Postgres, 0x5EED_0004);
}
