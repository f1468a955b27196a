//! The "missing table/column" errors of PostgreSQL, MySQL/MariaDB and SQLite, as
//! Django reports them, and the identifier each one names.
//!
//! Identifiers come out normalised: schema and database qualifiers, quotes and
//! backticks stripped, lower case, so that `"public"."Catalog_Product"` and
//! `` `shop`.`catalog_product` `` both name `catalog_product`.

use regex::bytes::Regex;
use serde::Serialize;

/// What an error says is missing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Missing {
    /// The table, when the error names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The column, for a missing column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The engine whose wording matched: `postgres`, `mysql` or `sqlite`.
    pub engine: &'static str,
}

struct Signature {
    engine: &'static str,
    regex: Regex,
    /// How the captures map to identifiers.
    shape: Shape,
}

#[derive(Clone, Copy)]
enum Shape {
    /// `table` names a (possibly qualified) table.
    Table,
    /// `table` and `column` groups, each possibly quoted.
    TableColumn,
    /// `qualified` is `column`, `table.column` or `schema.table.column`.
    Qualified,
    /// A user's pattern: `table` and/or `column` (the column possibly qualified).
    User,
}

/// The built-in signatures, compiled once.
pub struct Signatures {
    signatures: Vec<Signature>,
    /// Literals at least one built-in signature needs: a cheap test run over large
    /// buffers before any signature is tried.
    prefilter: Regex,
    /// Users' patterns have no known literal: they are their own pre-search.
    user: Vec<Regex>,
}

const BUILT_IN: &[(&str, Shape, &str)] = &[
    // PostgreSQL
    (
        "postgres",
        Shape::TableColumn,
        r#"column "(?P<column>[^"]+)" of relation "(?P<table>[^"]+)" does not exist"#,
    ),
    (
        "postgres",
        Shape::Table,
        r#"relation "(?P<table>[^"]+)" does not exist"#,
    ),
    (
        "postgres",
        Shape::Qualified,
        r#"column (?P<qualified>(?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))*) does not exist"#,
    ),
    // MySQL / MariaDB: 1146 and 1054
    (
        "mysql",
        Shape::Table,
        r"Table '(?P<table>[^']+)' doesn't exist",
    ),
    (
        "mysql",
        Shape::Qualified,
        r"Unknown column '(?P<qualified>[^']+)' in '",
    ),
    // SQLite
    (
        "sqlite",
        Shape::TableColumn,
        r#"table (?P<table>[\w$."`\[\]]+) has no column named (?P<column>[\w$"`\[\]]+)"#,
    ),
    (
        "sqlite",
        Shape::Table,
        r#"no such table: (?P<table>[\w$."`\[\]]+)"#,
    ),
    (
        "sqlite",
        Shape::Qualified,
        r#"no such column: (?P<qualified>[\w$."`\[\]]+)"#,
    ),
];

impl Signatures {
    /// The built-in signatures plus `patterns` (checked by config validation:
    /// valid regexes with a `table` or `column` group).
    pub fn with_patterns(patterns: &[String]) -> Result<Self, regex::Error> {
        let mut signatures = Self::built_in();
        for pattern in patterns {
            let regex = Regex::new(pattern)?;
            signatures.user.push(regex.clone());
            signatures.signatures.push(Signature {
                engine: "custom",
                regex,
                shape: Shape::User,
            });
        }
        Ok(signatures)
    }

    /// Whether `detect.patterns` added any pattern of the user's own.
    pub fn has_user_patterns(&self) -> bool {
        !self.user.is_empty()
    }

    pub fn built_in() -> Self {
        let signatures = BUILT_IN
            .iter()
            .map(|(engine, shape, pattern)| Signature {
                engine,
                // The patterns are constants covered by the tests below.
                regex: Regex::new(pattern).unwrap_or_else(|err| panic!("{pattern}: {err}")),
                shape: *shape,
            })
            .collect();
        let prefilter = Regex::new(
            "does not exist|doesn't exist|Unknown column|no such table|no such column|has no column named",
        )
        .unwrap_or_else(|err| panic!("prefilter: {err}"));
        Self {
            signatures,
            prefilter,
            user: Vec::new(),
        }
    }

    /// Where in `haystack` (any amount of text) a signature may match: every
    /// match of a signature contains one of these positions.
    pub fn candidates(&self, haystack: &[u8]) -> Vec<usize> {
        let mut found: Vec<usize> = self
            .prefilter
            .find_iter(haystack)
            .map(|m| m.start())
            .collect();
        if !self.user.is_empty() {
            for regex in &self.user {
                found.extend(regex.find_iter(haystack).map(|m| m.start()));
            }
            found.sort_unstable();
        }
        found
    }

