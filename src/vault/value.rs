//! Owns `Value`, the vault's database-neutral cell. It must never normalise
//! what the database printed (trim decimals, re-case text, reformat dates):
//! restore is byte-exact only if the vault keeps exactly what it was given.

/// One cell of a preserved row.
///
/// Everything whose exact text matters is kept as the database's own text,
/// because restore casts that text back and the checksum must match what the
/// database prints when the restored rows are read again.
#[derive(Debug, Clone)]
pub enum Value {
    /// SQL NULL; distinct from `Text("")` and from `Array(vec![])`.
    Null,
    Bool(bool),
    Int(i64),
    /// MySQL `BIGINT UNSIGNED`, whose upper half does not fit an `i64`.
    UInt(u64),
    /// Kept by its bits, so NaN payloads, -0.0 and infinities round-trip.
    Float(f64),
    /// Exact text as the database prints it, e.g. `"12.30"` (scale matters).
    Decimal(String),
    Text(String),
    Bytes(Vec<u8>),
    /// The database's text of a json/jsonb value, verbatim (key order and
    /// whitespace included).
    Json(String),
    /// Canonical lowercase hyphenated text.
    Uuid(String),
    /// The database's text of a date.
    Date(String),
    /// The database's text of a time of day.
    Time(String),
    /// The database's text of a timestamp without time zone.
    Timestamp(String),
    /// The database's text of a timestamp with time zone.
    TimestampTz(String),
    /// The database's text of an interval.
    Interval(String),
    /// A PostgreSQL array; multi-dimensional arrays nest.
    Array(Vec<Value>),
    /// Anything else (inet, enum, set, geometry, …), restored by a cast from
    /// `text` to `type_name`.
    Other {
        /// The SQL type to cast `text` back to on restore.
        type_name: String,
        /// The database's text of the value.
        text: String,
    },
}

impl Value {
    /// The text of the variants that hold the database's own text.
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Decimal(t)
            | Value::Text(t)
            | Value::Json(t)
            | Value::Uuid(t)
            | Value::Date(t)
            | Value::Time(t)
            | Value::Timestamp(t)
            | Value::TimestampTz(t)
            | Value::Interval(t)
            | Value::Other { text: t, .. } => Some(t),
            _ => None,
        }
    }
}

/// The variants of [`Value`] that hold the database's text, as a kind: what a
/// column's text becomes, for readers that build canonical rows straight from
/// the database's bytes (see [`encoding::put_text`](super::encoding::put_text)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Decimal,
    Text,
    Json,
    Uuid,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
}

impl TextKind {
    /// The value of this kind holding `text`.
    pub fn value(self, text: String) -> Value {
        match self {
            TextKind::Decimal => Value::Decimal(text),
            TextKind::Text => Value::Text(text),
            TextKind::Json => Value::Json(text),
            TextKind::Uuid => Value::Uuid(text),
            TextKind::Date => Value::Date(text),
            TextKind::Time => Value::Time(text),
            TextKind::Timestamp => Value::Timestamp(text),
            TextKind::TimestampTz => Value::TimestampTz(text),
            TextKind::Interval => Value::Interval(text),
        }
    }
}

impl PartialEq for Value {
    // Floats compare by bits, not IEEE equality: a round-trip check must see
    // NaN == NaN and must tell -0.0 from 0.0, or a lossy restore would pass.
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Decimal(a), Decimal(b))
            | (Text(a), Text(b))
            | (Json(a), Json(b))
            | (Uuid(a), Uuid(b))
            | (Date(a), Date(b))
            | (Time(a), Time(b))
            | (Timestamp(a), Timestamp(b))
            | (TimestampTz(a), TimestampTz(b))
            | (Interval(a), Interval(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            (
                Other {
                    type_name: ta,
                    text: xa,
                },
                Other {
                    type_name: tb,
                    text: xb,
                },
            ) => ta == tb && xa == xb,
            _ => false,
        }
    }
}

// Bitwise float comparison is reflexive, so equality is a true equivalence.
impl Eq for Value {}

#[cfg(test)]
mod tests {
    use super::Value;

    #[test]
    fn floats_compare_by_bits() {
        assert_eq!(Value::Float(f64::NAN), Value::Float(f64::NAN));
        assert_ne!(Value::Float(0.0), Value::Float(-0.0));
        assert_eq!(Value::Float(f64::INFINITY), Value::Float(f64::INFINITY));
    }

    #[test]
    fn null_is_not_empty() {
        assert_ne!(Value::Null, Value::Text(String::new()));
        assert_ne!(Value::Null, Value::Array(vec![]));
        assert_ne!(Value::Text(String::new()), Value::Bytes(vec![]));
        assert_ne!(Value::Text("1".into()), Value::Decimal("1".into()));
    }

    #[test]
    fn nested_arrays_compare_deeply() {
        let a = Value::Array(vec![Value::Array(vec![Value::Float(f64::NAN)])]);
        assert_eq!(a, a.clone());
        let b = Value::Array(vec![Value::Array(vec![Value::Float(1.0)])]);
        assert_ne!(a, b);
    }
}
