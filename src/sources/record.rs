//! One record's bytes (a line, a joined multi-line event, a Kafka payload) made
//! into a [`Record`]: cut to the size limit, decoded as UTF-8 (lossily), read as
//! JSON or text. Shared by the file and Kafka sources.

use std::time::SystemTime;

use crate::config::{JsonFields, LogFormat};
use crate::event::{Record, leading_time, parse_time};

use super::SourceStats;

/// Decodes `bytes` (without its line terminator) into a record and the time it
/// carries, counting truncation and invalid UTF-8 against `source`.
pub fn decode_record(
    bytes: &[u8],
    format: LogFormat,
    fields: &JsonFields,
    max_bytes: usize,
    stats: &SourceStats,
    source: &str,
) -> (Record, Option<SystemTime>) {
    let mut truncated = bytes.len() > max_bytes;
    let bytes = if truncated {
        stats.truncated.with_label_values(&[source]).inc();
        &bytes[..max_bytes]
    } else {
        bytes
    };
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        // A cut in the middle of a character is the cut's doing, not the writer's.
        Err(err) if truncated && err.error_len().is_none() => std::borrow::Cow::Borrowed(
            std::str::from_utf8(&bytes[..err.valid_up_to()]).unwrap_or(""),
        ),
        Err(_) => {
            stats.invalid_utf8.with_label_values(&[source]).inc();
            let mut lossy = String::from_utf8_lossy(bytes).into_owned();
            // Each invalid byte became a 3-byte U+FFFD: the limit still holds.
            if lossy.len() > max_bytes {
                let mut cut = max_bytes;
                while !lossy.is_char_boundary(cut) {
                    cut -= 1;
                }
                lossy.truncate(cut);
                if !truncated {
                    stats.truncated.with_label_values(&[source]).inc();
                }
                truncated = true;
            }
            std::borrow::Cow::Owned(lossy)
        }
    };
    let text = text.trim_end_matches(['\r', '\n']);

    if format != LogFormat::Text
        && !truncated
        && text.trim_start().starts_with('{')
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str(text)
    {
        let string = |name: &str| match map.get(name) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let message = string(&fields.message).unwrap_or_else(|| text.to_string());
        let level = string(&fields.level);
        let logged_at = string(&fields.time).and_then(|t| parse_time(&t));
        return (
            Record {
                message,
                level,
                fields: Some(map),
                truncated,
            },
            logged_at,
        );
    }
    if format == LogFormat::Json && !truncated {
        stats.errors.with_label_values(&[source, "parse"]).inc();
    }
    (
        Record {
            message: text.to_string(),
            level: None,
            fields: None,
            truncated,
        },
        leading_time(text),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn invalid_bytes_decoded_lossily_never_pass_the_size_limit() {
        let stats = SourceStats::detached().unwrap();
        // Found by the fuzzer: each invalid byte becomes a 3-byte U+FFFD.
        let bytes = [0xff_u8; 18];
        let (record, _) = decode_record(
            &bytes,
            LogFormat::Text,
            &JsonFields::default(),
            20,
            &stats,
            "t",
        );
        assert!(record.message.len() <= 20, "{}", record.message.len());
        assert!(record.truncated);
        assert!(record.message.chars().all(|c| c == '\u{fffd}'));
        assert_eq!(stats.truncated.with_label_values(&["t"]).get(), 1);
        assert_eq!(stats.invalid_utf8.with_label_values(&["t"]).get(), 1);
    }

    use super::*;

    fn decode(bytes: &[u8], format: LogFormat, max: usize) -> (Record, SourceStats) {
        let stats = SourceStats::detached().unwrap();
        let (record, _) = decode_record(bytes, format, &JsonFields::default(), max, &stats, "t");
        (record, stats)
    }

    #[test]
    fn json_records_give_their_fields() {
        let line = br#"{"time": "2026-11-25T16:22:38Z", "level": "ERROR", "message": "relation \"x\" does not exist", "request_id": 7}"#;
        let stats = SourceStats::detached().unwrap();
        let (record, time) = decode_record(
            line,
            LogFormat::Auto,
            &JsonFields::default(),
            1024,
            &stats,
            "t",
        );
        assert_eq!(record.message, r#"relation "x" does not exist"#);
        assert_eq!(record.level.as_deref(), Some("ERROR"));
        assert_eq!(record.fields.unwrap()["request_id"], 7);
        assert!(time.is_some());
    }

    #[test]
    fn configured_field_names_are_read() {
        let fields = JsonFields {
            message: "msg".into(),
            level: "severity".into(),
            time: "ts".into(),
        };
        let stats = SourceStats::detached().unwrap();
        let (record, time) = decode_record(
            br#"{"msg": "boom", "severity": "error", "ts": 1795623758}"#,
            LogFormat::Json,
            &fields,
            1024,
            &stats,
            "t",
        );
        assert_eq!(record.message, "boom");
        assert_eq!(record.level.as_deref(), Some("error"));
        assert!(time.is_some());
    }

    #[test]
    fn text_format_keeps_json_looking_lines_as_text() {
        let (record, _) = decode(br#"{"message": "boom"}"#, LogFormat::Text, 1024);
        assert_eq!(record.message, r#"{"message": "boom"}"#);
        assert!(record.fields.is_none());
    }

    #[test]
    fn json_format_counts_lines_that_are_not_json() {
        let (record, stats) = decode(b"plain words", LogFormat::Json, 1024);
        assert_eq!(record.message, "plain words");
        assert_eq!(stats.errors.with_label_values(&["t", "parse"]).get(), 1);
    }

    #[test]
    fn long_records_are_cut_on_a_character_boundary_and_counted() {
        let (record, stats) = decode("ééééé".as_bytes(), LogFormat::Auto, 5);
        assert_eq!(record.message, "éé");
        assert!(record.truncated);
        assert_eq!(stats.truncated.with_label_values(&["t"]).get(), 1);
        assert_eq!(stats.invalid_utf8.with_label_values(&["t"]).get(), 0);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let (record, stats) = decode(b"bad \xff byte\r", LogFormat::Auto, 1024);
        assert_eq!(record.message, "bad \u{fffd} byte");
        assert_eq!(stats.invalid_utf8.with_label_values(&["t"]).get(), 1);
    }
}
