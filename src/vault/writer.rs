//! Owns taking a snapshot: the staging directory under `.tmp/`, one data file
//! per object, and the commit that publishes the snapshot atomically. It must
//! never make a snapshot visible before every byte of it is durable, never
//! publish one with an unfinished object, and never replace a published
//! snapshot.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::datafile::RowFileWriter;
use super::error::VaultError;
use super::fsutil;
use super::id::SnapshotId;
use super::manifest::{
    self, ColumnInfo, DatabaseInfo, ForeignKey, MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_TMP_FILE,
    Manifest, ObjectEntry, ObjectKind, Reason,
};
use super::value::Value;

/// What the caller knows about a snapshot before taking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The migration (`app.name`) this snapshot protects; required for
    /// `Reason::Plan`, so rollback can find the snapshot by migration.
    pub migration: Option<String>,
    /// How to roll the schema back before restoring, when known.
    pub rollback_command: Option<String>,
    /// Planned or ad-hoc.
    pub reason: Reason,
    /// The environment name, recorded so restore can refuse the wrong one.
    pub environment: String,
    /// The source database.
    pub database: DatabaseInfo,
}

/// What the caller knows about one object before streaming its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// The table, named as its adapter addresses it.
    pub table: String,
    /// Whole table, or some columns.
    pub kind: ObjectKind,
    /// The columns being dropped; must be empty for `ObjectKind::Table` and
    /// non-empty for `ObjectKind::Columns`.
    pub columns: Vec<String>,
    /// Every column of the table before the migration, in table order.
    pub all_columns: Vec<ColumnInfo>,
    /// The columns identifying a row: the primary key, or a NOT NULL unique
    /// key when the table has none. Required for `ObjectKind::Columns`,
    /// since without it restored values cannot find their rows.
    pub primary_key: Vec<String>,
    /// The table's foreign keys, recorded for restore ordering.
    pub foreign_keys: Vec<ForeignKey>,
    /// The column a sequence, identity or auto-increment fills, if any: a
    /// dropped table is gone by restore time, so only the snapshot can say
    /// which counter to move past the restored ids.
    pub generated_key: Option<String>,
}

impl ObjectSpec {
    /// The columns each row passed to [`ObjectWriter::write_row`] must hold,
    /// in this order: the key columns first, then the preserved columns (every
    /// column, in table order, for a whole table) not already in the key.
    /// This is the order of `db::TableInfo::row_columns`, so an adapter's row
    /// stream can be written as it comes.
    pub fn row_columns(&self) -> Vec<String> {
        let preserved: Vec<&String> = match self.kind {
            ObjectKind::Table => self.all_columns.iter().map(|c| &c.name).collect(),
            ObjectKind::Columns => self.columns.iter().collect(),
        };
        let mut out = self.primary_key.clone();
        for column in preserved {
            if !out.contains(column) {
                out.push(column.clone());
            }
        }
        out
    }

    fn validate(&self) -> Result<(), VaultError> {
        let fail = |reason: String| {
            Err(VaultError::InvalidObject {
                table: self.table.clone(),
                reason,
            })
        };
        if self.table.is_empty() {
            return fail("the table name is empty".into());
        }
        if self.all_columns.is_empty() {
            return fail("all_columns is empty; list every column of the table".into());
        }
        let known = |name: &String| self.all_columns.iter().any(|c| &c.name == name);
        for (i, column) in self.all_columns.iter().enumerate() {
            if self.all_columns[..i].iter().any(|c| c.name == column.name) {
                return fail(format!("column {} is listed twice", column.name));
            }
        }
        match self.kind {
            ObjectKind::Table if !self.columns.is_empty() => {
                return fail("a whole-table object lists preserved columns".into());
            }
            ObjectKind::Columns if self.columns.is_empty() => {
                return fail("a columns object preserves no columns".into());
            }
            ObjectKind::Columns if self.primary_key.is_empty() => {
                return fail(
                    "a columns object needs a key (primary or NOT NULL unique) to put values \
                     back on their rows"
                        .into(),
                );
            }
            _ => {}
        }
        for (what, list) in [("preserved", &self.columns), ("key", &self.primary_key)] {
            for (i, name) in list.iter().enumerate() {
                if !known(name) {
                    return fail(format!("{what} column {name} is not in all_columns"));
                }
                if list[..i].contains(name) {
                    return fail(format!("{what} column {name} is listed twice"));
                }
            }
        }
        if let Some(name) = self.generated_key.as_ref().filter(|n| !known(n)) {
            return fail(format!("generated key column {name} is not in all_columns"));
        }
        for fk in &self.foreign_keys {
            if fk.columns.is_empty() || fk.columns.len() != fk.referenced_columns.len() {
                return fail(format!(
                    "the foreign key to {} pairs {} columns with {} referenced columns",
                    fk.referenced_table,
                    fk.columns.len(),
                    fk.referenced_columns.len()
                ));
            }
            if let Some(name) = fk.columns.iter().find(|n| !known(n)) {
                return fail(format!("foreign key column {name} is not in all_columns"));
            }
        }
        Ok(())
    }
}

