//! PostgreSQL's binary COPY format, for the column types whose binary form the
//! vault's values give exactly: the server then skips its text input functions
//! (numeric, timestamps, integers), the larger part of a load's time.
//!
//! Exactness rule: a value is encoded only when its text parses completely in
//! the one form PostgreSQL printed it under dropguard's pinned session settings
//! (`TimeZone=UTC`, `DateStyle=ISO`); anything else is [`Unencodable`], and the
//! caller loads the object in the text format instead. The checksum read back
//! after commit proves the result either way.

use crate::vault::Value;

/// A value the binary format cannot carry exactly; the load falls back to text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unencodable;

/// How one column's values are written in binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bytes,
    /// text, varchar: the UTF-8 bytes, which the type's receive function
    /// checks and fits to the column's length as its input function does.
    Text,
    Uuid,
    Numeric,
    Date,
    /// timestamp without time zone.
    Timestamp,
    /// timestamp with time zone; the text ends in `+00` (TimeZone=UTC).
    TimestampTz,
}

impl BinKind {
    fn of(declared: &str) -> Option<Self> {
        let t = declared.to_ascii_lowercase();
        Some(match t.as_str() {
            "boolean" => Self::Bool,
            "smallint" => Self::Int2,
            "integer" => Self::Int4,
            "bigint" => Self::Int8,
            "real" => Self::Float4,
            "double precision" => Self::Float8,
            "bytea" => Self::Bytes,
            "text" => Self::Text,
            "uuid" => Self::Uuid,
            "date" => Self::Date,
            _ if t == "character varying" || t.starts_with("character varying(") => Self::Text,
            _ if t == "numeric" || t.starts_with("numeric(") => Self::Numeric,
            _ if is_timestamp(&t, "with time zone") => Self::TimestampTz,
            _ if is_timestamp(&t, "without time zone") => Self::Timestamp,
            _ => return None,
        })
    }
}

/// `timestamp [(p)] <zone>`, as `format_type` spells it.
fn is_timestamp(t: &str, zone: &str) -> bool {
    let Some(rest) = t.strip_prefix("timestamp") else {
        return false;
    };
    let rest = match rest.strip_prefix('(') {
        Some(p) => match p.split_once(')') {
            Some((digits, after)) if digits.bytes().all(|b| b.is_ascii_digit()) => after,
            _ => return false,
        },
        None => rest,
    };
    rest.strip_prefix(' ') == Some(zone)
}

/// Encodes rows of one object's columns in COPY's binary format.
#[derive(Debug, Clone)]
pub struct BinaryRows {
    kinds: Vec<BinKind>,
}

/// The fixed start of binary COPY data: signature, flags, no extension.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

impl BinaryRows {
    /// The encoder for columns of these declared types; `None` when one of them
    /// has no exact binary form here.
    pub fn for_types(types: &[&str]) -> Option<Self> {
        let kinds = types
            .iter()
            .map(|t| BinKind::of(t))
            .collect::<Option<Vec<_>>>()?;
        i16::try_from(kinds.len()).ok()?;
        Some(Self { kinds })
    }

    /// Appends the data's header; once, before the first row.
    pub fn header(out: &mut Vec<u8>) {
        out.extend_from_slice(HEADER);
    }

