//! Lines into events: the rule that decides whether a line starts a new event or
//! continues the pending one. Pure; fed one complete line at a time.
//!
//! The default rule knows Python tracebacks as Django logs them: the record's
//! line (`ERROR … Internal Server Error: /x`), then `Traceback (most recent call
//! last):`, indented frames (including 3.11's `^^^^` markers, a known failure of
//! pattern-based tailers), the exception line, the database's `LINE n:`/`HINT:`
//! lines under it, and chained tracebacks (`The above exception was the direct
//! cause…`) all join into one event.

use regex::bytes::Regex;

use crate::config::Multiline;

/// Where the Python rule is inside a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Python {
    /// An ordinary line; a traceback may still follow.
    Record,
    /// Inside `Traceback (most recent call last):` frames.
    Frames,
    /// After the exception line: the database's detail lines may follow.
    Exception,
}

/// How lines are grouped.
#[derive(Debug, Clone)]
pub enum Rule {
    Python,
    Start(Regex),
    None,
}

impl Rule {
    /// The rule of a validated file source config.
    pub fn new(mode: Multiline, start: Option<&str>) -> Result<Self, regex::Error> {
        Ok(match (mode, start) {
            (Multiline::Python, _) => Rule::Python,
            (Multiline::None, _) => Rule::None,
            (Multiline::Start, Some(pattern)) => Rule::Start(Regex::new(pattern)?),
            (Multiline::Start, None) => Rule::Start(Regex::new("^\\S")?),
        })
    }
}

impl Rule {
    /// Whether `line`, following `previous`, starts an event whatever came before
    /// them: where a file may be cut to be read in parts. For the Python rule,
    /// two ordinary lines in a row (the first ends a traceback if one was open,
    /// the second then starts an event).
    pub fn certainly_starts(&self, previous: &[u8], line: &[u8]) -> bool {
        match self {
            Rule::None => true,
            Rule::Start(start) => start.is_match(line),
            Rule::Python => ordinary(previous) && ordinary(line),
        }
    }
}

/// A line no traceback rule continues with: not empty, not indented, not a
/// traceback's header, chain line or database detail.
fn ordinary(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    !line.is_empty()
        && !matches!(line[0], b' ' | b'\t')
        && !line.starts_with(TRACEBACK)
        && !CHAINED.iter().any(|c| line.starts_with(c))
        && !DATABASE_DETAIL.iter().any(|d| line.starts_with(d))
}

/// Accumulates one file's lines into events. The pending event's bytes are kept
/// up to `max_bytes + 1` (enough to know it must be cut), never more.
pub struct Assembler {
    rule: Rule,
    state: Python,
    max_bytes: usize,
    pending: Vec<u8>,
    /// File offsets of the pending event: its first byte, and just past its last line.
    pending_span: Option<(u64, u64)>,
}

/// A finished event: its bytes (cut to `max_bytes + 1` at most) and its span in
/// the file.
pub struct Finished<'a> {
    pub bytes: &'a [u8],
    pub start: u64,
    pub end: u64,
}

impl Assembler {
    pub fn new(rule: Rule, max_bytes: usize) -> Self {
        Self {
            rule,
            state: Python::Record,
            max_bytes,
            pending: Vec::new(),
            pending_span: None,
        }
    }

    /// Offset of the first byte of the event not yet finished, if any: where a
    /// restart must resume so that it is neither lost nor repeated.
    pub fn pending_start(&self) -> Option<u64> {
        self.pending_span.map(|(start, _)| start)
    }

