//! SQL analysis with sqlparser: finds destructive or breaking statements
//! (DROP TABLE, DROP COLUMN, TRUNCATE, DELETE without WHERE, renames) in SQL
//! text, for Django's RunSQL and for folders of plain SQL migrations.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sqlparser::ast::{
    AlterTable, AlterTableOperation, ColumnOption, CreateTable, Delete, Expr, FromTable, Ident,
    ObjectName, ObjectNamePart, ObjectType, RenameTableNameKind, Spanned, Statement,
    TableConstraint, TableFactor, Truncate,
};
use sqlparser::dialect::{Dialect, GenericDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use walkdir::WalkDir;

use super::depth::{self, MAX_DEPTH, too_deep};
use super::{Analysis, Engine, Error, MigrationId, MigrationPlan, OpKind, Operation, Problem};

/// One destructive or breaking effect of a SQL statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SqlEffect {
    pub kind: OpKind,
    /// Schema / database qualifier, if the statement named one.
    pub schema: Option<String>,
    /// None only for opaque effects naming no table (DROP SCHEMA).
    pub table: Option<String>,
    /// Dropped columns, or the old name of a renamed column.
    pub columns: Vec<String>,
    /// New table or column name, for renames.
    pub new_name: Option<String>,
    /// What the statement is, e.g. "DROP TABLE", "DELETE without WHERE".
    pub statement: String,
    /// 1-based line of the statement within the SQL text.
    pub line: usize,
}

/// SQL text that sqlparser could not parse with either the engine's dialect
/// or the generic one, or that nests too deep to be parsed safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} (line {line}): {message}", if *.too_deep { "SQL not analysed" } else { "SQL does not parse" })]
pub struct SqlError {
    /// 1-based line within the SQL text (1 when the parser gives none).
    pub line: usize,
    pub message: String,
    /// Refused before parsing: a statement nests deeper than [`MAX_DEPTH`].
    pub too_deep: bool,
}

/// The destructive or breaking statements of `sql`, in order.
pub fn analyse_sql(sql: &str, engine: Engine) -> Result<Vec<SqlEffect>, SqlError> {
    let mut out = Vec::new();
    for (stmt, line) in &parse(sql, engine)? {
        statement_effects(stmt, *line, engine, &mut out);
    }
    Ok(out)
}

/// A parsed statement and the 1-based line it starts on.
type Located = (Statement, usize);

fn parse(sql: &str, engine: Engine) -> Result<Vec<Located>, SqlError> {
    let dialect: Box<dyn Dialect> = match engine {
        Engine::Postgres => Box::new(PostgreSqlDialect {}),
        Engine::Mysql => Box::new(MySqlDialect {}),
        Engine::Sqlite => Box::new(SQLiteDialect {}),
    };
    let generic = GenericDialect {};
    let (statements, starts) = match parse_with(dialect.as_ref(), sql)? {
        Ok(parsed) => parsed,
        // The generic dialect accepts some syntax the specific ones reject;
        // the engine's own error is the one worth reporting.
        Err(first) => match parse_with(&generic, sql)? {
            Ok(parsed) => parsed,
            Err(_) => {
                let message = first.to_string();
                return Err(SqlError {
                    line: error_line(&message),
                    message,
                    too_deep: false,
                });
            }
        },
    };
    // Block bodies with inner `;` would misalign the split; spans then.
    let aligned = starts.len() == statements.len();
    Ok(statements
        .into_iter()
        .enumerate()
        .map(|(i, stmt)| {
            // Not every statement carries a span (DROP does not), so the
            // token stream split at `;` is the primary source.
            let line = match starts.get(i) {
                Some(l) if aligned => *l,
                _ => usize::try_from(stmt.span().start.line).unwrap_or(0),
            };
            (stmt, line.max(1))
        })
        .collect())
}

/// `sql` parsed in `dialect`, with each statement's start line; refused (the
/// outer error) when its tokens nest deeper than [`MAX_DEPTH`], since what
/// sqlparser builds from them is dropped and walked recursively.
#[allow(clippy::type_complexity)]
fn parse_with(
    dialect: &dyn Dialect,
    sql: &str,
) -> Result<Result<(Vec<Statement>, Vec<usize>), ParserError>, SqlError> {
    let tokens = match Tokenizer::new(dialect, sql).tokenize_with_location() {
        Ok(tokens) => tokens,
        Err(e) => return Ok(Err(e.into())),
    };
    if let Some((depth, line)) = too_deep_at(&tokens) {
        return Err(SqlError {
            line,
            message: too_deep(depth, "brackets, operators, CASE"),
            too_deep: true,
        });
    }
    let starts = statement_lines(&tokens);
    Ok(Parser::new(dialect)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map(|statements| (statements, starts)))
}

/// One bracket or CASE of [`too_deep_at`].
#[derive(Debug, Default)]
struct SqlFrame {
    /// Depth of this frame's own node.
    base: usize,
    /// Operators, keywords and closed groups since the last `,`: each may nest
    /// what precedes it one deeper (`a + b + c` is built left-deep).
    run: usize,
    /// UNION, EXCEPT, INTERSECT, MINUS: they nest the query before them, commas
    /// of the select lists in between notwithstanding.
    set_operations: usize,
    /// Opened by CASE: WHEN, THEN and ELSE separate, END closes.
    case: bool,
}

