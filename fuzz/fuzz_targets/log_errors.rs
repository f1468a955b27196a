//! Which records are errors, and what of them may name a dropped object
//! (`detect::errors`), over any text: never a panic, and text a client places
//! after a non-error level (a URL in Django's `Not Found` warning, a search in
//! an INFO line) is never an error, whatever it says, as long as it stays on
//! its line.
#![no_main]

use dropguard::detect::errors::error_text;
use dropguard::event::Record;
use libfuzzer_sys::fuzz_target;

fn text(message: String) -> Record {
    Record {
        message,
        level: None,
        fields: None,
        truncated: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data).into_owned();
    // Anything: an answer, never a panic; a traceback's text is its own lines.
    if let Some(found) = error_text(&text(input.clone())) {
        assert!(found.text.len() <= input.len());
    }
    // A client's text on one line, after a level that is not an error.
    let line = input.replace(['\n', '\r'], " ");
    for prefix in [
        "2026-12-02 07:00:00,000 WARNING django.request Not Found: /",
        "INFO 2026-12-02 shop.views search for ",
        "[2026-12-02 07:00:00] DEBUG ",
    ] {
        let forged = text(format!("{prefix}{line}"));
        assert_eq!(error_text(&forged), None, "{:?}", forged.message);
    }
    // The same as a JSON record's message, with its level field.
    let mut fields = serde_json::Map::new();
    fields.insert("message".into(), serde_json::Value::String(input.clone()));
    fields.insert("level".into(), serde_json::Value::String("WARNING".into()));
    let json = Record {
        message: input,
        level: Some("WARNING".into()),
        fields: Some(fields),
        truncated: false,
    };
    if let Some(found) = error_text(&json) {
        // Only a real traceback in the message makes a warning an error.
        assert!(json.message.contains("Traceback (most recent call last):"));
        let _ = found;
    }
});
