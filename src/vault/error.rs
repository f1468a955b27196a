//! Owns the vault's single error type. Every message names the snapshot id or
//! file involved and says what the operator should do next. It must never
//! carry row data: messages end up in logs, and the rows are the very data
//! the vault exists to keep out of sight.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "could not {action} {path}: {source} (check that the vault directory is on a local disk, \
         writable by the dropguard user, with free space)"
    )]
    Io {
        /// What was being attempted, phrased to follow "could not".
        action: &'static str,
        /// The file or directory it was attempted on.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },

    #[error(
        "`{given}` is not a snapshot id: ids are 26-character ULIDs such as \
         01JD3Q1Z8G7N9V0000000000AB (run `dropguard snapshots list` to see them)"
    )]
    InvalidId {
        /// What the user typed, echoed so they can spot the typo.
        given: String,
    },

    #[error(
        "no snapshot {id} in vault {vault}: run `dropguard snapshots list` to see the \
         snapshots it holds"
    )]
    UnknownSnapshot {
        /// The id that was asked for.
        id: String,
        /// The vault directory that was searched.
        vault: PathBuf,
    },

    #[error(
        "snapshot {id} is not usable: {path}: {detail} (a published snapshot always has a valid \
         manifest, so its directory was damaged or edited; keep it for inspection and do not \
         restore from it)"
    )]
    BadManifest {
        /// The snapshot whose manifest could not be used.
        id: String,
        /// The manifest file.
        path: PathBuf,
        /// Why it could not be used.
        detail: String,
    },

    #[error(
        "snapshot {id} ({path}) has manifest format {found}, but this dropguard reads formats up \
         to {supported}: upgrade dropguard to read it"
    )]
    UnsupportedFormat {
        /// The snapshot written by a newer dropguard.
        id: String,
        /// Its manifest file.
        path: PathBuf,
        /// The format it declares.
        found: u64,
        /// The newest format this build understands.
        supported: u64,
    },

    #[error(
        "snapshot {id} has {count} objects, so there is no object {index}: run \
         `dropguard snapshots show {id}` to see them"
    )]
    UnknownObject {
        /// The snapshot asked about.
        id: String,
        /// The index asked for.
        index: usize,
        /// How many objects the snapshot has.
        count: usize,
    },

    #[error(
        "cannot preserve table {table}: {reason} (this is a bug in the caller, not in the data)"
    )]
    InvalidObject {
        /// The table whose description was rejected.
        table: String,
        /// What is inconsistent about it.
        reason: String,
    },

    #[error("cannot start a snapshot: {reason} (this is a bug in the caller, not in the data)")]
    InvalidMeta {
        /// What is wrong with the snapshot's description.
        reason: String,
    },

    #[error(
        "snapshot {id}, table {table}: a row has {found} values but the object preserves \
         {expected} columns ({columns}); the query feeding the vault selects the wrong columns"
    )]
    RowShape {
        /// The snapshot being written.
        id: String,
        /// The table the row belongs to.
        table: String,
        /// How many values each row must have.
        expected: usize,
        /// How many this row had.
        found: usize,
        /// The expected columns, in order, so the query can be fixed.
        columns: String,
    },

    #[error("cannot encode row: {reason}")]
    Unencodable {
        /// Which limit of the canonical encoding the row exceeds.
        reason: &'static str,
    },

    #[error("malformed row encoding at byte {offset}: {problem}")]
    MalformedRow {
        /// Where in the row's bytes decoding stopped.
        offset: usize,
        /// What was found there.
        problem: &'static str,
    },

    #[error(
        "data file {file} of snapshot {id} is corrupt at row {row}: {detail}; do not restore \
         from it (run `dropguard snapshots verify {id}` for the full picture)"
    )]
    CorruptData {
        /// The snapshot the file belongs to.
        id: String,
        /// The damaged file.
        file: PathBuf,
        /// 1-based row at which the damage was noticed; 0 is the file header.
        row: u64,
        /// What was wrong.
        detail: String,
    },

    #[error(
        "data file {file} of snapshot {id} holds {found_rows} rows with {found} but the manifest \
         recorded {expected_rows} rows with {expected}; do not restore from it (run \
         `dropguard snapshots verify {id}`)"
    )]
    ChecksumMismatch {
        /// The snapshot the file belongs to.
        id: String,
        /// The file whose contents differ from the manifest.
        file: PathBuf,
        /// Row count the manifest recorded.
        expected_rows: u64,
        /// Checksum the manifest recorded.
        expected: String,
        /// Row count found in the file.
        found_rows: u64,
        /// Checksum of what the file holds.
        found: String,
    },

    #[error(
        "snapshot {id}: object {index} (table {table}) was started but never finished, so the \
         snapshot is incomplete; finish every object before commit, or drop the writer to \
         abandon the snapshot"
    )]
    ObjectNotFinished {
        /// The snapshot being committed.
        id: String,
        /// The unfinished object's index.
        index: usize,
        /// Its table.
        table: String,
    },

    #[error(
        "snapshot {id}, table {table}: an earlier write to {file} failed, so the file is \
         unusable; abandon this snapshot and take a new one"
    )]
    WriterFailed {
        /// The snapshot being written.
        id: String,
        /// The table whose file broke.
        table: String,
        /// The broken file.
        file: PathBuf,
    },

    #[error(
        "snapshot {id} already exists at {path}; a published snapshot is never overwritten \
         (take the snapshot again: it will get a new id)"
    )]
    AlreadyExists {
        /// The id that collided.
        id: String,
        /// Where the existing snapshot lives.
        path: PathBuf,
    },

    #[error("`{text}` is not a checksum: expected `sha256-sum:` followed by 64 hex digits")]
    BadChecksumText {
        /// The text that failed to parse.
        text: String,
    },
}

impl VaultError {
    pub(super) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        VaultError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
