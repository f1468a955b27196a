//! Shared test harness: temp dirs with a config, a CLI runner, a daemon on port 0.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_dropguard");

/// A temporary workspace holding a `dropguard.toml`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("creating a temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("dropguard.toml")
    }

    /// Writes `dropguard.toml`; returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.config_path();
        std::fs::write(&path, text).expect("writing the config");
        path
    }

    /// A valid configuration on SQLite with the given extra TOML appended.
    pub fn sqlite_config(&self, extra: &str) -> PathBuf {
        self.write_config(&format!(
            "environment = \"test\"\n[database]\nurl = \"sqlite://app.db\"\n[state]\ndir = \"state\"\n{extra}"
        ))
    }

    /// Runs `dropguard ARGS --config <this workspace's config>`.
    pub fn run(&self, args: &[&str]) -> Output {
        run_with_env(args, &self.config_path(), &[])
    }
}

/// A loopback port free at the time of asking: for configurations the CLI must
/// find the daemon by (`server.listen`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding a loopback port")
        .port()
}

pub fn run_with_env(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("DROPGUARD_CONFIG")
        .env("DROPGUARD_LOG", "info");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("running dropguard")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `dropguard run` in the background, killed on drop if still running.
pub struct Daemon {
    child: Child,
    pub addr: String,
    /// Log lines (JSON) the daemon wrote after start-up.
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts the daemon and waits until it logs the address it listens on.
    pub fn start(config: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["run", "--log-format", "json", "--config"])
            .arg(config)
            .env("DROPGUARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning dropguard run");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Built before waiting, so that a failed start still kills the child on drop.
        let mut daemon = Self {
            child,
            addr: String::new(),
            lines: rx,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = daemon
                .lines
                .recv_timeout(remaining)
                .unwrap_or_else(|_| panic!("the daemon did not log its address within 20 s"));
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["message"] == "listening" {
                daemon.addr = event["addr"].as_str().expect("addr field").to_string();
                return daemon;
            }
        }
    }

    /// GET `path`; returns the status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut response = agent
            .get(format!("http://{}{path}", self.addr))
            .call()
            .unwrap_or_else(|err| panic!("GET {path}: {err}"));
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().expect("reading body");
        (status, body)
    }

    /// Any request, with headers and a body; the body is sent with a length.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body).expect("a valid request");
        let mut response = agent
            .run(request)
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.body_mut().read_to_string().expect("reading body");
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Polls `/readyz` until it answers 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.get("/readyz").0 != 200 {
            assert!(Instant::now() < deadline, "the daemon never turned ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU time the daemon has used so far (user + system), in clock ticks
    /// (`/proc/PID/stat`): what an idle sidecar costs, whatever the load.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("reading the daemon's /proc stat");
        // The fields after the command name, which is in parentheses.
        let after = &stat[stat.rfind(')').expect("a /proc stat line") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line.
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self, limit: Duration) -> Stopped {
        self.wait_until_sigterm_is_caught();
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "sending SIGTERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the daemon") {
                let took = start.elapsed();
                // The reader thread ends at EOF, which has come with the exit.
                let logs = self.lines.iter().collect();
                return Stopped { status, took, logs };
            }
            assert!(
                start.elapsed() < limit,
                "the daemon did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon installs its SIGTERM handler a moment after it turns ready; a
    /// SIGTERM sent in between kills it outright (seen when many tests run at
    /// once). Waits, through /proc, until SIGTERM is among its caught signals.
    fn wait_until_sigterm_is_caught(&self) {
        let status = format!("/proc/{}/status", self.child.id());
        let sigterm_bit = 1u64 << (libc::SIGTERM - 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let Ok(text) = std::fs::read_to_string(&status) else {
                return; // No /proc here, or the daemon already ended: nothing to wait for.
            };
            let caught = text
                .lines()
                .find_map(|line| line.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .unwrap_or(0);
            if caught & sigterm_bit != 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not install its SIGTERM handler within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A response to [`Daemon::request`].
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The body as JSON (every answer of the daemon is).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("{} is not JSON ({err}): {}", self.status, self.body))
    }

    /// The `error` message of a JSON error.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}: {}", self.status, self.body))
            .to_string()
    }
}

/// How a daemon ended.
pub struct Stopped {
    pub status: std::process::ExitStatus,
    /// From SIGTERM to exit.
    pub took: Duration,
    /// Every log line written after start-up, as JSON text.
    pub logs: Vec<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The engines the tests run against: real servers and SQLite files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Sqlite,
    Postgres,
    Mysql,
}

pub const ENGINES: [EngineKind; 3] = [EngineKind::Sqlite, EngineKind::Postgres, EngineKind::Mysql];

/// A scratch database, dropped when this goes out of scope.
pub struct TestDb {
    pub kind: EngineKind,
    /// What `database.url` and Django's settings are given.
    pub url: String,
    name: String,
    admin_url: String,
    _dir: Option<tempfile::TempDir>,
}

fn admin_url(kind: EngineKind) -> String {
    match kind {
        EngineKind::Postgres => std::env::var("DROPGUARD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string()),
        EngineKind::Mysql => std::env::var("DROPGUARD_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".to_string()),
        EngineKind::Sqlite => String::new(),
    }
}

/// Runs `future` to completion on a runtime of its own, on a thread of its own, so
/// that sync helpers work from async tests too.
pub fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building a runtime")
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs one administrative statement on a server (CREATE/DROP DATABASE).
fn admin(kind: EngineKind, sql: &str) {
    use sqlx::{AssertSqlSafe, Connection};
    let url = admin_url(kind);
    block_on(async {
        match kind {
            EngineKind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&url)
                    .await
                    .unwrap_or_else(|err| panic!("PostgreSQL at {url} is required: {err}"));
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
            }
            EngineKind::Mysql => {
                let mut conn = sqlx::MySqlConnection::connect(&url)
                    .await
                    .unwrap_or_else(|err| panic!("MariaDB/MySQL at {url} is required: {err}"));
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .map(|_| ())
            }
            EngineKind::Sqlite => unreachable!("SQLite needs no server"),
        }
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
    });
}

impl TestDb {
    /// A new empty database named after `label`. Its `url` serves both dropguard and
    /// the fixture's Django settings (which take `sqlite:///abs/path` too).
    pub fn create(kind: EngineKind, label: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("dg_{label}_{}_{n}", std::process::id());
        match kind {
            EngineKind::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite://{}",
                    dir.path().join(format!("{name}.db")).display()
                );
                Self {
                    kind,
                    url,
                    name,
                    admin_url: String::new(),
                    _dir: Some(dir),
                }
            }
            EngineKind::Postgres | EngineKind::Mysql => {
                let admin_url = admin_url(kind);
                admin(kind, &format!("CREATE DATABASE {name}"));
                let base = admin_url.rsplit_once('/').expect("admin url has a path").0;
                Self {
                    kind,
                    url: format!("{base}/{name}"),
                    name,
                    admin_url,
                    _dir: None,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.admin_url.is_empty() {
            return;
        }
        let sql = match self.kind {
            EngineKind::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            _ => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        // Never panic in drop: a leftover scratch database is only clutter.
        let _ = std::panic::catch_unwind(|| admin(self.kind, &sql));
    }
}

/// Runs `sql` on the database at `url`; the rows of the last statement, as text.
pub async fn exec(kind: EngineKind, url: &str, sql: &str) -> Vec<Vec<String>> {
    use sqlx::{AssertSqlSafe, Connection, Row};
    fn texts<R: Row>(rows: Vec<R>) -> Vec<Vec<String>>
    where
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        usize: sqlx::ColumnIndex<R>,
    {
        rows.iter()
            .map(|row| (0..row.len()).map(|i| row.get::<String, _>(i)).collect())
            .collect()
    }
    match kind {
        EngineKind::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(url.strip_prefix("sqlite://").unwrap())
                .create_if_missing(true);
            let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            texts(
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap(),
            )
        }
        EngineKind::Postgres => {
            let mut conn = sqlx::postgres::PgConnection::connect(url).await.unwrap();
            texts(
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap(),
            )
        }
        EngineKind::Mysql => {
            let mut conn = sqlx::mysql::MySqlConnection::connect(url).await.unwrap();
            texts(
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap(),
            )
        }
    }
}
