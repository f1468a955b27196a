//! Owns manifest.json: the description of one snapshot and the expected
//! checksum of each preserved object. It must never accept a format it does
//! not know (a newer dropguard may have changed what fields mean), never trust
//! a file name from disk that could leave the snapshot directory, and never be
//! written before the data it describes is durable.

use std::path::Path;
use std::time::SystemTime;

pub use crate::db::{ColumnInfo, Engine, ForeignKey};
use serde::{Deserialize, Serialize};

use super::checksum::ObjectChecksum;
use super::error::VaultError;
use super::id::SnapshotId;

/// The manifest format this build writes and the newest it reads. Bump it
/// for any change an older reader must not silently ignore; purely
/// additive, ignorable fields may keep it.
pub const MANIFEST_FORMAT: u64 = 1;

pub(super) const MANIFEST_FILE: &str = "manifest.json";
pub(super) const MANIFEST_TMP_FILE: &str = "manifest.json.tmp";

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Ahead of a planned destructive migration.
    Plan,
    /// On an operator's request outside any plan.
    AdHoc,
}

/// Which database the rows came from, so restore can refuse a mismatched
/// target and interpret declared types and value texts correctly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// Selects the adapter that can restore the rows.
    pub kind: Engine,
    /// Value texts (dates, floats, json) can differ between server versions;
    /// recorded so a restore onto a different version can warn.
    pub server_version: String,
}

/// Whether an object is a whole table or some of its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// The migration drops the table: every column of every row is kept.
    Table,
    /// The migration drops columns: the key and the dropped columns are kept.
    Columns,
}

/// One preserved object: its description, and where and how its rows are
/// stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// The table, named as its database adapter addresses it (schema-
    /// qualified where the database has schemas).
    pub table: String,
    /// Whether restore recreates a table or re-adds columns.
    pub kind: ObjectKind,
    /// The preserved (dropped) columns; empty when the whole table is kept.
    pub columns: Vec<String>,
    /// The columns each stored row holds, in order: the key, then the
    /// preserved columns (every column for a whole table) not in the key.
    pub row_columns: Vec<String>,
    /// Every column of the table before the migration, in table order.
    pub all_columns: Vec<ColumnInfo>,
    /// The columns that identify a row, used to put preserved column values
    /// back on the right rows.
    pub primary_key: Vec<String>,
    /// The table's foreign keys, for restore ordering.
    pub foreign_keys: Vec<ForeignKey>,
    /// The column a sequence, identity or auto-increment fills, so restore
    /// can move the counter past the restored ids even when the table itself
    /// was dropped.
    pub generated_key: Option<String>,
    /// Row count, checked by verify and restore.
    pub rows: u64,
    /// Multiset hash of the rows, checked by verify and restore.
    #[serde(rename = "checksum", with = "sum_text")]
    pub sum: [u8; 32],
    /// Data file name inside the snapshot directory.
    pub file: String,
    /// Size of the data file, for listings and retention decisions.
    pub compressed_bytes: u64,
    /// SHA-256 of the data file's bytes (64 hex digits), so verify also
    /// catches changes that leave every row intact.
    #[serde(with = "hex32")]
    pub file_sha256: [u8; 32],
    /// Length of the longest encoded row, so a reader can refuse a damaged
    /// length field instead of buffering up to 4 GiB for it.
    pub max_row_bytes: u32,
}

impl ObjectEntry {
    pub fn checksum(&self) -> ObjectChecksum {
        ObjectChecksum {
            rows: self.rows,
            sum: self.sum,
        }
    }
}

/// The contents of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Lets a reader refuse a layout it does not understand.
    pub format: u64,
    /// The snapshot's id; must match its directory name.
    pub id: SnapshotId,
    /// The migration (`app.name`) the snapshot protects; None for ad-hoc
    /// snapshots, which no migration's rollback will pick up.
    pub migration: Option<String>,
    /// The command that rolls the schema back before this snapshot is restored
    /// (`python manage.py migrate catalog 0002_product_notes`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_command: Option<String>,
    /// Planned or ad-hoc, for listings and retention.
    pub reason: Reason,
    /// The environment (e.g. `production`), so a snapshot is not restored
    /// into the wrong one.
    pub environment: String,
    /// The source database.
    pub database: DatabaseInfo,
    /// When the snapshot was begun (RFC 3339 UTC, milliseconds); rows
    /// reflect the database at about this time.
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    /// When it was committed; the gap shows how long preservation took.
    #[serde(with = "rfc3339")]
    pub completed_at: SystemTime,
    /// The dropguard version that wrote it, for diagnosing old snapshots.
    pub tool_version: String,
    /// The preserved objects, in the order they were begun.
    pub objects: Vec<ObjectEntry>,
}

