//! A plain SQL migration, in each engine's dialect.
#![no_main]

use dropguard::migrations::{Engine, analyse_sql};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    for engine in [Engine::Postgres, Engine::Mysql, Engine::Sqlite] {
        if let Err(err) = analyse_sql(sql, engine) {
            // The error names something a user can read.
            assert!(!err.to_string().is_empty());
        }
    }
});
