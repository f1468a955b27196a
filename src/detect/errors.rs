//! Which log records are errors, and which part of an error may name a dropped
//! object.
//!
//! Text a client sends (a URL, a header, a form field) reaches the logs inside
//! ordinary records: `WARNING django.request Not Found: /relation "x" does not
//! exist`. Such text must never count as a database error, so:
//! - a record is an error by its level (a JSON record's level field; a text
//!   record's first level word, which log formats print before the message),
//!   or when it carries a Python traceback whose exception is the database's;
//! - in a record that carries a traceback, only its exception lines (what the
//!   driver raised) may name objects, never the request line above them;
//! - the evidence that a forged line cannot provide is a traceback whose
//!   exception the database driver raised: a client's text stays within one
//!   line (Django escapes control characters in what it logs of a request, JSON
//!   encoders escape newlines), while a traceback is the lines Python writes
//!   after its `Traceback (most recent call last):` header. `restore.mode =
//!   "auto"` acts only on that evidence ([`Proof::Traceback`]).

use crate::event::Record;

const TRACEBACK: &str = "Traceback (most recent call last):";
/// How far into a text record's first line its level is looked for.
const LEVEL_SEARCH: usize = 300;

/// Why a record counts as an error, and so how far its naming of an object
/// can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The exception line of a traceback raised by a database driver.
    Traceback,
    /// The record's level says error; the text is the record's own.
    Level,
    /// No level says error, but a pattern the user configured for their own
    /// format (`detect.patterns`) names an object in it: the user's word that
    /// such a line is an error. The built-in signatures never count here.
    Pattern,
}

/// The user's patterns (`engine = "custom"`) that name objects in a record
/// that is not an error by itself (see [`Proof::Pattern`]).
pub fn user_pattern_matches(
    record: &Record,
    signatures: &crate::detect::Signatures,
) -> Vec<crate::detect::Missing> {
    if !signatures.has_user_patterns() {
        return Vec::new();
    }
    let mut found = signatures.find(record.message.as_bytes());
    found.retain(|m| m.engine == "custom");
    found
}

/// An error record: the text its dropped-object names are read from, and why
/// it is an error.
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorText {
    pub text: String,
    pub proof: Proof,
}

/// `None` when `record` is not an error. Otherwise the text in which signatures
/// may find a dropped object: a traceback's database exception lines when the
/// record carries a traceback (empty when its exception is not the database's),
/// else the whole message of a record whose level is an error.
pub fn error_text(record: &Record) -> Option<ErrorText> {
    if let Some(traceback) = traceback_of(record) {
        let lines = database_exception_lines(traceback);
        if !lines.is_empty() {
            return Some(ErrorText {
                text: lines,
                proof: Proof::Traceback,
            });
        }
        // Any other uncaught exception is an error for the error rate, but
        // what it says names nothing: its text may be a client's.
        return Some(ErrorText {
            text: String::new(),
            proof: Proof::Level,
        });
    }
    is_error_level(record).then(|| ErrorText {
        text: record.message.clone(),
        proof: Proof::Level,
    })
}

/// The traceback a record carries: in its message, or in a JSON field
/// (`exc_info`, `stack_trace`, …) where JSON loggers put it.
fn traceback_of(record: &Record) -> Option<&str> {
    if let Some(at) = traceback_start(&record.message) {
        return Some(&record.message[at..]);
    }
    record
        .fields
        .iter()
        .flat_map(|fields| fields.values())
        .filter_map(|value| value.as_str())
        .find_map(|text| traceback_start(text).map(|at| &text[at..]))
}

/// Where the first traceback header that is a whole line, followed by more
/// lines, starts.
fn traceback_start(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find(TRACEBACK) {
        let at = from + found;
        let line_start = at == 0 || text.as_bytes()[at - 1] == b'\n';
        let rest = &text[at + TRACEBACK.len()..];
        let line_end = rest.starts_with('\n') || rest.starts_with("\r\n");
        if line_start && line_end {
            return Some(at);
        }
        from = at + TRACEBACK.len();
    }
    None
}