    /// Appends one row. On [`Unencodable`], `out` is as it was.
    pub fn row(&self, row: &[Value], out: &mut Vec<u8>) -> Result<(), Unencodable> {
        if row.len() != self.kinds.len() {
            return Err(Unencodable);
        }
        let start = out.len();
        // Checked in `for_types`.
        out.extend_from_slice(&(self.kinds.len() as i16).to_be_bytes());
        for (kind, value) in self.kinds.iter().zip(row) {
            if let Err(err) = field(*kind, value, out) {
                out.truncate(start);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Appends the data's trailer; once, after the last row.
    pub fn trailer(out: &mut Vec<u8>) {
        out.extend_from_slice(&(-1i16).to_be_bytes());
    }
}

/// One field: its length (-1 for NULL), then its bytes.
fn field(kind: BinKind, value: &Value, out: &mut Vec<u8>) -> Result<(), Unencodable> {
    fn sized(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), Unencodable> {
        let len = i32::try_from(bytes.len()).map_err(|_| Unencodable)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
        Ok(())
    }
    match (kind, value) {
        (_, Value::Null) => out.extend_from_slice(&(-1i32).to_be_bytes()),
        (BinKind::Bool, Value::Bool(v)) => sized(out, &[u8::from(*v)])?,
        (BinKind::Int2, Value::Int(v)) => sized(
            out,
            &i16::try_from(*v).map_err(|_| Unencodable)?.to_be_bytes(),
        )?,
        (BinKind::Int4, Value::Int(v)) => sized(
            out,
            &i32::try_from(*v).map_err(|_| Unencodable)?.to_be_bytes(),
        )?,
        (BinKind::Int8, Value::Int(v)) => sized(out, &v.to_be_bytes())?,
        (BinKind::Float4, Value::Float(v)) => {
            // Exact only when the value is an f32 widened (as preserve read it).
            let narrow = *v as f32;
            if f64::from(narrow).to_bits() != v.to_bits() && !v.is_nan() {
                return Err(Unencodable);
            }
            sized(out, &narrow.to_bits().to_be_bytes())?
        }
        (BinKind::Float8, Value::Float(v)) => sized(out, &v.to_bits().to_be_bytes())?,
        (BinKind::Bytes, Value::Bytes(v)) => sized(out, v)?,
        (BinKind::Text, Value::Text(v)) => sized(out, v.as_bytes())?,
        (BinKind::Uuid, Value::Uuid(v)) => sized(out, &uuid(v).ok_or(Unencodable)?)?,
        (BinKind::Numeric, Value::Decimal(v)) => {
            let start = out.len();
            out.extend_from_slice(&[0; 4]);
            numeric(v, out).ok_or(Unencodable)?;
            let len = i32::try_from(out.len() - start - 4).map_err(|_| Unencodable)?;
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        }
        (BinKind::Date, Value::Date(v)) => sized(out, &date(v).ok_or(Unencodable)?.to_be_bytes())?,
        (BinKind::Timestamp, Value::Timestamp(v)) => {
            sized(out, &timestamp(v, false).ok_or(Unencodable)?.to_be_bytes())?
        }
        (BinKind::TimestampTz, Value::TimestampTz(v)) => {
            sized(out, &timestamp(v, true).ok_or(Unencodable)?.to_be_bytes())?
        }
        _ => return Err(Unencodable),
    }
    Ok(())
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lower-case hex, as PostgreSQL prints it).
fn uuid(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&i| bytes[i] != b'-') {
        return None;
    }
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut digits = bytes.iter().copied().filter(|&c| c != b'-');
    let mut out = [0u8; 16];
    for byte in &mut out {
        *byte = (hex(digits.next()?)? << 4) | hex(digits.next()?)?;
    }
    Some(out)
}

/// numeric's binary form: digit count, weight, sign, display scale, then base-
/// 10,000 digits, from the text PostgreSQL prints (`-12.50`, `NaN`, `Infinity`;
/// never an exponent).
fn numeric(text: &str, out: &mut Vec<u8>) -> Option<()> {
    const POS: u16 = 0x0000;
    const NEG: u16 = 0x4000;
    let special = |out: &mut Vec<u8>, sign: u16| {
        for part in [0u16, 0, sign, 0] {
            out.extend_from_slice(&part.to_be_bytes());
        }
    };
    match text {
        "NaN" => {
            special(out, 0xC000);
            return Some(());
        }
        "Infinity" => {
            special(out, 0xD000);
            return Some(());
        }
        "-Infinity" => {
            special(out, 0xF000);
            return Some(());
        }
        _ => {}
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (unsigned.contains('.') && frac.is_empty())
    {
        return None;
    }
    let dscale = u16::try_from(frac.len()).ok().filter(|&s| s <= 0x3FFF)?;
    // Base-10,000 groups: the integer part aligned at the point from the right,
    // the fraction from the left, each padded with zeros to whole groups.
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let mut digits: Vec<u16> = Vec::with_capacity((int.len() + frac.len()) / 4 + 2);
    let mut group = 0u16;
    let mut filled = 0;
    let padded = std::iter::repeat_n(b'0', int_pad)
        .chain(int.bytes())
        .chain(frac.bytes())
        .chain(std::iter::repeat_n(b'0', frac_pad));
    for b in padded {
        group = group * 10 + u16::from(b - b'0');
        filled += 1;
        if filled == 4 {
            digits.push(group);
            group = 0;
            filled = 0;
        }
    }
    let mut weight = i32::try_from((int.len() + int_pad) / 4).ok()? - 1;
    let leading = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..leading);
    weight -= i32::try_from(leading).ok()?;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let sign = if digits.is_empty() {
        weight = 0;
        POS
    } else if negative {
        NEG
    } else {
        POS
    };
    let ndigits = u16::try_from(digits.len()).ok()?;
    let weight = i16::try_from(weight).ok()?;
    out.extend_from_slice(&ndigits.to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for digit in digits {
        out.extend_from_slice(&digit.to_be_bytes());
    }
    Some(())
}

/// Days from 2000-01-01 (PostgreSQL's epoch) of `YYYY-MM-DD[ BC]`; `infinity`
/// and `-infinity` are the type's end values.
fn date(text: &str) -> Option<i32> {
    match text {
        "infinity" => return Some(i32::MAX),
        "-infinity" => return Some(i32::MIN),
        _ => {}
    }
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let days = days_since_2000(text, bc)?;
    i32::try_from(days).ok()
}

/// `YYYY-MM-DD`, years of four or more digits; BC years counted as PostgreSQL
/// and ISO do (1 BC is year 0).
fn days_since_2000(text: &str, bc: bool) -> Option<i64> {
    let (year, rest) = text.split_once('-')?;
    let (month, day) = rest.split_once('-')?;
    if year.len() < 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    let digits = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<i64>().ok())?
    };
    let (year, month, day) = (digits(year)?, digits(month)?, digits(day)?);
    let year = if bc { 1 - year } else { year };
    if bc && year > 0 {
        return None; // "0000 BC" is not printed
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        u32::try_from(month).ok()?,
        u32::try_from(day).ok()?,
    )?;
    let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)?;
    Some((date - epoch).num_days())
}