/// Parses and validates a manifest read from `path` for snapshot `id`.
pub(super) fn parse(id: &SnapshotId, path: &Path, bytes: &[u8]) -> Result<Manifest, VaultError> {
    let bad = |detail: String| VaultError::BadManifest {
        id: id.to_string(),
        path: path.to_owned(),
        detail,
    };
    // The format is checked before the fields, so a newer manifest gets
    // "upgrade dropguard" instead of a confusing missing-field error.
    let raw: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let format = raw
        .get("format")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| bad("no numeric \"format\" field".to_owned()))?;
    if format > MANIFEST_FORMAT {
        return Err(VaultError::UnsupportedFormat {
            id: id.to_string(),
            path: path.to_owned(),
            found: format,
            supported: MANIFEST_FORMAT,
        });
    }
    if format == 0 {
        return Err(bad("format 0 was never written by dropguard".to_owned()));
    }
    let manifest: Manifest = serde_json::from_value(raw).map_err(|e| bad(e.to_string()))?;
    if manifest.id != *id {
        return Err(bad(format!(
            "it describes snapshot {}, not the directory it is in",
            manifest.id
        )));
    }
    for (index, object) in manifest.objects.iter().enumerate() {
        if !is_data_file_name(&object.file) {
            return Err(bad(format!(
                "object {index} names data file `{}`, which is not a vault data file name",
                object.file.chars().take(64).collect::<String>()
            )));
        }
        if object.row_columns.is_empty() {
            return Err(bad(format!("object {index} stores no columns")));
        }
    }
    Ok(manifest)
}

