//! The incident journal: one JSON file per incident under `state/incidents/`,
//! rewritten atomically on every change, so a restart keeps every incident as it
//! last was; and the [`Book`], the in-memory view the API and the daemon share.
//!
//! It must never use an id that is not a canonical ULID as a file name: ids come
//! from URLs and command lines.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use crate::detect::incident::{DeployInfo, Incident, RestoreRun};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{path} is not an incident file dropguard can read ({message}); move it out of the directory"
    )]
    Damaged { path: PathBuf, message: String },
    #[error(
        "{given:?} is not an incident id (26 letters and digits, as `dropguard incidents list` shows them)"
    )]
    InvalidId { given: String },
}

/// The file of the deploys being watched, beside the incidents (not an id, so
/// never listed as one).
const WATCHED: &str = "watched.json";

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum Watched {
    #[serde(rename = "1")]
    V1 { deploys: Vec<DeployInfo> },
}

/// On-disk form, versioned so a later layout can still read these files.
#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum Stored {
    #[serde(rename = "1")]
    V1(Incident),
}

/// Incidents as files in one directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The journal of the daemon whose state directory is `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("incidents"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every incident, oldest first. A missing directory is an empty journal.
    pub fn load_all(&self) -> Result<Vec<Incident>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "reading the incident directory",
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut incidents = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                action: "reading the incident directory",
                path: self.dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !is_id(id) {
                continue;
            }
            incidents.push(self.read(&entry.path())?);
        }
        incidents.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(incidents)
    }

    /// One incident by id (any case).
    pub fn load(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        let id = canonical_id(id)?;
        let path = self.path(&id);
        if !path.exists() {
            return Ok(None);
        }
        self.read(&path).map(Some)
    }

    fn read(&self, path: &Path) -> Result<Incident, StoreError> {
        let text = fs::read_to_string(path).map_err(|source| StoreError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?;
        match serde_json::from_str(&text) {
            Ok(Stored::V1(incident)) => Ok(incident),
            Err(err) => Err(StoreError::Damaged {
                path: path.to_path_buf(),
                message: err.to_string(),
            }),
        }
    }

    /// Writes the incident's current form: temporary file, fsync, rename, then
    /// the directory fsynced, so a crash leaves the old form or the new one.
    pub fn save(&self, incident: &Incident) -> Result<(), StoreError> {
        let id = canonical_id(&incident.id)?;
        self.write(&format!("{id}.json"), &Stored::V1(incident.clone()))
    }

    /// The deploys being watched, kept so that a restart goes on watching them.
    pub fn save_watched(&self, deploys: &[DeployInfo]) -> Result<(), StoreError> {
        self.write(
            WATCHED,
            &Watched::V1 {
                deploys: deploys.to_vec(),
            },
        )
    }

    /// The deploys saved by [`save_watched`](Self::save_watched); none when
    /// there is no file yet.
    pub fn load_watched(&self) -> Result<Vec<DeployInfo>, StoreError> {
        let path = self.dir.join(WATCHED);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "reading",
                    path,
                    source,
                });
            }
        };
        match serde_json::from_str(&text) {
            Ok(Watched::V1 { deploys }) => Ok(deploys),
            Err(err) => Err(StoreError::Damaged {
                path,
                message: err.to_string(),
            }),
        }
    }

    fn write(&self, name: &str, value: &impl Serialize) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        let text = serde_json::to_vec_pretty(value).map_err(|err| StoreError::Damaged {
            path: path.clone(),
            message: err.to_string(),
        })?;
        crate::statefile::write_atomic(&path, &text).map_err(|source| StoreError::Io {
            action: "writing",
            path,
            source,
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }
}

