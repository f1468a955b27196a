//! Deploy announcements: the JSON object a deploy tool sends, as the body of
//! `POST /api/v1/deploys` or as a message on a `deploys.kafka` topic:
//! `{"migrations": ["app.name", …], "release": "v1.2.3", "at": "RFC 3339"}`.
//!
//! Pure: bytes in, a checked announcement or an error naming the field out.

use std::time::SystemTime;

use chrono::DateTime;
use serde::Deserialize;

/// `POST /api/v1/deploys` as sent, before its values are checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeploy {
    migrations: Vec<String>,
    #[serde(default)]
    release: Option<String>,
    #[serde(default)]
    at: Option<String>,
}

/// A deploy announcement: migrations that were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// `app.name` of each migration, in the order they were applied.
    pub migrations: Vec<String>,
    pub release: Option<String>,
    /// When the migrations were applied, if the announcer said.
    pub at: Option<SystemTime>,
}

/// Why a body was refused; the message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(String);

/// The most migrations one announcement may name: a release applies tens;
/// more is a mistake or an attack, and each name costs work in every watch.
pub const MAX_MIGRATIONS: usize = 2000;
/// The longest migration name taken (Django's are far shorter).
const MAX_NAME: usize = 255;

/// `app_label.name` as Django has them, or a plain SQL migration's file id
/// (its path under `sql.dir` without the extension: `V3__drop_legacy`,
/// `2026/0003_drop`).
fn is_migration_name(name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let django = name.split_once('.').is_some_and(|(app, migration)| {
        !app.is_empty()
            && !migration.is_empty()
            && app.chars().all(word)
            && migration.chars().all(word)
    });
    let sql = !name.starts_with(['/', '.', '-'])
        && !name.contains("..")
        && name
            .chars()
            .all(|c| word(c) || matches!(c, '/' | '.' | '-'));
    name.len() <= MAX_NAME && (django || sql)
}

/// Reads and checks a deploy announcement. Unknown fields are refused, so that a
/// misspelt `relase` is an error and not silently dropped.
pub fn parse_deploy(body: &[u8]) -> Result<Announcement, BodyError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let raw: RawDeploy = serde_path_to_error::deserialize(&mut json).map_err(|err| {
        let path = err.path().to_string();
        if path == "." {
            BodyError(format!(
                "the body is not a deploy announcement: {}",
                err.inner()
            ))
        } else {
            BodyError(format!("{path}: {}", err.inner()))
        }
    })?;
    json.end()
        .map_err(|err| BodyError(format!("the body has more after its JSON object: {err}")))?;
    if raw.migrations.is_empty() {
        return Err(BodyError(
            "migrations: must name at least one applied migration (\"app.name\")".to_string(),
        ));
    }
    if raw.migrations.len() > MAX_MIGRATIONS {
        return Err(BodyError(format!(
            "migrations: {} names; one announcement carries at most {MAX_MIGRATIONS} (split the deploy, or let dropguard see the rows in django_migrations)",
            raw.migrations.len()
        )));
    }
    if let Some(i) = raw.migrations.iter().position(|m| m.trim().is_empty()) {
        return Err(BodyError(format!(
            "migrations[{i}]: must be a migration name (\"app.name\"), not empty"
        )));
    }
    if let Some((i, name)) = raw
        .migrations
        .iter()
        .enumerate()
        .find(|(_, m)| !is_migration_name(m))
    {
        let shown: String = name.chars().take(80).collect();
        return Err(BodyError(format!(
            "migrations[{i}]: {shown:?} is not a migration name: \"app_label.migration_name\" (letters, digits and _ on each side of one dot; a plain SQL migration's file id with / . - too), at most {MAX_NAME} characters"
        )));
    }
    let at = match raw.at {
        None => None,
        Some(text) => Some(
            DateTime::parse_from_rfc3339(&text)
                .map(SystemTime::from)
                .map_err(|err| {
                    BodyError(format!(
                        "at: {text:?} is not an RFC 3339 time such as \"2026-11-25T16:09:18Z\" ({err})"
                    ))
                })?,
        ),
    };
    Ok(Announcement {
        migrations: raw.migrations,
        release: raw.release,
        at,
    })
}