pub(super) fn to_json(manifest: &Manifest) -> Result<Vec<u8>, VaultError> {
    let mut bytes = serde_json::to_vec_pretty(manifest).map_err(|e| VaultError::BadManifest {
        id: manifest.id.to_string(),
        path: MANIFEST_FILE.into(),
        detail: format!("could not serialise: {e}"),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The data file name of object `index`.
pub(super) fn data_file_name(index: usize) -> String {
    format!("{index:03}.rows.zst")
}

// Only names the vault itself generates: digits then `.rows.zst`. This is
// what stops a tampered manifest from pointing reads outside the snapshot.
fn is_data_file_name(name: &str) -> bool {
    name.strip_suffix(".rows.zst")
        .is_some_and(|digits| digits.len() >= 3 && digits.bytes().all(|b| b.is_ascii_digit()))
}

mod sum_text {
    use super::ObjectChecksum;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sum: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&ObjectChecksum { rows: 0, sum: *sum }.sum_text())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        ObjectChecksum::parse_sum(&text).map_err(serde::de::Error::custom)
    }
}

mod hex32 {
    use super::super::checksum::{from_hex, to_hex};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(digest: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&to_hex(digest))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        from_hex(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` is not 64 lower-case hex digits"))
        })
    }
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not an RFC 3339 UTC time: {e}"))
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::time::Duration;

    pub fn sample() -> Manifest {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let id = SnapshotId::generate(at, []);
        Manifest {
            format: MANIFEST_FORMAT,
            id,
            migration: Some("billing.0042_drop_legacy".into()),
            rollback_command: None,
            reason: Reason::Plan,
            environment: "production".into(),
            database: DatabaseInfo {
                kind: Engine::Postgres,
                server_version: "16.4".into(),
            },
            created_at: at,
            completed_at: at + Duration::from_millis(2_500),
            tool_version: "0.1.0".into(),
            objects: vec![ObjectEntry {
                table: "public.invoices".into(),
                kind: ObjectKind::Columns,
                columns: vec!["legacy_ref".into()],
                row_columns: vec!["id".into(), "legacy_ref".into()],
                all_columns: vec![
                    ColumnInfo {
                        name: "id".into(),
                        declared_type: "bigint".into(),
                        nullable: false,
                    },
                    ColumnInfo {
                        name: "legacy_ref".into(),
                        declared_type: "text".into(),
                        nullable: true,
                    },
                ],
                primary_key: vec!["id".into()],
                foreign_keys: vec![ForeignKey {
                    columns: vec!["customer_id".into()],
                    referenced_table: "public.customers".into(),
                    referenced_columns: vec!["id".into()],
                }],
                generated_key: Some("id".into()),
                rows: 3,
                sum: [0xab; 32],
                file: data_file_name(0),
                compressed_bytes: 120,
                file_sha256: [0x01; 32],
                max_row_bytes: 40,
            }],
        }
    }

    fn json_of(manifest: &Manifest) -> serde_json::Value {
        serde_json::from_slice(&to_json(manifest).expect("serialises")).expect("is json")
    }

    fn parse_value(id: &SnapshotId, value: &serde_json::Value) -> Result<Manifest, VaultError> {
        let bytes = serde_json::to_vec(value).expect("serialises");
        parse(id, Path::new("/vault/x/manifest.json"), &bytes)
    }

    #[test]
    fn round_trips_and_uses_documented_spellings() {
        let m = sample();
        let json = json_of(&m);
        assert_eq!(json["format"], 1);
        assert_eq!(json["reason"], "plan");
        assert_eq!(json["database"]["kind"], "postgres");
        assert_eq!(json["created_at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["objects"][0]["kind"], "columns");
        assert_eq!(
            json["objects"][0]["checksum"],
            format!("sha256-sum:{}", "ab".repeat(32))
        );
        assert_eq!(json["objects"][0]["file_sha256"], "01".repeat(32));
        assert_eq!(parse_value(&m.id, &json).expect("parses"), m);

        let mut ad_hoc = m.clone();
        ad_hoc.reason = Reason::AdHoc;
        ad_hoc.migration = None;
        let json = json_of(&ad_hoc);
        assert_eq!(json["reason"], "ad_hoc");
        assert!(json["migration"].is_null());
    }

    #[test]
    fn future_format_is_refused_with_upgrade_advice() {
        let m = sample();
        let mut json = json_of(&m);
        json["format"] = 2.into();
        // A newer format may reshape anything; the format alone decides.
        json["objects"] = "reshaped".into();
        let err = parse_value(&m.id, &json).expect_err("format 2 must be refused");
        assert!(matches!(
            err,
            VaultError::UnsupportedFormat {
                found: 2,
                supported: 1,
                ..
            }
        ));
        let message = err.to_string();
        assert!(message.contains(m.id.as_str()), "{message}");
        assert!(message.contains("upgrade dropguard"), "{message}");
    }

    #[test]
    fn missing_or_zero_format_is_refused() {
        let m = sample();
        let mut json = json_of(&m);
        json["format"] = 0.into();
        assert!(matches!(
            parse_value(&m.id, &json),
            Err(VaultError::BadManifest { .. })
        ));
        json.as_object_mut().expect("object").remove("format");
        assert!(matches!(
            parse_value(&m.id, &json),
            Err(VaultError::BadManifest { .. })
        ));
    }

    #[test]
    fn escaping_file_names_are_refused() {
        let m = sample();
        for name in [
            "../000.rows.zst",
            "/etc/passwd",
            "000.rows.zst/..",
            "0.rows.zst",
            "x00.rows.zst",
        ] {
            let mut json = json_of(&m);
            json["objects"][0]["file"] = name.into();
            assert!(
                matches!(
                    parse_value(&m.id, &json),
                    Err(VaultError::BadManifest { .. })
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn id_must_match_directory() {
        let m = sample();
        let other = SnapshotId::generate(SystemTime::now(), [&m.id]);
        assert!(matches!(
            parse_value(&other, &json_of(&m)),
            Err(VaultError::BadManifest { .. })
        ));
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        let id = sample().id;
        for bytes in [&b""[..], b"{", b"[]", b"{\"format\":1}", b"\xff\xfe"] {
            assert!(parse(&id, Path::new("m"), bytes).is_err());
        }
    }
}
