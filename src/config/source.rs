//! The configuration text before it becomes structs: TOML syntax, the line of every
//! key, `${VAR}` expansion, and deserialization that reports every unknown key.

use std::collections::{HashMap, HashSet};

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
        let line_index = LineIndex::new(text);
        let syntax_error = |err: toml::de::Error| {
            vec![Problem {
                key: String::new(),
                line: err.span().map(|span| line_index.line(span.start)),
                message: format!("invalid TOML: {}", err.message()),
            }]
        };
        let spanned = DeTable::parse(text).map_err(syntax_error)?;
        let mut lines = HashMap::new();
        record_table_lines(&line_index, spanned.get_ref(), "", &mut lines);
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

    /// Deserializes into `T`, reporting every key `T` does not know and every
    /// value of the wrong type (up to [`MAX_TYPE_PROBLEMS`]), each with its path
    /// and line.
    ///
    /// serde stops at the first wrong value. So after each one the value is taken
    /// out of a copy of the document and serde runs again, until it gets through:
    /// each pass finds the next wrong value. Taking out a required value makes its
    /// table incomplete; that "missing" is ours, not the user's, and is not
    /// reported: the table goes too (serde checks for missing keys only once it has
    /// read all the others, so nothing of it is left unchecked).
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Vec<Problem>> {
        let mut table = self.table.clone();
        let mut unknown: Vec<String> = Vec::new();
        let mut problems: Vec<Problem> = Vec::new();
        let mut taken_out: HashSet<Vec<Step>> = HashSet::new();
        let mut renumbered = Renumbered::default();
        let config = loop {
            let mut ignored = Vec::new();
            let value = toml::Value::Table(table.clone());
            let mut record = |path: serde_ignored::Path<'_>| ignored.push(ignored_steps(&path));
            let result: Result<T, _> = serde_path_to_error::deserialize(
                serde_ignored::Deserializer::new(value, &mut record),
            );
            for steps in ignored {
                let key = render(&renumbered.original(&steps));
                if !unknown.contains(&key) {
                    unknown.push(key);
                }
            }
            let err = match result {
                Ok(config) => break Some(config),
                Err(err) => err,
            };
            let (at, exact) = error_steps(err.path());
            let original = renumbered.original(&at);
            let message = err.inner().message();
            let ours = missing_field(message).is_some_and(|field| {
                let mut key = original.clone();
                key.push(Step::Key(field.to_string()));
                taken_out.contains(&key)
            });
            if !ours {
                problems.push(self.type_problem(&render(&original), message));
            }
            if at.is_empty()
                || !exact
                || problems.len() >= MAX_TYPE_PROBLEMS
                || !take_out(&mut table, &at, &original, &mut renumbered)
            {
                break None;
            }
            taken_out.insert(original);
        };
        // Written "unknown key detect.min_eror (line 12)": the key is the message.
        problems.extend(unknown.into_iter().map(|key| {
            let line = self.line(&key);
            let at = line.map(|n| format!(" (line {n})")).unwrap_or_default();
            Problem {
                key: String::new(),
                line,
                message: format!(
                    "unknown key {key}{at}; check its spelling against config/dropguard.example.toml"
                ),
            }
        }));
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => {
                problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
                Err(problems)
            }
        }
    }

    fn type_problem(&self, path: &str, message: &str) -> Problem {
        // serde says "missing field `url`" at the enclosing table; name the key itself.
        if let Some(field) = missing_field(message) {
            let key = join(path, field);
            return Problem {
                line: self.line(path),
                message: format!("required key {key} is missing"),
                key,
            };
        }
        Problem {
            line: self.line(path),
            key: path.to_string(),
            message: message.to_string(),
        }
    }
}

/// How many wrong values one run reports: enough for any real file, and a
/// bound on the passes a hostile one can cause.
const MAX_TYPE_PROBLEMS: usize = 50;

/// One step of a key path: a table's key or an array's index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Key(String),
    Index(usize),
}

/// `logs.file[0].path`.
fn render(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(key) => out = join(&out, key),
            Step::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// The field serde says is missing, from its "missing field `url`".
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
}

/// The indices array elements had in the file, for arrays some element was
/// taken out of: later elements moved down, and must be named as written.
#[derive(Default)]
struct Renumbered {
    /// Original path of an array → the original index of each element left.
    arrays: HashMap<Vec<Step>, Vec<usize>>,
}

impl Renumbered {
    /// `steps` in the copy → the same place in the file.
    fn original(&self, steps: &[Step]) -> Vec<Step> {
        let mut out = Vec::with_capacity(steps.len());
        for step in steps {
            let step = match step {
                Step::Index(index) => Step::Index(
                    self.arrays
                        .get(&out)
                        .and_then(|left: &Vec<usize>| left.get(*index))
                        .copied()
                        .unwrap_or(*index),
                ),
                key => key.clone(),
            };
            out.push(step);
        }
        out
    }
}