/// The result of a successful commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The new snapshot's id, to report and to pass to restore.
    pub id: SnapshotId,
    /// Where it was published.
    pub path: PathBuf,
    /// Total rows preserved, for the operator's report.
    pub rows: u64,
    /// Total size of the data files, for the operator's report.
    pub compressed_bytes: u64,
    /// The manifest exactly as written.
    pub manifest: Manifest,
}

/// Object slots shared between a snapshot and its object writers, so object
/// writers can live on other threads (e.g. inside `spawn_blocking`).
type Slots = Arc<Mutex<Vec<Slot>>>;

struct Slot {
    /// Named in the error if the object is never finished.
    table: String,
    /// Filled by `ObjectWriter::finish`.
    entry: Option<ObjectEntry>,
}

/// A snapshot being taken. Dropping it without [`commit`](Self::commit)
/// abandons it: its staging directory is removed, and nothing is ever
/// listed.
#[must_use = "dropping a SnapshotWriter abandons the snapshot; call commit"]
pub struct SnapshotWriter {
    /// The id the snapshot will be published under.
    id: SnapshotId,
    /// The vault root, where the snapshot is published.
    vault_dir: PathBuf,
    /// `<vault>/.tmp/<id>`, where everything is written first.
    staging: PathBuf,
    /// Copied into the manifest.
    meta: SnapshotMeta,
    /// When `begin` was called; also the time in the id.
    created_at: SystemTime,
    /// One slot per object begun, in order.
    slots: Slots,
    /// A shared lock on `<vault>/.lock`, held until the writer is dropped so
    /// that no garbage collection removes the staging directory under us.
    _lock: File,
    /// Set after a successful publish so drop does not clean up.
    committed: bool,
}

