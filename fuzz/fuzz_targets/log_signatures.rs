//! The built-in signatures over one event's bytes (any bytes: logs are not always UTF-8).
#![no_main]

use std::sync::LazyLock;

use dropguard::detect::signatures::Signatures;
use libfuzzer_sys::fuzz_target;

static SIGNATURES: LazyLock<Signatures> = LazyLock::new(Signatures::built_in);

fuzz_target!(|data: &[u8]| {
    let found = SIGNATURES.find(data);
    // "Each once": a repeated error counts once.
    for (i, a) in found.iter().enumerate() {
        assert!(!found[i + 1..].contains(a), "{a:?} found twice");
        assert!(
            a.table.as_deref().is_some_and(|t| !t.is_empty()) || a.column.is_some(),
            "{a:?} names nothing"
        );
    }
    // The pre-search never hides a match: whatever `find` reports, `candidates` saw.
    if !found.is_empty() {
        assert!(!SIGNATURES.candidates(data).is_empty());
    }
});
