//! Owns the vault's filesystem primitives: private directories and files,
//! directory fsync, and I/O error wrapping. It must never create anything
//! readable by other users (the vault holds dropped production data) and never
//! follow a rename without syncing the directory that records it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::error::VaultError;

pub(super) const DIR_MODE: u32 = 0o700;
pub(super) const FILE_MODE: u32 = 0o600;

/// Creates `path` (and missing parents) as 0700. An existing directory is
/// left as it is: its permissions are the operator's decision.
pub(super) fn ensure_private_dir(path: &Path) -> Result<(), VaultError> {
    if path.is_dir() {
        return Ok(());
    }
    create_private_dirs(path)
}

fn create_private_dirs(path: &Path) -> Result<(), VaultError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(|e| VaultError::io("create directory", path, e))?;
    // The umask may have stripped bits we need; set the mode exactly.
    set_mode(path, DIR_MODE)?;
    // A vault created moments before a crash must not vanish with the
    // snapshots committed into it.
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Creates a new directory that must not exist yet, as exactly 0700.
pub(super) fn create_private_dir_new(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
}

/// Creates (or truncates) a file as 0600 for writing.
pub(super) fn create_private_file(path: &Path) -> Result<File, VaultError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| VaultError::io("create file", path, e))
}

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), VaultError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| VaultError::io("set permissions of", path, e))
}

/// Makes the directory's entries (creations, renames) durable.
pub(super) fn sync_dir(path: &Path) -> Result<(), VaultError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| VaultError::io("fsync directory", path, e))
}
