//! Which table and column a normalized statement names: the text of a
//! `pg_stat_statements` entry (`SELECT "t"."c" FROM "t" WHERE "t"."id" = $1`) or
//! of a MariaDB/MySQL digest (``SELECT `t` . `c` FROM `t` WHERE `id` = ?``).
//!
//! The text is tokenized, never searched as a string: `brand_code` inside
//! `old_brand_code` or inside a comment is no mention, `"Catalog_Product"`,
//! `catalog_product` and `` `catalog_product` `` are the same name, and a column
//! qualified by another table (`orders_order.brand_code`) is not this table's.

use sqlparser::dialect::{Dialect, GenericDialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::db::{Engine, OWN_READ};

/// Statements whose first word is one of these change the schema or its
/// metadata: the migration's own `ALTER TABLE … DROP COLUMN` is no use of the
/// column by the application.
const SCHEMA_CHANGES: &[&str] = &[
    "alter", "drop", "create", "comment", "analyze", "vacuum", "grant", "revoke", "reindex",
    "cluster", "rename", "optimize",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An identifier or keyword, lowercased, quotes removed.
    Word {
        value: String,
        keyword: bool,
    },
    Dot,
    Star,
    Comma,
    Other,
}

/// How a statement refers to one column of a table it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnUse {
    /// It does not name the column.
    No,
    /// It names the column (qualified by the table or one of its aliases, or
    /// unqualified).
    Named,
    /// It reads or writes every column without naming them (`SELECT *`,
    /// `t.*`, `INSERT INTO t VALUES …`).
    All,
}

/// One statement's text, tokenized.
#[derive(Debug, Clone)]
pub struct Parsed {
    tokens: Vec<Tok>,
    /// One of dropguard's own reads ([`OWN_READ`]).
    pub own: bool,
    /// A schema change (`ALTER`, `DROP`, `CREATE` …), not a use of the data.
    pub schema_change: bool,
    /// The server cut the text (MariaDB/MySQL digests end in `...` past
    /// `performance_schema_max_digest_length`): a column may be named past the cut.
    pub truncated: bool,
}

impl Parsed {
    pub fn new(text: &str, engine: Engine) -> Self {
        let tokens = tokenize(text, engine);
        let own = tokens
            .iter()
            .any(|t| matches!(t, Tok::Word { value, .. } if value == OWN_READ));
        let schema_change = tokens.iter().find_map(|t| match t {
            Tok::Word { value, .. } => Some(SCHEMA_CHANGES.contains(&value.as_str())),
            _ => None,
        }) == Some(true);
        Self {
            tokens,
            own,
            schema_change,
            truncated: text.trim_end().ends_with("..."),
        }
    }

    fn word(&self, i: usize) -> Option<&str> {
        match self.tokens.get(i) {
            Some(Tok::Word { value, .. }) => Some(value),
            _ => None,
        }
    }

    /// Whether the statement names `table` (case-insensitively, quoted or not,
    /// schema-qualified or not).
    pub fn names_table(&self, table: &str) -> bool {
        let table = table.to_lowercase();
        (0..self.tokens.len()).any(|i| self.word(i) == Some(table.as_str()))
    }

    /// The names `table` goes by in the statement: itself and its aliases
    /// (`FROM t AS x`, `JOIN t x`).
    fn names_of(&self, table: &str) -> Vec<String> {
        let mut names = vec![table.to_string()];
        for i in 0..self.tokens.len() {
            if self.word(i) != Some(table) {
                continue;
            }
            // `t.c` is a column reference, not the table in a FROM list.
            if self.tokens.get(i + 1) == Some(&Tok::Dot) {
                continue;
            }
            let alias = match self.tokens.get(i + 1) {
                Some(Tok::Word { value, .. }) if value == "as" => self.word(i + 2),
                Some(Tok::Word {
                    value,
                    keyword: false,
                }) => Some(value.as_str()),
                _ => None,
            };
            if let Some(alias) = alias
                && !names.iter().any(|n| n == alias)
            {
                names.push(alias.to_string());
            }
        }
        names
    }

