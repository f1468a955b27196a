//! The outbox: `state.dir/outbox/<key>.json`, one file per message, written
//! atomically before the message is sent. Delivered messages move to
//! `outbox/delivered/`, rejected ones to `outbox/dead/`; a key found in any of
//! the three is never queued again, so a state change is alerted once per
//! receiver however often it is reported and across restarts.
//!
//! The key is the incident id, the state change and the receiver
//! (`01J…-opened-slack`): file-name safe by construction, and checked anyway.
//! Files hold no URL: the receiver is named by kind and index.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Event, ReceiverId};
use crate::detect::incident::Incident;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{key:?} cannot name an outbox file (letters, digits, '.', '_' and '-' only)")]
    BadKey { key: String },
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The idempotency key: also the file name, and sent as `Idempotency-Key`.
    pub key: String,
    pub incident: String,
    pub event: Event,
    pub receiver: ReceiverId,
    /// When it was queued: messages go out oldest first.
    pub queued_at: DateTime<Utc>,
    /// The JSON body, as built when the state change happened.
    pub body: serde_json::Value,
}

impl Message {
    pub fn new(
        event: Event,
        incident: &Incident,
        receiver: ReceiverId,
        body: serde_json::Value,
    ) -> Self {
        Self {
            key: key(event, incident, receiver),
            incident: incident.id.clone(),
            event,
            receiver,
            queued_at: Utc::now(),
            body,
        }
    }
}

/// `<incident>-<change>-<receiver>`. Updates happen many times, so theirs
/// carries the incident's `updated_at` (milliseconds).
pub fn key(event: Event, incident: &Incident, receiver: ReceiverId) -> String {
    let change = match event {
        Event::Opened => "opened".to_string(),
        Event::Updated => format!("updated{}", incident.updated_at.timestamp_millis()),
        Event::Restored => "restored".to_string(),
        Event::Dismissed => "dismissed".to_string(),
    };
    format!("{}-{change}-{}", incident.id, receiver.key_part())
}

/// On-disk form, versioned so a later layout can still read these files.
#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum Stored {
    #[serde(rename = "1")]
    V1(Message),
}

const DELIVERED: &str = "delivered";
const DEAD: &str = "dead";