/// Microseconds from 2000-01-01 00:00:00 (UTC for `with_zone`) of
/// `YYYY-MM-DD HH:MM:SS[.ffffff][+00][ BC]`; `infinity`, `-infinity` too.
fn timestamp(text: &str, with_zone: bool) -> Option<i64> {
    match text {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let text = if with_zone {
        text.strip_suffix("+00")?
    } else {
        text
    };
    let (day, time) = text.split_once(' ')?;
    let days = days_since_2000(day, bc)?;
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, fraction),
        None => (time, ""),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let [h, m, s] = parts.as_slice() else {
        return None;
    };
    let two = |s: &str| {
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<i64>().ok())
            .flatten()
    };
    let (h, m, s) = (two(h)?, two(m)?, two(s)?);
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    if fraction.len() > 6
        || (time.contains('.') && fraction.is_empty())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut micros = 0i64;
    for i in 0..6 {
        micros = micros * 10
            + fraction
                .as_bytes()
                .get(i)
                .map_or(0, |b| i64::from(b - b'0'));
    }
    let seconds = days.checked_mul(86_400)? + h * 3_600 + m * 60 + s;
    let value = seconds.checked_mul(1_000_000)?.checked_add(micros)?;
    // The ends are reserved for ±infinity.
    (value != i64::MAX && value != i64::MIN).then_some(value)
}

/// A column read back in binary and printed as PostgreSQL prints it under
/// dropguard's pinned session settings (`TimeZone=UTC`, `DateStyle=ISO`), so the
/// server skips its output functions and the text is still the one `::text`
/// gives: the inverse of the encoders above, for the read that proves a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Printed {
    Numeric,
    Date,
    Timestamp,
    TimestampTz,
}

