//! Owns the vault directory as a whole: opening it, cleaning up after
//! crashes, listing, looking up, reading back and verifying snapshots. It must
//! never present a snapshot without a valid manifest as usable, never build a
//! path from an unvalidated id or file name, and never delete anything outside
//! `.tmp/`.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::checksum::{ObjectChecksum, to_hex};
use super::datafile::RowFileReader;
use super::error::VaultError;
use super::fsutil;
use super::id::SnapshotId;
use super::manifest::{self, MANIFEST_FILE, Manifest, ObjectEntry, ObjectKind, Reason};
use super::value::Value;
use super::writer::{SnapshotMeta, SnapshotWriter, existing_ids};

/// Staging area for snapshots being written; never listed.
pub(super) const TMP_DIR: &str = ".tmp";
/// Writers hold it shared, garbage collection exclusive.
const LOCK_FILE: &str = ".lock";

/// A vault: one local directory of published snapshots.
#[derive(Debug, Clone)]
pub struct Vault {
    /// The vault root; each published snapshot is `<dir>/<id>/`.
    dir: PathBuf,
}

/// One line of `dropguard snapshots list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The snapshot's id.
    pub id: SnapshotId,
    /// From the manifest; from the id when the manifest is unreadable.
    pub created_at: SystemTime,
    /// The migration it protects, if any (None when incomplete).
    pub migration: Option<String>,
    /// Planned or ad-hoc (None when incomplete).
    pub reason: Option<Reason>,
    /// What it holds (empty when incomplete).
    pub objects: Vec<ObjectOverview>,
    /// False when the directory has no valid manifest: such a snapshot is
    /// shown so the operator learns of the damage, and is never usable.
    pub complete: bool,
    /// Why it is incomplete, for the operator.
    pub problem: Option<String>,
}

impl SnapshotEntry {
    /// The entry as `dropguard snapshots list --json` and `GET /api/v1/snapshots`
    /// show it: `id`, `migration`, `created_at`, `complete`, `problem` and
    /// `objects` with `table`, `columns`, `rows`.
    pub fn listing(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id.to_string(),
            "migration": self.migration,
            "created_at": humantime::format_rfc3339_seconds(self.created_at).to_string(),
            "complete": self.complete,
            "problem": self.problem,
            "objects": self.objects.iter().map(|o| serde_json::json!({
                "table": o.table,
                "columns": o.columns,
                "rows": o.rows,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The listing's view of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOverview {
    /// The table.
    pub table: String,
    /// Whole table or columns.
    pub kind: ObjectKind,
    /// The preserved columns; empty for a whole table.
    pub columns: Vec<String>,
    /// Row count.
    pub rows: u64,
}

/// The outcome of [`Vault::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The snapshot verified.
    pub id: SnapshotId,
    /// One result per manifest object, in manifest order.
    pub objects: Vec<ObjectVerification>,
}

impl VerifyReport {
    /// True only if every object's data matches the manifest.
    pub fn is_ok(&self) -> bool {
        self.objects.iter().all(|o| o.status == ObjectStatus::Ok)
    }
}

/// The verification of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVerification {
    /// The object's index in the manifest.
    pub index: usize,
    /// Its table, for the report.
    pub table: String,
    /// Its data file's path, for the report.
    pub file: PathBuf,
    /// What was found.
    pub status: ObjectStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStatus {
    /// Row count and checksum match the manifest.
    Ok,
    /// The file reads cleanly but holds different rows than recorded.
    Mismatch {
        /// What the manifest recorded.
        expected: ObjectChecksum,
        /// What the file holds.
        found: ObjectChecksum,
    },
    /// Every row matches, but the file's bytes are not the ones written:
    /// damage that happened to miss the rows (e.g. in zstd's frame header),
    /// or editing. The rows are restorable; the disk deserves a look.
    FileChanged {
        /// SHA-256 recorded at write time, hex.
        expected: String,
        /// SHA-256 of the file now, hex.
        found: String,
    },
    /// The data file does not exist.
    FileMissing,
    /// The file is damaged.
    Corrupt {
        /// 1-based row where the damage was noticed; 0 is the header.
        row: u64,
        /// What was wrong.
        detail: String,
    },
    /// The file exists but could not be read (permissions, I/O error).
    Unreadable {
        /// The operating system's reason.
        detail: String,
    },
}

/// How `dropguard snapshots verify` and a refused restore word an object's state.
impl std::fmt::Display for ObjectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectStatus::Ok => f.write_str("ok"),
            ObjectStatus::Mismatch { expected, found } => {
                write!(f, "checksum mismatch: expected {expected}, found {found}")
            }
            ObjectStatus::FileChanged { expected, found } => {
                write!(
                    f,
                    "data file changed: expected sha256 {expected}, found {found}"
                )
            }
            ObjectStatus::FileMissing => f.write_str("data file missing"),
            ObjectStatus::Corrupt { row, detail } => write!(f, "corrupt at row {row}: {detail}"),
            ObjectStatus::Unreadable { detail } => write!(f, "unreadable: {detail}"),
        }
    }
}

