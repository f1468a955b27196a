//! The vault: dropguard's file-based store of preserved data. It owns the
//! on-disk layout, the canonical row encoding and checksums, and the
//! write-then-publish protocol. It must never talk to a database (adapters
//! produce and consume `Value` rows through this API), never present an
//! incomplete snapshot as usable, and never write outside its directory.
//!
//! On-disk layout (directories 0700, files 0600):
//!
//! ```text
//!   <vault>/
//!     .lock                  flock: writers shared, gc exclusive
//!     .tmp/<id>/             snapshots being written; never listed
//!     <id>/                  a published snapshot (id = ULID, sorts by time)
//!       manifest.json        written last; its presence means complete
//!       000.rows.zst         one data file per object, see datafile.rs
//!       001.rows.zst
//! ```
//!
//! Synchronous std::fs throughout: async callers run it in spawn_blocking.
//! `ObjectWriter` owns what it needs, so it can be moved into such a task.

mod checksum;
mod datafile;
pub mod encoding;
mod error;
mod fsutil;
mod id;
mod manifest;
mod remote;
mod store;
mod value;
mod writer;

#[cfg(test)]
mod tests;

pub use checksum::{Checksummer, ObjectChecksum};
pub use encoding::{MAX_ARRAY_DEPTH, decode_row, encode_row};
pub use error::VaultError;
pub use id::SnapshotId;
pub use manifest::{
    ColumnInfo, DatabaseInfo, Engine, ForeignKey, MANIFEST_FORMAT, Manifest, ObjectEntry,
    ObjectKind, Reason,
};
pub use remote::{Remote, RemoteConfig, RemoteError};
pub use store::{
    ObjectOverview, ObjectRows, ObjectStatus, ObjectVerification, SnapshotEntry, Vault,
    VerifyReport,
};
pub use value::{TextKind, Value};
pub use writer::{ObjectSpec, ObjectWriter, SnapshotMeta, SnapshotSummary, SnapshotWriter};
