//! The Prometheus text exposition format, version 0.0.4, read strictly.
//!
//! Strict because a lenient reader (split on `,` and `=`, ignore what does not fit)
//! silently misreads label values holding commas, braces or escaped quotes, and a
//! misread `status` label turns into a wrong error rate without any warning. Here a
//! malformed scrape fails whole, with the line and what was expected, like
//! Prometheus' own parser does. The crates found for this format were of the lenient
//! kind, hence this module.
//!
//! Accepted, per the format's description: `# HELP` and `# TYPE` lines (other
//! comments ignored), blank lines, label values with the escapes `\\`, `\"` and
//! `\n`, Go float values (`NaN`, `+Inf`, `-Inf`, exponents), optional integer
//! millisecond timestamps, the sample lines of histograms and summaries. A trailing
//! `\r` is tolerated, since some hand-written endpoints send CRLF.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// One sample line: a series and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the Unix epoch, when the line carries one.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    /// The value of `label`; a missing label reads as empty, as in PromQL.
    pub fn label(&self, label: &str) -> &str {
        self.labels
            .iter()
            .find(|(name, _)| name == label)
            .map_or("", |(_, value)| value)
    }
}

/// A metric family's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricType {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "summary" => Self::Summary,
            "untyped" => Self::Untyped,
            _ => return None,
        })
    }
}

/// Why a scrape could not be read, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// Reads a whole exposition. Any malformed line fails the whole of it: a partial
/// read could drop exactly the series a rate is computed from.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut reader = Reader::default();
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        reader.line(line).map_err(|message| ParseError {
            line: index + 1,
            message,
        })?;
    }
    Ok(reader.samples)
}

#[derive(Default)]
struct Reader {
    samples: Vec<Sample>,
    types: HashMap<String, MetricType>,
    helped: HashSet<String>,
    /// Names that already had a sample: a TYPE line for them comes too late.
    sampled: HashSet<String>,
    /// Every series seen, to refuse the same one twice (it would be summed twice).
    series: HashSet<(String, Vec<(String, String)>)>,
}

impl Reader {
    fn line(&mut self, line: &str) -> Result<(), String> {
        let line = line.trim_start_matches([' ', '\t']);
        if line.trim_end_matches([' ', '\t']).is_empty() {
            return Ok(());
        }
        if let Some(comment) = line.strip_prefix('#') {
            return self.comment(comment);
        }
        let sample = sample_line(line)?;
        self.check_family(&sample)?;
        let mut labels = sample.labels.clone();
        labels.sort();
        if !self.series.insert((sample.name.clone(), labels)) {
            return Err(format!(
                "the series {} appears twice; an endpoint must expose each series once",
                Shown(&sample)
            ));
        }
        self.sampled.insert(sample.name.clone());
        self.samples.push(sample);
        Ok(())
    }