impl Vault {
    /// Opens (creating it as 0700 if missing) the vault at `dir`, and removes
    /// staging directories left by crashed writers.
    pub fn open(dir: impl AsRef<Path>) -> Result<Vault, VaultError> {
        let dir = dir.as_ref().to_owned();
        fsutil::ensure_private_dir(&dir)?;
        fsutil::ensure_private_dir(&dir.join(TMP_DIR))?;
        let vault = Vault { dir };
        vault.lock_file()?;
        vault.gc_incomplete()?;
        Ok(vault)
    }

    /// Opens the existing vault at `dir` for reading only: nothing is created,
    /// locked or cleaned up. For a vault whose filesystem went read-only, which
    /// can still be listed, verified and restored from; writing a snapshot into
    /// it fails with the filesystem's error.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Vault, VaultError> {
        let dir = dir.as_ref().to_owned();
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => Ok(Vault { dir }),
            Ok(_) => Err(VaultError::io(
                "open vault",
                dir,
                io::Error::other("not a directory"),
            )),
            Err(err) => Err(VaultError::io("open vault", dir, err)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether a snapshot could be written now: a small file is written,
    /// fsynced and removed in `.tmp/`, where a snapshot's files start. The
    /// error is the filesystem's: full, read-only, not permitted.
    pub fn check_writable(&self) -> Result<(), VaultError> {
        use std::io::Write;
        /// A page: what the smallest data file takes on most filesystems.
        const PROBE_BYTES: usize = 4096;
        let tmp = self.dir.join(TMP_DIR);
        fsutil::ensure_private_dir(&tmp)?;
        let path = tmp.join(format!(".writable-{}", std::process::id()));
        let mut file = fsutil::create_private_file(&path)?;
        let written = file
            .write_all(&[0; PROBE_BYTES])
            .and_then(|()| file.sync_all());
        drop(file);
        // Gone already when a garbage collection ran meanwhile: fine either way.
        let _ = fs::remove_file(&path);
        written.map_err(|e| VaultError::io("write a test file in", tmp, e))
    }

    fn lock_file(&self) -> Result<File, VaultError> {
        let path = self.dir.join(LOCK_FILE);
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(fsutil::FILE_MODE)
            .open(&path)
            .map_err(|e| VaultError::io("open lock file", path, e))
    }

    /// Removes everything under `.tmp/` if no writer (in any process) is
    /// active; returns how many entries were removed. With a writer active
    /// it removes nothing, because it cannot tell its staging directory from
    /// a crashed one.
    pub fn gc_incomplete(&self) -> Result<usize, VaultError> {
        let lock = self.lock_file()?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(0),
            Err(TryLockError::Error(e)) => {
                return Err(VaultError::io("lock", self.dir.join(LOCK_FILE), e));
            }
        }
        let tmp_root = self.dir.join(TMP_DIR);
        let entries = match fs::read_dir(&tmp_root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(VaultError::io("list", tmp_root, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| VaultError::io("list", &tmp_root, e))?;
            let path = entry.path();
            let is_dir = entry
                .file_type()
                .map_err(|e| VaultError::io("inspect", &path, e))?
                .is_dir();
            let result = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            result.map_err(|e| VaultError::io("remove stale staging entry", &path, e))?;
            removed += 1;
        }
        if removed > 0 {
            fsutil::sync_dir(&tmp_root)?;
        }
        Ok(removed)
    }

    /// Starts a new snapshot in `<vault>/.tmp/<id>/`.
    pub fn begin(&self, meta: SnapshotMeta) -> Result<SnapshotWriter, VaultError> {
        let lock = self.lock_file()?;
        // Blocks only while a garbage collection is running, which is brief.
        lock.lock_shared()
            .map_err(|e| VaultError::io("lock", self.dir.join(LOCK_FILE), e))?;
        fsutil::ensure_private_dir(&self.dir.join(TMP_DIR))?;
        SnapshotWriter::start(&self.dir, lock, meta)
    }

    /// Every snapshot directory, sorted by id (oldest first). Incomplete
    /// ones are included with `complete: false` and must not be used.
    pub fn list(&self) -> Result<Vec<SnapshotEntry>, VaultError> {
        let mut ids = existing_ids(&self.dir)?;
        ids.sort();
        let mut entries = Vec::with_capacity(ids.len());
        for id in ids {
            if !self.dir.join(id.as_str()).is_dir() {
                continue;
            }
            entries.push(match self.load_manifest(&id) {
                Ok(m) => SnapshotEntry {
                    created_at: m.created_at,
                    migration: m.migration,
                    reason: Some(m.reason),
                    objects: m
                        .objects
                        .into_iter()
                        .map(|o| ObjectOverview {
                            table: o.table,
                            kind: o.kind,
                            columns: o.columns,
                            rows: o.rows,
                        })
                        .collect(),
                    complete: true,
                    problem: None,
                    id,
                },
                Err(e) => SnapshotEntry {
                    created_at: id.timestamp(),
                    migration: None,
                    reason: None,
                    objects: Vec::new(),
                    complete: false,
                    problem: Some(e.to_string()),
                    id,
                },
            });
        }
        Ok(entries)
    }

    /// The manifest of a complete snapshot.
    pub fn show(&self, id: &SnapshotId) -> Result<Manifest, VaultError> {
        self.load_manifest(id)
    }

    fn load_manifest(&self, id: &SnapshotId) -> Result<Manifest, VaultError> {
        let dir = self.dir.join(id.as_str());
        if !dir.is_dir() {
            return Err(VaultError::UnknownSnapshot {
                id: id.to_string(),
                vault: self.dir.clone(),
            });
        }
        let path = dir.join(MANIFEST_FILE);
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                VaultError::BadManifest {
                    id: id.to_string(),
                    path: path.clone(),
                    detail: "it is missing".to_owned(),
                }
            } else {
                VaultError::io("read", &path, e)
            }
        })?;
        manifest::parse(id, &path, &bytes)
    }

    /// The newest complete snapshot taken for `migration` (`app.name`).
    pub fn find_for_migration(&self, migration: &str) -> Result<Option<Manifest>, VaultError> {
        for entry in self.list()?.into_iter().rev() {
            if entry.complete && entry.migration.as_deref() == Some(migration) {
                return self.show(&entry.id).map(Some);
            }
        }
        Ok(None)
    }

    /// Streams the rows of object `index` of snapshot `id`.
    ///
    /// The iterator checks as it goes and, after the last row, compares the
    /// row count and checksum with the manifest: a restore must consume it
    /// to the end and treat any `Err` - including a final one after all
    /// rows - as "discard everything written from this stream". Run
    /// [`verify`](Self::verify) first to avoid starting a doomed restore;
    /// unlike verify, this does not check the file's bytes, only its rows.
    pub fn read_object(&self, id: &SnapshotId, index: usize) -> Result<ObjectRows, VaultError> {
        let manifest = self.show(id)?;
        let count = manifest.objects.len();
        let Some(entry) = manifest.objects.into_iter().nth(index) else {
            return Err(VaultError::UnknownObject {
                id: id.to_string(),
                index,
                count,
            });
        };
        let path = self.dir.join(id.as_str()).join(&entry.file);
        let reader =
            RowFileReader::open(id.as_str(), &path, entry.max_row_bytes).map_err(|e| match e {
                VaultError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                    VaultError::CorruptData {
                        id: id.to_string(),
                        file: path.clone(),
                        row: 0,
                        detail: "the data file is missing".to_owned(),
                    }
                }
                other => other,
            })?;
        Ok(ObjectRows {
            id: id.clone(),
            entry,
            reader,
            done: false,
        })
    }

    /// Re-reads every data file of snapshot `id` and compares row counts and
    /// checksums with its manifest. Errors only if the manifest itself
    /// cannot be used; per-object problems are in the report.
    pub fn verify(&self, id: &SnapshotId) -> Result<VerifyReport, VaultError> {
        let manifest = self.show(id)?;
        let dir = self.dir.join(id.as_str());
        let objects = manifest
            .objects
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let file = dir.join(&entry.file);
                ObjectVerification {
                    index,
                    table: entry.table.clone(),
                    status: verify_object(id, entry, &file),
                    file,
                }
            })
            .collect();
        Ok(VerifyReport {
            id: id.clone(),
            objects,
        })
    }
}