impl SnapshotWriter {
    pub(super) fn start(
        vault_dir: &Path,
        lock: File,
        meta: SnapshotMeta,
    ) -> Result<Self, VaultError> {
        validate_meta(&meta)?;
        let created_at = now_millis();
        let tmp_root = vault_dir.join(super::store::TMP_DIR);
        let mut existing = existing_ids(vault_dir)?;
        existing.extend(existing_ids(&tmp_root)?);
        // Another process may pick the same "next" id after a clock step;
        // creating the staging directory is the arbiter.
        for _ in 0..16 {
            let id = SnapshotId::generate(created_at, &existing);
            let staging = tmp_root.join(id.as_str());
            match fsutil::create_private_dir_new(&staging) {
                Ok(()) => {
                    return Ok(SnapshotWriter {
                        id,
                        vault_dir: vault_dir.to_owned(),
                        staging,
                        meta,
                        created_at,
                        slots: Arc::new(Mutex::new(Vec::new())),
                        _lock: lock,
                        committed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => existing.push(id),
                Err(e) => return Err(VaultError::io("create directory", staging, e)),
            }
        }
        Err(VaultError::io(
            "create a unique snapshot directory in",
            tmp_root,
            io::Error::other("16 candidate ids were all taken"),
        ))
    }

    pub fn id(&self) -> &SnapshotId {
        &self.id
    }

    /// Starts the next object. Several objects may be open at once (each
    /// writes its own file); all must be finished before commit.
    pub fn object(&mut self, spec: ObjectSpec) -> Result<ObjectWriter, VaultError> {
        spec.validate()?;
        let index = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots.push(Slot {
                table: spec.table.clone(),
                entry: None,
            });
            slots.len() - 1
        };
        let file_name = manifest::data_file_name(index);
        let path = self.staging.join(&file_name);
        let file = RowFileWriter::create(&path)?;
        Ok(ObjectWriter {
            id: self.id.clone(),
            index,
            row_columns: spec.row_columns(),
            spec,
            file_name,
            path,
            file: Some(file),
            slots: Arc::clone(&self.slots),
        })
    }

    /// Publishes the snapshot: manifest last, then one atomic rename of the
    /// staging directory into the vault, with fsyncs so that after a crash
    /// the snapshot is either entirely there or not listed at all.
    pub fn commit(mut self) -> Result<SnapshotSummary, VaultError> {
        let objects = {
            let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let mut objects = Vec::with_capacity(slots.len());
            for (index, slot) in slots.iter().enumerate() {
                match &slot.entry {
                    Some(entry) => objects.push(entry.clone()),
                    None => {
                        return Err(VaultError::ObjectNotFinished {
                            id: self.id.to_string(),
                            index,
                            table: slot.table.clone(),
                        });
                    }
                }
            }
            objects
        };
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            id: self.id.clone(),
            migration: self.meta.migration.clone(),
            rollback_command: self.meta.rollback_command.clone(),
            reason: self.meta.reason,
            environment: self.meta.environment.clone(),
            database: self.meta.database.clone(),
            created_at: self.created_at,
            completed_at: now_millis().max(self.created_at),
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            objects,
        };
        let json = manifest::to_json(&manifest)?;
        let tmp_path = self.staging.join(MANIFEST_TMP_FILE);
        let final_path = self.staging.join(MANIFEST_FILE);
        let mut file = fsutil::create_private_file(&tmp_path)?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(|e| VaultError::io("write", &tmp_path, e))?;
        drop(file);
        fs::rename(&tmp_path, &final_path)
            .map_err(|e| VaultError::io("rename into place", &final_path, e))?;
        fsutil::sync_dir(&self.staging)?;

        // rename(2) would silently replace an *empty* directory, but never a
        // non-empty one, and a published snapshot always holds its manifest:
        // so no published snapshot can be overwritten. The check gives the
        // clearer error in the ordinary case.
        let published = self.vault_dir.join(self.id.as_str());
        if fs::symlink_metadata(&published).is_ok() {
            return Err(VaultError::AlreadyExists {
                id: self.id.to_string(),
                path: published,
            });
        }
        fs::rename(&self.staging, &published).map_err(|e| {
            if matches!(
                e.kind(),
                io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
            ) {
                VaultError::AlreadyExists {
                    id: self.id.to_string(),
                    path: published.clone(),
                }
            } else {
                VaultError::io("publish snapshot to", &published, e)
            }
        })?;
        self.committed = true;
        fsutil::sync_dir(&self.vault_dir)?;
        if let Some(tmp_root) = self.staging.parent() {
            fsutil::sync_dir(tmp_root)?;
        }
        let rows = manifest.objects.iter().map(|o| o.rows).sum();
        let compressed_bytes = manifest.objects.iter().map(|o| o.compressed_bytes).sum();
        Ok(SnapshotSummary {
            id: self.id.clone(),
            path: published,
            rows,
            compressed_bytes,
            manifest,
        })
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: whatever is left is removed by the next
            // `gc_incomplete`, and `.tmp/` is never listed either way.
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Streams the rows of one object into its data file. Owns everything it
/// needs, so it can be moved to another thread. Dropping it without
/// [`finish`](Self::finish) deletes its file and makes commit refuse.
#[must_use = "dropping an ObjectWriter abandons the object; call finish"]
pub struct ObjectWriter {
    /// For error messages.
    id: SnapshotId,
    /// This object's slot in the snapshot.
    index: usize,
    /// The object's description, copied into the manifest entry.
    spec: ObjectSpec,
    /// The shape every row must have.
    row_columns: Vec<String>,
    /// The data file's name in the manifest.
    file_name: String,
    /// The data file's full path, for cleanup and errors.
    path: PathBuf,
    /// Taken by `finish`; still present on drop means abandoned.
    file: Option<RowFileWriter>,
    /// Where `finish` records the object.
    slots: Slots,
}

impl ObjectWriter {
    /// The columns each row must hold, in order (see
    /// [`ObjectSpec::row_columns`]).
    pub fn row_columns(&self) -> &[String] {
        &self.row_columns
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.file.as_ref().map_or(0, RowFileWriter::rows)
    }

    /// Appends one row. A row of the wrong width is refused without
    /// touching the file; after an I/O error every later call fails.
    pub fn write_row(&mut self, row: &[Value]) -> Result<(), VaultError> {
        if row.len() != self.row_columns.len() {
            return Err(VaultError::RowShape {
                id: self.id.to_string(),
                table: self.spec.table.clone(),
                expected: self.row_columns.len(),
                found: row.len(),
                columns: self.row_columns.join(", "),
            });
        }
        self.usable_file()?.write_row(row)
    }

    /// Appends one row given as its canonical encoding (from the writers in
    /// [`encoding`](super::encoding)); refused, as `write_row` refuses, when its
    /// value count is not the object's width. The values themselves are taken
    /// as encoded: the caller built them with the vault's own writers.
    pub fn write_encoded(&mut self, canonical: &[u8]) -> Result<(), VaultError> {
        let width = canonical
            .get(..4)
            .map(|count| u32::from_be_bytes([count[0], count[1], count[2], count[3]]) as usize);
        if width != Some(self.row_columns.len()) {
            return Err(VaultError::RowShape {
                id: self.id.to_string(),
                table: self.spec.table.clone(),
                expected: self.row_columns.len(),
                found: width.unwrap_or(0),
                columns: self.row_columns.join(", "),
            });
        }
        self.usable_file()?.write_encoded(canonical)
    }

    fn usable_file(&mut self) -> Result<&mut RowFileWriter, VaultError> {
        match self.file.as_mut() {
            Some(file) if !file.is_broken() => Ok(file),
            _ => Err(VaultError::WriterFailed {
                id: self.id.to_string(),
                table: self.spec.table.clone(),
                file: self.path.clone(),
            }),
        }
    }

    /// Completes and fsyncs the data file and records the object in its
    /// snapshot. Returns the entry the manifest will hold.
    pub fn finish(mut self) -> Result<ObjectEntry, VaultError> {
        self.usable_file()?;
        let Some(file) = self.file.take() else {
            return Err(VaultError::WriterFailed {
                id: self.id.to_string(),
                table: self.spec.table.clone(),
                file: self.path.clone(),
            });
        };
        let finished = match file.finish() {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(&self.path);
                return Err(e);
            }
        };
        let entry = ObjectEntry {
            table: self.spec.table.clone(),
            kind: self.spec.kind,
            columns: self.spec.columns.clone(),
            row_columns: self.row_columns.clone(),
            all_columns: self.spec.all_columns.clone(),
            primary_key: self.spec.primary_key.clone(),
            foreign_keys: self.spec.foreign_keys.clone(),
            generated_key: self.spec.generated_key.clone(),
            rows: finished.checksum.rows,
            sum: finished.checksum.sum,
            file: self.file_name.clone(),
            compressed_bytes: finished.compressed_bytes,
            file_sha256: finished.file_sha256,
            max_row_bytes: finished.max_row_bytes,
        };
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(self.index) {
            slot.entry = Some(entry.clone());
        }
        Ok(entry)
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Abandoned: the slot stays empty so commit refuses, and the
            // partial file goes now rather than at the next gc.
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn validate_meta(meta: &SnapshotMeta) -> Result<(), VaultError> {
    let fail = |reason: &str| {
        Err(VaultError::InvalidMeta {
            reason: reason.to_owned(),
        })
    };
    match (&meta.reason, &meta.migration) {
        (Reason::Plan, None) => return fail("a planned snapshot must name its migration"),
        (_, Some(m)) if m.trim().is_empty() => return fail("the migration name is empty"),
        _ => {}
    }
    if meta.environment.trim().is_empty() {
        return fail("the environment name is empty");
    }
    Ok(())
}

// Milliseconds, because that is what the manifest stores: the in-memory
// manifest returned by commit then equals the one read back from disk.
fn now_millis() -> SystemTime {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let millis = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
    SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
}

/// The snapshot ids present as directories in `dir` (missing dir: none).
pub(super) fn existing_ids(dir: &Path) -> Result<Vec<SnapshotId>, VaultError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(VaultError::io("list", dir, e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| VaultError::io("list", dir, e))?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(SnapshotId::from_dir_name)
        {
            ids.push(id);
        }
    }
    Ok(ids)
}
