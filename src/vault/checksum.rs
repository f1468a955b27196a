//! Owns the per-object checksum: a row count plus a multiset hash of the rows'
//! canonical encodings. It must never depend on row order, and never hash
//! anything but the canonical encoding, or a restore that reads the same rows
//! back could fail to verify.
//!
//! Why order-independent: a snapshot is read in whatever order the database
//! streamed it, and after restore the database returns rows in whatever order
//! its planner likes (heap order changes with every rewrite). An ordered hash
//! would force an ORDER BY on every table - costly, and for columns without a
//! total order (json, floats with NaN, collation-dependent text) not even
//! well defined. Summing per-row SHA-256 digests modulo 2^256 is commutative,
//! so any order yields the same sum, while duplicate rows still count twice.
//!
//! What it is not: an additive multiset hash resists accidental corruption
//! (bit rot, truncation, a lost or duplicated row), not an adversary who can
//! choose rows to collide (generalised-birthday attacks). The vault's threat
//! model is disks and bugs, not forgers.

use std::fmt;

use sha2::{Digest, Sha256};

use super::encoding::encode_row;
use super::error::VaultError;
use super::value::Value;

const PREFIX: &str = "sha256-sum:";

/// Row count and multiset hash of one preserved object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectChecksum {
    /// Catches lost rows cheaply and makes mismatch reports readable.
    pub rows: u64,
    /// Sum of the rows' SHA-256 digests as big-endian 256-bit integers,
    /// modulo 2^256; big-endian so the hex text reads as the number.
    pub sum: [u8; 32],
}

impl ObjectChecksum {
    /// The sum's text form as stored in the manifest: `sha256-sum:<64 hex>`.
    pub fn sum_text(&self) -> String {
        format!("{PREFIX}{}", to_hex(&self.sum))
    }

    /// Parses the manifest text form back into a sum.
    pub fn parse_sum(text: &str) -> Result<[u8; 32], VaultError> {
        text.strip_prefix(PREFIX)
            .and_then(from_hex)
            .ok_or_else(|| VaultError::BadChecksumText {
                text: text.chars().take(100).collect(),
            })
    }
}

impl fmt::Display for ObjectChecksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rows, {}", self.rows, self.sum_text())
    }
}

/// Lower-case hex of a 32-byte digest.
pub(super) fn to_hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(64);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Parses exactly 64 lower-case hex digits. Upper case is refused so one
/// digest has one spelling; the manifest is only ever written by us.
pub(super) fn from_hex(text: &str) -> Option<[u8; 32]> {
    let hex = text.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let value = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (value(pair[0])? << 4) | value(pair[1])?;
    }
    Some(out)
}

/// Accumulates an [`ObjectChecksum`] from rows fed in any order.
#[derive(Debug, Clone, Default)]
pub struct Checksummer {
    /// Rows added so far.
    rows: u64,
    /// The running sum as four big-endian-ordered u64 limbs (limb 0 most
    /// significant), so each addition is four adds with carry.
    limbs: [u64; 4],
    /// Reused encoding buffer so `add_row` does not allocate per row.
    scratch: Vec<u8>,
}

