//! A Django migration file (Python source) read statically and replayed on an
//! empty project state: the path every file under a project takes.
#![no_main]

use dropguard::migrations::{Engine, Options, fuzz_django_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let engine = match data.first().map(|b| b % 3) {
        Some(0) => Engine::Postgres,
        Some(1) => Engine::Mysql,
        _ => Engine::Sqlite,
    };
    match fuzz_django_file(data, &Options::new(engine)) {
        Ok((operations, problems)) => {
            // Every operation and problem points at a real line of the file (or 0: the whole file).
            let lines = 1 + data.iter().filter(|b| **b == b'\n').count();
            for p in &problems {
                assert!(p.line <= lines, "problem line {} of {lines}", p.line);
            }
            let _ = operations;
        }
        Err(problem) => {
            let lines = 1 + data.iter().filter(|b| **b == b'\n').count();
            assert!(
                problem.line <= lines,
                "problem line {} of {lines}",
                problem.line
            );
        }
    }
});