impl SqlFrame {
    fn depth(&self) -> usize {
        self.base + self.run + self.set_operations
    }
}

/// An upper bound on how deep sqlparser's tree for `tokens` nests, with the line
/// where it first goes deeper than [`MAX_DEPTH`]; None when it never does.
fn too_deep_at(tokens: &[TokenWithSpan]) -> Option<(usize, usize)> {
    let mut frames = vec![SqlFrame::default()];
    let mut deepest = 0;
    let mut crossed_at = None;
    for t in tokens {
        let top_level = frames.len() == 1;
        let Some(top) = frames.last_mut() else {
            break;
        };
        let keyword = match &t.token {
            Token::Word(w) => Some(w.keyword),
            _ => None,
        };
        match (&t.token, keyword) {
            (Token::LParen | Token::LBracket | Token::LBrace, _) | (_, Some(Keyword::CASE)) => {
                let base = top.depth() + 1;
                frames.push(SqlFrame {
                    base,
                    case: keyword == Some(Keyword::CASE),
                    ..SqlFrame::default()
                });
            }
            (Token::RParen | Token::RBracket | Token::RBrace, _) => {
                if !top_level {
                    frames.pop();
                }
                if let Some(outer) = frames.last_mut() {
                    outer.run += 1;
                }
            }
            (_, Some(Keyword::END)) if top.case => {
                frames.pop();
                if let Some(outer) = frames.last_mut() {
                    outer.run += 1;
                }
            }
            (_, Some(Keyword::WHEN | Keyword::THEN | Keyword::ELSE)) if top.case => top.run = 0,
            (_, Some(Keyword::UNION | Keyword::EXCEPT | Keyword::INTERSECT | Keyword::MINUS)) => {
                top.set_operations += 1;
            }
            (Token::Comma, _) => top.run = 0,
            (Token::SemiColon, _) if top_level => *top = SqlFrame::default(),
            (Token::SemiColon, _) => top.run = 0,
            (_, Some(Keyword::NoKeyword)) => {}
            (
                Token::EOF
                | Token::Whitespace(_)
                | Token::Number(..)
                | Token::Placeholder(_)
                | Token::CopyData { .. }
                | Token::SingleQuotedString(_)
                | Token::DoubleQuotedString(_)
                | Token::TripleSingleQuotedString(_)
                | Token::TripleDoubleQuotedString(_)
                | Token::DollarQuotedString(_)
                | Token::SingleQuotedByteStringLiteral(_)
                | Token::DoubleQuotedByteStringLiteral(_)
                | Token::TripleSingleQuotedByteStringLiteral(_)
                | Token::TripleDoubleQuotedByteStringLiteral(_)
                | Token::SingleQuotedRawStringLiteral(_)
                | Token::DoubleQuotedRawStringLiteral(_)
                | Token::TripleSingleQuotedRawStringLiteral(_)
                | Token::TripleDoubleQuotedRawStringLiteral(_)
                | Token::NationalStringLiteral(_)
                | Token::QuoteDelimitedStringLiteral(_)
                | Token::NationalQuoteDelimitedStringLiteral(_)
                | Token::EscapedStringLiteral(_)
                | Token::UnicodeStringLiteral(_)
                | Token::HexStringLiteral(_),
                _,
            ) => {}
            _ => top.run += 1,
        }
        let depth = frames.last().map(SqlFrame::depth).unwrap_or(0);
        deepest = deepest.max(depth);
        if depth > MAX_DEPTH && crossed_at.is_none() {
            crossed_at = usize::try_from(t.span.start.line).ok().map(|l| l.max(1));
        }
    }
    crossed_at.map(|line| (deepest, line))
}

/// Start line of each `;`-separated statement, from the tokens.
fn statement_lines(tokens: &[TokenWithSpan]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut start = None;
    for t in tokens {
        match t.token {
            Token::Whitespace(_) | Token::EOF => {}
            Token::SemiColon => {
                if let Some(l) = start.take() {
                    out.push(l);
                }
            }
            _ => {
                if start.is_none() {
                    start = usize::try_from(t.span.start.line).ok();
                }
            }
        }
    }
    out.extend(start);
    out
}

/// sqlparser reports positions only inside its message: "... at Line: 3, Column: 7".
fn error_line(message: &str) -> usize {
    message
        .rfind("Line: ")
        .map(|i| &message[i + "Line: ".len()..])
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .filter(|l| *l > 0)
        .unwrap_or(1)
}

/// Unquoted identifiers fold to lower case on PostgreSQL only; MySQL and
/// SQLite keep what was written.
pub(crate) fn normalise_ident(ident: &Ident, engine: Engine) -> String {
    if ident.quote_style.is_none() && engine == Engine::Postgres {
        ident.value.to_lowercase()
    } else {
        ident.value.clone()
    }
}

/// (schema qualifier, object name).
fn split_name(name: &ObjectName, engine: Engine) -> (Option<String>, String) {
    let mut parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => normalise_ident(i, engine),
            other => other.to_string(),
        })
        .collect();
    let last = parts.pop().unwrap_or_default();
    let schema = (!parts.is_empty()).then(|| parts.join("."));
    (schema, last)
}

