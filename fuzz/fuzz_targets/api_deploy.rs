//! The body of `POST /api/v1/deploys`: whatever is accepted is bounded (at
//! most `MAX_MIGRATIONS` names, each a short name with no space or control
//! character in it), whatever is refused says why.
#![no_main]

use dropguard::announce::{MAX_MIGRATIONS, parse_deploy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_deploy(data) {
        Ok(a) => {
            assert!(!a.migrations.is_empty());
            assert!(a.migrations.iter().all(|m| !m.trim().is_empty()));
            assert!(a.migrations.len() <= MAX_MIGRATIONS);
            for name in &a.migrations {
                assert!(name.len() <= 255, "{name:?}");
                assert!(!name.chars().any(|c| c.is_whitespace() || c.is_control()), "{name:?}");
            }
        }
        Err(err) => assert!(!err.to_string().is_empty()),
    }
});
