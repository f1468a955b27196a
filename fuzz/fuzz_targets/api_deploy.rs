//! The body of `POST /api/v1/deploys`.
#![no_main]

use dropguard::announce::parse_deploy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_deploy(data) {
        Ok(a) => {
            assert!(!a.migrations.is_empty());
            assert!(a.migrations.iter().all(|m| !m.trim().is_empty()));
        }
        Err(err) => assert!(!err.to_string().is_empty()),
    }
});