/// Reads an announcement carried by a log record (a Kafka message): its JSON
/// fields when it was read as JSON, else its text.
pub fn from_record(record: &crate::event::Record) -> Result<Announcement, BodyError> {
    match &record.fields {
        Some(fields) => {
            let bytes = serde_json::to_vec(fields)
                .map_err(|err| BodyError(format!("the message is not JSON: {err}")))?;
            parse_deploy(&bytes)
        }
        None => parse_deploy(record.message.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> String {
        match parse_deploy(body.as_bytes()) {
            Ok(parsed) => panic!("{body} was accepted as {parsed:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn a_kafka_message_read_as_json_or_as_text_is_an_announcement() {
        let text = r#"{"migrations": ["catalog.0016_remove_product_brand"], "release": "v7"}"#;
        let as_text = crate::event::Record {
            message: text.into(),
            level: None,
            fields: None,
            truncated: false,
        };
        let as_json = crate::event::Record {
            fields: serde_json::from_str(text).unwrap(),
            ..as_text.clone()
        };
        for record in [as_text, as_json] {
            let parsed = from_record(&record).unwrap();
            assert_eq!(parsed.migrations, ["catalog.0016_remove_product_brand"]);
            assert_eq!(parsed.release.as_deref(), Some("v7"));
        }
    }

    #[test]
    fn a_full_announcement_is_read() {
        let parsed = parse_deploy(
            br#"{"migrations": ["catalog.0003_retire", "orders.0010_drop"], "release": "v1.2.3", "at": "2026-11-25T17:22:38+01:00"}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.migrations,
            ["catalog.0003_retire", "orders.0010_drop"]
        );
        assert_eq!(parsed.release.as_deref(), Some("v1.2.3"));
        let at = parsed.at.unwrap();
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_795_623_758);
    }

    #[test]
    fn an_announcement_names_migrations_and_at_most_max_migrations_of_them() {
        for bad in [
            r#"{"migrations": ["catalog 0003"]}"#,
            r#"{"migrations": ["../../etc/passwd"]}"#,
            r#"{"migrations": ["catalog.0003
ERROR"]}"#,
            r#"{"migrations": ["<script>.x"]}"#,
        ] {
            assert!(
                refused(bad).starts_with("migrations[0]: "),
                "{bad}: {}",
                refused(bad)
            );
        }
        let long = format!(r#"{{"migrations": ["app.{}"]}}"#, "x".repeat(300));
        assert!(refused(&long).contains("at most 255"));
        let names: Vec<String> = (0..=MAX_MIGRATIONS).map(|i| format!("app.m{i}")).collect();
        let many = serde_json::json!({ "migrations": names }).to_string();
        assert!(
            refused(&many).contains("at most 2000"),
            "{}",
            refused(&many)
        );
        let ok = serde_json::json!({ "migrations": &names[..MAX_MIGRATIONS] }).to_string();
        assert_eq!(
            parse_deploy(ok.as_bytes()).unwrap().migrations.len(),
            MAX_MIGRATIONS
        );
        for good in [
            "catalog.0003_retire",
            "V3__drop_legacy",
            "2026/0003_drop",
            "auth.0012_alter_user_first_name_max_length",
        ] {
            let body = serde_json::json!({ "migrations": [good] }).to_string();
            assert!(parse_deploy(body.as_bytes()).is_ok(), "{good}");
        }
    }

    #[test]
    fn release_and_time_are_optional() {
        let parsed = parse_deploy(br#"{"migrations": ["catalog.0003_retire"]}"#).unwrap();
        assert_eq!(parsed.release, None);
        assert_eq!(parsed.at, None);
    }

    #[test]
    fn each_refusal_names_the_field() {
        for (body, wanted) in [
            (
                r#"{"migrations": []}"#,
                "migrations: must name at least one",
            ),
            (r#"{"migrations": ["a.b", " "]}"#, "migrations[1]: must be"),
            (
                r#"{"migrations": ["a.b", 3]}"#,
                "migrations[1]: invalid type",
            ),
            (r#"{"migrations": "a.b"}"#, "migrations: invalid type"),
            (r#"{"release": "v1"}"#, "missing field `migrations`"),
            (
                r#"{"migrations": ["a.b"], "relase": "v1"}"#,
                "unknown field `relase`",
            ),
            (
                r#"{"migrations": ["a.b"], "release": 5}"#,
                "release: invalid type",
            ),
            (
                r#"{"migrations": ["a.b"], "at": "yesterday"}"#,
                "at: \"yesterday\" is not an RFC 3339 time",
            ),
            (
                r#"{"migrations": ["a.b"]} {}"#,
                "more after its JSON object",
            ),
            ("", "not a deploy announcement"),
            ("[]", "not a deploy announcement"),
        ] {
            let message = refused(body);
            assert!(message.contains(wanted), "{body}: {message}");
        }
    }
}