/// Julian day of 2000-01-01, PostgreSQL's epoch for dates and timestamps.
const EPOCH_JULIAN_DAY: i64 = 2_451_545;
const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Printed {
    /// The printed form of a column of this declared type, if it has one.
    pub(super) fn of(declared: &str) -> Option<Self> {
        Some(match BinKind::of(declared)? {
            BinKind::Numeric => Self::Numeric,
            BinKind::Date => Self::Date,
            BinKind::Timestamp => Self::Timestamp,
            BinKind::TimestampTz => Self::TimestampTz,
            _ => return None,
        })
    }

    /// Appends the text of one non-NULL field's binary form.
    pub(super) fn print(self, field: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let bad = || format!("a {self:?} field of {} bytes that is not one", field.len());
        match self {
            Self::Numeric => numeric_text(field, out).ok_or_else(bad),
            Self::Date => {
                let days = i32::from_be_bytes(field.try_into().map_err(|_| bad())?);
                date_text(days, out);
                Ok(())
            }
            Self::Timestamp | Self::TimestampTz => {
                let micros = i64::from_be_bytes(field.try_into().map_err(|_| bad())?);
                timestamp_text(micros, self == Self::TimestampTz, out);
                Ok(())
            }
        }
    }
}

/// numeric's text from its binary form, as `numeric_out` prints it: the sign,
/// the integer digits without leading zeros (`0` when there are none), then
/// exactly display-scale digits after the point.
fn numeric_text(field: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let word = |i: usize| {
        field
            .get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = i64::from(word(3)?);
    if field.len() != 8 + ndigits * 2 {
        return None;
    }
    match sign {
        0xC000 => {
            out.extend_from_slice(b"NaN");
            return Some(());
        }
        0xD000 => {
            out.extend_from_slice(b"Infinity");
            return Some(());
        }
        0xF000 => {
            out.extend_from_slice(b"-Infinity");
            return Some(());
        }
        0x0000 => {}
        0x4000 => out.push(b'-'),
        _ => return None,
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let digit = word(4 + i)?;
        if digit > 9999 {
            return None;
        }
        digits.push(digit);
    }
    let group = |d: i64| {
        usize::try_from(d)
            .ok()
            .and_then(|d| digits.get(d).copied())
            .unwrap_or(0)
    };
    let four = |value: u16, out: &mut Vec<u8>| {
        for divisor in [1000, 100, 10, 1] {
            out.push(b'0' + (value / divisor % 10) as u8);
        }
    };
    // Before the point: groups 0..=weight, the first without leading zeros.
    if weight < 0 {
        out.push(b'0');
    } else {
        push_padded(out, group(0).into(), 1);
        for d in 1..=weight {
            four(group(d), out);
        }
    }
    // After the point: whole groups from weight + 1, cut to the display scale.
    if dscale > 0 {
        out.push(b'.');
        let start = out.len();
        let mut d = weight + 1;
        while i64::try_from(out.len() - start).ok()? < dscale {
            four(group(d), out);
            d += 1;
        }
        out.truncate(start + usize::try_from(dscale).ok()?);
    }
    Some(())
}

/// Year, month and day of a Julian day number, proleptic Gregorian, year 0 for
/// 1 BC (the arithmetic of PostgreSQL's `j2date`).
fn julian_to_civil(julian_day: i64) -> (i64, u32, u32) {
    let mut julian = julian_day + 32_044;
    let mut quad = julian.div_euclid(146_097);
    let extra = (julian - quad * 146_097) * 4 + 3;
    julian += 60 + quad * 3 + extra.div_euclid(146_097);
    quad = julian.div_euclid(1_461);
    julian -= quad * 1_461;
    let mut year = julian * 4 / 1_461;
    julian = if year != 0 {
        (julian + 305) % 365
    } else {
        (julian + 306) % 366
    } + 123;
    year += quad * 4;
    let quad = julian * 2_141 / 65_536;
    let day = julian - 7_834 * quad / 256;
    let month = (quad + 10) % 12 + 1;
    (year - 4_800, month as u32, day as u32)
}

/// The decimal digits of `value`, zero-padded to at least `width`.
fn push_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for _ in (digits.len() - at)..width {
        out.push(b'0');
    }
    out.extend_from_slice(&digits[at..]);
}

/// `YYYY-MM-DD` of the year (BC years as their positive number; the caller
/// appends ` BC`), with at least four year digits.
fn push_civil(year: i64, month: u32, day: u32, out: &mut Vec<u8>) {
    let shown = if year > 0 { year } else { 1 - year };
    push_padded(out, shown.unsigned_abs(), 4);
    out.push(b'-');
    push_padded(out, month.into(), 2);
    out.push(b'-');
    push_padded(out, day.into(), 2);
}

