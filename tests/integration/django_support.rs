//! Driving the fixture Django project: a venv with Django, `manage.py`, the oracle.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{block_on, stderr, stdout};

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A Python with Django and the database drivers of `tests/requirements.txt`:
/// `$DROPGUARD_TEST_PYTHON`, else `target/test-venv/bin/python`, created on first use.
pub fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Ok(python) = std::env::var("DROPGUARD_TEST_PYTHON") {
                return PathBuf::from(python);
            }
            let venv = repo_root().join("target/test-venv");
            let python = venv.join("bin/python");
            let stamp = venv.join("requirements.installed");
            let wanted = std::fs::read_to_string(repo_root().join("tests/requirements.txt"))
                .expect("reading tests/requirements.txt");
            if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
                let status = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .expect("running python3 -m venv");
                assert!(
                    status.success(),
                    "python3 -m venv {} failed",
                    venv.display()
                );
                let status = Command::new(&python)
                    .args(["-m", "pip", "install", "--quiet", "-r"])
                    .arg(repo_root().join("tests/requirements.txt"))
                    .status()
                    .expect("running pip");
                assert!(
                    status.success(),
                    "pip install -r tests/requirements.txt failed"
                );
                std::fs::write(&stamp, wanted).expect("writing the venv stamp");
            }
            python
        })
        .clone()
}

/// The fixture Django project, driven through its own `manage.py`.
pub fn django_project() -> PathBuf {
    repo_root().join("tests/fixtures/django_project")
}

/// Runs `python <script> ARGS` in the fixture project against `database_url`;
/// panics with its output when it fails.
pub fn django(database_url: &str, args: &[&str]) -> String {
    django_at(&django_project(), database_url, args)
}

/// [`django`] in another copy of the project (see [`copy_project`]).
pub fn django_at(project: &Path, database_url: &str, args: &[&str]) -> String {
    let output = Command::new(python())
        .args(args)
        .current_dir(project)
        .env("DROPGUARD_TEST_DATABASE_URL", database_url)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("running python");
    assert!(
        output.status.success(),
        "python {args:?} failed:\n{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Runs SQL statements on a SQLite file, creating it if missing.
pub fn sqlite_exec(path: &Path, sql: &str) {
    use sqlx::{AssertSqlSafe, ConnectOptions};
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    block_on(async {
        let mut conn = options.connect().await.expect("opening the SQLite file");
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"));
    });
}

/// Copies the fixture project to `to` (created), without bytecode or databases,
/// for tests that add or remove migration files.
pub fn copy_project(to: &Path) {
    let from = django_project();
    for entry in walkdir::WalkDir::new(&from)
        .into_iter()
        .filter_entry(|e| e.file_name() != "__pycache__")
    {
        let entry = entry.expect("walking the fixture project");
        let relative = entry.path().strip_prefix(&from).expect("below the project");
        let target = to.join(relative);
        let name = entry.file_name().to_string_lossy();
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).expect("creating a directory of the copy");
        } else if !(name.ends_with(".pyc")
            || name.ends_with(".db")
            || name.starts_with("db.sqlite3"))
        {
            std::fs::copy(entry.path(), &target).expect("copying a file of the fixture project");
        }
    }
}
