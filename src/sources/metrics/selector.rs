//! Series selectors as PromQL writes them: `name{label="v", other!="x",
//! status=~"5..", path!~"/health.*"}`.
//!
//! The semantics are PromQL's, so that a selector tried in Prometheus' console means
//! the same here: regexes are anchored at both ends (`5..` does not match `1500`),
//! `.` also matches a newline, and a label a series lacks reads as the empty string
//! (`status!="500"` matches a series without `status`).

use std::fmt;

use regex::Regex;

use super::exposition::{is_label_name_char, is_metric_name_char};

const EXAMPLE: &str = r#"django_http_responses_total_by_status_total{status=~"5.."}"#;

/// A parsed selector; shown as the text it was parsed from.
#[derive(Debug, Clone)]
pub struct Selector {
    /// As written (trimmed): what events carry as their series, so that a reader
    /// finds the configuration line an event came from.
    text: String,
    name: Option<String>,
    matchers: Vec<Matcher>,
}

#[derive(Debug, Clone)]
struct Matcher {
    label: String,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Equal(String),
    NotEqual(String),
    Matches(Regex),
    NotMatches(Regex),
}

impl Matcher {
    fn accepts(&self, value: &str) -> bool {
        match &self.test {
            Test::Equal(expected) => value == expected,
            Test::NotEqual(unwanted) => value != unwanted,
            Test::Matches(regex) => regex.is_match(value),
            Test::NotMatches(regex) => !regex.is_match(value),
        }
    }
}

impl Selector {
    /// The selector as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the series `name{labels}` is selected. `__name__` matchers see the
    /// metric name, as in PromQL.
    pub fn matches(&self, name: &str, labels: &[(String, String)]) -> bool {
        if self.name.as_deref().is_some_and(|wanted| wanted != name) {
            return false;
        }
        self.matchers.iter().all(|matcher| {
            let value = if matcher.label == "__name__" {
                name
            } else {
                labels
                    .iter()
                    .find(|(label, _)| *label == matcher.label)
                    .map_or("", |(_, value)| value.as_str())
            };
            matcher.accepts(value)
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Selector {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_selector(text)
    }
}

/// Parses a selector; the error says what is wrong, where, and shows an example.
/// Configuration validation calls this to reject a bad `counters` entry before
/// anything starts.
pub fn parse_selector(text: &str) -> Result<Selector, String> {
    let trimmed = text.trim();
    let mut parser = Parser {
        text: trimmed,
        pos: 0,
    };
    let (name, matchers) = parser.selector().map_err(|(pos, problem)| {
        let at = if pos >= trimmed.len() {
            "at the end".to_string()
        } else {
            format!("at column {}", trimmed[..pos].chars().count() + 1)
        };
        format!("invalid selector {trimmed:?}: {problem} ({at}); write a metric name with optional label matchers, like {EXAMPLE}")
    })?;
    Ok(Selector {
        text: trimmed.to_string(),
        name,
        matchers,
    })
}

type Failure = (usize, String);

struct Parser<'a> {
    text: &'a str,
    /// Byte offset of the next character.
    pos: usize,
}

impl Parser<'_> {
    fn selector(&mut self) -> Result<(Option<String>, Vec<Matcher>), Failure> {
        if self.text.is_empty() {
            return Err((0, "it is empty".to_string()));
        }
        let name = self.identifier(is_metric_name_char);
        self.skip_blanks();
        let mut matchers = Vec::new();
        if self.eat('{') {
            matchers = self.matchers()?;
            self.skip_blanks();
        } else if name.is_none() {
            return Err(self.unexpected("a metric name or '{'"));
        }
        if self.pos < self.text.len() {
            return Err(self.unexpected("the end of the selector"));
        }
        if matchers.iter().any(|m| m.label == "__name__") && name.is_some() {
            return Err((
                0,
                "the metric name is given twice, before the braces and as __name__".to_string(),
            ));
        }
        if name.is_none() && matchers.iter().all(|m| m.accepts("")) {
            return Err((
                0,
                "without a metric name, at least one matcher must not match an empty label (it would select every series)".to_string(),
            ));
        }
        Ok((name, matchers))
    }

    /// After `{`: matchers separated by commas (a trailing one allowed), then `}`.
    fn matchers(&mut self) -> Result<Vec<Matcher>, Failure> {
        let mut matchers = Vec::new();
        loop {
            self.skip_blanks();
            if self.eat('}') {
                return Ok(matchers);
            }
            let start = self.pos;
            let Some(label) = self.identifier(is_label_name_char) else {
                return Err(self.unexpected("a label name or '}'"));
            };
            self.skip_blanks();
            let op = if self.eat_str("=~") {
                "=~"
            } else if self.eat_str("!~") {
                "!~"
            } else if self.eat_str("!=") {
                "!="
            } else if self.eat('=') {
                "="
            } else {
                return Err(self.unexpected(&format!(
                    "'=', '!=', '=~' or '!~' after the label {label}, like {label}=\"500\""
                )));
            };
            self.skip_blanks();
            let value_at = self.pos;
            let value = self.string(&label)?;
            let test = match op {
                "=" => Test::Equal(value),
                "!=" => Test::NotEqual(value),
                _ => {
                    let regex = Regex::new(&format!("^(?s:{value})$")).map_err(|err| {
                        (
                            value_at,
                            format!("the regex {value:?} for {label} does not compile: {err}"),
                        )
                    })?;
                    if op == "=~" {
                        Test::Matches(regex)
                    } else {
                        Test::NotMatches(regex)
                    }
                }
            };
            if label == "__name__" && matchers.iter().any(|m: &Matcher| m.label == "__name__") {
                return Err((start, "__name__ is matched twice".to_string()));
            }
            matchers.push(Matcher { label, test });
            self.skip_blanks();
            if !self.eat(',') && !self.text[self.pos..].starts_with('}') {
                return Err(self.unexpected("',' or '}' after a matcher"));
            }
        }
    }

    /// A quoted string as PromQL has them: "…" or '…' with Go's escapes, or `…` raw.
    fn string(&mut self, label: &str) -> Result<String, Failure> {
        let start = self.pos;
        let Some(quote) = self.peek().filter(|c| matches!(c, '"' | '\'' | '`')) else {
            return Err(
                self.unexpected(&format!("a quoted value for {label}, like {label}=\"500\""))
            );
        };
        self.pos += 1;
        let mut value = String::new();
        while let Some(c) = self.peek() {
            self.pos += c.len_utf8();
            if c == quote {
                return Ok(value);
            }
            if c != '\\' || quote == '`' {
                value.push(c);
                continue;
            }
            let escape_at = self.pos - 1;
            let Some(escaped) = self.peek() else { break };
            self.pos += escaped.len_utf8();
            let plain = match escaped {
                'a' => Some('\u{7}'),
                'b' => Some('\u{8}'),
                'f' => Some('\u{c}'),
                'n' => Some('\n'),
                'r' => Some('\r'),
                't' => Some('\t'),
                'v' => Some('\u{b}'),
                '\\' => Some('\\'),
                c if c == quote => Some(c),
                _ => None,
            };
            if let Some(plain) = plain {
                value.push(plain);
                continue;
            }
            let digits = match escaped {
                'x' => 2,
                'u' => 4,
                'U' => 8,
                _ => {
                    return Err((
                        escape_at,
                        format!(
                            "unknown escape \\{escaped} in the value of {label}; a regex's backslash is written twice in quotes (\"\\\\d\") or once in backquotes (`\\d`)"
                        ),
                    ));
                }
            };
            let hex = self.text.get(self.pos..self.pos + digits).unwrap_or("");
            let code = u32::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == digits && hex.chars().all(|c| c.is_ascii_hexdigit()))
                .and_then(char::from_u32)
                .filter(|c| escaped != 'x' || c.is_ascii());
            let Some(code) = code else {
                return Err((
                    escape_at,
                    format!(
                        "\\{escaped} must be followed by {digits} hex digits of a character in the value of {label}"
                    ),
                ));
            };
            self.pos += digits;
            value.push(code);
        }
        Err((
            start,
            format!("the value of {label} has no closing {quote}"),
        ))
    }