impl Checksummer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one row, encoding it canonically first.
    pub fn add_row(&mut self, row: &[Value]) -> Result<(), VaultError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let result = encode_row(row, &mut scratch);
        if result.is_ok() {
            self.add_encoded(&scratch);
        }
        self.scratch = scratch;
        result
    }

    /// Adds one row given as its canonical encoding (the writer already has
    /// the bytes, so it need not encode twice).
    pub fn add_encoded(&mut self, canonical: &[u8]) {
        let digest = Sha256::digest(canonical);
        let mut carry = false;
        for i in (0..4).rev() {
            let mut limb = [0u8; 8];
            limb.copy_from_slice(&digest[i * 8..i * 8 + 8]);
            let (s1, c1) = self.limbs[i].overflowing_add(u64::from_be_bytes(limb));
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            self.limbs[i] = s2;
            carry = c1 || c2;
        }
        // The carry out of the top limb is dropped: arithmetic is mod 2^256.
        self.rows += 1;
    }

    /// Folds in another checksummer's rows, so parts of one object read in
    /// parallel can be verified as a whole.
    pub fn merge(&mut self, other: &Checksummer) {
        let mut carry = false;
        for i in (0..4).rev() {
            let (s1, c1) = self.limbs[i].overflowing_add(other.limbs[i]);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            self.limbs[i] = s2;
            carry = c1 || c2;
        }
        self.rows += other.rows;
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn checksum(&self) -> ObjectChecksum {
        let mut sum = [0u8; 32];
        for (chunk, limb) in sum.chunks_exact_mut(8).zip(self.limbs) {
            chunk.copy_from_slice(&limb.to_be_bytes());
        }
        ObjectChecksum {
            rows: self.rows,
            sum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::encoding::tests::arb_row;
    use super::*;
    use proptest::prelude::*;

    fn checksum_of(rows: &[Vec<Value>]) -> ObjectChecksum {
        let mut c = Checksummer::new();
        for row in rows {
            c.add_row(row).expect("encodable");
        }
        c.checksum()
    }

    proptest! {
        #[test]
        fn order_does_not_matter(
            rows in proptest::collection::vec(arb_row(), 0..20),
            seed in any::<u64>(),
        ) {
            let mut shuffled = rows.clone();
            // Deterministic Fisher-Yates so the permutation is reproducible.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(checksum_of(&rows), checksum_of(&shuffled));
        }

        #[test]
        fn merge_equals_feeding_everything(
            a in proptest::collection::vec(arb_row(), 0..10),
            b in proptest::collection::vec(arb_row(), 0..10),
        ) {
            let mut left = Checksummer::new();
            for row in &a { left.add_row(row).expect("encodable"); }
            let mut right = Checksummer::new();
            for row in &b { right.add_row(row).expect("encodable"); }
            left.merge(&right);
            let all: Vec<_> = a.iter().chain(&b).cloned().collect();
            prop_assert_eq!(left.checksum(), checksum_of(&all));
        }

        #[test]
        fn text_form_round_trips(sum in any::<[u8; 32]>()) {
            let c = ObjectChecksum { rows: 0, sum };
            prop_assert_eq!(ObjectChecksum::parse_sum(&c.sum_text()).expect("own text parses"), sum);
        }
    }

    #[test]
    fn one_changed_byte_changes_the_sum() {
        let rows = vec![
            vec![Value::Int(1), Value::Text("alice".into())],
            vec![Value::Int(2), Value::Bytes(vec![0, 1, 2])],
            vec![Value::Int(3), Value::Float(-0.0)],
        ];
        let base = checksum_of(&rows);
        let variants = [
            vec![Value::Int(1), Value::Text("alicf".into())],
            vec![Value::Int(1), Value::Text("alice ".into())],
            vec![Value::Int(1), Value::Decimal("alice".into())],
            vec![Value::Int(1), Value::Null],
        ];
        for variant in variants {
            let mut changed = rows.clone();
            changed[0] = variant;
            let other = checksum_of(&changed);
            assert_eq!(other.rows, base.rows);
            assert_ne!(other.sum, base.sum);
        }
        let mut bytes_changed = rows.clone();
        bytes_changed[1][1] = Value::Bytes(vec![0, 1, 3]);
        assert_ne!(checksum_of(&bytes_changed).sum, base.sum);
        let mut float_changed = rows.clone();
        float_changed[2][1] = Value::Float(0.0);
        assert_ne!(checksum_of(&float_changed).sum, base.sum);
    }

    #[test]
    fn duplicates_count() {
        let row = vec![Value::Int(7)];
        let once = checksum_of(std::slice::from_ref(&row));
        let twice = checksum_of(&[row.clone(), row]);
        assert_eq!(twice.rows, 2);
        assert_ne!(once.sum, twice.sum);
    }

    #[test]
    fn empty_object_has_zero_sum() {
        let c = Checksummer::new().checksum();
        assert_eq!(c.rows, 0);
        assert_eq!(c.sum, [0u8; 32]);
        assert_eq!(c.sum_text(), format!("sha256-sum:{}", "0".repeat(64)));
    }

    #[test]
    fn sum_wraps_modulo_2_256() {
        let mut c = Checksummer::new();
        c.limbs = [u64::MAX; 4];
        let mut one = Checksummer::new();
        one.limbs = [0, 0, 0, 1];
        c.merge(&one);
        assert_eq!(c.checksum().sum, [0u8; 32]);
    }

    #[test]
    fn known_answer() {
        // The sum of one row is that row's SHA-256: pins the definition.
        let mut bytes = Vec::new();
        encode_row(&[Value::Text("x".into())], &mut bytes).expect("encodable");
        let mut c = Checksummer::new();
        c.add_encoded(&bytes);
        assert_eq!(c.checksum().sum.as_slice(), &Sha256::digest(&bytes)[..]);
    }

    #[test]
    fn bad_text_is_rejected() {
        for text in [
            "",
            "sha256-sum:",
            "sha256:00",
            &format!("sha256-sum:{}", "g".repeat(64)),
            &format!("sha256-sum:{}", "A".repeat(64)),
            &format!("sha256-sum:{}", "0".repeat(63)),
        ] {
            assert!(ObjectChecksum::parse_sum(text).is_err(), "{text}");
        }
    }
}
