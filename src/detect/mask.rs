//! Sample lines as evidence: cut to a readable length, with what looks like a
//! credential replaced by `***`. Samples travel to Slack, webhooks, the API and
//! the journal; a password in a log line must not travel with them.
//!
//! It must never make a line longer than its limit, and never split a character.

use std::sync::LazyLock;

use regex::Regex;

/// Patterns of secrets and what replaces them (`$1`, `$2` keep the context).
/// Run before [`mask_assignments`].
static SECRETS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // scheme://user:password@host
        (
            r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@",
            "${1}***@",
        ),
        // Bearer …, Basic … outside a header line too (a curl command, a message)
        (
            r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}",
            "${1}${2}***",
        ),
    ]
    .into_iter()
    .map(compile)
    .collect()
});

/// Secrets recognisable by their own shape, wherever they stand. Run last.
static SHAPES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // AWS access key ids, JSON web tokens, Slack tokens
        (r"\bAKIA[0-9A-Z]{16}\b", "***"),
        (
            r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+",
            "***",
        ),
        (r"\bxox[abprs]-[A-Za-z0-9-]{10,}", "***"),
    ]
    .into_iter()
    .map(compile)
    .collect()
});

fn compile((pattern, replacement): (&str, &'static str)) -> (Regex, &'static str) {
    (
        Regex::new(pattern).expect("the secret patterns are valid regexes"),
        replacement,
    )
}

/// A name that announces a secret: `password`, `DJANGO_SECRET_KEY`, `X-Api-Key`,
/// `client_secret`, `Authorization`, `Cookie`… Its value is found by
/// [`mask_assignments`], which also decides whether it is a name at all (a
/// quoted identifier in a database error is not).
static KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b[a-z0-9_-]*?(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|sessionid|csrftoken|credential|authorization|cookie)[a-z0-9_-]*",
    )
    .expect("the key pattern is a valid regex")
});

/// Names whose value runs to the end of the line: HTTP headers whose value is
/// a scheme and a credential (`Token X`, `Digest username=…, response=…`) or a
/// list of cookies.
const HEADERS: [&str; 4] = ["authorization", "proxyauthorization", "cookie", "setcookie"];

/// Names of a password (alone or ending a name: `DB_PASSWORD`): followed by a
/// value after a mere space (`passwd X`, `--password X`, SQL's `PASSWORD 'x'`),
/// that value is masked unless it is a word of ordinary prose (`password
/// authentication failed`).
const PASSWORD_WORDS: [&str; 4] = ["password", "passwd", "pwd", "passphrase"];

/// Other names (alone or ending a name) that may be followed by their value after
/// a space (`token ghp_…`); there the value is masked only when it looks like a
/// secret (8 characters or more, a digit among them), as identifiers ending in
/// these words (`authtoken_token`) are common in database errors.
const SECRET_WORDS: [&str; 11] = [
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "secretkey",
    "clientsecret",
    "authtoken",
    "accesstoken",
    "refreshtoken",
    "credential",
];

/// Words that follow "password" in prose, not a password.
const PROSE: [&str; 52] = [
    "a",
    "an",
    "and",
    "are",
    "at",
    "authentication",
    "be",
    "been",
    "by",
    "can",
    "cannot",
    "change",
    "changed",
    "column",
    "did",
    "does",
    "empty",
    "expired",
    "failed",
    "field",
    "for",
    "from",
    "has",
    "hash",
    "hashed",
    "have",
    "in",
    "incorrect",
    "invalid",
    "is",
    "length",
    "mismatch",
    "missing",
    "must",
    "not",
    "of",
    "on",
    "or",
    "policy",
    "required",
    "reset",
    "set",
    "should",
    "strength",
    "the",
    "to",
    "too",
    "updated",
    "validation",
    "was",
    "will",
    "with",
];

/// How a name is tied to its value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Separator {
    /// `=`, `:`, `=>`: the value follows, quoted or not.
    Assign,
    /// `('password', 'X')`: a Python tuple; the value must be quoted.
    Tuple,
    /// `passwd X`: only after a whole secret-naming word, not an identifier.
    Space,
}

/// `text` with the value of every `name = value` whose name announces a secret
/// replaced by `***`: `password=x`, `password: 'a b'`, `"token": "a\"b"`,
/// `('password', 'x')`, `{'password': 'x'}`, `"api_key" => "x"`, `passwd x`,
/// `Authorization: Token x` (to the end of the line), `?access_token=x&…`.
/// Names that are identifiers in a database error (`column "password_hash" does
/// not exist`, `no such table: authtoken_token`) have no value and stay whole:
/// the reader, like the correlation, needs them.
fn mask_assignments(text: &str) -> String {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for found in KEY.find_iter(text) {
        if spans.last().is_some_and(|&(_, end)| found.start() < end) {
            continue; // inside a value already masked (a cookie header's list)
        }
        if let Some(span) = value_span(text, found.start(), found.end()) {
            spans.push(span);
        }
    }
    let mut masked = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        masked.push_str(&text[at..start]);
        masked.push_str("***");
        at = end;
    }
    masked.push_str(&text[at..]);
    masked
}