    /// Feeds one complete line (without its `\n`) spanning `start..end` in the file.
    /// When it starts a new event, the previous one is finished and passed to `emit`.
    pub fn push<E>(
        &mut self,
        line: &[u8],
        start: u64,
        end: u64,
        emit: &mut impl FnMut(Finished<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let continues = self.pending_span.is_some() && self.continues(line);
        if !continues {
            self.flush(emit)?;
            self.state = match self.rule {
                Rule::Python if line.first() == Some(&b'T') && line.starts_with(TRACEBACK) => {
                    Python::Frames
                }
                _ => Python::Record,
            };
        }
        let room = (self.max_bytes + 1).saturating_sub(self.pending.len());
        if continues && room > 0 {
            self.pending.push(b'\n');
        }
        let room = (self.max_bytes + 1).saturating_sub(self.pending.len());
        self.pending
            .extend_from_slice(&line[..line.len().min(room)]);
        self.pending_span = Some(match self.pending_span {
            Some((first, _)) => (first, end),
            None => (start, end),
        });
        if matches!(self.rule, Rule::None) {
            // Nothing can continue it: hand it on now, not at the timeout.
            self.flush(emit)?;
        }
        Ok(())
    }

    /// Finishes the pending event, if any (a timeout, the end of a file).
    pub fn flush<E>(
        &mut self,
        emit: &mut impl FnMut(Finished<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some((start, end)) = self.pending_span.take() {
            let result = emit(Finished {
                bytes: &self.pending,
                start,
                end,
            });
            self.pending.clear();
            self.state = Python::Record;
            result?;
        }
        Ok(())
    }

    /// Forgets the pending event (its file was truncated under it).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.pending_span = None;
        self.state = Python::Record;
    }

    fn continues(&mut self, line: &[u8]) -> bool {
        match &self.rule {
            Rule::None => false,
            Rule::Start(start) => !start.is_match(line),
            Rule::Python => {
                let first = line.first().copied();
                let indented = matches!(first, Some(b' ' | b'\t'));
                // The first byte rules out the long comparisons for most lines.
                if first == Some(b'T') && line.starts_with(TRACEBACK) {
                    self.state = Python::Frames;
                    return true;
                }
                if matches!(first, Some(b'T' | b'D')) && CHAINED.iter().any(|c| line.starts_with(c))
                {
                    self.state = Python::Exception;
                    return true;
                }
                match self.state {
                    Python::Record => indented,
                    Python::Frames => {
                        if !indented && !line.is_empty() {
                            self.state = Python::Exception;
                        }
                        true
                    }
                    Python::Exception => {
                        indented
                            || line.is_empty()
                            || DATABASE_DETAIL.iter().any(|d| line.starts_with(d))
                    }
                }
            }
        }
    }
}

const TRACEBACK: &[u8] = b"Traceback (most recent call last):";
const CHAINED: [&[u8]; 2] = [
    b"The above exception was the direct cause of the following exception:",
    b"During handling of the above exception, another exception occurred:",
];
/// Lines PostgreSQL adds under an error message, which Python prints unindented.
const DATABASE_DETAIL: [&[u8]; 6] = [
    b"LINE ",
    b"HINT:",
    b"DETAIL:",
    b"CONTEXT:",
    b"QUERY:",
    b"WHERE:",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` line by line and flushes at the end; returns the events.
    fn events(rule: Rule, max: usize, text: &str) -> Vec<(String, u64, u64)> {
        let mut assembler = Assembler::new(rule, max);
        let mut out = Vec::new();
        let mut emit = |f: Finished<'_>| -> Result<(), ()> {
            out.push((
                String::from_utf8_lossy(f.bytes).into_owned(),
                f.start,
                f.end,
            ));
            Ok(())
        };
        let mut offset = 0u64;
        for line in text.split_inclusive('\n') {
            let end = offset + line.len() as u64;
            assembler
                .push(
                    line.trim_end_matches('\n').as_bytes(),
                    offset,
                    end,
                    &mut emit,
                )
                .unwrap();
            offset = end;
        }
        assembler.flush(&mut emit).unwrap();
        out
    }

    const DJANGO_TRACEBACK: &str = r#"2026-11-25 16:22:38,250 ERROR django.request Internal Server Error: /catalog/7/
Traceback (most recent call last):
  File "/srv/app/venv/lib/python3.11/site-packages/django/db/backends/utils.py", line 105, in _execute
    return self.cursor.execute(sql, params)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
psycopg.errors.UndefinedColumn: column catalog_product.notes does not exist
LINE 1: SELECT "catalog_product"."id", "catalog_product"."notes" FROM...
                                       ^

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/srv/app/catalog/views.py", line 12, in detail
    product = Product.objects.get(pk=pk)
django.db.utils.ProgrammingError: column catalog_product.notes does not exist
LINE 1: SELECT "catalog_product"."id", "catalog_product"."notes" FROM...
                                       ^
HINT:  Perhaps you meant to reference the column "catalog_product.name".
2026-11-25 16:22:39,001 INFO django.server "GET /catalog/7/ HTTP/1.1" 500 145
"#;

    #[test]
    fn a_chained_django_traceback_is_one_event_with_its_record_line() {
        let got = events(Rule::Python, 1 << 20, DJANGO_TRACEBACK);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(got[0].0.starts_with("2026-11-25 16:22:38,250 ERROR"));
        assert!(got[0].0.ends_with("\"catalog_product.name\"."));
        assert_eq!(got[0].0.matches("Traceback").count(), 2);
        assert!(got[1].0.starts_with("2026-11-25 16:22:39,001 INFO"));
        // Spans cover the file without gaps.
        assert_eq!(got[0].1, 0);
        assert_eq!(got[0].2, got[1].1);
        assert_eq!(got[1].2, DJANGO_TRACEBACK.len() as u64);
    }

    #[test]
    fn a_traceback_without_a_record_line_is_its_own_event() {
        let text = "plain line\nTraceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad\nnext\n";
        let got = events(Rule::Python, 1024, text);
        let texts: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            texts,
            [
                "plain line\nTraceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad",
                "next"
            ]
        );
    }

    #[test]
    fn two_ordinary_lines_are_a_safe_place_to_cut() {
        let text = &format!(
            "{DJANGO_TRACEBACK}2026 a\n2026 b\n  indented\nValueError: no traceback open\n2026 c\n{DJANGO_TRACEBACK}"
        );
        let lines: Vec<&str> = text.lines().collect();
        let mut cuts = 0;
        // Everywhere the rule calls a line a certain start, assembling the whole
        // text agrees that an event starts there.
        let starts: Vec<u64> = events(Rule::Python, 1 << 20, text)
            .iter()
            .map(|e| e.1)
            .collect();
        let mut offset = 0u64;
        for pair in lines.windows(2) {
            offset += pair[0].len() as u64 + 1;
            if Rule::Python.certainly_starts(pair[0].as_bytes(), pair[1].as_bytes()) {
                assert!(starts.contains(&offset), "{:?} is not a start", pair[1]);
                cuts += 1;
            }
        }
        assert_eq!(cuts, 4, "500 145|a, a|b, ValueError|c, c|2026 ERROR");
        assert!(!Rule::Python.certainly_starts(b"ValueError: x", b"LINE 1: SELECT"));
        assert!(!Rule::Python.certainly_starts(b"Traceback (most recent call last):", b"x"));
        assert!(Rule::Python.certainly_starts(b"2026 INFO a", b"2026 INFO b"));
    }

    #[test]
    fn ordinary_lines_stay_apart() {
        let got = events(Rule::Python, 1024, "a\nb\r\nc\n");
        let texts: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(texts, ["a", "b", "c"]);
    }

    #[test]
    fn start_pattern_groups_until_the_next_start() {
        let rule = Rule::new(Multiline::Start, Some(r"^\d{4}-")).unwrap();
        let got = events(rule, 1024, "2026-1 a\nmore\nand more\n2026-2 b\n");
        let texts: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(texts, ["2026-1 a\nmore\nand more", "2026-2 b"]);
    }

    #[test]
    fn none_keeps_every_line_apart() {
        let got = events(
            Rule::None,
            1024,
            "a\n  b\nTraceback (most recent call last):\n",
        );
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn the_pending_event_is_kept_only_up_to_the_limit() {
        let long = "x".repeat(100);
        let text = format!("start\n  {long}\n  {long}\n");
        let got = events(Rule::Python, 10, &text);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.len(), 11, "max + 1 bytes tell the caller to cut");
        assert_eq!(
            got[0].2,
            text.len() as u64,
            "the span still covers every line"
        );
    }

    #[test]
    fn pending_start_is_where_a_restart_resumes() {
        let mut assembler = Assembler::new(Rule::Python, 1024);
        let mut emitted = 0;
        let mut emit = |_: Finished<'_>| -> Result<(), ()> {
            emitted += 1;
            Ok(())
        };
        assembler.push(b"first", 0, 6, &mut emit).unwrap();
        assert_eq!(assembler.pending_start(), Some(0));
        assembler.push(b"second", 6, 13, &mut emit).unwrap();
        assert_eq!(assembler.pending_start(), Some(6));
        assembler.flush(&mut emit).unwrap();
        assert_eq!(assembler.pending_start(), None);
        assert_eq!(emitted, 2);
    }
}