    /// `# HELP name text`, `# TYPE name type`, or any other comment (ignored).
    fn comment(&mut self, rest: &str) -> Result<(), String> {
        let rest = rest.trim_start_matches([' ', '\t']);
        let (keyword, rest) = split_token(rest);
        match keyword {
            "HELP" => {
                let (name, text) = split_token(rest.trim_start_matches([' ', '\t']));
                check_metric_name(name, "HELP")?;
                unescape_help(text)?;
                if !self.helped.insert(name.to_string()) {
                    return Err(format!("a second HELP line for {name}"));
                }
                Ok(())
            }
            "TYPE" => {
                let (name, rest) = split_token(rest.trim_start_matches([' ', '\t']));
                check_metric_name(name, "TYPE")?;
                let word = rest.trim_matches([' ', '\t']);
                let kind = MetricType::parse(word).ok_or_else(|| {
                    format!(
                        "unknown metric type {word:?} for {name}; expected counter, gauge, histogram, summary or untyped"
                    )
                })?;
                if self.sampled.contains(name) {
                    return Err(format!(
                        "the TYPE line for {name} comes after its samples; it must come before them"
                    ));
                }
                if self.types.insert(name.to_string(), kind).is_some() {
                    return Err(format!("a second TYPE line for {name}"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The lines a histogram or summary requires its `le` or `quantile` label on.
    fn check_family(&self, sample: &Sample) -> Result<(), String> {
        let required = if let Some(family) = sample.name.strip_suffix("_bucket")
            && self.types.get(family) == Some(&MetricType::Histogram)
        {
            "le"
        } else if self.types.get(&sample.name) == Some(&MetricType::Summary) {
            "quantile"
        } else {
            return Ok(());
        };
        let Some((_, bound)) = sample.labels.iter().find(|(name, _)| name == required) else {
            return Err(format!(
                "{} has no {required:?} label, which its type requires",
                Shown(sample)
            ));
        };
        parse_float(bound)
            .map(|_| ())
            .ok_or_else(|| format!("{required}={bound:?} is not a number, in {}", Shown(sample)))
    }
}

/// `name{labels} value [timestamp]`, without leading blanks.
fn sample_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .char_indices()
        .find(|&(i, c)| !is_metric_name_char(c, i == 0))
        .map_or(line.len(), |(i, _)| i);
    let name = &line[..name_end];
    if name.is_empty() {
        return Err(format!(
            "expected a metric name at the start of {:?}",
            excerpt(line)
        ));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = skip_blanks(rest).strip_prefix('{') {
        rest = label_set(after_brace, name, &mut labels)?;
    }
    let after_labels = skip_blanks(rest);
    if after_labels.len() == rest.len() {
        return Err(match rest.chars().next() {
            Some(c) => format!("unexpected {c:?} after the metric name {name}"),
            None => format!("{name} has no value"),
        });
    }
    let (value_text, rest) = split_token(after_labels);
    if value_text.is_empty() {
        return Err(format!("{name} has no value"));
    }
    let value = parse_float(value_text)
        .ok_or_else(|| format!("the value {value_text:?} of {name} is not a number"))?;
    let (timestamp_text, rest) = split_token(skip_blanks(rest));
    let timestamp_ms = if timestamp_text.is_empty() {
        None
    } else {
        Some(timestamp_text.parse::<i64>().map_err(|_| {
            format!("the timestamp {timestamp_text:?} of {name} is not an integer of milliseconds")
        })?)
    };
    let trailing = skip_blanks(rest);
    if !trailing.is_empty() {
        return Err(format!(
            "unexpected {:?} after the value and timestamp of {name}",
            excerpt(trailing)
        ));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
    })
}

/// Reads `label="value", …}` (just after the `{`); returns what follows the `}`.
fn label_set<'a>(
    mut rest: &'a str,
    metric: &str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, String> {
    loop {
        rest = skip_blanks(rest);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let name_end = rest
            .char_indices()
            .find(|&(i, c)| !is_label_name_char(c, i == 0))
            .map_or(rest.len(), |(i, _)| i);
        let label = &rest[..name_end];
        if label.is_empty() {
            return Err(match rest.chars().next() {
                None => format!("the labels of {metric} are not closed; missing '}}'"),
                Some(c) => {
                    format!("expected a label name or '}}' in the labels of {metric}, found {c:?}")
                }
            });
        }
        rest = skip_blanks(&rest[name_end..]);
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("expected '=' after the label name {label} of {metric}"))?;
        rest = skip_blanks(rest);
        rest = rest.strip_prefix('"').ok_or_else(|| {
            format!("the value of the label {label} of {metric} must be in double quotes")
        })?;
        let (value, after) = label_value(rest).map_err(|problem| {
            format!("{problem} in the value of the label {label} of {metric}")
        })?;
        if labels.iter().any(|(existing, _)| existing == label) {
            return Err(format!("the label {label} appears twice on {metric}"));
        }
        labels.push((label.to_string(), value));
        rest = skip_blanks(after);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(match rest.chars().next() {
                None => format!("the labels of {metric} are not closed; missing '}}'"),
                Some(c) => {
                    format!("expected ',' or '}}' after the label {label} of {metric}, found {c:?}")
                }
            });
        }
    }
}

/// A label value after its opening quote: the unescaped text and what follows the
/// closing quote.
fn label_value(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => {
                    return Err(format!(
                        "unknown escape \\{other} (only \\\\, \\\" and \\n exist)"
                    ));
                }
                None => break,
            },
            _ => value.push(c),
        }
    }
    Err("a missing closing '\"'".to_string())
}

/// A HELP text: only `\\` and `\n` are escapes there.
fn unescape_help(text: &str) -> Result<String, String> {
    let mut help = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            help.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => help.push('\\'),
            Some('n') => help.push('\n'),
            Some(other) => {
                return Err(format!(
                    "unknown escape \\{other} in a HELP text (only \\\\ and \\n exist)"
                ));
            }
            None => return Err("a HELP text ends with a lone backslash".to_string()),
        }
    }
    Ok(help)
}