/// The byte span of the value of the name at `start..end` of `text`, if it has one.
fn value_span(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let folded: String = text[start..end]
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let before = text[..start].chars().next_back();
    if text[end..].starts_with(|c: char| c.is_alphanumeric()) || before == Some('`') {
        return None; // part of a longer word, or a MySQL identifier
    }
    // `DB_PASSWORD`, `mysql_pwd`, `github_token`: the name ends with the word.
    let names_a_password = PASSWORD_WORDS.iter().any(|w| folded.ends_with(w));
    let names_a_secret = SECRET_WORDS.iter().any(|w| folded.ends_with(w));
    // A quoted name: `"password": …`, `('password', …)`.
    let quote = before.filter(|&q| (q == '"' || q == '\'') && text[end..].starts_with(q));
    let mut at = end + quote.map_or(0, char::len_utf8);
    let spaced = skip_blanks(text, &mut at);
    let rest = &text[at..];
    let separator = if rest.starts_with("=>") {
        at += 2;
        Separator::Assign
    } else if (rest.starts_with(':') && !rest.starts_with("::"))
        || (rest.starts_with('=') && !rest.starts_with("=="))
    {
        at += 1;
        Separator::Assign
    } else if rest.starts_with(',') && quote.is_some() && opens_tuple(text, start - 1) {
        at += 1;
        Separator::Tuple
    } else if spaced
        && quote.is_none()
        && (names_a_password || names_a_secret)
        && before.is_none_or(|c| c.is_whitespace() || "([{,;|-".contains(c))
    {
        Separator::Space
    } else {
        return None;
    };
    skip_blanks(text, &mut at);
    let rest = &text[at..];
    if let Some(open) = rest.chars().next().filter(|&c| c == '"' || c == '\'') {
        let from = at + 1;
        let to = closing_quote(text, from, open);
        return (to > from).then_some((from, to));
    }
    let line_end = rest.find(['\n', '\r']).map_or(text.len(), |i| at + i);
    let to = match separator {
        Separator::Tuple => return None,
        Separator::Assign if HEADERS.contains(&folded.as_str()) => {
            at + text[at..line_end].trim_end().len()
        }
        _ => rest
            .find(|c: char| c.is_whitespace() || "\"'&,;)}]".contains(c))
            .map_or(text.len(), |i| at + i),
    };
    let value = &text[at..to];
    if value.is_empty() || value == "***" {
        return None;
    }
    if separator == Separator::Space {
        let word = value
            .trim_end_matches(|c: char| c.is_ascii_punctuation())
            .to_ascii_lowercase();
        let secret_like = names_a_password
            || (value.chars().count() >= 8 && value.chars().any(|c| c.is_ascii_digit()));
        if PROSE.contains(&word.as_str()) || !secret_like {
            return None;
        }
    }
    Some((at, to))
}

/// Moves `at` past spaces and tabs (not line ends); whether there were any.
fn skip_blanks(text: &str, at: &mut usize) -> bool {
    let from = *at;
    *at += text[*at..].len() - text[*at..].trim_start_matches([' ', '\t']).len();
    *at > from
}

/// Whether the quote at byte `quote_at` opens the first item of a tuple or list:
/// `(` or `[` before it, blanks aside.
fn opens_tuple(text: &str, quote_at: usize) -> bool {
    text[..quote_at]
        .trim_end_matches([' ', '\t'])
        .ends_with(['(', '['])
}

