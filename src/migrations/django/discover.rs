//! Finds Django migration files in a project tree: `<app>/migrations/*.py`,
//! where the app label is the name of the directory holding `migrations/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::super::{Error, Problem};

/// Directories never holding project apps (virtualenvs, VCS, caches).
const SKIP_DIRS: &[&str] = &[
    "node_modules",
    "venv",
    "site-packages",
    "dist-packages",
    "__pycache__",
];

#[derive(Debug, Clone)]
pub(crate) struct FoundFile {
    pub app: String,
    pub name: String,
    pub path: PathBuf,
}

#[derive(Debug, Default)]
pub(crate) struct Discovered {
    /// Sorted by (app, name).
    pub files: Vec<FoundFile>,
    /// Apps with a migrations package in the project, even if every file in
    /// it fails to read: dependencies on them are checked, not tolerated.
    pub apps: BTreeSet<String>,
    pub problems: Vec<Problem>,
}

pub(crate) fn discover(project_dir: &Path) -> Result<Discovered, Error> {
    let meta = std::fs::metadata(project_dir).map_err(|source| Error::Io {
        path: project_dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory(project_dir.to_path_buf()));
    }
    let mut out = Discovered::default();
    // app label -> migrations dir that provides it
    let mut app_dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    let walker = WalkDir::new(project_dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            // The project dir itself may be hidden (temp dirs are).
            e.depth() == 0 || !e.file_type().is_dir() || !skip_dir(&e.file_name().to_string_lossy())
        });
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.problems.push(Problem {
                    file: e.path().map(Path::to_path_buf).unwrap_or_default(),
                    line: 0,
                    message: format!("cannot read directory entry: {e}"),
                });
                continue;
            }
        };
        if !entry.file_type().is_dir() || entry.file_name() != "migrations" {
            continue;
        }
        let dir = entry.path();
        // Django treats a migrations directory without __init__.py as a
        // namespace package, i.e. an unmigrated app.
        if !dir.join("__init__.py").is_file() {
            continue;
        }
        let Some(app) = dir
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
        else {
            continue;
        };
        let files = match migration_files(dir) {
            Ok(f) => f,
            Err(e) => {
                out.problems.push(Problem {
                    file: dir.to_path_buf(),
                    line: 0,
                    message: format!("cannot list migrations: {e}"),
                });
                continue;
            }
        };
        if files.is_empty() {
            continue;
        }
        if let Some(first) = app_dirs.get(&app) {
            out.problems.push(Problem {
                file: dir.to_path_buf(),
                line: 0,
                message: format!(
                    "app label '{app}' is already provided by {}; these migrations are ignored",
                    first.display()
                ),
            });
            continue;
        }
        app_dirs.insert(app.clone(), dir.to_path_buf());
        out.apps.insert(app.clone());
        for (name, path) in files {
            out.files.push(FoundFile {
                app: app.clone(),
                name,
                path,
            });
        }
    }
    out.files
        .sort_by(|a, b| (&a.app, &a.name).cmp(&(&b.app, &b.name)));
    Ok(out)
}

/// A directory that never holds project apps: hidden ones and [`SKIP_DIRS`].
pub(crate) fn skip_dir(name: &str) -> bool {
    name.starts_with('.') || SKIP_DIRS.contains(&name)
}

/// Module files Django's loader would import: `*.py`, not starting with
/// `_` or `~` (which also skips `__init__.py`).
fn migration_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if !path.is_file() || path.extension().is_none_or(|e| e != "py") {
            continue;
        }
        let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        if stem.starts_with('_') || stem.starts_with('~') {
            continue;
        }
        out.push((stem, path));
    }
    out.sort();
    Ok(out)
}
