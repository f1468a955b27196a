//! Sample lines as evidence: cut to a readable length, with what looks like a
//! credential replaced by `***`. Samples travel to Slack, webhooks, the API and
//! the journal; a password in a log line must not travel with them.
//!
//! It must never make a line longer than its limit, and never split a character.

use std::sync::LazyLock;

use regex::Regex;

/// Patterns of secrets and what replaces them (`$1`, `$2` keep the context).
static SECRETS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // scheme://user:password@host
        (r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", "${1}***@"),
        // Authorization: Bearer …, Basic …
        (r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}", "${1}${2}***"),
        // password=…, "token": "…", api_key: …
        (
            r#"(?i)\b([a-z0-9_-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|sessionid|csrftoken|credential)[a-z0-9_-]*)(["']?\s*[:=]\s*["']?)[^\s"'&,;)}\]]+"#,
            "${1}${2}***",
        ),
        // AWS access key ids, JSON web tokens, Slack tokens
        (r"\bAKIA[0-9A-Z]{16}\b", "***"),
        (r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+", "***"),
        (r"\bxox[abprs]-[A-Za-z0-9-]{10,}", "***"),
    ]
    .into_iter()
    .map(|(pattern, replacement)| {
        (
            Regex::new(pattern).expect("the secret patterns are valid regexes"),
            replacement,
        )
    })
    .collect()
});

/// `text` with secrets masked, cut to at most `max_chars` characters. A longer
/// text keeps its first line and its end, with an ellipsis line between: in a
/// Python traceback the first line says which request failed and the last ones
/// carry the database's error, while the frames between are what a reader can
/// spare.
pub fn sample(text: &str, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        let masked = mask(text);
        return if masked.chars().count() <= max_chars {
            masked
        } else {
            sample(&masked, max_chars)
        };
    }
    const GAP: &str = "\n…\n";
    let gap = GAP.chars().count();
    if max_chars == 0 {
        return String::new();
    }
    if max_chars <= gap + 2 {
        let mut cut: String = mask(&first_chars(text, max_chars + SLACK))
            .chars()
            .take(max_chars.saturating_sub(1))
            .collect();
        cut.push('…');
        return cut;
    }
    let first_line = text.lines().next().unwrap_or("").chars().count();
    let head_chars = first_line.min((max_chars - gap) / 4).max(1);
    let tail_chars = max_chars - gap - head_chars;
    // Mask with some slack on the cut side, so a secret straddling a cut is
    // still recognised, then cut to length.
    let head: String = mask(&first_chars(text, head_chars + SLACK))
        .chars()
        .take(head_chars)
        .collect();
    let masked_tail = mask(last_chars(text, tail_chars + SLACK));
    let mut tail = last_chars(&masked_tail, tail_chars);
    // From a line's start, when one is near: half a line helps no reader.
    if let Some(newline) = tail
        .char_indices()
        .take(LINE_SEARCH)
        .find(|(_, c)| *c == '\n')
    {
        tail = &tail[newline.0 + 1..];
    }
    format!("{head}{GAP}{tail}")
}

/// How many characters beyond a cut are masked with the kept part.
const SLACK: usize = 200;
/// How far into the kept end a line start is looked for.
const LINE_SEARCH: usize = 200;

fn mask(text: &str) -> String {
    let mut masked = text.to_string();
    for (regex, replacement) in SECRETS.iter() {
        if regex.is_match(&masked) {
            masked = regex.replace_all(&masked, *replacement).into_owned();
        }
    }
    masked
}

fn first_chars(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

fn last_chars(text: &str, chars: usize) -> &str {
    if chars == 0 {
        return "";
    }
    match text.char_indices().rev().nth(chars - 1) {
        Some((at, _)) => &text[at..],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_usual_places_are_masked() {
        for (line, secret) in [
            (
                "could not connect to postgres://app:s3cr3t-pw@db:5432/shop",
                "s3cr3t-pw",
            ),
            ("Authorization: Bearer abcdef123456789", "abcdef123456789"),
            ("login failed password=hunter22 user=bob", "hunter22"),
            (r#"{"api_key": "k-123456", "user": "bob"}"#, "k-123456"),
            (
                "DJANGO_SECRET_KEY=django-insecure-xyz",
                "django-insecure-xyz",
            ),
            ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
            (
                "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
                "dozjgNryP4J3jVmNHl0w5N",
            ),
            ("sessionid=7f3a9b2c; path=/", "7f3a9b2c"),
        ] {
            let masked = sample(line, 500);
            assert!(!masked.contains(secret), "{line} → {masked}");
            assert!(masked.contains("***"), "{line} → {masked}");
        }
    }

    #[test]
    fn ordinary_error_text_is_left_as_it_is() {
        let line = "django.db.utils.ProgrammingError: column catalog_product.notes does not exist\nLINE 1: SELECT \"catalog_product\".\"notes\" FROM \"catalog_product\"";
        assert_eq!(sample(line, 2000), line);
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let line = "é".repeat(5000);
        let cut = sample(&line, 100);
        assert_eq!(cut.chars().count(), 100);
        assert!(cut.contains('…'));
        assert_eq!(sample("short", 100), "short");
        for limit in 0..12 {
            assert!(sample(&line, limit).chars().count() <= limit, "{limit}");
        }
    }

    #[test]
    fn a_long_traceback_keeps_its_first_line_and_the_database_error_at_its_end() {
        let frame = "  File \"/srv/app/venv/lib/python3.11/site-packages/django/db/backends/utils.py\", line 105, in _execute\n    return self.cursor.execute(sql, params)\n";
        let text = format!(
            "ERROR django.request Internal Server Error: /catalog/\nTraceback (most recent call last):\n{}django.db.utils.OperationalError: (1054, \"Unknown column 'catalog_product.brand_code' in 'SELECT'\") password=hunter2",
            frame.repeat(40)
        );
        let cut = sample(&text, 2000);
        assert!(cut.chars().count() <= 2000);
        assert!(
            cut.starts_with("ERROR django.request Internal Server Error: /catalog/\n…\n"),
            "{cut}"
        );
        assert!(
            cut.contains("Unknown column 'catalog_product.brand_code'"),
            "{cut}"
        );
        assert!(!cut.contains("hunter2"), "{cut}");
    }
}
