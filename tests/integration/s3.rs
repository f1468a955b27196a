//! The vault beyond one machine: snapshots mirrored to an S3-compatible server (moto,
//! on loopback), preserved by one instance and restored by another.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::django_support::{python, sqlite_exec};
use crate::harness::{Workspace, run_with_env, stderr, stdout};

/// A moto S3 server on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = python().with_file_name("moto_server");
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", server.display()));
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn create_bucket(&self, bucket: &str) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let response = agent
            .put(format!("{}/{bucket}", self.endpoint))
            .send_empty()
            .expect("creating the bucket");
        assert_eq!(response.status().as_u16(), 200, "CreateBucket");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
];

fn instance(db: &std::path::Path, endpoint: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write_config(&format!(
        "environment = \"test\"\n[database]\nurl = \"sqlite://{}\"\n[state]\ndir = \"state\"\n[vault]\nurl = \"s3://snapshots/prod\"\nendpoint = \"{endpoint}\"\nallow_http = true\n",
        db.display()
    ));
    ws
}

fn json_of(ws: &Workspace, args: &[&str]) -> Value {
    let output = run_with_env(args, &ws.config_path(), &CREDENTIALS);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?}: {}",
        stderr(&output)
    );
    serde_json::from_str(&stdout(&output))
        .unwrap_or_else(|err| panic!("{args:?}: no JSON ({err}): {}", stdout(&output)))
}

#[test]
fn a_snapshot_preserved_on_one_machine_restores_on_another() {
    let moto = Moto::start();
    moto.create_bucket("snapshots");
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("app.db");
    sqlite_exec(
        &db,
        "CREATE TABLE legacy (id INTEGER PRIMARY KEY, note TEXT, raw BLOB); INSERT INTO legacy VALUES (1, 'a', X'00ff'), (2, NULL, NULL), (3, 'c''\n', X'');",
    );
    let first = instance(&db, &moto.endpoint);
    let second = instance(&db, &moto.endpoint);

    let taken = json_of(&first, &["preserve", "--table", "legacy", "--json"]);
    let id = taken[0]["id"].as_str().unwrap().to_string();

    // The second instance has its own state dir: it sees the snapshot through the store.
    let list = json_of(&second, &["snapshots", "list", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["complete"], true);
    assert_eq!(list[0]["objects"][0]["rows"], 3);
    let verified = run_with_env(
        &["snapshots", "verify", &id],
        &second.config_path(),
        &CREDENTIALS,
    );
    assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));

    sqlite_exec(&db, "DELETE FROM legacy;");
    let restored = json_of(&second, &["restore", "--snapshot", &id, "--json"]);
    assert_eq!(restored["objects"][0]["written"], 3, "{restored}");
    assert_eq!(
        restored["objects"][0]["verification"]["method"], "checksum",
        "{restored}"
    );
}

#[test]
fn an_unreachable_store_is_named() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("app.db");
    sqlite_exec(&db, "CREATE TABLE t (id INTEGER PRIMARY KEY);");
    let ws = instance(&db, "http://127.0.0.1:1");
    let output = run_with_env(&["snapshots", "list"], &ws.config_path(), &CREDENTIALS);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("fetching snapshots from the vault's object store"),
        "{err}"
    );
    assert!(err.contains("s3://snapshots/prod"), "{err}");
}
