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

    /// Polls `/readyz` until it answers 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.get("/readyz").0 != 200 {
            assert!(Instant::now() < deadline, "the daemon never turned ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self, limit: Duration) -> Stopped {
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
