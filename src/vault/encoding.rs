//! Owns the canonical byte encoding of a row: the bytes stored in data files
//! and the bytes every checksum is taken over. It must never change meaning
//! for existing bytes (old snapshots must stay readable and their checksums
//! stay valid), never admit two encodings of one row, and never panic or
//! over-allocate on hostile input.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//!   row   = u32 value-count, value*
//!   value = tag u8, payload
//!   payloads: Null -> none; Bool -> u8 0|1; Int/UInt -> 8 bytes;
//!             Float -> 8 bytes of f64::to_bits;
//!             string-like and Bytes -> u32 length, bytes (UTF-8 for strings);
//!             Array -> u32 element-count, value*;
//!             Other -> u32 length, type_name, u32 length, text.
//! ```

use super::error::VaultError;
use super::value::{TextKind, Value};

/// Deepest array nesting accepted. PostgreSQL stops at 6 dimensions; the
/// limit exists so hostile bytes cannot recurse the decoder off its stack.
pub const MAX_ARRAY_DEPTH: usize = 32;

const NULL: u8 = 0x00;
const BOOL: u8 = 0x01;
const INT: u8 = 0x02;
const UINT: u8 = 0x03;
const FLOAT: u8 = 0x04;
const DECIMAL: u8 = 0x05;
const TEXT: u8 = 0x06;
const BYTES: u8 = 0x07;
const JSON: u8 = 0x08;
const UUID: u8 = 0x09;
const DATE: u8 = 0x0A;
const TIME: u8 = 0x0B;
const TIMESTAMP: u8 = 0x0C;
const TIMESTAMPTZ: u8 = 0x0D;
const INTERVAL: u8 = 0x0E;
const ARRAY: u8 = 0x0F;
const OTHER: u8 = 0x10;

