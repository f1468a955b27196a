//! Owns snapshot ids: their generation (time-sortable ULIDs) and validation of
//! ids that come from users or from directory names. It must never let a
//! string that is not a canonical ULID become a path component: that is the
//! vault's only defence against `../` in a user-supplied id.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::{Generator, Ulid};

use super::error::VaultError;

/// Crockford base32, the only characters a ULID may contain.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const LEN: usize = 26;

/// A snapshot's id: a ULID in canonical upper-case text, so that
/// lexicographic order is creation order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(
    /// Always 26 canonical Crockford characters; checked on construction.
    String,
);

// One generator per process keeps ids strictly increasing even for
// snapshots begun within the same millisecond.
static GENERATOR: Mutex<Generator> = Mutex::new(Generator::new());

impl SnapshotId {
    /// Validates an id typed by a user; lower case is accepted and
    /// normalised, anything else that is not a ULID is refused.
    pub fn parse(text: &str) -> Result<Self, VaultError> {
        let upper = text.to_ascii_uppercase();
        if is_canonical(&upper) {
            Ok(SnapshotId(upper))
        } else {
            Err(VaultError::InvalidId {
                given: text.chars().take(64).collect(),
            })
        }
    }

    /// Accepts only the exact canonical spelling, as used for directory
    /// names: `01abc…` on disk is not a snapshot this vault wrote.
    pub(super) fn from_dir_name(name: &str) -> Option<Self> {
        is_canonical(name).then(|| SnapshotId(name.to_owned()))
    }

    /// A new id for a snapshot created at `now`, strictly greater than
    /// every id in `existing` so that order stays creation order even if the
    /// wall clock stepped back or another process created one this
    /// millisecond.
    pub(super) fn generate<'a>(
        now: SystemTime,
        existing: impl IntoIterator<Item = &'a SnapshotId>,
    ) -> Self {
        let fresh = {
            let mut generator = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
            // Overflow needs 2^80 ids in one millisecond; a fresh random
            // ULID is then still unique with overwhelming probability.
            generator
                .generate_from_datetime(now)
                .unwrap_or_else(|_| Ulid::from_datetime(now))
        };
        let floor = existing.into_iter().filter_map(|id| id.ulid()).max();
        let chosen = match floor {
            Some(floor) if floor >= fresh => floor.increment().unwrap_or(fresh),
            _ => fresh,
        };
        SnapshotId(chosen.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The creation time encoded in the id (millisecond precision).
    pub fn timestamp(&self) -> SystemTime {
        self.ulid()
            .map(|u| u.datetime())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    fn ulid(&self) -> Option<Ulid> {
        Ulid::from_string(&self.0).ok()
    }
}

fn is_canonical(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == LEN
        // A first character above 7 would overflow 128 bits.
        && matches!(bytes[0], b'0'..=b'7')
        && bytes.iter().all(|b| ALPHABET.contains(b))
}

impl FromStr for SnapshotId {
    type Err = VaultError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SnapshotId::parse(text)
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for SnapshotId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SnapshotId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        SnapshotId::from_dir_name(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a canonical ULID")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_sort_by_creation_time() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut ids = Vec::new();
        for step in 0..50u64 {
            // Several per millisecond, then later milliseconds.
            let at = base + Duration::from_millis(step / 5);
            ids.push(SnapshotId::generate(at, []));
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert!(ids[0].timestamp() >= base);
    }

    #[test]
    fn id_exceeds_existing_even_if_clock_went_back() {
        let later = SystemTime::now() + Duration::from_secs(3600);
        let future = SnapshotId::generate(later, []);
        let now_id = SnapshotId::generate(SystemTime::now(), [&future]);
        assert!(now_id > future);
    }

    #[test]
    fn parse_accepts_only_ulids() {
        let id = SnapshotId::generate(SystemTime::now(), []);
        assert_eq!(SnapshotId::parse(id.as_str()).expect("own id"), id);
        assert_eq!(
            SnapshotId::parse(&id.as_str().to_lowercase()).expect("lower case"),
            id
        );
        for bad in [
            "",
            "..",
            "../../etc/passwd",
            "01JD3Q1Z8G7N9V0000000000A",
            "01JD3Q1Z8G7N9V0000000000ABC",
            "01JD3Q1Z8G7N9V0000000000/B",
            "01JD3Q1Z8G7N9V0000000000.B",
            "01JD3Q1Z8G7N9V000000000UAB",
            "81JD3Q1Z8G7N9V0000000000AB",
            "01JD3Q1Z8G7N9V0000000000é",
        ] {
            assert!(
                matches!(SnapshotId::parse(bad), Err(VaultError::InvalidId { .. })),
                "{bad}"
            );
        }
        assert!(SnapshotId::from_dir_name(&id.as_str().to_lowercase()).is_none());
    }
}