/// date's text: `YYYY-MM-DD[ BC]`, `infinity`, `-infinity`.
fn date_text(days: i32, out: &mut Vec<u8>) {
    match days {
        i32::MAX => out.extend_from_slice(b"infinity"),
        i32::MIN => out.extend_from_slice(b"-infinity"),
        _ => {
            let (year, month, day) = julian_to_civil(i64::from(days) + EPOCH_JULIAN_DAY);
            push_civil(year, month, day, out);
            if year <= 0 {
                out.extend_from_slice(b" BC");
            }
        }
    }
}

/// timestamp's text, `YYYY-MM-DD HH:MM:SS[.ffffff][+00][ BC]` (the fraction
/// without trailing zeros; `+00` for `with time zone`, printed in UTC),
/// `infinity`, `-infinity`.
fn timestamp_text(micros: i64, with_zone: bool, out: &mut Vec<u8>) {
    match micros {
        i64::MAX => return out.extend_from_slice(b"infinity"),
        i64::MIN => return out.extend_from_slice(b"-infinity"),
        _ => {}
    }
    let days = micros.div_euclid(MICROS_PER_DAY);
    let time = micros.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = julian_to_civil(days + EPOCH_JULIAN_DAY);
    push_civil(year, month, day, out);
    // Both are non-negative: `time` is the remainder within the day.
    let seconds = (time / 1_000_000).unsigned_abs();
    let mut fraction = (time % 1_000_000).unsigned_abs();
    out.push(b' ');
    push_padded(out, seconds / 3_600, 2);
    out.push(b':');
    push_padded(out, seconds / 60 % 60, 2);
    out.push(b':');
    push_padded(out, seconds % 60, 2);
    if fraction != 0 {
        // Six digits without the trailing zeros.
        let mut width = 6;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            width -= 1;
        }
        out.push(b'.');
        push_padded(out, fraction, width);
    }
    if with_zone {
        out.extend_from_slice(b"+00");
    }
    if year <= 0 {
        out.extend_from_slice(b" BC");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(text: &str) -> Vec<i16> {
        let mut out = Vec::new();
        numeric(text, &mut out).expect("encodable");
        out.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numerics_take_postgres_binary_form() {
        // ndigits, weight, sign, dscale, digits…
        assert_eq!(numeric_bytes("0"), [0, 0, 0, 0]);
        assert_eq!(numeric_bytes("0.00"), [0, 0, 0, 2]);
        assert_eq!(numeric_bytes("1"), [1, 0, 0, 0, 1]);
        assert_eq!(numeric_bytes("12345.678"), [3, 1, 0, 3, 1, 2345, 6780]);
        assert_eq!(numeric_bytes("-0.50"), [1, -1, 0x4000, 2, 5000]);
        assert_eq!(numeric_bytes("0.0001"), [1, -1, 0, 4, 1]);
        assert_eq!(numeric_bytes("0.00001"), [1, -2, 0, 5, 1000]);
        assert_eq!(numeric_bytes("10000"), [1, 1, 0, 0, 1]);
        assert_eq!(numeric_bytes("999.99"), [2, 0, 0, 2, 999, 9900]);
        assert_eq!(numeric_bytes("NaN"), [0, 0, 0xC000u16 as i16, 0]);
        assert_eq!(numeric_bytes("-Infinity"), [0, 0, 0xF000u16 as i16, 0]);
        for bad in ["", "-", "1.", ".5", "1e5", "1,5", " 1", "+1", "--1"] {
            assert!(numeric(bad, &mut Vec::new()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn times_count_from_2000() {
        assert_eq!(timestamp("2000-01-01 00:00:00+00", true), Some(0));
        assert_eq!(timestamp("2000-01-01 00:00:01.5+00", true), Some(1_500_000));
        assert_eq!(timestamp("1999-12-31 23:59:59.999999", false), Some(-1));
        assert_eq!(
            timestamp("2026-01-01 00:00:01+00", true),
            Some((9_497 * 86_400 + 1) * 1_000_000)
        );
        assert_eq!(
            timestamp("0001-12-31 00:00:00 BC", false),
            timestamp("0000-12-31 00:00:00", false)
        );
        assert_eq!(timestamp("infinity", true), Some(i64::MAX));
        for bad in [
            "2026-01-01 00:00:01",
            "2026-01-01 00:00:01+01",
            "2026-01-01 24:00:00+00",
            "2026-01-01 00:00:01.+00",
            "2026-01-01 00:00:01.1234567+00",
            "26-01-01 00:00:01+00",
            "2026-02-30 00:00:00+00",
        ] {
            assert_eq!(timestamp(bad, true), None, "{bad}");
        }
        assert_eq!(date("2000-01-02"), Some(1));
        assert_eq!(date("1999-12-31"), Some(-1));
        assert_eq!(date("4714-11-24 BC"), Some(-2_451_545));
        assert_eq!(date("-infinity"), Some(i32::MIN));
    }

    #[test]
    fn printed_forms_are_the_inverse_of_the_encoders() {
        for text in [
            "0",
            "0.00",
            "1",
            "-0.50",
            "0.0001",
            "0.00001",
            "10000",
            "999.99",
            "12345.678",
            "-99999999999999.999999",
            "100000000000000000000",
            "NaN",
            "Infinity",
            "-Infinity",
        ] {
            let mut binary = Vec::new();
            numeric(text, &mut binary).expect("encodable");
            let mut printed = Vec::new();
            Printed::Numeric.print(&binary, &mut printed).unwrap();
            assert_eq!(String::from_utf8(printed).unwrap(), text);
        }
        for text in [
            "2000-01-01 00:00:00+00",
            "2000-01-01 00:00:01.5+00",
            "1999-12-31 23:59:59.999999+00",
            "0001-01-01 00:00:00+00 BC",
            "4713-11-24 00:00:00+00 BC",
            "200000-06-30 12:00:00.25+00",
            "infinity",
            "-infinity",
        ] {
            let micros = timestamp(text, true).unwrap_or_else(|| panic!("a timestamp: {text}"));
            let mut printed = Vec::new();
            Printed::TimestampTz
                .print(&micros.to_be_bytes(), &mut printed)
                .unwrap();
            assert_eq!(String::from_utf8(printed).unwrap(), text);
        }
        for text in [
            "2000-01-01",
            "1999-12-31",
            "4713-11-24 BC",
            "200000-02-29",
            "infinity",
        ] {
            let days = date(text).unwrap_or_else(|| panic!("a date: {text}"));
            let mut printed = Vec::new();
            Printed::Date
                .print(&days.to_be_bytes(), &mut printed)
                .unwrap();
            assert_eq!(String::from_utf8(printed).unwrap(), text);
        }
        // Bytes that are not the type are an error, not a guess.
        let mut out = Vec::new();
        assert!(Printed::Numeric.print(&[0, 1, 0, 0], &mut out).is_err());
        assert!(
            Printed::Numeric
                .print(&[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10], &mut out)
                .is_err()
        );
        assert!(Printed::Date.print(&[0; 8], &mut out).is_err());
        assert!(Printed::Timestamp.print(&[0; 4], &mut out).is_err());
    }

    #[test]
    fn uuids_and_rows() {
        assert_eq!(
            uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").map(|b| b[0]),
            Some(0xa0)
        );
        assert_eq!(uuid("a0eebc999c0b4ef8bb6d6bb9bd380a11"), None);
        let rows = BinaryRows::for_types(&["bigint", "character varying(40)", "numeric(12,2)"])
            .expect("binary types");
        let mut out = Vec::new();
        rows.row(
            &[Value::Int(7), Value::Null, Value::Decimal("1.50".into())],
            &mut out,
        )
        .expect("encodable");
        assert_eq!(&out[..2], &3i16.to_be_bytes());
        let before = out.clone();
        assert_eq!(
            rows.row(
                &[
                    Value::Int(7),
                    Value::Text("x".into()),
                    Value::Decimal("1e3".into())
                ],
                &mut out
            ),
            Err(Unencodable)
        );
        assert_eq!(out, before, "a refused row leaves nothing behind");
        assert!(BinaryRows::for_types(&["bigint", "jsonb"]).is_none());
        assert!(BinaryRows::for_types(&["timestamp(3) with time zone"]).is_some());
        assert!(BinaryRows::for_types(&["timestamp(3) with time zone x"]).is_none());
    }
}