    /// How the statement uses `table.column`. Call it for statements that
    /// [`names_table`](Self::names_table).
    pub fn column_use(&self, table: &str, column: &str) -> ColumnUse {
        let table = table.to_lowercase();
        let column = column.to_lowercase();
        let names = self.names_of(&table);
        let qualifier = |i: usize| -> Option<&str> {
            (i >= 2 && self.tokens[i - 1] == Tok::Dot)
                .then(|| self.word(i - 2))
                .flatten()
        };
        let mut all = false;
        for (i, token) in self.tokens.iter().enumerate() {
            match token {
                Tok::Word { value, .. } if *value == column => match qualifier(i) {
                    // `other_table.column` is another table's column.
                    Some(q) if !names.iter().any(|n| n == q) => {}
                    _ => return ColumnUse::Named,
                },
                Tok::Star => {
                    let star_of_table = qualifier(i).is_some_and(|q| names.iter().any(|n| n == q));
                    // `SELECT *`, `SELECT a, *`; not `COUNT(*)` or `a * b`.
                    let bare = i >= 1
                        && (self.tokens[i - 1] == Tok::Comma
                            || matches!(self.word(i - 1), Some("select" | "distinct" | "all")));
                    all |= star_of_table || bare;
                }
                Tok::Word { value, .. } if *value == table => {
                    // INSERT INTO t VALUES … / INSERT INTO t SELECT …: every column.
                    let into = i >= 1 && self.word(i - 1) == Some("into");
                    let next = self.word(i + 1);
                    all |= into && matches!(next, Some("values" | "value" | "select"));
                }
                _ => {}
            }
        }
        if all { ColumnUse::All } else { ColumnUse::No }
    }
}

fn dialect(engine: Engine) -> Box<dyn Dialect> {
    match engine {
        Engine::Postgres => Box::new(PostgreSqlDialect {}),
        Engine::Mysql => Box::new(MySqlDialect {}),
        Engine::Sqlite => Box::new(GenericDialect {}),
    }
}

fn tokenize(text: &str, engine: Engine) -> Vec<Tok> {
    let dialect = dialect(engine);
    match Tokenizer::new(dialect.as_ref(), text).tokenize() {
        Ok(tokens) => tokens
            .into_iter()
            .filter_map(|token| {
                Some(match token {
                    Token::Word(word) => Tok::Word {
                        value: word.value.to_lowercase(),
                        keyword: word.quote_style.is_none() && word.keyword != Keyword::NoKeyword,
                    },
                    Token::Period => Tok::Dot,
                    Token::Mul => Tok::Star,
                    Token::Comma => Tok::Comma,
                    Token::Whitespace(_) => return None,
                    _ => Tok::Other,
                })
            })
            .collect(),
        // A text cut in the middle of a quoted name or a string (a truncated
        // digest) does not tokenize: read its words by hand.
        Err(_) => scan(text),
    }
}

/// A plain scanner for texts the SQL tokenizer refuses: words (bare or in
/// `"…"`/`` `…` ``), dots, stars and commas; a string literal or an unclosed
/// quote is skipped. Words are never keywords here, so no alias is guessed.
fn scan(text: &str) -> Vec<Tok> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '`' | '\'' => {
                let mut value = String::new();
                let mut closed = false;
                while let Some(d) = chars.next() {
                    if d == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                            value.push(c);
                            continue;
                        }
                        closed = true;
                        break;
                    }
                    value.push(d);
                }
                if closed && c != '\'' {
                    tokens.push(Tok::Word {
                        value: value.to_lowercase(),
                        keyword: false,
                    });
                } else {
                    tokens.push(Tok::Other);
                }
            }
            '.' => tokens.push(Tok::Dot),
            '*' => tokens.push(Tok::Star),
            ',' => tokens.push(Tok::Comma),
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut value = c.to_lowercase().to_string();
                while let Some(&d) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' || d == '$' {
                        value.extend(d.to_lowercase());
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Tok::Word {
                    value,
                    keyword: false,
                });
            }
            c if c.is_whitespace() => {}
            _ => tokens.push(Tok::Other),
        }
    }
    tokens
}