/// Takes the value at `at` out of `table`; `original` is its path in the file.
/// False when there is nothing there to take (then another pass would only
/// find the same error).
fn take_out(
    table: &mut toml::Table,
    at: &[Step],
    original: &[Step],
    renumbered: &mut Renumbered,
) -> bool {
    let Some((last, parents)) = at.split_last() else {
        return false;
    };
    let mut node: &mut toml::Value = match parents.first() {
        None => {
            return match last {
                Step::Key(key) => table.remove(key).is_some(),
                Step::Index(_) => false,
            };
        }
        Some(Step::Key(key)) => match table.get_mut(key) {
            Some(value) => value,
            None => return false,
        },
        Some(Step::Index(_)) => return false,
    };
    for step in &parents[1..] {
        let next = match (step, node) {
            (Step::Key(key), toml::Value::Table(inner)) => inner.get_mut(key),
            (Step::Index(index), toml::Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(value) => node = value,
            None => return false,
        }
    }
    match (last, node) {
        (Step::Key(key), toml::Value::Table(inner)) => inner.remove(key).is_some(),
        (Step::Index(index), toml::Value::Array(items)) if *index < items.len() => {
            let array = original[..original.len() - 1].to_vec();
            let left = renumbered
                .arrays
                .entry(array)
                .or_insert_with(|| (0..items.len()).collect());
            items.remove(*index);
            if *index < left.len() {
                left.remove(*index);
            }
            true
        }
        _ => false,
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Where each line of a text starts, computed once: the line of any offset is
/// then a binary search. (Counting newlines from the start for every key made a
/// config of a few MB take minutes.)
struct LineIndex {
    /// Byte offset of the start of each line; the first is 0.
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Self { starts }
    }

    /// The 1-based line holding byte `offset`.
    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset).max(1)
    }
}

fn record_table_lines(
    index: &LineIndex,
    table: &DeTable<'_>,
    prefix: &str,
    lines: &mut HashMap<String, usize>,
) {
    for (key, value) in table {
        let path = join(prefix, key.get_ref());
        lines.insert(path.clone(), index.line(key.span().start));
        record_value_lines(index, value.get_ref(), &path, lines);
    }
}

fn record_value_lines(
    index: &LineIndex,
    value: &DeValue<'_>,
    path: &str,
    lines: &mut HashMap<String, usize>,
) {
    match value {
        DeValue::Table(table) => record_table_lines(index, table, path, lines),
        DeValue::Array(array) => {
            for (position, item) in array.iter().enumerate() {
                let item_path = format!("{path}[{position}]");
                lines.insert(item_path.clone(), index.line(item.span().start));
                record_value_lines(index, item.get_ref(), &item_path, lines);
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

fn ignored_steps(path: &serde_ignored::Path<'_>) -> Vec<Step> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut steps = ignored_steps(parent);
            steps.push(Step::Index(*index));
            steps
        }
        Path::Map { parent, key } => {
            let mut steps = ignored_steps(parent);
            steps.push(Step::Key(key.clone()));
            steps
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_steps(parent),
    }
}

/// The steps of serde's error path, and whether they are all known (an
/// unknown step makes the value impossible to find again).
fn error_steps(path: &serde_path_to_error::Path) -> (Vec<Step>, bool) {
    use serde_path_to_error::Segment;
    let mut steps = Vec::new();
    let mut exact = true;
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => steps.push(Step::Index(*index)),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                steps.push(Step::Key(key.clone()));
            }
            Segment::Unknown => exact = false,
        }
    }
    (steps, exact)
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
    fn the_line_of_an_offset_is_found_in_the_index() {
        let text = "a = 1\n\nb = 2\nc = 3";
        let index = LineIndex::new(text);
        for (offset, line) in [(0, 1), (5, 1), (6, 2), (7, 3), (12, 3), (13, 4), (18, 4)] {
            assert_eq!(index.line(offset), line, "offset {offset}");
        }
        // The same as counting the newlines before it, at every offset.
        for offset in 0..=text.len() {
            let counted = text.as_bytes()[..offset]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            assert_eq!(index.line(offset), counted, "offset {offset}");
        }
    }

    /// Issue 17, item 11: a 5.9 MB config took 139 s, each key's line found by
    /// counting the newlines before it. 100,000 keys (2.5 MB) took minutes so; the
    /// line index makes it one pass.
    #[test]
    fn a_config_of_a_hundred_thousand_keys_has_every_line_recorded_in_one_pass() {
        let mut text = String::from("[detect]\n");
        for i in 0..100_000 {
            text.push_str(&format!("key_number_{i:06} = \"value {i:06}\"\n"));
        }
        assert!(text.len() > 2_500_000);
        let started = std::time::Instant::now();
        let doc = Document::parse(&text, &env).unwrap();
        assert_eq!(doc.line("detect.key_number_000000"), Some(2));
        assert_eq!(doc.line("detect.key_number_099999"), Some(100_001));
        // Not a benchmark: a loose bound that the old per-key rescan (minutes)
        // could not meet, even on a loaded debug build.
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
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
