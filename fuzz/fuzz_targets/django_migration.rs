//! A Django migration file (Python source) read statically and replayed on an
//! empty project state: the path every file under a project takes.
//!
//! Inputs starting with `#nest\n` describe a deeply nested file instead of being
//! one, so that mutations reach depths byte-level fuzzing never would: each
//! following byte picks a way of nesting (low 4 bits) and how often (high 4 bits).
#![no_main]

use dropguard::migrations::{Engine, Options, fuzz_django_file};
use libfuzzer_sys::fuzz_target;

const NEST: &[u8] = b"#nest\n";

/// Openers and their closers, applied inside out.
const WAYS: [(&str, &str); 16] = [
    ("[", "]"),
    ("(", ")"),
    ("{", "}"),
    ("{1: ", "}"),
    ("-", ""),
    ("not ", ""),
    ("lambda: ", ""),
    ("f'{", "}'"),
    ("a if b else ", ""),
    ("f(", ")"),
    ("await ", ""),
    ("", ".b"),
    ("", "()"),
    ("", "[0]"),
    ("", "**1"),
    ("1 + ", ""),
];

/// The file `description` describes, at most 20,000 levels deep.
fn nested(description: &[u8]) -> Vec<u8> {
    let mut open = String::from("from django.db import migrations\nX = ");
    let mut close = Vec::new();
    let mut levels = 0usize;
    for b in description {
        let (opener, closer) = WAYS[usize::from(b & 15)];
        for _ in 0..1 + usize::from(b >> 4) * 32 {
            if levels == 20_000 {
                break;
            }
            open.push_str(opener);
            close.push(closer);
            levels += 1;
        }
    }
    open.push('1');
    for closer in close.iter().rev() {
        open.push_str(closer);
    }
    open.push_str(
        "\nclass Migration(migrations.Migration):\n    operations = [migrations.RunSQL(X)]\n",
    );
    open.into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let engine = match data.first().map(|b| b % 3) {
        Some(0) => Engine::Postgres,
        Some(1) => Engine::Mysql,
        _ => Engine::Sqlite,
    };
    let expanded;
    let data = match data.strip_prefix(NEST) {
        Some(description) => {
            expanded = nested(description);
            &expanded[..]
        }
        None => data,
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