fn verify_object(id: &SnapshotId, entry: &ObjectEntry, file: &Path) -> ObjectStatus {
    let mut reader = match RowFileReader::open(id.as_str(), file, entry.max_row_bytes) {
        Ok(reader) => reader,
        Err(VaultError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return ObjectStatus::FileMissing;
        }
        Err(e) => return status_of(e),
    };
    loop {
        match reader.next_row() {
            Ok(Some(row)) if row.len() != entry.row_columns.len() => {
                return ObjectStatus::Corrupt {
                    row: reader.checksum().rows,
                    detail: format!(
                        "the row has {} values but the manifest lists {} columns",
                        row.len(),
                        entry.row_columns.len()
                    ),
                };
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return status_of(e),
        }
    }
    let found = reader.checksum();
    let expected = entry.checksum();
    if found != expected {
        return ObjectStatus::Mismatch { expected, found };
    }
    let digest = reader.file_sha256();
    if digest != entry.file_sha256 {
        return ObjectStatus::FileChanged {
            expected: to_hex(&entry.file_sha256),
            found: to_hex(&digest),
        };
    }
    ObjectStatus::Ok
}

fn status_of(error: VaultError) -> ObjectStatus {
    match error {
        VaultError::CorruptData { row, detail, .. } => ObjectStatus::Corrupt { row, detail },
        VaultError::Io { source, .. } => ObjectStatus::Unreadable {
            detail: source.to_string(),
        },
        other => ObjectStatus::Unreadable {
            detail: other.to_string(),
        },
    }
}

/// The rows of one object, streamed from its data file. Fused: after an
/// error or the end, it yields `None`.
#[must_use = "an unread ObjectRows restores nothing"]
pub struct ObjectRows {
    /// For error messages.
    id: SnapshotId,
    /// The manifest entry: expected shape, count and checksum.
    entry: ObjectEntry,
    /// The data file being read.
    reader: RowFileReader,
    /// Set after the end or an error, so the iterator is fused.
    done: bool,
}

impl ObjectRows {
    /// The manifest entry of the object being read (row layout, types).
    pub fn entry(&self) -> &ObjectEntry {
        &self.entry
    }

    fn fail(&mut self, error: VaultError) -> Option<Result<Vec<Value>, VaultError>> {
        self.done = true;
        Some(Err(error))
    }
}

impl Iterator for ObjectRows {
    type Item = Result<Vec<Value>, VaultError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.reader.next_row() {
            Ok(Some(row)) if row.len() != self.entry.row_columns.len() => {
                let error = VaultError::CorruptData {
                    id: self.id.to_string(),
                    file: self.reader.path().to_owned(),
                    row: self.reader.checksum().rows,
                    detail: format!(
                        "the row has {} values but the manifest lists {} columns",
                        row.len(),
                        self.entry.row_columns.len()
                    ),
                };
                self.fail(error)
            }
            Ok(Some(row)) => Some(Ok(row)),
            Ok(None) => {
                self.done = true;
                let found = self.reader.checksum();
                let expected = self.entry.checksum();
                if found == expected {
                    None
                } else {
                    Some(Err(VaultError::ChecksumMismatch {
                        id: self.id.to_string(),
                        file: self.reader.path().to_owned(),
                        expected_rows: expected.rows,
                        expected: expected.sum_text(),
                        found_rows: found.rows,
                        found: found.sum_text(),
                    }))
                }
            }
            Err(e) => self.fail(e),
        }
    }
}