/// Where the string opened by `open` just before byte `from` ends: its closing
/// quote (a backslash escapes the next character), else the end of the line (a
/// sample cut in the middle of the value).
fn closing_quote(text: &str, from: usize, open: char) -> usize {
    let mut escaped = false;
    for (i, c) in text[from..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\n' | '\r' => return from + i,
            c if c == open => return from + i,
            _ => {}
        }
    }
    text.len()
}

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
    masked = mask_assignments(&masked);
    for (regex, replacement) in SHAPES.iter() {
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

    /// Issue 17, item 6: `Authorization: Token X`, `('password', 'X')`, `passwd X`
    /// and the end of `password: 'a b'` passed into samples. The whole class: every
    /// secret-naming key with every separator and quoting, in JSON, URL queries,
    /// Python reprs and header lines.
    #[test]
    fn a_secret_never_survives_in_a_sample_whatever_its_key_separator_or_quoting() {
        const A: &str = "S3cretPartOne9";
        const B: &str = "S3cretPartTwo9";
        let keys = [
            "password",
            "passwd",
            "pwd",
            "secret",
            "token",
            "api_key",
            "apikey",
            "access_key",
            "private_key",
            "client_secret",
            "PASSWORD",
            "Api-Key",
            "DB_PASSWORD",
        ];
        let forms: Vec<fn(&str) -> String> = vec![
            |k| format!("login failed {k}={A} user=bob"),
            |k| format!("{k}: {A}"),
            |k| format!("{k} = '{A} {B}'"),
            |k| format!("{k}=\"{A} {B}\" next=1"),
            |k| format!("config {k}: '{A} {B}'"),
            |k| format!(r#"{k}: "{A} \"quoted\" {B}" tail"#),
            |k| format!(r"{k}: '{A} \' {B}'"),
            |k| format!(r#"{{"user": "bob", "{k}": "{A} {B}", "n": 1}}"#),
            |k| format!(r#"{{"{k}":"{A}\"{B}"}}"#),
            |k| format!("{{'{k}': '{A} {B}', 'user': 'bob'}}"),
            |k| format!("'{k}' => '{A} {B}'"),
            |k| format!("\"{k}\" => \"{A}\""),
            |k| format!("{k} => {A}"),
            |k| format!("data=[('user', 'bob'), ('{k}', '{A} {B}')]"),
            |k| format!("({k:?}, '{A}')"),
            |k| format!("GET /login?user=bob&{k}={A}&next=/ HTTP/1.1"),
            |k| format!("cmd: mysql --{k} {A} -h db"),
            |k| format!("{k} {A}"),
            |k| format!("ERROR [auth] {k} '{A} {B}' rejected"),
            |k| format!("{k}:\t{A}"),
        ];
        let mut lines: Vec<String> = keys
            .iter()
            .flat_map(|k| forms.iter().map(move |form| form(k)))
            .collect();
        lines.extend([
            format!("Authorization: Token {A}"),
            format!("authorization: token {A}"),
            format!("Authorization: Bearer {A}"),
            format!("Authorization: Basic {A}="),
            format!("Authorization: Digest username=\"bob\", response=\"{A}\", nonce=\"{B}\""),
            format!("Authorization: ApiKey {A}"),
            format!("Authorization: {A}"),
            format!("Proxy-Authorization: Basic {A}"),
            format!("X-Api-Key: {A}"),
            format!("Cookie: sessionid={A}; csrftoken={B}"),
            format!("Set-Cookie: sessionid={A}; Path=/; HttpOnly"),
            format!("headers={{'HTTP_AUTHORIZATION': 'Token {A}', 'HTTP_HOST': 'shop'}}"),
            format!(r#"{{"headers": {{"Authorization": "Token {A}"}}}}"#),
            format!("('Authorization', 'Token {A}')"),
            format!("ALTER USER app WITH PASSWORD '{A}'"),
            format!("curl -H 'Authorization: Bearer {A}' https://api"),
            format!("DATABASE_URL=postgres://app:{A}@db/shop"),
            format!("could not connect to postgres://app:{A}@db:5432/shop"),
            format!("https://api/x?access_token={A}&user=bob"),
            format!(r#"{{"level": "ERROR", "message": "login", "password": "{A}"}}"#),
        ]);
        for line in &lines {
            let masked = sample(line, 2000);
            for part in [A, B] {
                assert!(!masked.contains(part), "{line}\n  → {masked}");
            }
            assert!(masked.contains("***"), "{line}\n  → {masked}");
        }
    }

    /// What masking must leave alone: identifiers a reader (and the correlation,
    /// which reads the raw text) needs, even when they contain a secret's name.
    #[test]
    fn database_errors_naming_secret_like_tables_and_columns_keep_their_identifiers() {
        for line in [
            r#"django.db.utils.ProgrammingError: column "password_hash" does not exist"#,
            r#"django.db.utils.ProgrammingError: column accounts_user.password does not exist"#,
            r#"LINE 1: SELECT "accounts_user"."password", "accounts_user"."token" FROM "accounts_user""#,
            r#"django.db.utils.ProgrammingError: relation "authtoken_token" does not exist"#,
            "sqlite3.OperationalError: no such table: authtoken_token",
            "sqlite3.OperationalError: no such column: accounts_user.secret_notes",
            "sqlite3.OperationalError: table token has no column named created",
            "NOT NULL constraint failed: accounts_apitoken.token",
            r#"django.db.utils.OperationalError: (1054, "Unknown column 'api_key' in 'field list'")"#,
            "Unknown column `password` in 'field list'",
            r#"FATAL:  password authentication failed for user "app""#,
            "DETAIL:  Key (token)=(abc) already exists.",
            "WARNING django.request Password reset requested for /accounts/password/reset/",
            "the token expired; ask for a new one",
        ] {
            assert_eq!(sample(line, 2000), line);
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