fn check_metric_name(name: &str, keyword: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .char_indices()
            .all(|(i, c)| is_metric_name_char(c, i == 0));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "expected a metric name after # {keyword}, found {:?}",
            excerpt(name)
        ))
    }
}

/// Go's `strconv.ParseFloat` as the format uses it: also `NaN`, `+Inf`, `-Inf`.
pub(crate) fn parse_float(text: &str) -> Option<f64> {
    // Rust's parser takes these spellings case-insensitively, as Go's does.
    text.parse::<f64>().ok()
}

pub(crate) fn is_metric_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

pub(crate) fn is_label_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (!first && c.is_ascii_digit())
}

fn skip_blanks(text: &str) -> &str {
    text.trim_start_matches([' ', '\t'])
}

/// The text up to the next blank, and the rest.
fn split_token(text: &str) -> (&str, &str) {
    let end = text.find([' ', '\t']).unwrap_or(text.len());
    text.split_at(end)
}

/// At most 60 characters of `text`, for messages.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A sample shown as in the format, for messages.
struct Shown<'a>(&'a Sample);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.name)?;
        if !self.0.labels.is_empty() {
            f.write_str("{")?;
            for (i, (name, value)) in self.0.labels.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{name}=\"{}\"", escape_label_value(value))?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// The inverse of [`label_value`]'s unescaping.
pub(crate) fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What django-prometheus (through prometheus_client) serves, trimmed.
    const DJANGO: &str = r#"# HELP python_info Python platform information
# TYPE python_info gauge
python_info{implementation="CPython",major="3",minor="11",patchlevel="7",version="3.11.7"} 1.0
# HELP django_http_responses_total_by_status_total Count of responses by status.
# TYPE django_http_responses_total_by_status_total counter
django_http_responses_total_by_status_total{status="200"} 1520.0
django_http_responses_total_by_status_total{status="500"} 7.0
# HELP django_http_responses_total_by_status_created Count of responses by status.
# TYPE django_http_responses_total_by_status_created gauge
django_http_responses_total_by_status_created{status="200"} 1.7956237581234e+09
django_http_responses_total_by_status_created{status="500"} 1.7956239e+09