    /// Every missing object `text` (one event) reports, first occurrence first,
    /// each once: a chained traceback repeats the error and counts once.
    pub fn find(&self, text: &[u8]) -> Vec<Missing> {
        let mut found: Vec<(std::ops::Range<usize>, Missing)> = Vec::new();
        let mut covered: Vec<std::ops::Range<usize>> = Vec::new();
        if !self.prefilter.is_match(text) && !self.user.iter().any(|r| r.is_match(text)) {
            return Vec::new();
        }
        for signature in &self.signatures {
            for captures in signature.regex.captures_iter(text) {
                let Some(whole) = captures.get(0) else {
                    continue;
                };
                let group = |name: &str| {
                    captures
                        .name(name)
                        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                };
                let (table, column) = match signature.shape {
                    Shape::Table => (group("table").and_then(|t| last_part(&t)), None),
                    Shape::TableColumn => (
                        group("table").and_then(|t| last_part(&t)),
                        group("column").and_then(|c| last_part(&c)),
                    ),
                    Shape::User => {
                        let mut parts = split_parts(&group("column").unwrap_or_default());
                        let column = parts.pop();
                        let table = group("table")
                            .and_then(|t| last_part(&t))
                            .or_else(|| parts.pop());
                        (table, column)
                    }
                    Shape::Qualified => {
                        let parts = split_parts(&group("qualified").unwrap_or_default());
                        match parts.as_slice() {
                            [] => continue,
                            [column] => (None, Some(column.clone())),
                            [.., table, column] => (Some(table.clone()), Some(column.clone())),
                        }
                    }
                };
                // A quote with nothing in it (`no such table: [`, the rest cut
                // or not UTF-8) names nothing: it is not a missing object.
                if table.is_none() && column.is_none() {
                    continue;
                }
                let missing = Missing {
                    table,
                    column,
                    engine: signature.engine,
                };
                // `column "c" of relation "t" does not exist` also holds
                // `relation "t" does not exist`: where matches overlap, the
                // signature listed first (the more specific) wins.
                // Every match claims its text, repeats included (a chained
                // traceback prints the error twice).
                if covered
                    .iter()
                    .any(|range| range.start < whole.end() && whole.start() < range.end)
                {
                    continue;
                }
                covered.push(whole.range());
                if !found.iter().any(|(_, m)| *m == missing) {
                    found.push((whole.range(), missing));
                }
            }
        }
        found.sort_by_key(|(range, _)| range.start);
        found.into_iter().map(|(_, m)| m).collect()
    }
}

/// `a.b.c`, each part possibly quoted with `"`, `` ` `` or `[]`, into its parts,
/// unquoted and lower case.
fn split_parts(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '`') => quote = Some(c),
            (None, '[') => quote = Some(']'),
            (Some(q), c) if c == q => quote = None,
            (None, '.') => parts.push(std::mem::take(&mut current)),
            (_, c) => current.push(c),
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| p.to_lowercase())
        .collect()
}