/// The exception lines of every traceback in `traceback` (chained ones too)
/// whose exception class is a database driver's, with the lines that continue
/// their message (PostgreSQL's `LINE 1: …`), joined by newlines.
fn database_exception_lines(traceback: &str) -> String {
    let mut out = String::new();
    let mut in_frames = false;
    let mut taking = false;
    for line in traceback.lines() {
        if line == TRACEBACK {
            in_frames = true;
            taking = false;
            continue;
        }
        if line.is_empty()
            || line.starts_with("The above exception")
            || line.starts_with("During handling of the above exception")
        {
            taking = false;
            continue;
        }
        let indented = line.starts_with([' ', '\t']);
        if in_frames {
            if indented {
                continue;
            }
            // The first line after the frames: the exception.
            in_frames = false;
            taking = is_database_exception(line);
            if !taking {
                continue;
            }
        } else if !taking {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

/// Whether an exception line (`module.Class: message`) names an exception a
/// database driver raises: Django's `django.db.utils` wrappers, psycopg and
/// psycopg2 (`errors.UndefinedColumn`), MySQLdb, PyMySQL, mysql-connector and
/// sqlite3.
fn is_database_exception(line: &str) -> bool {
    let class = line.split(':').next().unwrap_or("").trim();
    if class.is_empty() || class.contains(char::is_whitespace) {
        return false;
    }
    let name = class.rsplit('.').next().unwrap_or(class);
    let module = class.strip_suffix(name).unwrap_or("");
    const DRIVERS: [&str; 8] = [
        "django.db.",
        "psycopg.",
        "psycopg2.",
        "MySQLdb.",
        "pymysql.",
        "mysql.connector.",
        "sqlite3.",
        "_mysql_exceptions.",
    ];
    let driver = DRIVERS.iter().any(|d| module.starts_with(d));
    let kind = matches!(
        name,
        "ProgrammingError"
            | "OperationalError"
            | "DatabaseError"
            | "InternalError"
            | "UndefinedTable"
            | "UndefinedColumn"
            | "UndefinedObject"
    );
    // A bare `ProgrammingError` (re-raised without its module) still is one.
    kind && (driver || module.is_empty())
}

/// Whether a record's level says error: a JSON record's level field, or the
/// first level word of a text record's first line.
fn is_error_level(record: &Record) -> bool {
    match &record.level {
        Some(level) => is_error_word(&level.to_ascii_uppercase()),
        None => first_level_word(&record.message).is_some_and(is_error_word),
    }
}

fn is_error_word(word: &str) -> bool {
    matches!(
        word,
        "ERROR"
            | "ERR"
            | "CRITICAL"
            | "CRIT"
            | "FATAL"
            | "ALERT"
            | "EMERG"
            | "EMERGENCY"
            | "SEVERE"
    )
}

/// The first level word of a text record's first line, standing alone as a
/// field (`ERROR`, `[ERROR]`, `level=ERROR`, Celery's `ERROR/Worker`), not
/// part of a path such as `/ERROR/`. Formats print the level before the
/// message, so text a client placed in the message comes after it.
fn first_level_word(message: &str) -> Option<&str> {
    let first = message.lines().next().unwrap_or("");
    let head = &first[..first.floor_char_boundary(LEVEL_SEARCH)];
    let bytes = head.as_bytes();
    let mut start = None;
    for (i, &b) in bytes.iter().chain(std::iter::once(&b' ')).enumerate() {
        if b.is_ascii_alphabetic() {
            start.get_or_insert(i);
            continue;
        }
        let Some(s) = start.take() else {
            continue;
        };
        let before = if s == 0 { b' ' } else { bytes[s - 1] };
        let opens = matches!(
            before,
            b' ' | b'\t' | b'[' | b'(' | b'<' | b'|' | b'=' | b'"'
        );
        let closes = matches!(
            b,
            b' ' | b'\t' | b']' | b')' | b'>' | b'|' | b':' | b'/' | b',' | b'"' | b'-'
        );
        let word = &head[s..i];
        if opens && closes && is_level_word(word) {
            return Some(word);
        }
    }
    None
}

fn is_level_word(word: &str) -> bool {
    is_error_word(word)
        || matches!(
            word,
            "TRACE" | "DEBUG" | "INFO" | "NOTICE" | "WARNING" | "WARN" | "LOG" | "STATEMENT"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(message: &str) -> Record {
        Record {
            message: message.to_string(),
            level: None,
            fields: None,
            truncated: false,
        }
    }

    fn json(fields: serde_json::Value) -> Record {
        let map = fields.as_object().unwrap().clone();
        Record {
            message: map["message"].as_str().unwrap().to_string(),
            level: map.get("level").and_then(|l| l.as_str()).map(String::from),
            fields: Some(map),
            truncated: false,
        }
    }

    const DJANGO_500: &str = "2026-11-25 16:09:18,123 ERROR django.request Internal Server Error: /products/\nTraceback (most recent call last):\n  File \"/srv/app/views.py\", line 9, in index\npsycopg.errors.UndefinedColumn: column catalog_product.notes does not exist\nLINE 1: SELECT \"catalog_product\".\"notes\" FROM \"catalog_product\"\n\nThe above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n  File \"/srv/app/views.py\", line 9, in index\ndjango.db.utils.ProgrammingError: column catalog_product.notes does not exist\nLINE 1: SELECT \"catalog_product\".\"notes\" FROM \"catalog_product\"";

    #[test]
    fn a_django_500_with_a_database_traceback_is_proven_by_its_exception_lines() {
        let found = error_text(&text(DJANGO_500)).unwrap();
        assert_eq!(found.proof, Proof::Traceback);
        assert!(
            found
                .text
                .starts_with("psycopg.errors.UndefinedColumn: column catalog_product.notes")
        );
        assert!(
            found
                .text
                .contains("django.db.utils.ProgrammingError: column")
        );
        assert!(found.text.contains("LINE 1: SELECT"));
        assert!(!found.text.contains("/products/"), "{}", found.text);
    }

    #[test]
    fn text_a_client_places_in_a_warning_or_info_line_is_not_an_error() {
        for line in [
            "2026-11-25 16:09:18,123 WARNING django.request Not Found: /relation \"shop_giftcard\" does not exist",
            "WARNING django.request Not Found: /ERROR/no such table: shop_giftcard",
            "INFO 2026-11-25 shop.views search for 'no such table: shop_giftcard'",
            "[2026-11-25 16:09:18] INFO [shop] ERROR no such table: shop_giftcard",
            "127.0.0.1 - - [25/Nov/2026:16:09:18 +0000] \"GET /ERROR/x HTTP/1.1\" 404 179",
            "Not Found: /Traceback (most recent call last):",
        ] {
            assert_eq!(error_text(&text(line)), None, "{line}");
        }
    }

    #[test]
    fn a_client_s_text_in_the_request_line_of_a_real_traceback_names_nothing() {
        // DisallowedHost: an ERROR whose exception carries the client's Host header.
        let record = text(
            "ERROR django.security.DisallowedHost Invalid HTTP_HOST header: 'relation \"shop_giftcard\" does not exist'.\nTraceback (most recent call last):\n  File \"/srv/django/http/request.py\", line 151, in get_host\ndjango.core.exceptions.DisallowedHost: Invalid HTTP_HOST header: 'relation \"shop_giftcard\" does not exist'.",
        );
        let found = error_text(&record).unwrap();
        assert_eq!(found.text, "", "an error, but it names nothing");
        let request_line = text(
            "ERROR django.request Internal Server Error: /no such table: shop_giftcard\nTraceback (most recent call last):\n  File \"/srv/app/views.py\", line 9, in index\nKeyError: 'basket'",
        );
        assert_eq!(error_text(&request_line).unwrap().text, "");
    }

    #[test]
    fn error_levels_in_the_usual_formats_are_read() {
        for line in [
            "ERROR 2026-11-25 16:09:18 shop no such table: shop_giftcard",
            "2026-11-25 16:09:18,123 ERROR django.request no such table: shop_giftcard",
            "[2026-11-25 16:09:18,123: ERROR/ForkPoolWorker-1] no such table: shop_giftcard",
            "2026-11-25 16:09:18.123 UTC [812] ERROR:  relation \"shop_giftcard\" does not exist",
            "time=2026-11-25T16:09:18Z level=ERROR msg=\"no such table: shop_giftcard\"",
            "[ERROR] no such table: shop_giftcard",
        ] {
            let found = error_text(&text(line)).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(found.proof, Proof::Level, "{line}");
            assert_eq!(found.text, line);
        }
    }

    #[test]
    fn json_records_go_by_their_level_field_and_their_traceback_field() {
        let forged = json(serde_json::json!({
            "level": "WARNING", "message": "Not Found: /relation \"shop_giftcard\" does not exist"
        }));
        assert_eq!(error_text(&forged), None);
        let error = json(serde_json::json!({
            "level": "error", "message": "relation \"shop_giftcard\" does not exist"
        }));
        assert_eq!(error_text(&error).unwrap().proof, Proof::Level);
        let with_traceback = json(serde_json::json!({
            "level": "ERROR",
            "message": "Internal Server Error: /relation \"shop_note\" does not exist",
            "exc_info": "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\ndjango.db.utils.ProgrammingError: relation \"shop_giftcard\" does not exist",
        }));
        let found = error_text(&with_traceback).unwrap();
        assert_eq!(found.proof, Proof::Traceback);
        assert!(found.text.contains("shop_giftcard") && !found.text.contains("shop_note"));
    }

    #[test]
    fn a_user_pattern_names_objects_in_a_line_without_a_level_the_built_in_ones_do_not() {
        let patterns = [r"ObjectMissing: (?P<table>\w+)\.(?P<column>\w+)".to_string()];
        let signatures = crate::detect::Signatures::with_patterns(&patterns).unwrap();
        let line = text("2026-11-25T16:22:38Z app.errors.ObjectMissing: orders_order.gift_note");
        assert_eq!(error_text(&line), None);
        let found = user_pattern_matches(&line, &signatures);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].engine, "custom");
        let forged = text("Not Found: /no such table: shop_giftcard");
        assert!(user_pattern_matches(&forged, &signatures).is_empty());
        assert!(user_pattern_matches(&line, &crate::detect::Signatures::built_in()).is_empty());
    }

    #[test]
    fn the_exceptions_of_each_driver_are_the_database_s() {
        for line in [
            "django.db.utils.ProgrammingError: x",
            "django.db.utils.OperationalError: (1054, \"Unknown column 'a.b' in 'field list'\")",
            "psycopg2.errors.UndefinedTable: relation \"x\" does not exist",
            "MySQLdb.ProgrammingError: (1146, \"Table 'db.x' doesn't exist\")",
            "pymysql.err.ProgrammingError: (1146, \"Table 'db.x' doesn't exist\")",
            "sqlite3.OperationalError: no such table: x",
            "ProgrammingError: column x does not exist",
        ] {
            assert!(is_database_exception(line), "{line}");
        }
        for line in [
            "KeyError: 'no such table: x'",
            "django.core.exceptions.DisallowedHost: Invalid HTTP_HOST header",
            "myapp.ProgrammingError: x",
            "ValueError: relation \"x\" does not exist",
        ] {
            assert!(!is_database_exception(line), "{line}");
        }
    }
}