# HELP django_http_requests_latency_seconds_by_view_method Histogram of request processing time labelled by view.
# TYPE django_http_requests_latency_seconds_by_view_method histogram
django_http_requests_latency_seconds_by_view_method_bucket{le="0.01",method="GET",view="orders"} 3.0
django_http_requests_latency_seconds_by_view_method_bucket{le="+Inf",method="GET",view="orders"} 9.0
django_http_requests_latency_seconds_by_view_method_count{method="GET",view="orders"} 9.0
django_http_requests_latency_seconds_by_view_method_sum{method="GET",view="orders"} 0.31
# HELP rpc_duration_seconds A summary.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds{quantile="0.99"} NaN
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
"#;

    #[test]
    fn reads_what_django_prometheus_serves() {
        let samples = parse(DJANGO).unwrap();
        assert_eq!(samples.len(), 13);
        let errors = &samples[2];
        assert_eq!(errors.name, "django_http_responses_total_by_status_total");
        assert_eq!(errors.label("status"), "500");
        assert_eq!(errors.value, 7.0);
        let bucket = &samples[6];
        assert_eq!(bucket.label("le"), "+Inf");
        assert_eq!(bucket.label("view"), "orders");
        assert!(samples[10].value.is_nan());
        assert_eq!(samples[11].value, 1.7560473e7);
    }

    #[test]
    fn the_format_descriptions_own_example() {
        let text = "# Escaping in label values:\n\
            msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
            metric_without_timestamp_and_labels 12.47\n\
            something_weird{problem=\"division by zero\"} +Inf -3982045\n\
            http_requests_total{method=\"post\",code=\"200\",} 1027 1395066363000\n\
            \t  spaced_out { a = \"1\" , b=\"x,y}=z\" }\t-Inf  \r\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples[0].label("path"), r"C:\DIR\FILE.TXT");
        assert_eq!(samples[0].label("error"), "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(samples[1].value, 12.47);
        assert_eq!(samples[1].timestamp_ms, None);
        assert_eq!(samples[2].value, f64::INFINITY);
        assert_eq!(samples[2].timestamp_ms, Some(-3_982_045));
        assert_eq!(samples[3].timestamp_ms, Some(1_395_066_363_000));
        assert_eq!(samples[3].label("code"), "200");
        assert_eq!(samples[4].label("b"), "x,y}=z");
        assert_eq!(samples[4].value, f64::NEG_INFINITY);
        assert_eq!(samples[4].label("missing"), "");
    }

    #[test]
    fn malformed_lines_say_where_and_what() {
        for (text, line, fragment) in [
            ("ok 1\nbad{a=\"1\" 2", 2, "expected ',' or '}'"),
            ("m{a=1} 2", 1, "must be in double quotes"),
            ("m{a=\"1} 2", 1, "missing closing"),
            ("m{a=\"\\t\"} 2", 1, "unknown escape \\t"),
            ("m{a=\"1\",a=\"2\"} 2", 1, "appears twice"),
            ("m one", 1, "is not a number"),
            ("m 1 2.5", 1, "not an integer of milliseconds"),
            ("m 1 2 3", 1, "unexpected"),
            ("m", 1, "has no value"),
            ("m{a=\"1\"}", 1, "has no value"),
            ("9m 1", 1, "expected a metric name"),
            ("m-x 1", 1, "unexpected '-'"),
            ("m{a=\"1\"", 1, "not closed"),
            ("# TYPE m countr\nm 1", 1, "unknown metric type"),
            ("# TYPE m counter\n# TYPE m gauge", 2, "second TYPE"),
            ("m 1\n# TYPE m counter", 2, "after its samples"),
            ("# HELP m a\n# HELP m b", 2, "second HELP"),
            ("# HELP m bad \\escape", 1, "unknown escape"),
            ("# TYPE 1m counter", 1, "expected a metric name"),
            ("m{a=\"1\"} 1\nm{a=\"1\"} 2", 2, "appears twice"),
            (
                "# TYPE h histogram\nh_bucket{x=\"1\"} 1",
                2,
                "no \"le\" label",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"lots\"} 1",
                2,
                "is not a number",
            ),
            ("# TYPE s summary\ns 1", 2, "no \"quantile\" label"),
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(
                err.message.contains(fragment),
                "{text:?}: {err} does not say {fragment:?}"
            );
        }
    }

    #[test]
    fn other_comments_and_blank_lines_are_ignored() {
        let samples = parse("\n# just a note {\n#\n   \n#HELP m fine\nm 1\n\n").unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(parse("").unwrap(), vec![]);
    }

    /// Renders samples as an endpoint would, for the round trip.
    fn render(samples: &[Sample]) -> String {
        let mut text = String::new();
        for sample in samples {
            text.push_str(&format!(
                "# HELP {} some help with a \\\\ and \\n\n",
                sample.name
            ));
            text.push_str(&format!("# TYPE {} counter\n", sample.name));
            let value = match sample.value {
                v if v.is_nan() => "NaN".to_string(),
                f64::INFINITY => "+Inf".to_string(),
                f64::NEG_INFINITY => "-Inf".to_string(),
                v => format!("{v:?}"),
            };
            text.push_str(&format!("{} {value}", Shown(sample)));
            if let Some(timestamp) = sample.timestamp_ms {
                text.push_str(&format!(" {timestamp}"));
            }
            text.push('\n');
        }
        text
    }

    fn sample_strategy() -> impl Strategy<Value = Sample> {
        (
            "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
            proptest::collection::btree_map(
                "[a-zA-Z_][a-zA-Z0-9_]{0,10}",
                "\\PC{0,12}|[\\\\\"\n,{}= ]{0,6}",
                0..4,
            ),
            prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY)
            ],
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(name, labels, value, timestamp_ms)| Sample {
                name,
                labels: labels.into_iter().collect(),
                value,
                timestamp_ms,
            })
    }

    proptest! {
        #[test]
        fn rendered_samples_read_back_the_same(
            samples in proptest::collection::vec(sample_strategy(), 0..6)
        ) {
            // One family per name, as the format requires.
            let mut seen = HashSet::new();
            let samples: Vec<Sample> =
                samples.into_iter().filter(|s| seen.insert(s.name.clone())).collect();
            let parsed = parse(&render(&samples)).unwrap();
            prop_assert_eq!(parsed.len(), samples.len());
            for (read, written) in parsed.iter().zip(&samples) {
                prop_assert_eq!(&read.name, &written.name);
                prop_assert_eq!(&read.labels, &written.labels);
                prop_assert_eq!(read.timestamp_ms, written.timestamp_ms);
                prop_assert!(
                    read.value == written.value || (read.value.is_nan() && written.value.is_nan()),
                    "{} read back as {}", written.value, read.value
                );
            }
        }

        #[test]
        fn any_input_is_read_or_refused_without_panicking(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }
    }
}
