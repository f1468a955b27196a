//! The one event type every source emits: a log record (a line, or a multi-line
//! record such as a traceback) or an error rate read from metrics.
//!
//! Sources build events and hand them on over bounded channels; what the events
//! mean (which error, which dropped object) is the detector's business, never a
//! source's.

use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// One thing a source saw.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Which source saw it: `file:/var/log/app/web.log`, `kafka:app-logs/2`,
    /// `scrape:http://127.0.0.1:8000/metrics`.
    pub source: Arc<str>,
    /// When dropguard read it.
    #[serde(with = "rfc3339")]
    pub observed_at: SystemTime,
    /// The time the record itself carries, when it has one that could be read.
    #[serde(with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub logged_at: Option<SystemTime>,
    /// A time by which the record was already written, known from outside it:
    /// for bytes a log file already held when dropguard opened it, the file's
    /// modification time then. An event on disk before a deploy is not that
    /// deploy's doing, however late it is read (a file read again from its
    /// start, a backlog).
    #[serde(with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub written_by: Option<SystemTime>,
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Payload {
    /// A log record.
    Log(Record),
    /// Errors per second over the last interval, from a counter or a query.
    Rate {
        /// The selector or query the rate comes from.
        series: String,
        per_second: f64,
    },
    /// Migrations applied (seen in `django_migrations`) or announced as deployed.
    Deploy(Deploy),
}

/// A deploy: migrations that were applied. Each one starts a watch window in
/// which errors naming what they dropped are tied to them. Its time is the
/// event's `logged_at` (when the rows say they were applied, or the
/// announcement's `at`), else `observed_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deploy {
    /// `app.name` of each migration (the file id for plain SQL migrations), in
    /// the order they were applied.
    pub migrations: Vec<String>,
    pub origin: DeployOrigin,
    /// The release name or version the announcer gave, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// Where a deploy was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployOrigin {
    /// New rows in `django_migrations`: the migrations really ran.
    DjangoMigrations,
    /// `POST /api/v1/deploys`.
    Api,
    /// A message on a `deploys.kafka` topic.
    Kafka,
    /// `dropguard replay --deploy`.
    Replay,
}

impl DeployOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployOrigin::DjangoMigrations => "django_migrations",
            DeployOrigin::Api => "api",
            DeployOrigin::Kafka => "kafka",
            DeployOrigin::Replay => "replay",
        }
    }
}

/// A log record: its message (what error signatures are matched against), its
/// level when known, and for JSON records every field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// The text: the whole line(s) for text records, the message field of JSON
    /// ones (or the whole line when it has none).
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The parsed JSON object, for JSON records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// The record was longer than the source's `max_event_bytes` and was cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl Event {
    /// The text detection reads: a record's message, or the series of a rate.
    pub fn text(&self) -> &str {
        match &self.payload {
            Payload::Log(record) => &record.message,
            Payload::Rate { series, .. } => series,
            Payload::Deploy(_) => "",
        }
    }
}

/// Reads the time a log record carries: RFC 3339 (`2026-11-25T16:09:18.5Z`,
/// `+01:00`), the space-separated form Python's logging and Django print
/// (`2026-11-25 16:09:18,123`, taken as UTC), or Unix seconds.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc).into());
    }
    // Python's logging writes milliseconds after a comma.
    let dotted = text.replacen(',', ".", 1);
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(&dotted, format) {
            return Some(time.and_utc().into());
        }
    }
    let seconds: f64 = text.parse().ok()?;
    (seconds.is_finite() && seconds > 0.0)
        .then(|| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(seconds))
}

/// The time at the start of a text line, if it begins with one
/// (`2026-11-25 16:09:18,123 ERROR …`, `[2026-11-25T16:09:18Z] …`).
pub fn leading_time(line: &str) -> Option<SystemTime> {
    let line = line.trim_start_matches('[');
    let bytes = line.as_bytes();
    // YYYY-MM-DD?HH:MM:SS at the least.
    if bytes.len() < 19 || !bytes[..4].iter().all(u8::is_ascii_digit) || bytes[4] != b'-' {
        return None;
    }
    let end = line
        .char_indices()
        .skip(19)
        .find(|&(_, c)| !(c.is_ascii_digit() || matches!(c, '.' | ',' | ':' | '+' | '-' | 'Z')))
        .map_or(line.len(), |(i, _)| i);
    parse_time(&line[..end])
}

mod rfc3339 {
    use std::time::SystemTime;

    use chrono::{DateTime, SecondsFormat, Utc};

    pub fn serialize<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let time: DateTime<Utc> = (*time).into();
        s.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

mod rfc3339_opt {
    use std::time::SystemTime;

    pub fn serialize<S: serde::Serializer>(
        time: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => super::rfc3339::serialize(time, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(time: SystemTime) -> f64 {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    #[test]
    fn times_in_the_forms_logs_use() {
        let base = 1_795_623_758.0; // 2026-11-25T16:22:38Z
        for (text, expected) in [
            ("2026-11-25T16:22:38Z", base),
            ("2026-11-25T17:22:38+01:00", base),
            ("2026-11-25T16:22:38.250Z", base + 0.25),
            ("2026-11-25 16:22:38,250", base + 0.25),
            ("2026-11-25 16:22:38.250", base + 0.25),
            ("2026-11-25 16:22:38", base),
            ("1795623758.5", base + 0.5),
        ] {
            let parsed = parse_time(text).unwrap_or_else(|| panic!("{text} did not parse"));
            assert!((secs(parsed) - expected).abs() < 1e-3, "{text}");
        }
        for text in ["", "yesterday", "-5", "2026-13-45 99:00:00"] {
            assert_eq!(parse_time(text), None, "{text}");
        }
    }

    #[test]
    fn leading_time_of_a_log_line() {
        let line = "2026-11-25 16:22:38,250 ERROR django.request Internal Server Error";
        assert!((secs(leading_time(line).unwrap()) - 1_795_623_758.25).abs() < 1e-3);
        let bracketed = "[2026-11-25T16:22:38Z] ERROR boom";
        assert!(leading_time(bracketed).is_some());
        assert_eq!(leading_time("ERROR 2026-11-25 16:22:38 boom"), None);
        assert_eq!(leading_time("Traceback (most recent call last):"), None);
    }

    #[test]
    fn events_serialize_with_their_kind() {
        let event = Event {
            source: "file:/var/log/app.log".into(),
            observed_at: SystemTime::UNIX_EPOCH,
            logged_at: None,
            written_by: None,
            payload: Payload::Log(Record {
                message: "boom".into(),
                level: Some("ERROR".into()),
                fields: None,
                truncated: false,
            }),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["payload"]["kind"], "log");
        assert_eq!(json["payload"]["message"], "boom");
        assert_eq!(json["observed_at"], "1970-01-01T00:00:00.000Z");
        assert!(json.get("logged_at").is_none());
    }
}