#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// The outbox of the daemon whose state directory is `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("outbox"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `message` unless its key is already pending, delivered or dead.
    /// Returns whether it was written now.
    pub fn enqueue(&self, message: &Message) -> Result<bool, OutboxError> {
        let name = file_name(&message.key)?;
        let known = [
            self.dir.join(&name),
            self.dir.join(DELIVERED).join(&name),
            self.dir.join(DEAD).join(&name),
        ];
        if known.iter().any(|path| path.exists()) {
            return Ok(false);
        }
        let path = self.dir.join(&name);
        let text = serde_json::to_vec_pretty(&Stored::V1(message.clone()))
            .map_err(|err| io::Error::other(err.to_string()))
            .map_err(|source| OutboxError::Io {
                action: "encoding",
                path: path.clone(),
                source,
            })?;
        crate::statefile::write_atomic(&path, &text).map_err(|source| OutboxError::Io {
            action: "writing",
            path,
            source,
        })?;
        Ok(true)
    }

    /// The messages waiting, oldest first. A file that cannot be read as a
    /// message is moved to `dead/` (and logged) rather than retried forever.
    pub fn pending(&self) -> Result<Vec<Message>, OutboxError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(OutboxError::Io {
                    action: "reading the outbox",
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut messages = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| OutboxError::Io {
                action: "reading the outbox",
                path: self.dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            let read = fs::read(&path)
                .map_err(|err| err.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Stored>(&bytes).map_err(|err| err.to_string())
                });
            match read {
                Ok(Stored::V1(message)) if message.key == key => messages.push(message),
                Ok(_) => {
                    tracing::error!(file = %path.display(), "an outbox file does not hold the message its name says; moved to outbox/dead");
                    self.move_to(key, DEAD)?;
                }
                Err(err) => {
                    tracing::error!(file = %path.display(), error = %err, "an outbox file cannot be read; moved to outbox/dead");
                    self.move_to(key, DEAD)?;
                }
            }
        }
        messages.sort_by(|a, b| (a.queued_at, &a.key).cmp(&(b.queued_at, &b.key)));
        Ok(messages)
    }

    /// Marks `key` delivered: it is never sent or queued again.
    pub fn delivered(&self, key: &str) -> Result<(), OutboxError> {
        self.move_to(key, DELIVERED)
    }

    /// Gives up on `key`: kept in `dead/` for a person to look at, never retried.
    pub fn dead(&self, key: &str) -> Result<(), OutboxError> {
        self.move_to(key, DEAD)
    }

    /// The keys in `delivered/`, sorted.
    pub fn delivered_keys(&self) -> Result<Vec<String>, OutboxError> {
        self.keys_in(&self.dir.join(DELIVERED))
    }

    /// The keys in `dead/`, sorted.
    pub fn dead_keys(&self) -> Result<Vec<String>, OutboxError> {
        self.keys_in(&self.dir.join(DEAD))
    }

    fn keys_in(&self, dir: &Path) -> Result<Vec<String>, OutboxError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(OutboxError::Io {
                    action: "reading",
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        let mut keys: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Renames the pending file into `sub/`, then syncs both directories so the
    /// move survives a crash.
    fn move_to(&self, key: &str, sub: &str) -> Result<(), OutboxError> {
        let name = file_name(key)?;
        let target_dir = self.dir.join(sub);
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| OutboxError::Io {
                action,
                path,
                source,
            }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&target_dir)
            .map_err(io_err("creating", &target_dir))?;
        let from = self.dir.join(&name);
        fs::rename(&from, target_dir.join(&name)).map_err(io_err("moving", &from))?;
        File::open(&target_dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing", &target_dir))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing", &self.dir))
    }
}

fn file_name(key: &str) -> Result<String, OutboxError> {
    let safe = !key.is_empty()
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if safe {
        Ok(format!("{key}.json"))
    } else {
        Err(OutboxError::BadKey {
            key: key.chars().take(64).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::alerts::Kind;

    fn message(key: &str) -> Message {
        Message {
            key: key.to_string(),
            incident: "01JD0000000000000000000000".into(),
            event: Event::Opened,
            receiver: ReceiverId {
                kind: Kind::Slack,
                index: 0,
            },
            queued_at: Utc::now(),
            body: serde_json::json!({"text": "x"}),
        }
    }

    #[test]
    fn a_key_is_queued_once_even_after_delivery_or_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path());
        assert!(outbox.enqueue(&message("a-opened-slack")).unwrap());
        assert!(!outbox.enqueue(&message("a-opened-slack")).unwrap());
        assert!(outbox.enqueue(&message("b-opened-slack")).unwrap());
        let keys: Vec<_> = outbox
            .pending()
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["a-opened-slack", "b-opened-slack"], "oldest first");
        outbox.delivered("a-opened-slack").unwrap();
        outbox.dead("b-opened-slack").unwrap();
        assert!(outbox.pending().unwrap().is_empty());
        assert!(!outbox.enqueue(&message("a-opened-slack")).unwrap());
        assert!(!outbox.enqueue(&message("b-opened-slack")).unwrap());
        assert_eq!(outbox.delivered_keys().unwrap(), ["a-opened-slack"]);
        assert_eq!(outbox.dead_keys().unwrap(), ["b-opened-slack"]);
    }

    #[test]
    fn a_damaged_file_is_set_aside_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path());
        outbox.enqueue(&message("good")).unwrap();
        fs::write(outbox.dir().join("bad.json"), "{").unwrap();
        let keys: Vec<_> = outbox
            .pending()
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["good"]);
        assert_eq!(outbox.dead_keys().unwrap(), ["bad"]);
    }

    #[test]
    fn keys_that_are_not_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path());
        for bad in ["../x", "", ".hidden", "a/b"] {
            assert!(outbox.enqueue(&message(bad)).is_err(), "{bad:?}");
        }
    }
}