    fn identifier(&mut self, valid: fn(char, bool) -> bool) -> Option<String> {
        let rest = &self.text[self.pos..];
        let end = rest
            .char_indices()
            .find(|&(i, c)| !valid(c, i == 0))
            .map_or(rest.len(), |(i, _)| i);
        if end == 0 {
            return None;
        }
        self.pos += end;
        Some(rest[..end].to_string())
    }

    fn unexpected(&self, expected: &str) -> Failure {
        let found = match self.peek() {
            None => "the end".to_string(),
            Some(c) => format!("{c:?}"),
        };
        let hint = match self.peek() {
            Some('(' | ')') => {
                "; functions like rate() belong in a [[metrics.query]] query, a counter here is a bare selector"
            }
            Some('[') => {
                "; ranges like [5m] belong in a [[metrics.query]] query: dropguard computes the rate itself"
            }
            _ => "",
        };
        (
            self.pos,
            format!("expected {expected}, found {found}{hint}"),
        )
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        self.eat_str(c.encode_utf8(&mut [0; 4]))
    }

    fn eat_str(&mut self, s: &str) -> bool {
        if self.text[self.pos..].starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn skip_blanks(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_four_matchers() {
        let selector = parse_selector(
            r#" http_total{method="GET", env!="dev", status=~"5..", path!~"/health.*",} "#,
        )
        .unwrap();
        assert_eq!(
            selector.text(),
            r#"http_total{method="GET", env!="dev", status=~"5..", path!~"/health.*",}"#
        );
        let hit = labels(&[("method", "GET"), ("status", "503"), ("path", "/orders")]);
        assert!(selector.matches("http_total", &hit));
        assert!(!selector.matches("other_total", &hit));
        for (label, value) in [
            ("method", "POST"),
            ("env", "dev"),
            ("status", "200"),
            ("path", "/healthz"),
        ] {
            let mut miss = hit.clone();
            miss.retain(|(k, _)| k != label);
            miss.push((label.to_string(), value.to_string()));
            assert!(!selector.matches("http_total", &miss), "{label}={value}");
        }
    }

    #[test]
    fn regexes_are_anchored_at_both_ends() {
        let selector = parse_selector(r#"m{status=~"5.."}"#).unwrap();
        for (status, expected) in [
            ("500", true),
            ("599", true),
            ("1500", false),
            ("5000", false),
            ("50", false),
        ] {
            assert_eq!(
                selector.matches("m", &labels(&[("status", status)])),
                expected,
                "{status}"
            );
        }
        let alternation = parse_selector(r#"m{code=~"500|503"}"#).unwrap();
        assert!(!alternation.matches("m", &labels(&[("code", "5003")])));
        assert!(alternation.matches("m", &labels(&[("code", "503")])));
        let dot_all = parse_selector(r#"m{msg=~"a.b"}"#).unwrap();
        assert!(dot_all.matches("m", &labels(&[("msg", "a\nb")])));
    }

    #[test]
    fn a_missing_label_reads_as_empty() {
        let none = labels(&[]);
        assert!(
            parse_selector(r#"m{status!="500"}"#)
                .unwrap()
                .matches("m", &none)
        );
        assert!(
            parse_selector(r#"m{status=""}"#)
                .unwrap()
                .matches("m", &none)
        );
        assert!(
            parse_selector(r#"m{status=~"5..|"}"#)
                .unwrap()
                .matches("m", &none)
        );
        assert!(
            !parse_selector(r#"m{status=~"5.."}"#)
                .unwrap()
                .matches("m", &none)
        );
        assert!(
            !parse_selector(r#"m{status!~""}"#)
                .unwrap()
                .matches("m", &none)
        );
        assert!(parse_selector("m").unwrap().matches("m", &none));
        assert!(parse_selector("m{}").unwrap().matches("m", &none));
    }

    #[test]
    fn quoting_and_escapes_as_promql() {
        for (matcher, value) in [
            (r#"a="x\"y\\z\n""#, "x\"y\\z\n"),
            (r#"a='it\'s'"#, "it's"),
            (r#"a=~`\d+`"#, "42"),
            (r#"a=~"\\d+""#, "7"),
            (r#"a="\u00e9\x41\t""#, "éA\t"),
        ] {
            let selector = parse_selector(&format!("m{{{matcher}}}")).unwrap();
            assert!(
                selector.matches("m", &labels(&[("a", value)])),
                "{matcher} should match {value:?}"
            );
        }
    }

    #[test]
    fn name_matchers_and_selectors_without_a_name() {
        let selector = parse_selector(r#"{__name__=~"django_.*_total", status="500"}"#).unwrap();
        assert!(selector.matches("django_x_total", &labels(&[("status", "500")])));
        assert!(!selector.matches("celery_x_total", &labels(&[("status", "500")])));
    }

    #[test]
    fn errors_say_what_and_show_an_example() {
        for (text, fragment) in [
            ("", "it is empty"),
            ("   ", "it is empty"),
            (
                "m{status=~\"5..\"",
                "expected ',' or '}' after a matcher, found the end",
            ),
            ("m{", "expected a label name or '}', found the end"),
            (
                "m{status~\"5..\"}",
                "expected '=', '!=', '=~' or '!~' after the label status",
            ),
            ("m{status=500}", "a quoted value for status"),
            ("m{status=\"500}", "has no closing \""),
            ("m{status=~\"5(..\"}", "does not compile"),
            (
                "m{status=\"5\" code=\"1\"}",
                "expected ',' or '}' after a matcher",
            ),
            ("m{status=\"\\d\"}", "unknown escape \\d"),
            ("m{a=\"\\x4\"}", "2 hex digits"),
            (
                "rate(m[5m])",
                "functions like rate() belong in a [[metrics.query]]",
            ),
            ("m[5m]", "ranges like [5m] belong in a [[metrics.query]]"),
            ("m extra", "expected the end of the selector, found 'e'"),
            (
                "{status=~\".*\"}",
                "at least one matcher must not match an empty label",
            ),
            ("m{__name__=\"m\"}", "the metric name is given twice"),
            (
                "{__name__=\"a\", __name__=\"b\"}",
                "__name__ is matched twice",
            ),
            ("{1abc=\"x\"}", "expected a label name or '}', found '1'"),
            ("9m", "expected a metric name or '{'"),
        ] {
            let err = parse_selector(text).expect_err(text);
            assert!(
                err.contains(fragment),
                "{text:?}: {err:?} does not say {fragment:?}"
            );
            assert!(err.contains(EXAMPLE), "{text:?}: {err:?} shows no example");
        }
        let err = parse_selector("m{status=500}").unwrap_err();
        assert!(err.contains("at column 10"), "{err}");
    }
}