/// What a person asks of an incident (through the API), for the daemon's
/// detection task, which owns the incidents; the reply is the incident as it
/// now stands, or why not.
#[derive(Debug)]
pub enum Command {
    /// Closes the incident without a restore: the errors were expected, or
    /// handled otherwise. Receivers get a follow-up.
    Dismiss {
        id: String,
        reply: tokio::sync::oneshot::Sender<Result<Incident, Refusal>>,
    },
    /// Starts (or, after a failure, resumes) the restore workflow: the rollback
    /// command, then the data (modes `approve` and `auto`).
    Restore {
        id: String,
        /// Overwrite rows changed since the snapshot.
        force: bool,
        /// Who asked: `api`, `auto`.
        by: String,
        reply: tokio::sync::oneshot::Sender<Result<Incident, Refusal>>,
    },
    /// The workflow's progress, journaled before the reply.
    Progress {
        id: String,
        run: RestoreRun,
        reply: tokio::sync::oneshot::Sender<()>,
    },
    /// The workflow's data is back and verified: the incident is `restored`
    /// (journaled before the reply, which is the incident as it now is).
    Restored {
        id: String,
        reply: tokio::sync::oneshot::Sender<Incident>,
    },
}

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    /// It is already in a final state (`restored` or `dismissed`).
    Final(crate::detect::incident::State),
    /// `restore.mode` is `manual`: dropguard runs no rollback.
    Manual,
    /// Its restore is running.
    Running,
    /// It cannot be restored; the text says why and what to do.
    Cannot(String),
}

/// An id as typed (any case) in its canonical upper-case form, or an error.
pub fn canonical_id(given: &str) -> Result<String, StoreError> {
    let upper = given.to_ascii_uppercase();
    if is_id(&upper) {
        Ok(upper)
    } else {
        Err(StoreError::InvalidId {
            given: given.chars().take(64).collect(),
        })
    }
}

/// A canonical ULID: 26 Crockford base32 characters, the first at most 7.
fn is_id(text: &str) -> bool {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    text.len() == 26 && text.as_bytes()[0] <= b'7' && text.bytes().all(|b| ALPHABET.contains(&b))
}

/// A new incident id, sortable by time.
pub fn new_id(at: std::time::SystemTime) -> String {
    ulid::Ulid::from_datetime(at).to_string()
}

/// The incidents the daemon knows, shared between the detector's task (which
/// writes) and the API (which reads).
#[derive(Debug, Clone, Default)]
pub struct Book {
    incidents: Arc<RwLock<BTreeMap<String, Incident>>>,
}

impl Book {
    pub fn new(incidents: Vec<Incident>) -> Self {
        let map = incidents.into_iter().map(|i| (i.id.clone(), i)).collect();
        Self {
            incidents: Arc::new(RwLock::new(map)),
        }
    }

    /// Every incident, newest first.
    pub fn list(&self) -> Vec<Incident> {
        let map = self
            .incidents
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.values().rev().cloned().collect()
    }

    /// One incident by id (any case).
    pub fn get(&self, id: &str) -> Option<Incident> {
        let map = self
            .incidents
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(&id.to_ascii_uppercase()).cloned()
    }

    pub fn put(&self, incident: Incident) {
        let mut map = self
            .incidents
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(incident.id.clone(), incident);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_deploys_come_back_and_are_not_taken_for_incidents() {
        use crate::detect::incident::DeployedMigration;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(store.load_watched().unwrap().is_empty());
        let deploy = DeployInfo {
            at: chrono::Utc::now(),
            origins: vec![crate::event::DeployOrigin::DjangoMigrations],
            release: Some("v7".into()),
            migrations: vec![DeployedMigration {
                migration: "catalog.0016_remove_product_brand".into(),
                previous: Some("0015_delete_digitalproduct".into()),
                rollback_command: None,
                destructive: true,
                snapshot: None,
                objects: Vec::new(),
                in_use: Vec::new(),
            }],
            more_migrations: 0,
        };
        store.save_watched(std::slice::from_ref(&deploy)).unwrap();
        assert_eq!(store.load_watched().unwrap(), vec![deploy]);
        assert!(store.load_all().unwrap().is_empty());
        fs::write(store.dir().join(WATCHED), "{").unwrap();
        let err = store.load_watched().unwrap_err().to_string();
        assert!(
            err.contains("watched.json") && err.contains("move it out"),
            "{err}"
        );
    }

    #[test]
    fn ids_that_are_not_ulids_never_become_paths() {
        for bad in [
            "../../etc/passwd",
            "",
            "01ARZ3NDEKTSV4RRFFQ69G5FA",
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
        ] {
            assert!(canonical_id(bad).is_err(), "{bad:?}");
        }
        let id = new_id(std::time::SystemTime::now());
        assert_eq!(canonical_id(&id.to_ascii_lowercase()).unwrap(), id);
    }
}