fn statement_effects(stmt: &Statement, line: usize, engine: Engine, out: &mut Vec<SqlEffect>) {
    let effect = |kind, name: &ObjectName, statement: &str| {
        let (schema, table) = split_name(name, engine);
        SqlEffect {
            kind,
            schema,
            table: Some(table),
            columns: Vec::new(),
            new_name: None,
            statement: statement.to_string(),
            line,
        }
    };
    match stmt {
        Statement::Drop {
            object_type, names, ..
        } => match object_type {
            ObjectType::Table => {
                for n in names {
                    out.push(effect(OpKind::DropTable, n, "DROP TABLE"));
                }
            }
            ObjectType::Schema | ObjectType::Database => {
                let what = if *object_type == ObjectType::Schema {
                    "DROP SCHEMA"
                } else {
                    "DROP DATABASE"
                };
                for n in names {
                    let (_, name) = split_name(n, engine);
                    out.push(SqlEffect {
                        kind: OpKind::Opaque,
                        schema: Some(name),
                        table: None,
                        columns: Vec::new(),
                        new_name: None,
                        statement: what.to_string(),
                        line,
                    });
                }
            }
            _ => {}
        },
        Statement::AlterTable(AlterTable {
            name, operations, ..
        }) => {
            let mut dropped = Vec::new();
            for op in operations {
                match op {
                    AlterTableOperation::DropColumn { column_names, .. } => {
                        dropped.extend(column_names.iter().map(|c| normalise_ident(c, engine)));
                    }
                    AlterTableOperation::RenameColumn {
                        old_column_name,
                        new_column_name,
                    } => out.push(SqlEffect {
                        columns: vec![normalise_ident(old_column_name, engine)],
                        new_name: Some(normalise_ident(new_column_name, engine)),
                        ..effect(OpKind::RenameColumn, name, "ALTER TABLE RENAME COLUMN")
                    }),
                    // MySQL's CHANGE [COLUMN] old new <type> renames when the names differ.
                    AlterTableOperation::ChangeColumn {
                        old_name, new_name, ..
                    } if normalise_ident(old_name, engine) != normalise_ident(new_name, engine) => {
                        out.push(SqlEffect {
                            columns: vec![normalise_ident(old_name, engine)],
                            new_name: Some(normalise_ident(new_name, engine)),
                            ..effect(OpKind::RenameColumn, name, "ALTER TABLE CHANGE COLUMN")
                        })
                    }
                    AlterTableOperation::RenameTable { table_name } => {
                        let (RenameTableNameKind::To(new) | RenameTableNameKind::As(new)) =
                            table_name;
                        out.push(SqlEffect {
                            new_name: Some(split_name(new, engine).1),
                            ..effect(OpKind::RenameTable, name, "ALTER TABLE RENAME TO")
                        });
                    }
                    _ => {}
                }
            }
            if !dropped.is_empty() {
                out.push(SqlEffect {
                    columns: dropped,
                    ..effect(OpKind::DropColumn, name, "ALTER TABLE DROP COLUMN")
                });
            }
        }
        Statement::Truncate(Truncate { table_names, .. }) => {
            for t in table_names {
                out.push(effect(OpKind::Truncate, &t.name, "TRUNCATE"));
            }
        }
        Statement::Delete(Delete {
            tables,
            from,
            selection: None,
            ..
        }) => {
            let what = "DELETE without WHERE";
            if tables.is_empty() {
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = from;
                for twj in from {
                    if let TableFactor::Table { name, .. } = &twj.relation {
                        out.push(effect(OpKind::Truncate, name, what));
                    }
                }
            } else {
                for t in tables {
                    out.push(effect(OpKind::Truncate, t, what));
                }
            }
        }
        Statement::RenameTable(renames) => {
            for r in renames {
                out.push(SqlEffect {
                    new_name: Some(split_name(&r.new_name, engine).1),
                    ..effect(OpKind::RenameTable, &r.old_name, "RENAME TABLE")
                });
            }
        }
        _ => {}
    }
}

/// Primary keys of the tables created so far in a SQL migration folder,
/// keyed by lower-cased table name.
#[derive(Default)]
struct SqlSchema {
    primary_keys: HashMap<String, Vec<String>>,
}