/// The last part of `a.b.c`, unquoted and lower case; none when only quotes
/// and dots were there.
fn last_part(text: &str) -> Option<String> {
    split_parts(text).pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(text: &str) -> Vec<(Option<&str>, Option<&str>, &'static str)> {
        let found = Signatures::built_in().find(text.as_bytes());
        found
            .iter()
            .map(|m| {
                (
                    m.table.as_deref().map(|s| &*s.to_string().leak()),
                    m.column.as_deref().map(|s| &*s.to_string().leak()),
                    m.engine,
                )
            })
            .collect()
    }

    #[test]
    fn postgres_wordings() {
        assert_eq!(
            find(r#"django.db.utils.ProgrammingError: relation "legacy_coupon" does not exist"#),
            [(Some("legacy_coupon"), None, "postgres")]
        );
        assert_eq!(
            find(
                r#"psycopg.errors.UndefinedTable: relation "public.Legacy_Coupon" does not exist"#
            ),
            [(Some("legacy_coupon"), None, "postgres")]
        );
        assert_eq!(
            find(
                "django.db.utils.ProgrammingError: column catalog_product.notes does not exist\nLINE 1: SELECT ..."
            ),
            [(Some("catalog_product"), Some("notes"), "postgres")]
        );
        assert_eq!(
            find(r#"column "notes" of relation "catalog_product" does not exist"#),
            [(Some("catalog_product"), Some("notes"), "postgres")]
        );
        assert_eq!(
            find(r#"ProgrammingError: column "notes" does not exist"#),
            [(None, Some("notes"), "postgres")]
        );
    }

    #[test]
    fn mysql_wordings() {
        assert_eq!(
            find(
                r#"django.db.utils.ProgrammingError: (1146, "Table 'shop.legacy_coupon' doesn't exist")"#
            ),
            [(Some("legacy_coupon"), None, "mysql")]
        );
        assert_eq!(
            find(
                r#"django.db.utils.OperationalError: (1054, "Unknown column 'catalog_product.notes' in 'field list'")"#
            ),
            [(Some("catalog_product"), Some("notes"), "mysql")]
        );
        assert_eq!(
            find(r#"(1054, "Unknown column 'notes' in 'SELECT'")"#),
            [(None, Some("notes"), "mysql")]
        );
    }

    #[test]
    fn sqlite_wordings() {
        assert_eq!(
            find("django.db.utils.OperationalError: no such table: legacy_coupon"),
            [(Some("legacy_coupon"), None, "sqlite")]
        );
        assert_eq!(
            find("django.db.utils.OperationalError: no such column: catalog_product.notes"),
            [(Some("catalog_product"), Some("notes"), "sqlite")]
        );
        assert_eq!(
            find("OperationalError: table catalog_product has no column named notes"),
            [(Some("catalog_product"), Some("notes"), "sqlite")]
        );
    }

    #[test]
    fn a_chained_traceback_counts_its_error_once() {
        let text = "psycopg.errors.UndefinedColumn: column catalog_product.notes does not exist\n\nThe above exception was the direct cause of the following exception:\n\ndjango.db.utils.ProgrammingError: column catalog_product.notes does not exist";
        assert_eq!(find(text).len(), 1);
    }

    #[test]
    fn ordinary_lines_match_nothing() {
        for text in [
            "GET /catalog/7/ HTTP/1.1 200",
            "the file does not exist",
            "DoesNotExist: Product matching query does not exist.",
        ] {
            assert!(find(text).is_empty(), "{text}");
        }
    }

    /// Real errors, captured from Django 5.2 on PostgreSQL 15, MariaDB 10.11 and
    /// SQLite by tests/fixtures/errors/capture.py: each traceback, chained as
    /// Django logs it, names exactly the object it expects, once.
    #[test]
    fn real_django_errors_of_the_three_engines() {
        let signatures = Signatures::built_in();
        for (engine, text) in [
            (
                "postgres",
                include_str!("../../tests/fixtures/errors/postgres.txt"),
            ),
            (
                "mysql",
                include_str!("../../tests/fixtures/errors/mysql.txt"),
            ),
            (
                "sqlite",
                include_str!("../../tests/fixtures/errors/sqlite.txt"),
            ),
        ] {
            let cases: Vec<&str> = text.split("=== EXPECT ").skip(1).collect();
            assert_eq!(cases.len(), 5, "{engine}");
            for case in cases {
                let (expected, traceback) = case.split_once('\n').unwrap();
                let (table, column) = match expected.split_once('.') {
                    Some(("", column)) => (None, Some(column)),
                    Some((table, column)) => (Some(table), Some(column)),
                    None => (Some(expected), None),
                };
                let found = signatures.find(traceback.as_bytes());
                assert_eq!(
                    found,
                    [Missing {
                        table: table.map(str::to_string),
                        column: column.map(str::to_string),
                        engine,
                    }],
                    "{engine}: {expected}\n{traceback}"
                );
            }
        }
    }

    #[test]
    fn users_patterns_add_to_the_built_in_ones() {
        let signatures = Signatures::with_patterns(&[
            r"ObjectMissing: (?P<table>\w+)\.(?P<column>\w+)".to_string(),
            r"lost field (?P<column>[\w.]+)".to_string(),
        ])
        .unwrap();
        let found = signatures.find(b"app.errors.ObjectMissing: Catalog_Product.notes");
        assert_eq!(
            found,
            [Missing {
                table: Some("catalog_product".into()),
                column: Some("notes".into()),
                engine: "custom"
            }]
        );
        let found = signatures.find(b"lost field shop.orders.total");
        assert_eq!(found[0].table.as_deref(), Some("orders"));
        assert_eq!(found[0].column.as_deref(), Some("total"));
        let text = b"lines\nlost field x\nno such table: t\n";
        assert_eq!(signatures.candidates(text), [6, 19]);
        assert_eq!(
            signatures.find(b"no such table: t").len(),
            1,
            "built-ins still apply"
        );
    }

    #[test]
    fn identifiers_are_unquoted_and_lower_cased() {
        assert_eq!(
            split_parts(r#""Public"."Catalog_Product""#),
            ["public", "catalog_product"]
        );
        assert_eq!(split_parts("`shop`.`t`"), ["shop", "t"]);
        assert_eq!(split_parts("[main].[t]"), ["main", "t"]);
        assert_eq!(split_parts(r#""a.b""#), ["a.b"]);
    }

    /// Found by the `log_signatures` fuzz target: a quote with no name after it
    /// (the rest cut, or bytes that are not UTF-8) was reported as table "".
    #[test]
    fn a_quote_with_no_name_in_it_names_nothing() {
        let signatures = Signatures::built_in();
        for text in [
            &b"sqlite3.OperationalError: no such table: [\xcdcatalog_product"[..],
            b"sqlite3.OperationalError: no such table: [",
            b"sqlite3.OperationalError: no such table: \"\"",
            b"psycopg2.errors.UndefinedTable: relation \"\" does not exist",
        ] {
            for missing in signatures.find(text) {
                assert!(
                    missing.table.as_deref().is_some_and(|t| !t.is_empty())
                        || missing.column.is_some(),
                    "{missing:?} from {}",
                    String::from_utf8_lossy(text)
                );
            }
        }
    }
}
