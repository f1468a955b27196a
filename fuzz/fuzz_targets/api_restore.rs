//! What the API reads of a request: the restore body and the `Authorization` header.
#![no_main]

use dropguard::http::api::{Access, authorize, parse_restore};
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "configured-token-8e2b";

fuzz_target!(|data: &[u8]| {
    if let Err(err) = parse_restore(data) {
        assert!(!err.is_empty());
    }
    // Any header: only the configured token, behind "Bearer ", is let in.
    let access = authorize(Some(data), Some(TOKEN));
    let expected = data.len() >= 7
        && data[..7].eq_ignore_ascii_case(b"bearer ")
        && data[7..].trim_ascii() == TOKEN.as_bytes();
    assert_eq!(access == Access::Granted, expected);
    assert_eq!(authorize(Some(data), None), Access::NoTokenConfigured);
    assert_eq!(authorize(None, Some(TOKEN)), Access::Denied);
});