/// Appends the canonical encoding of `row` to `out`.
///
/// Fails (leaving `out` as it was) if a length does not fit the format's
/// u32 fields, if the whole row would not fit a data file's u32 frame, or if
/// arrays nest deeper than [`MAX_ARRAY_DEPTH`].
pub fn encode_row(row: &[Value], out: &mut Vec<u8>) -> Result<(), VaultError> {
    let start = out.len();
    let result = encode_row_inner(row, out).and_then(|()| {
        if out.len() - start > u32::MAX as usize {
            Err(VaultError::Unencodable {
                reason: "the row encodes to 4 GiB or more, which a data file frame cannot hold",
            })
        } else {
            Ok(())
        }
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_row_inner(row: &[Value], out: &mut Vec<u8>) -> Result<(), VaultError> {
    put_row_len(out, row.len())?;
    for value in row {
        encode_value(value, out, 0)?;
    }
    Ok(())
}

fn put_len(out: &mut Vec<u8>, len: usize, reason: &'static str) -> Result<(), VaultError> {
    let len = u32::try_from(len).map_err(|_| VaultError::Unencodable { reason })?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) -> Result<(), VaultError> {
    out.push(tag);
    put_len(out, bytes.len(), "a single value is 4 GiB or larger")?;
    out.extend_from_slice(bytes);
    Ok(())
}

// The value-by-value writers below are what `encode_row` itself is made of, so
// a reader that builds rows from a database's bytes (without making `Value`s)
// produces the same bytes by construction.

/// Starts a row of `count` values.
pub fn put_row_len(out: &mut Vec<u8>, count: usize) -> Result<(), VaultError> {
    put_len(out, count, "a row has more than u32::MAX values")
}

/// [`Value::Null`].
pub fn put_null(out: &mut Vec<u8>) {
    out.push(NULL);
}

/// [`Value::Bool`].
pub fn put_bool(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(&[BOOL, u8::from(value)]);
}

/// [`Value::Int`].
pub fn put_int(out: &mut Vec<u8>, value: i64) {
    out.push(INT);
    out.extend_from_slice(&value.to_be_bytes());
}

/// [`Value::UInt`].
pub fn put_uint(out: &mut Vec<u8>, value: u64) {
    out.push(UINT);
    out.extend_from_slice(&value.to_be_bytes());
}

/// [`Value::Float`].
pub fn put_float(out: &mut Vec<u8>, value: f64) {
    out.push(FLOAT);
    out.extend_from_slice(&value.to_bits().to_be_bytes());
}

/// A text value of `kind` ([`Value::Text`], [`Value::Decimal`], …); `text` is
/// its UTF-8.
pub fn put_text(out: &mut Vec<u8>, kind: TextKind, text: &[u8]) -> Result<(), VaultError> {
    let tag = match kind {
        TextKind::Decimal => DECIMAL,
        TextKind::Text => TEXT,
        TextKind::Json => JSON,
        TextKind::Uuid => UUID,
        TextKind::Date => DATE,
        TextKind::Time => TIME,
        TextKind::Timestamp => TIMESTAMP,
        TextKind::TimestampTz => TIMESTAMPTZ,
        TextKind::Interval => INTERVAL,
    };
    put_bytes(out, tag, text)
}

/// [`Value::Bytes`].
pub fn put_blob(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), VaultError> {
    put_bytes(out, BYTES, bytes)
}

/// [`Value::Other`]; `text` is its UTF-8.
pub fn put_other(out: &mut Vec<u8>, type_name: &str, text: &[u8]) -> Result<(), VaultError> {
    put_bytes(out, OTHER, type_name.as_bytes())?;
    put_len(out, text.len(), "a single value is 4 GiB or larger")?;
    out.extend_from_slice(text);
    Ok(())
}

fn encode_value(value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), VaultError> {
    match value {
        Value::Null => put_null(out),
        Value::Bool(b) => put_bool(out, *b),
        Value::Int(i) => put_int(out, *i),
        Value::UInt(u) => put_uint(out, *u),
        Value::Float(f) => put_float(out, *f),
        Value::Decimal(s) => put_text(out, TextKind::Decimal, s.as_bytes())?,
        Value::Text(s) => put_text(out, TextKind::Text, s.as_bytes())?,
        Value::Bytes(b) => put_blob(out, b)?,
        Value::Json(s) => put_text(out, TextKind::Json, s.as_bytes())?,
        Value::Uuid(s) => put_text(out, TextKind::Uuid, s.as_bytes())?,
        Value::Date(s) => put_text(out, TextKind::Date, s.as_bytes())?,
        Value::Time(s) => put_text(out, TextKind::Time, s.as_bytes())?,
        Value::Timestamp(s) => put_text(out, TextKind::Timestamp, s.as_bytes())?,
        Value::TimestampTz(s) => put_text(out, TextKind::TimestampTz, s.as_bytes())?,
        Value::Interval(s) => put_text(out, TextKind::Interval, s.as_bytes())?,
        Value::Array(items) => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(VaultError::Unencodable {
                    reason: "arrays nest deeper than MAX_ARRAY_DEPTH",
                });
            }
            out.push(ARRAY);
            put_len(out, items.len(), "an array has more than u32::MAX elements")?;
            for item in items {
                encode_value(item, out, depth + 1)?;
            }
        }
        Value::Other { type_name, text } => put_other(out, type_name, text.as_bytes())?,
    }
    Ok(())
}

/// Decodes exactly one canonical row; the exact inverse of [`encode_row`].
///
/// Any byte sequence that `encode_row` could not have produced (unknown tag,
/// truncation, trailing bytes, invalid UTF-8, a bool other than 0/1, arrays
/// nested too deep) is an error, never a panic, and no allocation is sized
/// by a length field beyond the bytes actually present.
pub fn decode_row(bytes: &[u8]) -> Result<Vec<Value>, VaultError> {
    let mut cursor = Cursor { bytes, pos: 0 };
    let count = cursor.u32()? as usize;
    // Every value takes at least one byte, which bounds honest counts.
    let mut row = Vec::with_capacity(count.min(cursor.remaining()));
    for _ in 0..count {
        row.push(cursor.value(0)?);
    }
    if cursor.remaining() != 0 {
        return Err(cursor.malformed("trailing bytes after the last value"));
    }
    Ok(row)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn malformed(&self, problem: &'static str) -> VaultError {
        VaultError::MalformedRow {
            offset: self.pos,
            problem,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], VaultError> {
        if n > self.remaining() {
            return Err(self.malformed("truncated: a length runs past the end of the row"));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], VaultError> {
        let mut buf = [0u8; N];
        buf.copy_from_slice(self.take(N)?);
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, VaultError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn blob(&mut self) -> Result<&'a [u8], VaultError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, VaultError> {
        let start = self.pos;
        let bytes = self.blob()?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(VaultError::MalformedRow {
                offset: start,
                problem: "text is not valid UTF-8",
            }),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, VaultError> {
        let tag_at = self.pos;
        let [tag] = self.array::<1>()?;
        Ok(match tag {
            NULL => Value::Null,
            BOOL => match self.array::<1>()? {
                [0] => Value::Bool(false),
                [1] => Value::Bool(true),
                _ => return Err(self.malformed("a bool byte other than 0 or 1")),
            },
            INT => Value::Int(i64::from_be_bytes(self.array()?)),
            UINT => Value::UInt(u64::from_be_bytes(self.array()?)),
            FLOAT => Value::Float(f64::from_bits(u64::from_be_bytes(self.array()?))),
            DECIMAL => Value::Decimal(self.string()?),
            TEXT => Value::Text(self.string()?),
            BYTES => Value::Bytes(self.blob()?.to_vec()),
            JSON => Value::Json(self.string()?),
            UUID => Value::Uuid(self.string()?),
            DATE => Value::Date(self.string()?),
            TIME => Value::Time(self.string()?),
            TIMESTAMP => Value::Timestamp(self.string()?),
            TIMESTAMPTZ => Value::TimestampTz(self.string()?),
            INTERVAL => Value::Interval(self.string()?),
            ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.malformed("arrays nested deeper than MAX_ARRAY_DEPTH"));
                }
                let count = self.u32()? as usize;
                let mut items = Vec::with_capacity(count.min(self.remaining()));
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            OTHER => {
                let type_name = self.string()?;
                let text = self.string()?;
                Value::Other { type_name, text }
            }
            _ => {
                return Err(VaultError::MalformedRow {
                    offset: tag_at,
                    problem: "unknown value tag",
                });
            }
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any `Value`, leaning on the cases that break naive encoders.
    pub fn arb_value() -> impl Strategy<Value = Value> {
        let float = prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(-f64::NAN),
            Just(f64::from_bits(0x7ff0_0000_0000_0001)),
            Just(-0.0),
            Just(0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::MIN_POSITIVE),
        ];
        let text = prop_oneof![
            Just(String::new()),
            Just("\0".to_string()),
            Just("a\0b".to_string()),
            "\\PC{0,40}",
            any::<String>(),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            prop_oneof![any::<u64>(), Just(u64::MAX)].prop_map(Value::UInt),
            float.prop_map(Value::Float),
            text.clone().prop_map(Value::Decimal),
            text.clone().prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
            text.clone().prop_map(Value::Json),
            text.clone().prop_map(Value::Uuid),
            text.clone().prop_map(Value::Date),
            text.clone().prop_map(Value::Time),
            text.clone().prop_map(Value::Timestamp),
            text.clone().prop_map(Value::TimestampTz),
            text.clone().prop_map(Value::Interval),
            (text.clone(), text).prop_map(|(type_name, text)| Value::Other { type_name, text }),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(Value::Array)
        })
    }

    pub fn arb_row() -> impl Strategy<Value = Vec<Value>> {
        proptest::collection::vec(arb_value(), 0..8)
    }

    fn encoded(row: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_row(row, &mut out).expect("test rows are encodable");
        out
    }

    proptest! {
        #[test]
        fn round_trips(row in arb_row()) {
            let bytes = encoded(&row);
            prop_assert_eq!(decode_row(&bytes).expect("own encoding decodes"), row);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            // Canonical means: whatever decodes re-encodes to the same bytes.
            if let Ok(row) = decode_row(&bytes) {
                prop_assert_eq!(encoded(&row), bytes);
            }
        }

        #[test]
        fn mutated_encodings_never_panic(
            row in arb_row(),
            flip in any::<proptest::sample::Index>(),
            xor in 1u8..,
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut bytes = encoded(&row);
            let at = flip.index(bytes.len());
            bytes[at] ^= xor;
            if let Ok(decoded) = decode_row(&bytes) {
                prop_assert_ne!(decoded, row.clone());
            }
            let good = encoded(&row);
            let cut_at = cut.index(good.len());
            prop_assert!(decode_row(&good[..cut_at]).is_err());
        }

        #[test]
        fn distinct_rows_encode_distinctly(a in arb_row(), b in arb_row()) {
            prop_assert_eq!(a == b, encoded(&a) == encoded(&b));
        }
    }

    #[test]
    fn null_empty_text_and_empty_array_differ() {
        let null = encoded(&[Value::Null]);
        let empty_text = encoded(&[Value::Text(String::new())]);
        let empty_array = encoded(&[Value::Array(vec![])]);
        assert_ne!(null, empty_text);
        assert_ne!(null, empty_array);
        assert_ne!(empty_text, empty_array);
        assert_ne!(encoded(&[]), encoded(&[Value::Null]));
    }

    #[test]
    fn layout_is_big_endian_and_tagged() {
        let bytes = encoded(&[Value::Int(1), Value::Text("hi".into())]);
        assert_eq!(
            bytes,
            [
                0, 0, 0, 2, INT, 0, 0, 0, 0, 0, 0, 0, 1, TEXT, 0, 0, 0, 2, b'h', b'i'
            ]
        );
    }

    #[test]
    fn huge_length_prefix_does_not_allocate_or_panic() {
        // Claims 4 billion values, then 4 billion bytes of text.
        let bytes = [0xff, 0xff, 0xff, 0xff, TEXT, 0xff, 0xff, 0xff, 0xff, b'a'];
        assert!(matches!(
            decode_row(&bytes),
            Err(VaultError::MalformedRow { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_refused_both_ways() {
        let mut deep = Value::Null;
        for _ in 0..=MAX_ARRAY_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        let mut out = vec![1, 2, 3];
        assert!(encode_row(std::slice::from_ref(&deep), &mut out).is_err());
        assert_eq!(
            out,
            [1, 2, 3],
            "a failed encode leaves the buffer as it was"
        );

        let mut bytes = vec![0, 0, 0, 1];
        for _ in 0..100_000 {
            bytes.extend_from_slice(&[ARRAY, 0, 0, 0, 1]);
        }
        bytes.push(NULL);
        assert!(decode_row(&bytes).is_err());

        let mut ok = Value::Null;
        for _ in 0..MAX_ARRAY_DEPTH {
            ok = Value::Array(vec![ok]);
        }
        let row = vec![ok];
        assert_eq!(decode_row(&encoded(&row)).expect("max depth decodes"), row);
    }

    #[test]
    fn bool_must_be_zero_or_one() {
        assert!(decode_row(&[0, 0, 0, 1, BOOL, 2]).is_err());
        assert!(decode_row(&[0, 0, 0, 1, TEXT, 0, 0, 0, 1, 0xff]).is_err());
    }
}
