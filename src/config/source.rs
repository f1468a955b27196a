//! The configuration text before it becomes structs: TOML syntax, the line of every
//! key, `${VAR}` expansion, and deserialization that reports every unknown key.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

use super::Problem;

/// A parsed configuration file with `${VAR}` already expanded.
pub struct Document {
    table: toml::Table,
    /// Dotted key path (`logs.file[0].path`) → 1-based line where the key is written.
    lines: HashMap<String, usize>,
}

impl Document {
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Vec<Problem>> {
        let syntax_error = |err: toml::de::Error| {
            vec![Problem {
                key: String::new(),
                line: err.span().map(|span| line_of(text, span.start)),
                message: format!("invalid TOML: {}", err.message()),
            }]
        };
        let spanned = DeTable::parse(text).map_err(syntax_error)?;
        let mut lines = HashMap::new();
        record_table_lines(text, spanned.get_ref(), "", &mut lines);
        let mut table: toml::Table = toml::from_str(text).map_err(syntax_error)?;

        let mut doc_problems = Vec::new();
        for (key, value) in table.iter_mut() {
            expand_value(value, key, env, &lines, &mut doc_problems);
        }
        doc_problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        if doc_problems.is_empty() {
            Ok(Self { table, lines })
        } else {
            Err(doc_problems)
        }
    }

    /// The line of a dotted key path, if the key is written in the file.
    pub fn line(&self, key: &str) -> Option<usize> {
        self.lines.get(key).copied()
    }

    /// Deserializes into `T`, reporting every key `T` does not know and the first
    /// value of the wrong type, each with its path and line.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Vec<Problem>> {
        let mut unknown = Vec::new();
        let value = toml::Value::Table(self.table.clone());
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
        let result: Result<T, _> =
            serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut record));
        // Written "unknown key detect.min_eror (line 12)": the key is the message.
        let mut problems: Vec<Problem> = unknown
            .into_iter()
            .map(|key| {
                let line = self.line(&key);
                let at = line.map(|n| format!(" (line {n})")).unwrap_or_default();
                Problem {
                    key: String::new(),
                    line,
                    message: format!(
                        "unknown key {key}{at}; check its spelling against config/dropguard.example.toml"
                    ),
                }
            })
            .collect();
        match result {
            Ok(config) if problems.is_empty() => return Ok(config),
            Ok(_) => {}
            Err(err) => problems.push(self.type_problem(&err)),
        }
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(problems)
    }

    fn type_problem(&self, err: &serde_path_to_error::Error<toml::de::Error>) -> Problem {
        let path = error_path(err.path());
        let message = err.inner().message().to_string();
        // serde says "missing field `url`" at the enclosing table; name the key itself.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            let key = join(&path, field);
            return Problem {
                line: self.line(&path),
                message: format!("required key {key} is missing"),
                key,
            };
        }
        Problem {
            line: self.line(&path),
            key: path,
            message,
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn record_table_lines(
    text: &str,
    table: &DeTable<'_>,
    prefix: &str,
    lines: &mut HashMap<String, usize>,
) {
    for (key, value) in table {
        let path = join(prefix, key.get_ref());
        lines.insert(path.clone(), line_of(text, key.span().start));
        record_value_lines(text, value.get_ref(), &path, lines);
    }
}

fn record_value_lines(
    text: &str,
    value: &DeValue<'_>,
    path: &str,
    lines: &mut HashMap<String, usize>,
) {
    match value {
        DeValue::Table(table) => record_table_lines(text, table, path, lines),
        DeValue::Array(array) => {
            for (index, item) in array.iter().enumerate() {
                let item_path = format!("{path}[{index}]");
                lines.insert(item_path.clone(), line_of(text, item.span().start));
                record_value_lines(text, item.get_ref(), &item_path, lines);
            }
        }
        _ => {}
    }
}

fn expand_value(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    lines: &HashMap<String, usize>,
    problems: &mut Vec<Problem>,
) {
    match value {
        toml::Value::String(text) => match expand(text, env) {
            Ok(expanded) => *text = expanded,
            Err(message) => problems.push(Problem {
                key: path.to_string(),
                line: lines.get(path).copied(),
                message,
            }),
        },
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{index}]"), env, lines, problems);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                expand_value(item, &join(path, key), env, lines, problems);
            }
        }
        _ => {}
    }
}

/// Expands `${NAME}` and `${NAME:-default}` from `env`; `$$` is a literal `$`.
/// A variable that is not set and has no default is an error naming it.
pub fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let close = body.find('}').ok_or_else(|| {
                format!("unclosed \"${{\" in {text:?}: write ${{NAME}}, or $$ for a literal $")
            })?;
            let inner = &body[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "invalid variable name {name:?} in \"${{{inner}}}\": use letters, digits and _"
                ));
            }
            match (env(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set; export it, or write ${{{name}:-default}}"
                    ));
                }
            }
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => join(&ignored_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

fn error_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => out = join(&out, key),
            Segment::Unknown => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("abc".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_defaults_and_escapes() {
        assert_eq!(expand("x${TOKEN}y", &env).unwrap(), "xabcy");
        assert_eq!(expand("${MISSING:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("${EMPTY:-fallback}", &env).unwrap(), "");
        assert_eq!(
            expand("cost: $$5 and $HOME", &env).unwrap(),
            "cost: $5 and $HOME"
        );
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = expand("${SLACK_WEBHOOK_URL}", &env).unwrap_err();
        assert!(err.contains("SLACK_WEBHOOK_URL is not set"), "{err}");
        assert!(expand("${UNCLOSED", &env).unwrap_err().contains("unclosed"));
        assert!(
            expand("${1BAD}", &env)
                .unwrap_err()
                .contains("invalid variable name")
        );
    }

    #[test]
    fn lines_are_recorded_for_nested_and_array_keys() {
        let text = "environment = \"x\"\n[detect]\nwindow = \"5s\"\n\n[[logs.file]]\npath = \"a\"\n[[logs.file]]\npath = \"b\"\n";
        let doc = Document::parse(text, &env).unwrap();
        assert_eq!(doc.line("detect.window"), Some(3));
        assert_eq!(doc.line("logs.file[0].path"), Some(6));
        assert_eq!(doc.line("logs.file[1].path"), Some(8));
    }
}