/// A statement cut to about `max` characters around its first mention of
/// `needle`, whitespace collapsed: `SELECT "catalog_product"."id", … "brand_code" …`.
pub fn excerpt(text: &str, needle: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let chars: Vec<char> = flat.chars().collect();
    if chars.len() <= max {
        return flat;
    }
    let head = max / 3;
    let lower: Vec<char> = flat.to_lowercase().chars().collect();
    let needle: Vec<char> = needle.to_lowercase().chars().collect();
    let found = (!needle.is_empty())
        .then(|| {
            lower
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
        })
        .flatten();
    // Cuts fall on spaces where there are any, so no name is cut in two.
    let space_before = |at: usize, floor: usize| {
        (floor..at.min(chars.len()))
            .rev()
            .find(|&i| chars[i] == ' ')
            .unwrap_or(at.min(chars.len()))
    };
    let space_after = |at: usize, ceiling: usize| {
        (at..ceiling.min(chars.len()))
            .find(|&i| chars[i] == ' ')
            .map_or(at, |i| i + 1)
    };
    let cut = |from: usize, to: usize| {
        chars[from..to.min(chars.len())]
            .iter()
            .collect::<String>()
            .trim()
            .to_string()
    };
    match found {
        Some(at) if at + needle.len() > head => {
            let around = max - head;
            let head_end = space_before(head, head / 2);
            let from = space_after(at.saturating_sub(around / 3).max(head_end), at);
            let to = if from + around >= chars.len() {
                chars.len()
            } else {
                space_before(from + around, at + needle.len())
            };
            let tail = if to < chars.len() { " …" } else { "" };
            format!("{} … {}{tail}", cut(0, head_end), cut(from, to))
        }
        _ => format!("{} …", cut(0, space_before(max, max / 2))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(text: &str) -> Parsed {
        Parsed::new(text, Engine::Postgres)
    }

    fn my(text: &str) -> Parsed {
        Parsed::new(text, Engine::Mysql)
    }

    #[test]
    fn django_selects_name_the_table_and_its_columns_on_both_engines() {
        let statement = pg(
            r#"SELECT "catalog_product"."id", "catalog_product"."brand_code" FROM "catalog_product" LIMIT $1"#,
        );
        assert!(statement.names_table("catalog_product"));
        assert!(statement.names_table("Catalog_Product"));
        assert_eq!(
            statement.column_use("catalog_product", "brand_code"),
            ColumnUse::Named
        );
        assert_eq!(
            statement.column_use("catalog_product", "name"),
            ColumnUse::No
        );
        let digest = my(
            "SELECT `catalog_product` . `id` , `catalog_product` . `brand_code` FROM `catalog_product` LIMIT ?",
        );
        assert!(digest.names_table("catalog_product"));
        assert_eq!(
            digest.column_use("catalog_product", "BRAND_CODE"),
            ColumnUse::Named
        );
        assert!(!digest.own && !digest.schema_change && !digest.truncated);
    }

    #[test]
    fn a_name_inside_a_longer_name_or_a_comment_is_no_mention() {
        let statement =
            pg("SELECT old_brand_code /* brand_code */ FROM catalog_product_archive WHERE x = $1");
        assert!(!statement.names_table("catalog_product"));
        let statement = pg("SELECT old_brand_code FROM catalog_product");
        assert_eq!(
            statement.column_use("catalog_product", "brand_code"),
            ColumnUse::No
        );
    }

    #[test]
    fn another_tables_column_of_the_same_name_is_not_this_tables() {
        let statement = pg(
            "SELECT o.brand_code FROM orders_order o JOIN catalog_product p ON p.id = o.product_id",
        );
        assert_eq!(
            statement.column_use("catalog_product", "brand_code"),
            ColumnUse::No
        );
        let statement = pg(
            "SELECT p.brand_code FROM orders_order o JOIN catalog_product AS p ON p.id = o.product_id",
        );
        assert_eq!(
            statement.column_use("catalog_product", "brand_code"),
            ColumnUse::Named
        );
        // Unqualified: it may be this table's, so it counts.
        let statement = pg("SELECT brand_code FROM orders_order, catalog_product");
        assert_eq!(
            statement.column_use("catalog_product", "brand_code"),
            ColumnUse::Named
        );
    }

    #[test]
    fn star_and_insert_without_columns_use_every_column() {
        for text in [
            "SELECT * FROM catalog_product WHERE id = $1",
            "SELECT p.* FROM catalog_product p",
            "SELECT id, * FROM public.catalog_product",
            "INSERT INTO catalog_product VALUES ($1, $2, $3)",
            "INSERT INTO catalog_product SELECT * FROM staging",
        ] {
            assert_eq!(
                pg(text).column_use("catalog_product", "brand_code"),
                ColumnUse::All,
                "{text}"
            );
        }
        for text in [
            "SELECT COUNT(*) FROM catalog_product",
            "SELECT price * $1 FROM catalog_product",
            "SELECT o.* FROM orders_order o JOIN catalog_product p ON p.id = o.product_id",
            "INSERT INTO catalog_product (id, name) VALUES ($1, $2)",
        ] {
            assert_eq!(
                pg(text).column_use("catalog_product", "brand_code"),
                ColumnUse::No,
                "{text}"
            );
        }
    }

    #[test]
    fn dropguards_own_reads_and_schema_changes_are_recognised() {
        assert!(pg(r#"SELECT COUNT(*) FROM "catalog_product" AS dropguard_own WHERE $1"#).own);
        assert!(
            my("SELECT COUNT ( * ) FROM `catalog_product` AS `dropguard_own` WHERE TRUE AND `brand_code` IS NOT NULL")
                .own
        );
        assert!(
            pg(r#"ALTER TABLE "catalog_product" DROP COLUMN "brand_code" CASCADE"#).schema_change
        );
        assert!(my("DROP TABLE `catalog_product`").schema_change);
        assert!(!pg(r#"UPDATE "catalog_product" SET "brand_code" = $1"#).schema_change);
    }

    #[test]
    fn a_truncated_digest_is_read_by_hand_and_says_so() {
        let digest = my("SELECT `catalog_product` . `id` , `catalog_product` . `na...");
        assert!(digest.truncated);
        assert!(digest.names_table("catalog_product"));
        assert_eq!(
            digest.column_use("catalog_product", "brand_code"),
            ColumnUse::No
        );
        let cut_in_a_name = my("SELECT `catalog_product` . `brand_code` , `catalog_pro...");
        assert_eq!(
            cut_in_a_name.column_use("catalog_product", "brand_code"),
            ColumnUse::Named
        );
    }

    #[test]
    fn excerpts_keep_the_start_and_the_mention() {
        let columns: Vec<String> = (0..40).map(|i| format!("\"t\".\"column_{i}\"")).collect();
        let text = format!(
            "SELECT {}, \"t\".\"brand_code\" FROM \"t\" WHERE \"t\".\"id\" = $1",
            columns.join(", ")
        );
        let cut = excerpt(&text, "brand_code", 120);
        assert!(cut.starts_with("SELECT \"t\".\"column_0\""), "{cut}");
        assert!(cut.contains("\"brand_code\""), "{cut}");
        assert!(cut.chars().count() <= 130, "{cut}");
        assert_eq!(excerpt("SELECT  1\n FROM t", "t", 120), "SELECT 1 FROM t");
    }
}
