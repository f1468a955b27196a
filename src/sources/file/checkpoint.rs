//! Where each tailed file was read up to, kept in the state dir so that a
//! restart neither loses nor repeats a line.
//!
//! A file is known by its device and inode plus a fingerprint of its head (the
//! first bytes, up to [`HEAD_BYTES`]): the inode finds a file that was renamed by
//! rotation, the head tells a reused inode or a truncated-and-rewritten file from
//! the one the checkpoint was about. Files shorter than [`HEAD_BYTES`] are
//! fingerprinted over the bytes they have (the length is recorded), so small files
//! are tracked too.
//!
//! On disk: one versioned JSON file per file source, written to a temporary name,
//! fsynced, and renamed over the old one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes of a file's head that identify it.
pub const HEAD_BYTES: u64 = 1024;

/// A file's identity on its filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

/// A hash of a file's first `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub len: u64,
    pub sha256: String,
}

impl Head {
    /// The head of `file` over its first `min(size, HEAD_BYTES)` bytes.
    pub fn read(file: &mut File, size: u64) -> io::Result<Self> {
        Self::read_len(file, size.min(HEAD_BYTES))
    }

    /// The hash of exactly `len` first bytes; an error if the file is shorter.
    pub fn read_len(file: &mut File, len: u64) -> io::Result<Self> {
        let mut bytes = Vec::with_capacity(len as usize);
        file.seek(SeekFrom::Start(0))?;
        Read::by_ref(file).take(len).read_to_end(&mut bytes)?;
        if (bytes.len() as u64) < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "shorter than its head",
            ));
        }
        Ok(Self {
            len,
            sha256: hex(&Sha256::digest(&bytes)[..16]),
        })
    }

    /// Whether `file` still starts with the bytes this head was taken over.
    pub fn matches(&self, file: &mut File) -> bool {
        Head::read_len(file, self.len).is_ok_and(|now| now == *self)
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One file's position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: FileId,
    /// The path it was last seen at (rotation may have moved it since).
    pub path: PathBuf,
    pub head: Head,
    /// Everything before this offset was handed on.
    pub offset: u64,
    /// When the source let go of the file (it left the glob and was read to
    /// its end), in Unix seconds; `None` while it is tailed. Kept for
    /// [`KEEP_DEPARTED`], so a file that comes back (renamed out of the glob and
    /// back, reopened after a failure) resumes here instead of from its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_at: Option<u64>,
}

/// How long the checkpoint of a file the source let go of is kept.
pub const KEEP_DEPARTED: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// The most checkpoints of departed files kept (the newest), whatever their age.
pub const MAX_DEPARTED: usize = 10_000;

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum OnDisk {
    #[serde(rename = "1")]
    V1 { files: Vec<Checkpoint> },
}

/// The checkpoints of one file source.
pub struct Checkpoints {
    path: PathBuf,
    /// Whether the file existed when loaded: a source's first run reads new
    /// files from `read_from`, later runs read files that appeared from the start.
    pub existed: bool,
    entries: HashMap<FileId, Checkpoint>,
}

impl Checkpoints {
    /// Loads `path` (missing: empty). A file that cannot be parsed is an error
    /// naming it: silently starting over would re-read or skip lines.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(Self {
                    path: path.to_path_buf(),
                    existed: false,
                    entries: HashMap::new(),
                });
            }
            Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
        };
        let OnDisk::V1 { files } = serde_json::from_str(&text).map_err(|err| {
            format!(
                "{} is not a dropguard checkpoint file ({err}); move it away to start this source over",
                path.display()
            )
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            existed: true,
            entries: files.into_iter().map(|c| (c.id, c)).collect(),
        })
    }

    pub fn get(&self, id: FileId) -> Option<&Checkpoint> {
        self.entries.get(&id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Checkpoint> {
        self.entries.values()
    }

    /// Replaces every entry with `current` (the files tailed now).
    pub fn set_all(&mut self, current: impl IntoIterator<Item = Checkpoint>) {
        self.entries = current.into_iter().map(|c| (c.id, c)).collect();
    }

    /// Writes the checkpoints atomically: temporary file, fsync, rename, fsync of
    /// the directory.
    pub fn save(&mut self) -> io::Result<()> {
        let mut files: Vec<Checkpoint> = self.entries.values().cloned().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let text = serde_json::to_vec_pretty(&OnDisk::V1 { files })?;
        crate::statefile::write_atomic(&self.path, &text)?;
        self.existed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn checkpoint(ino: u64, offset: u64, path: &str) -> Checkpoint {
        Checkpoint {
            id: FileId { dev: 2049, ino },
            path: PathBuf::from(path),
            head: Head {
                len: offset.min(HEAD_BYTES),
                sha256: "00112233445566778899aabbccddeeff".into(),
            },
            offset,
            left_at: None,
        }
    }

    proptest! {
        #[test]
        fn saved_checkpoints_load_back_the_same(
            entries in proptest::collection::vec((any::<u64>(), any::<u64>(), "[a-z/._ -]{1,40}"), 0..20)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("cp").join("files.json");
            let mut store = Checkpoints::load(&path).unwrap();
            prop_assert!(!store.existed);
            store.set_all(entries.iter().map(|(ino, offset, p)| checkpoint(*ino, *offset, p)));
            store.save().unwrap();
            let loaded = Checkpoints::load(&path).unwrap();
            prop_assert!(loaded.existed);
            let mut a: Vec<_> = store.entries().cloned().collect();
            let mut b: Vec<_> = loaded.entries().cloned().collect();
            a.sort_by_key(|c| c.id.ino);
            b.sort_by_key(|c| c.id.ino);
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn a_damaged_checkpoint_file_is_named_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = Checkpoints::load(&path).err().unwrap();
        assert!(
            err.contains("files.json") && err.contains("move it away"),
            "{err}"
        );
    }

    #[test]
    fn heads_tell_rewritten_files_apart_and_fingerprint_small_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "tiny\n").unwrap();
        let mut file = File::open(&path).unwrap();
        let head = Head::read(&mut file, 5).unwrap();
        assert_eq!(head.len, 5);
        std::fs::write(&path, "tiny\nand growing\n").unwrap();
        assert!(
            head.matches(&mut File::open(&path).unwrap()),
            "appending keeps the head"
        );
        std::fs::write(&path, "other\n").unwrap();
        assert!(!head.matches(&mut File::open(&path).unwrap()), "rewritten");
        std::fs::write(&path, "tin").unwrap();
        assert!(
            !head.matches(&mut File::open(&path).unwrap()),
            "truncated below the head"
        );
    }
}