impl SqlSchema {
    fn apply(&mut self, stmt: &Statement, engine: Engine) {
        match stmt {
            Statement::CreateTable(CreateTable {
                name,
                columns,
                constraints,
                ..
            }) => {
                let mut pk: Vec<String> = columns
                    .iter()
                    .filter(|c| {
                        c.options
                            .iter()
                            .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
                    })
                    .map(|c| normalise_ident(&c.name, engine))
                    .collect();
                for c in constraints {
                    if let TableConstraint::PrimaryKey(pkc) = c {
                        pk.extend(pkc.columns.iter().filter_map(|ic| match &ic.column.expr {
                            Expr::Identifier(i) => Some(normalise_ident(i, engine)),
                            _ => None,
                        }));
                    }
                }
                let (_, table) = split_name(name, engine);
                self.primary_keys.insert(table.to_lowercase(), pk);
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                names,
                ..
            } => {
                for n in names {
                    self.primary_keys
                        .remove(&split_name(n, engine).1.to_lowercase());
                }
            }
            _ => {
                let mut effects = Vec::new();
                statement_effects(stmt, 1, engine, &mut effects);
                for e in effects {
                    match (e.kind, e.table, e.new_name) {
                        (OpKind::RenameTable, Some(old), Some(new)) => {
                            if let Some(pk) = self.primary_keys.remove(&old.to_lowercase()) {
                                self.primary_keys.insert(new.to_lowercase(), pk);
                            }
                        }
                        (OpKind::RenameColumn, Some(table), Some(new)) => {
                            if let Some(pk) = self.primary_keys.get_mut(&table.to_lowercase()) {
                                for c in pk.iter_mut().filter(|c| e.columns.contains(c)) {
                                    *c = new.clone();
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn primary_key(&self, table: &str) -> Vec<String> {
        self.primary_keys
            .get(&table.to_lowercase())
            .cloned()
            .unwrap_or_default()
    }
}

/// Analyses a folder of plain SQL migrations: every `*.sql` / `*.up.sql`
/// file below `dir` (`*.down.sql` ignored) is one migration, applied in
/// file-name order (digit runs compared numerically, so `V10` follows `V9`).
/// A migration's id is its path relative to `dir` without the extension.
/// Analyses a folder of plain SQL migrations, on a thread of its own with a
/// known stack (see `depth`).
pub fn analyse_sql_dir(dir: &Path, engine: Engine) -> Result<Analysis, Error> {
    depth::on_analysis_stack("migrations", || sql_dir(dir, engine)).map_err(Error::Thread)?
}

fn sql_dir(dir: &Path, engine: Engine) -> Result<Analysis, Error> {
    let meta = std::fs::metadata(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory(dir.to_path_buf()));
    }
    let mut problems = Vec::new();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let walker = WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(Problem {
                    file: e.path().map(Path::to_path_buf).unwrap_or_default(),
                    line: 0,
                    message: format!("cannot read directory entry: {e}"),
                });
                continue;
            }
        };
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy();
        if !path.is_file() || !file_name.ends_with(".sql") || file_name.ends_with(".down.sql") {
            continue;
        }
        let rel = path.strip_prefix(dir).unwrap_or(path);
        let rel: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let rel = rel.join("/");
        let id = rel
            .strip_suffix(".up.sql")
            .or_else(|| rel.strip_suffix(".sql"))
            .unwrap_or(&rel)
            .to_string();
        files.push((id, path.to_path_buf()));
    }
    files.sort_by(|a, b| natural_cmp(&a.0, &b.0));

    let mut schema = SqlSchema::default();
    let mut migrations = Vec::with_capacity(files.len());
    let mut previous: Option<String> = None;
    for (id, path) in files {
        let migration = MigrationId::new("", id.clone());
        let mut operations = Vec::new();
        let text = match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => Some(t),
                Err(e) => {
                    let bytes = e.as_bytes();
                    let valid = e.utf8_error().valid_up_to();
                    problems.push(Problem {
                        file: path.clone(),
                        line: 1 + bytes[..valid].iter().filter(|b| **b == b'\n').count(),
                        message: format!("not valid UTF-8: {}", e.utf8_error()),
                    });
                    None
                }
            },
            Err(e) => {
                problems.push(Problem {
                    file: path.clone(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                });
                None
            }
        };
        let parsed = text.as_deref().map(|t| parse(t, engine));
        match parsed {
            Some(Ok(statements)) => {
                for (stmt, line) in &statements {
                    let mut effects = Vec::new();
                    statement_effects(stmt, *line, engine, &mut effects);
                    for e in effects {
                        let primary_key = e
                            .table
                            .as_deref()
                            .map(|t| schema.primary_key(t))
                            .unwrap_or_default();
                        operations.push(Operation {
                            migration: migration.clone(),
                            kind: e.kind,
                            schema: e.schema,
                            table: e.table,
                            columns: e.columns,
                            primary_key,
                            new_name: e.new_name,
                            source: e.statement,
                            file: path.clone(),
                            line: e.line,
                        });
                    }
                    schema.apply(stmt, engine);
                }
            }
            Some(Err(err)) => {
                problems.push(Problem {
                    file: path.clone(),
                    line: err.line,
                    message: err.to_string(),
                });
                operations.push(opaque_sql(&migration, &path, err.line));
            }
            None => operations.push(opaque_sql(&migration, &path, 0)),
        }
        migrations.push(MigrationPlan {
            id: migration,
            file: path,
            previous: previous.replace(id),
            applied: false,
            replaces: Vec::new(),
            operations,
        });
    }
    Ok(Analysis {
        migrations,
        problems,
    })
}

fn opaque_sql(migration: &MigrationId, file: &Path, line: usize) -> Operation {
    Operation {
        migration: migration.clone(),
        kind: OpKind::Opaque,
        schema: None,
        table: None,
        columns: Vec::new(),
        primary_key: Vec::new(),
        new_name: None,
        source: "unparseable SQL".to_string(),
        file: file.to_path_buf(),
        line,
    }
}

/// Compares digit runs by value, everything else byte-wise.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a_rest, mut b_rest) = (a, b);
    loop {
        match (a_rest.is_empty(), b_rest.is_empty()) {
            (true, true) => return a.cmp(b),
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let a_digit = a_rest.starts_with(|c: char| c.is_ascii_digit());
        let b_digit = b_rest.starts_with(|c: char| c.is_ascii_digit());
        let take = |s: &str, digit: bool| {
            s.find(|c: char| c.is_ascii_digit() != digit)
                .unwrap_or(s.len())
        };
        let (ac, bc) = (take(a_rest, a_digit), take(b_rest, b_digit));
        let (a_chunk, b_chunk) = (&a_rest[..ac], &b_rest[..bc]);
        let ord = if a_digit && b_digit {
            let (a_num, b_num) = (
                a_chunk.trim_start_matches('0'),
                b_chunk.trim_start_matches('0'),
            );
            a_num.len().cmp(&b_num.len()).then_with(|| a_num.cmp(b_num))
        } else {
            a_chunk.cmp(b_chunk)
        };
        if ord != Ordering::Equal {
            return ord;
        }
        a_rest = &a_rest[ac..];
        b_rest = &b_rest[bc..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::depth::test_stack::{WORKER_STACK, on_stack};
    use proptest::prelude::*;

    const ALL: [Engine; 3] = [Engine::Postgres, Engine::Mysql, Engine::Sqlite];

    fn one(sql: &str, engine: Engine) -> SqlEffect {
        let mut effects = analyse_sql(sql, engine).unwrap_or_else(|e| panic!("{engine:?}: {e}"));
        assert_eq!(effects.len(), 1, "{engine:?} {sql}: {effects:?}");
        effects.remove(0)
    }

    fn quote(engine: Engine) -> char {
        if engine == Engine::Mysql { '`' } else { '"' }
    }

    #[test]
    fn drop_table_on_every_dialect() {
        for engine in ALL {
            let e = one("DROP TABLE shop_product;", engine);
            assert_eq!(e.kind, OpKind::DropTable);
            assert_eq!(e.table.as_deref(), Some("shop_product"));
            assert_eq!(e.statement, "DROP TABLE");
            let q = quote(engine);
            let e = one(&format!("DROP TABLE IF EXISTS {q}Shop Items{q}"), engine);
            assert_eq!(e.table.as_deref(), Some("Shop Items"), "{engine:?}");
        }
    }

    #[test]
    fn drop_several_tables_in_one_statement() {
        for engine in ALL {
            let effects = analyse_sql("DROP TABLE a, b;", engine).unwrap_or_default();
            let tables: Vec<_> = effects.iter().filter_map(|e| e.table.as_deref()).collect();
            assert_eq!(tables, ["a", "b"], "{engine:?}");
        }
    }

    #[test]
    fn schema_qualifier_is_kept_apart() {
        let e = one("DROP TABLE public.shop_product CASCADE", Engine::Postgres);
        assert_eq!(
            (e.schema.as_deref(), e.table.as_deref()),
            (Some("public"), Some("shop_product"))
        );
        let e = one("DROP TABLE `mydb`.`Shop`", Engine::Mysql);
        assert_eq!(
            (e.schema.as_deref(), e.table.as_deref()),
            (Some("mydb"), Some("Shop"))
        );
        let e = one("DROP TABLE main.t", Engine::Sqlite);
        assert_eq!(
            (e.schema.as_deref(), e.table.as_deref()),
            (Some("main"), Some("t"))
        );
    }

    #[test]
    fn unquoted_identifiers_fold_on_postgres_only() {
        let e = one("DROP TABLE Shop_Product", Engine::Postgres);
        assert_eq!(e.table.as_deref(), Some("shop_product"));
        let e = one("DROP TABLE \"Shop_Product\"", Engine::Postgres);
        assert_eq!(e.table.as_deref(), Some("Shop_Product"));
        let e = one("DROP TABLE Shop_Product", Engine::Mysql);
        assert_eq!(e.table.as_deref(), Some("Shop_Product"));
        let e = one("DROP TABLE Shop_Product", Engine::Sqlite);
        assert_eq!(e.table.as_deref(), Some("Shop_Product"));
    }

    #[test]
    fn drop_columns() {
        for engine in ALL {
            let q = quote(engine);
            let e = one(
                &format!("ALTER TABLE {q}shop_product{q} DROP COLUMN {q}legacy_sku{q}"),
                engine,
            );
            assert_eq!(e.kind, OpKind::DropColumn);
            assert_eq!(e.table.as_deref(), Some("shop_product"));
            assert_eq!(e.columns, ["legacy_sku"], "{engine:?}");
        }
        // Several columns in one statement, on the dialects that allow it.
        for engine in [Engine::Postgres, Engine::Mysql] {
            let e = one(
                "ALTER TABLE t DROP COLUMN a, DROP COLUMN IF EXISTS b, DROP c",
                engine,
            );
            assert_eq!(e.columns, ["a", "b", "c"], "{engine:?}");
        }
    }

    #[test]
    fn truncate_and_unqualified_delete() {
        for engine in ALL {
            if engine != Engine::Sqlite {
                let e = one("TRUNCATE TABLE shop_log", engine);
                assert_eq!(
                    (e.kind, e.table.as_deref()),
                    (OpKind::Truncate, Some("shop_log"))
                );
            }
            let e = one("DELETE FROM shop_log", engine);
            assert_eq!(
                (e.kind, e.table.as_deref()),
                (OpKind::Truncate, Some("shop_log"))
            );
            assert_eq!(e.statement, "DELETE without WHERE");
            let none = analyse_sql("DELETE FROM shop_log WHERE created < '2020-01-01'", engine);
            assert_eq!(none, Ok(vec![]), "{engine:?}");
        }
        let effects = analyse_sql("TRUNCATE a, b RESTART IDENTITY CASCADE", Engine::Postgres);
        assert_eq!(effects.map(|v| v.len()), Ok(2));
    }

    #[test]
    fn renames() {
        for engine in ALL {
            let e = one("ALTER TABLE old_t RENAME TO new_t", engine);
            assert_eq!(e.kind, OpKind::RenameTable);
            assert_eq!(
                (e.table.as_deref(), e.new_name.as_deref()),
                (Some("old_t"), Some("new_t"))
            );
            let e = one("ALTER TABLE t RENAME COLUMN a TO b", engine);
            assert_eq!(e.kind, OpKind::RenameColumn);
            assert_eq!(
                (e.columns.clone(), e.new_name.as_deref()),
                (vec!["a".to_string()], Some("b"))
            );
        }
        let effects =
            analyse_sql("RENAME TABLE `a` TO `b`, c TO d", Engine::Mysql).unwrap_or_default();
        let pairs: Vec<_> = effects
            .iter()
            .map(|e| {
                (
                    e.table.clone().unwrap_or_default(),
                    e.new_name.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(pairs, [("a".into(), "b".into()), ("c".into(), "d".into())]);
        let e = one(
            "ALTER TABLE t CHANGE `old` `new` INT NOT NULL",
            Engine::Mysql,
        );
        assert_eq!(
            (e.kind, e.new_name.as_deref()),
            (OpKind::RenameColumn, Some("new"))
        );
        assert_eq!(
            analyse_sql("ALTER TABLE t CHANGE a a BIGINT", Engine::Mysql),
            Ok(vec![])
        );
    }

    #[test]
    fn harmless_statements_yield_nothing() {
        let sql = "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1);\n\
                   UPDATE t SET id = 2; CREATE INDEX i ON t (id); DROP INDEX i; DROP VIEW v;\n\
                   ALTER TABLE t ADD COLUMN c INT;";
        assert_eq!(analyse_sql(sql, Engine::Postgres), Ok(vec![]));
        assert_eq!(analyse_sql("", Engine::Postgres), Ok(vec![]));
        assert_eq!(analyse_sql("-- nothing\n", Engine::Sqlite), Ok(vec![]));
    }

    #[test]
    fn drop_schema_is_opaque() {
        let e = one("DROP SCHEMA legacy CASCADE", Engine::Postgres);
        assert_eq!(
            (e.kind, e.table.clone(), e.schema.as_deref()),
            (OpKind::Opaque, None, Some("legacy"))
        );
    }

    #[test]
    fn statement_lines() {
        let sql = "CREATE TABLE t (id INT);\n\nDROP TABLE t;\nALTER TABLE u\n  DROP COLUMN c;";
        let lines: Vec<_> = analyse_sql(sql, Engine::Postgres)
            .unwrap_or_default()
            .iter()
            .map(|e| e.line)
            .collect();
        assert_eq!(lines, [3, 4]);
    }

    #[test]
    fn unparseable_sql_reports_its_line() {
        let err = analyse_sql("SELECT 1;\nDROP TABLE;\n", Engine::Postgres).err();
        assert_eq!(err.map(|e| e.line), Some(2));
        let err = analyse_sql("THIS IS NOT SQL", Engine::Mysql).err();
        assert_eq!(err.map(|e| e.line), Some(1));
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["V10__x", "V2__y", "V1__z", "0002_b", "0001_a", "V001__q"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["0001_a", "0002_b", "V001__q", "V1__z", "V2__y", "V10__x"]
        );
    }

    fn write(dir: &Path, rel: &str, content: &[u8]) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_default();
        }
        std::fs::write(path, content).unwrap_or_default();
    }

    #[test]
    fn sql_dir() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path();
        write(dir, "V1__init.sql", b"CREATE TABLE product (sku TEXT, shop INT, PRIMARY KEY (shop, sku));\nCREATE TABLE log (id SERIAL PRIMARY KEY);");
        write(
            dir,
            "V2__rename.sql",
            b"ALTER TABLE product RENAME TO item;",
        );
        write(
            dir,
            "V10__drop.sql",
            b"\n\nALTER TABLE item DROP COLUMN shop;\nTRUNCATE log;",
        );
        write(dir, "V3__down.down.sql", b"DROP TABLE everything;");
        write(dir, "V4__broken.up.sql", b"DROP TABLE (((;");
        write(dir, "V5__latin1.sql", b"-- caf\xe9\nDROP TABLE x;");
        write(dir, "notes.txt", b"DROP TABLE ignored;");
        let a = analyse_sql_dir(dir, Engine::Postgres).unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<_> = a.migrations.iter().map(|m| m.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "V1__init",
                "V2__rename",
                "V4__broken",
                "V5__latin1",
                "V10__drop"
            ]
        );
        assert_eq!(a.migrations[0].previous, None);
        assert_eq!(a.migrations[4].previous.as_deref(), Some("V5__latin1"));

        let rename = &a.migrations[1].operations[0];
        assert_eq!(
            (rename.kind, rename.new_name.as_deref()),
            (OpKind::RenameTable, Some("item"))
        );
        assert_eq!(rename.primary_key, ["shop", "sku"]);
        let drop = &a.migrations[4].operations;
        assert_eq!(drop.len(), 2);
        assert_eq!((drop[0].kind, drop[0].line), (OpKind::DropColumn, 3));
        assert_eq!(drop[0].primary_key, ["shop", "sku"]);
        assert_eq!(
            (drop[1].kind, drop[1].primary_key.clone()),
            (OpKind::Truncate, vec!["id".to_string()])
        );

        assert_eq!(a.migrations[2].operations[0].kind, OpKind::Opaque);
        assert_eq!(a.migrations[3].operations[0].kind, OpKind::Opaque);
        let problems: Vec<_> = a
            .problems
            .iter()
            .map(|p| {
                (
                    p.file.file_name().map(|f| f.to_string_lossy().into_owned()),
                    p.line,
                )
            })
            .collect();
        assert_eq!(
            problems,
            [
                (Some("V4__broken.up.sql".into()), 1),
                (Some("V5__latin1.sql".into()), 1)
            ]
        );
    }

    #[test]
    fn sql_dir_must_exist() {
        let err = analyse_sql_dir(Path::new("/nonexistent/dropguard"), Engine::Postgres);
        assert!(matches!(err, Err(Error::Io { .. })));
    }

    /// Every way SQL nests, about `n` levels deep, as one statement.
    fn deep_statements(n: usize) -> Vec<(&'static str, String)> {
        vec![
            (
                "parentheses",
                format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
            ),
            (
                "calls",
                format!("SELECT {}1{}", "abs(".repeat(n), ")".repeat(n)),
            ),
            ("sum", format!("SELECT 1{}", " + 1".repeat(n))),
            (
                "concatenation",
                format!("SELECT 'a'{}", " || 'a'".repeat(n)),
            ),
            (
                "and",
                format!("SELECT 1 FROM t WHERE a = 1{}", " AND a = 1".repeat(n)),
            ),
            ("not", format!("SELECT {}TRUE", "NOT ".repeat(n))),
            ("minus", format!("SELECT {}1", "- ".repeat(n))),
            ("casts", format!("SELECT x{}", "::int".repeat(n))),
            ("subscripts", format!("SELECT x{}", "[1]".repeat(n))),
            (
                "case",
                format!(
                    "SELECT {}1{}",
                    "CASE WHEN a THEN ".repeat(n),
                    " END".repeat(n)
                ),
            ),
            (
                "subqueries",
                format!(
                    "SELECT * FROM {}t{}",
                    "(SELECT * FROM ".repeat(n),
                    ") AS s".repeat(n)
                ),
            ),
            (
                "unions",
                format!("SELECT 1, 2{}", " UNION SELECT 1, 2".repeat(n)),
            ),
            (
                "in lists",
                format!("SELECT 1 IN {}1{}", "(1, 1 IN ".repeat(n), ")".repeat(n)),
            ),
        ]
    }

    #[test]
    fn deeply_nested_sql_is_refused_before_it_is_parsed() {
        for n in [MAX_DEPTH + 1, 5_000] {
            for (name, deep) in deep_statements(n) {
                for engine in ALL {
                    let sql = format!("SELECT 1;\n{deep};\n");
                    let err = on_stack(WORKER_STACK, move || analyse_sql(&sql, engine).err());
                    let Some(err) = err else {
                        panic!("{name} at {n} on {engine:?}: analysed")
                    };
                    assert!(err.too_deep, "{name} at {n} on {engine:?}: {err}");
                    assert_eq!(err.line, 2, "{name}");
                    assert!(
                        err.to_string()
                            .starts_with("SQL not analysed (line 2): nests "),
                        "{err}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_deepest_sql_let_through_is_parsed_on_a_tokio_worker_stack() {
        for (name, _) in deep_statements(1) {
            // The largest n of this shape the bound lets through.
            let deepest = (1..=MAX_DEPTH)
                .rev()
                .filter_map(|n| deep_statements(n).into_iter().find(|(s, _)| *s == name))
                .find(|(_, sql)| {
                    let tokens = Tokenizer::new(&GenericDialect {}, sql)
                        .tokenize_with_location()
                        .unwrap_or_default();
                    too_deep_at(&tokens).is_none()
                });
            let Some((_, sql)) = deepest else {
                panic!("{name}: not even 1 level passes")
            };
            for engine in ALL {
                let sql = sql.clone();
                // sqlparser refuses some of these itself (its recursion limit is 50):
                // an error is fine, a crash is not.
                let analysed = on_stack(WORKER_STACK, move || analyse_sql(&sql, engine));
                if let Err(err) = analysed {
                    assert!(!err.too_deep, "{name} on {engine:?}: {err}");
                }
            }
        }
    }

    #[test]
    fn ordinary_sql_measures_far_below_the_limit() {
        for (name, sql) in deep_statements(5) {
            let tokens = Tokenizer::new(&PostgreSqlDialect {}, &sql)
                .tokenize_with_location()
                .unwrap_or_default();
            assert_eq!(too_deep_at(&tokens), None, "{name}");
        }
        // Long, flat statements: many columns, rows, branches.
        let columns: Vec<String> = (0..500)
            .map(|i| format!("c{i} VARCHAR(10) NOT NULL DEFAULT 'x' CHECK (c{i} <> '')"))
            .collect();
        let rows: Vec<String> = (0..500).map(|i| format!("({i}, -{i}, 'r{i}')")).collect();
        let branches: String = (0..300).map(|i| format!(" WHEN {i} THEN 'v{i}'")).collect();
        for sql in [
            format!("CREATE TABLE t ({});", columns.join(", ")),
            format!("INSERT INTO t VALUES {};", rows.join(", ")),
            format!("UPDATE t SET s = CASE n{branches} ELSE NULL END;"),
            format!(
                "SELECT {} FROM t;",
                (0..500)
                    .map(|i| format!("c{i} AS a{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ] {
            assert!(analyse_sql(&sql, Engine::Postgres).is_ok(), "{sql}");
        }
    }

    #[test]
    fn sqlparsers_own_recursion_limit_holds_below_ours_and_is_a_problem() {
        // 60 parentheses pass the bound; sqlparser stops at 50 itself.
        let sql = format!("SELECT {}1{};", "(".repeat(60), ")".repeat(60));
        for engine in ALL {
            let sql = sql.clone();
            let err = on_stack(WORKER_STACK, move || analyse_sql(&sql, engine).err());
            let Some(err) = err else {
                panic!("{engine:?}: analysed")
            };
            assert!(!err.too_deep, "{err}");
            assert!(err.message.contains("recursion limit"), "{err}");
        }
    }

    #[test]
    fn a_deeply_nested_sql_migration_is_a_problem_not_a_crash() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write(
            dir.path(),
            "0001_init.up.sql",
            b"CREATE TABLE items (id INTEGER PRIMARY KEY, sku TEXT);\n",
        );
        let deep = format!(
            "UPDATE items SET sku = NULL WHERE id = 1{};\n",
            " + 1".repeat(100_000)
        );
        write(
            dir.path(),
            "0002_deep.up.sql",
            format!("-- computed\n{deep}").as_bytes(),
        );
        write(
            dir.path(),
            "0003_drop.up.sql",
            b"ALTER TABLE items DROP COLUMN sku;\n",
        );
        let path = dir.path().to_path_buf();
        let analysis = on_stack(WORKER_STACK, move || {
            analyse_sql_dir(&path, Engine::Postgres)
        });
        let analysis = analysis.unwrap_or_else(|e| panic!("{e}"));
        let [problem] = analysis.problems.as_slice() else {
            panic!("{:?}", analysis.problems)
        };
        assert!(problem.file.ends_with("0002_deep.up.sql"), "{problem:?}");
        assert_eq!(problem.line, 2);
        assert!(problem.message.contains("levels deep"), "{problem:?}");
        // The file is opaque; the others are still analysed.
        let kinds: Vec<_> = analysis
            .migrations
            .iter()
            .flat_map(|m| m.operations.iter().map(|o| (m.id.name.as_str(), o.kind)))
            .collect();
        assert_eq!(
            kinds,
            [
                ("0002_deep", OpKind::Opaque),
                ("0003_drop", OpKind::DropColumn)
            ]
        );
    }

    proptest! {
        #[test]
        fn identifiers_normalise(name in "t_[a-z0-9_]{0,20}", upper in any::<bool>(), schema in proptest::option::of("s_[a-z0-9]{0,8}")) {
            let written = if upper { name.to_uppercase() } else { name.clone() };
            let qualified = |q: char| match &schema {
                Some(s) => format!("{q}{s}{q}.{q}{written}{q}"),
                None => format!("{q}{written}{q}"),
            };
            // Unquoted: folded on PostgreSQL only.
            let plain = match &schema { Some(s) => format!("{s}.{written}"), None => written.clone() };
            let pg = one(&format!("DROP TABLE {plain}"), Engine::Postgres);
            prop_assert_eq!(pg.table.as_deref(), Some(name.as_str()));
            prop_assert_eq!(pg.schema.clone(), schema.clone());
            let my = one(&format!("DROP TABLE {plain}"), Engine::Mysql);
            prop_assert_eq!(my.table.as_deref(), Some(written.as_str()));
            // Quoted: kept exactly, quotes stripped.
            let pg = one(&format!("ALTER TABLE {} DROP COLUMN \"{written}\"", qualified('"')), Engine::Postgres);
            prop_assert_eq!(pg.table.as_deref(), Some(written.as_str()));
            prop_assert_eq!(pg.columns.clone(), vec![written.clone()]);
            let my = one(&format!("TRUNCATE TABLE {}", qualified('`')), Engine::Mysql);
            prop_assert_eq!(my.table.as_deref(), Some(written.as_str()));
            prop_assert_eq!(my.schema, schema.clone());
            let lite = one(&format!("DELETE FROM {}", qualified('"')), Engine::Sqlite);
            prop_assert_eq!(lite.table.as_deref(), Some(written.as_str()));
        }
    }
}
