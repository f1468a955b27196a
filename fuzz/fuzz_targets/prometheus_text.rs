//! A scrape's body in the Prometheus text exposition format.
#![no_main]

use dropguard::sources::metrics::parse_exposition;
use libfuzzer_sys::fuzz_target;

fn metric_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(samples) = parse_exposition(text) else {
        return;
    };
    // Every sample came from a line: no more samples than lines.
    assert!(samples.len() <= text.lines().count());
    for s in &samples {
        assert!(metric_name_ok(&s.name), "bad metric name {:?}", s.name);
        for (label, _) in &s.labels {
            // `__`-prefixed names are legal in the text format: only emptiness is wrong.
            assert!(!label.is_empty(), "empty label name");
        }
    }
});
