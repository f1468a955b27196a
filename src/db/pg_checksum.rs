//! The checksum of a PostgreSQL table's rows as the server holds them, read by
//! `COPY … TO STDOUT (FORMAT binary)` and hashed as the bytes arrive: the proof
//! a restore ends with. It must give exactly the checksum that hashing the same
//! rows read as [`Value`](crate::vault::Value)s gives (the snapshot's), so every
//! column is read with the same SELECT expression as `stream_rows` uses, and its
//! bytes become the canonical encoding through the vault's own writers.
//!
//! Why not `stream_rows`: a row read through sqlx becomes a `PgRow`, then one
//! allocated `Value` per column, then the encoding; at a million rows that
//! client work cost as much CPU as the server's, on the same two cores. Here a
//! row is parsed in place from the COPY data and encoded into one reused buffer.
//!
//! Large tables are read in parts (ranges of heap pages, which the server scans
//! without touching an index) on connections of their own, each hashed on its
//! own task, all in one exported snapshot, so the parts add up to the table as
//! of one instant.

use std::sync::Arc;

use futures_util::StreamExt;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Postgres};

use super::pg_binary::Printed;
use super::postgres::PgKind;
use super::{DbError, Engine, TableInfo, own_from};
use crate::vault::encoding::{
    put_blob, put_bool, put_float, put_int, put_null, put_other, put_row_len, put_text,
};
use crate::vault::{Checksummer, TextKind};

/// The checksum of `table.row_columns(columns)` over every row, read in up to
/// `parts` parts.
pub(super) async fn checksum(
    pool: &PgPool,
    table: &TableInfo,
    columns: &[String],
    parts: usize,
) -> Result<Checksummer, DbError> {
    let what = format!("reading back the rows of {}", table.name);
    let selected = table.row_columns(columns)?;
    let kinds: Arc<[Field]> = selected
        .iter()
        .map(|c| Field::of(&c.declared_type))
        .collect();
    let exprs: Vec<String> = selected
        .iter()
        .zip(kinds.iter())
        .map(|(column, kind)| kind.select(&Engine::Postgres.quote(&column.name)))
        .collect();
    let select = format!(
        "SELECT {} {}",
        exprs.join(", "),
        own_from(Engine::Postgres, &table.name)
    );

    let mut connections = vec![ReadOnly::begin(pool, &what).await?];
    let mut statements = vec![copy_sql(&select)];
    let pages = if parts >= 2 {
        heap_pages(connections[0].connection(), &table.name, &what).await?
    } else {
        None
    };
    if let Some(pages) = pages.filter(|&pages| pages >= parts as i64) {
        let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut **connections[0].connection())
            .await
            .map_err(DbError::query(&what))?;
        // The id is the server's (`00000003-0000001B-1`); it is spliced into
        // SET TRANSACTION SNAPSHOT, which takes no parameters.
        if !snapshot.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(protocol(
                &what,
                format!("unexpected snapshot id {snapshot:?}"),
            ));
        }
        for _ in 1..parts {
            let mut connection = ReadOnly::begin(pool, &what).await?;
            execute(
                connection.connection(),
                &format!("SET TRANSACTION SNAPSHOT '{snapshot}'"),
                &what,
            )
            .await?;
            connections.push(connection);
        }
        statements = page_ranges(pages, parts)
            .into_iter()
            .map(|range| copy_sql(&format!("{select} AND {range}")))
            .collect();
    }

    let tasks: Vec<_> = connections
        .into_iter()
        .zip(statements)
        .map(|(connection, statement)| {
            tokio::spawn(read_part(
                connection,
                statement,
                Arc::clone(&kinds),
                what.clone(),
            ))
        })
        .collect();
    let mut total = Checksummer::new();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(sum)) => total.merge(&sum),
            Ok(Err(err)) => {
                first_error.get_or_insert(err);
            }
            Err(join) => {
                first_error.get_or_insert(protocol(&what, format!("the reader failed: {join}")));
            }
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(total),
    }
}

/// The table's heap pages, when the server reads a range of them by itself
/// (a TID range scan, PostgreSQL 14 and later) and so can split the read without
/// any key; `None` on older servers. Read inside the snapshot's transaction:
/// every row it sees lies in these pages, and the last range is open anyway.
async fn heap_pages(
    connection: &mut PoolConnection<Postgres>,
    table: &str,
    what: &str,
) -> Result<Option<i64>, DbError> {
    let (version, pages): (i32, i64) = sqlx::query_as(
        "SELECT current_setting('server_version_num')::int, \
                COALESCE((SELECT pg_relation_size(c.oid) FROM pg_class c \
                          JOIN pg_namespace n ON n.oid = c.relnamespace \
                          WHERE n.nspname = current_schema() AND c.relname = $1), 0) \
                / current_setting('block_size')::bigint",
    )
    .bind(table)
    .fetch_one(&mut **connection)
    .await
    .map_err(DbError::query(what))?;
    Ok((version >= 140_000).then_some(pages))
}

/// `parts` conditions on `ctid` that cut pages `0..pages` into adjacent ranges
/// of nearly equal size; the first has no lower bound and the last no upper
/// one, so together they hold every row exactly once.
fn page_ranges(pages: i64, parts: usize) -> Vec<String> {
    let parts = parts as i64;
    let cut = |i: i64| format!("'({},0)'::tid", pages * i / parts);
    (0..parts)
        .map(|i| match (i == 0, i == parts - 1) {
            (true, true) => "TRUE".to_string(),
            (true, false) => format!("ctid < {}", cut(1)),
            (false, true) => format!("ctid >= {}", cut(i)),
            (false, false) => format!("ctid >= {} AND ctid < {}", cut(i), cut(i + 1)),
        })
        .collect()
}

fn copy_sql(select: &str) -> String {
    format!("COPY ({select}) TO STDOUT (FORMAT binary)")
}

async fn execute(
    connection: &mut PoolConnection<Postgres>,
    sql: &str,
    what: &str,
) -> Result<(), DbError> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(&mut **connection)
        .await
        .map(drop)
        .map_err(DbError::query(what))
}

fn protocol(what: &str, detail: String) -> DbError {
    DbError::Query {
        what: what.to_string(),
        source: sqlx::Error::Protocol(detail),
    }
}

/// A pooled connection inside the read's `REPEATABLE READ READ ONLY`
/// transaction. Unless [`commit`](Self::commit) ends it cleanly, it is closed
/// rather than returned to the pool: the pool does not roll back, and whoever
/// took it next would find themselves inside this transaction.
struct ReadOnly(Option<PoolConnection<Postgres>>);

impl ReadOnly {
    async fn begin(pool: &PgPool, what: &str) -> Result<Self, DbError> {
        let mut this = Self(Some(pool.acquire().await.map_err(DbError::query(what))?));
        execute(
            this.connection(),
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            what,
        )
        .await?;
        Ok(this)
    }

    fn connection(&mut self) -> &mut PoolConnection<Postgres> {
        self.0
            .as_mut()
            .expect("taken only by commit, which consumes self")
    }

    async fn commit(mut self, what: &str) -> Result<(), DbError> {
        execute(self.connection(), "COMMIT", what).await?;
        // Back to the pool as a clean connection.
        self.0.take();
        Ok(())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if let Some(connection) = self.0.as_mut() {
            connection.close_on_drop();
        }
    }
}

/// One part: its COPY's rows hashed as they arrive, then the read-only
/// transaction ended.
async fn read_part(
    mut connection: ReadOnly,
    statement: String,
    kinds: Arc<[Field]>,
    what: String,
) -> Result<Checksummer, DbError> {
    let started = std::time::Instant::now();
    let mut rows = CopyRows::new(kinds);
    {
        let mut data = connection
            .connection()
            .copy_out_raw(&statement)
            .await
            .map_err(DbError::query(&what))?;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(DbError::query(&what))?;
            rows.feed(&chunk)
                .map_err(|detail| protocol(&what, detail))?;
        }
    }
    connection.commit(&what).await?;
    let sum = rows.finish().map_err(|detail| protocol(&what, detail))?;
    tracing::debug!(
        rows = sum.rows(),
        seconds = started.elapsed().as_secs_f64(),
        "read back one part"
    );
    Ok(sum)
}

/// The signature that starts binary COPY data.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Parses binary COPY data fed in chunks of any size and hashes each row.
pub(super) struct CopyRows {
    kinds: Arc<[Field]>,
    /// Bytes of a row (or the header) cut by a chunk's end.
    pending: Vec<u8>,
    header_read: bool,
    trailer_read: bool,
    /// The current row's canonical encoding.
    scratch: Vec<u8>,
    /// A printed field's text.
    text: Vec<u8>,
    sum: Checksummer,
}

impl CopyRows {
    pub(super) fn new(kinds: Arc<[Field]>) -> Self {
        Self {
            kinds,
            pending: Vec::new(),
            header_read: false,
            trailer_read: false,
            scratch: Vec::new(),
            text: Vec::new(),
            sum: Checksummer::new(),
        }
    }

    pub(super) fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        if self.pending.is_empty() {
            let used = self.consume(chunk)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(chunk);
            let used = self.consume(&pending)?;
            pending.drain(..used);
            self.pending = pending;
        }
        Ok(())
    }

    /// The checksum, once the data has ended with its trailer.
    pub(super) fn finish(self) -> Result<Checksummer, String> {
        if !self.trailer_read || !self.pending.is_empty() {
            return Err(format!(
                "the COPY data ended early ({} bytes of an unfinished row)",
                self.pending.len()
            ));
        }
        Ok(self.sum)
    }

    /// Consumes the whole rows (and the header) at the start of `data`; the
    /// number of bytes used.
    fn consume(&mut self, data: &[u8]) -> Result<usize, String> {
        let mut at = 0;
        if !self.header_read {
            // Signature, flags, extension length, extension.
            let Some(fixed) = data.get(..SIGNATURE.len() + 8) else {
                return Ok(0);
            };
            if !fixed.starts_with(SIGNATURE) {
                return Err("the COPY data does not start with the binary signature".into());
            }
            let extension = be_u32(&fixed[SIGNATURE.len() + 4..]) as usize;
            let end = fixed.len() + extension;
            if data.len() < end {
                return Ok(0);
            }
            self.header_read = true;
            at = end;
        }
        while at < data.len() {
            if self.trailer_read {
                return Err("bytes after the COPY trailer".into());
            }
            match self.row(&data[at..])? {
                Some(used) => at += used,
                None => break,
            }
        }
        Ok(at)
    }

    /// Hashes the row at the start of `data`; `None` when it is not all there.
    fn row(&mut self, data: &[u8]) -> Result<Option<usize>, String> {
        let Some(count) = data.get(..2) else {
            return Ok(None);
        };
        let count = i16::from_be_bytes([count[0], count[1]]);
        if count == -1 {
            self.trailer_read = true;
            return Ok(Some(2));
        }
        if usize::try_from(count).ok() != Some(self.kinds.len()) {
            return Err(format!(
                "a row has {count} fields, {} were selected",
                self.kinds.len()
            ));
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let mut text = std::mem::take(&mut self.text);
        let encoded = self.encode(data, &mut scratch, &mut text);
        self.text = text;
        let result = match encoded {
            Ok(Some(used)) => {
                self.sum.add_encoded(&scratch);
                Ok(Some(used))
            }
            other => other,
        };
        self.scratch = scratch;
        result
    }

    /// The canonical encoding of the row at the start of `data` into `out`.
    fn encode(
        &self,
        data: &[u8],
        out: &mut Vec<u8>,
        text: &mut Vec<u8>,
    ) -> Result<Option<usize>, String> {
        let mut at = 2;
        put_row_len(out, self.kinds.len()).map_err(|err| err.to_string())?;
        for kind in self.kinds.iter() {
            let Some(len) = data.get(at..at + 4) else {
                return Ok(None);
            };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            at += 4;
            if len == -1 {
                put_null(out);
                continue;
            }
            let len = usize::try_from(len).map_err(|_| format!("a field length of {len}"))?;
            let Some(field) = data.get(at..at + len) else {
                return Ok(None);
            };
            at += len;
            match kind {
                Field::Read(kind) => field_value(kind, field, out)?,
                Field::Printed(printed, as_kind) => {
                    text.clear();
                    printed.print(field, text)?;
                    put_text(out, *as_kind, text).map_err(|err| err.to_string())?;
                }
            }
        }
        Ok(Some(at))
    }
}

/// How one column is selected and turned into its value.
#[derive(Debug, Clone)]
pub(super) enum Field {
    /// As `stream_rows` reads it: natively or as the server's `::text`.
    Read(PgKind),
    /// In binary, printed here as the server would print it.
    Printed(Printed, TextKind),
}

impl Field {
    fn of(declared: &str) -> Self {
        let kind = PgKind::of(declared);
        match (Printed::of(declared), &kind) {
            (Some(printed), PgKind::Text(as_kind)) => Self::Printed(printed, *as_kind),
            _ => Self::Read(kind),
        }
    }

    fn select(&self, quoted: &str) -> String {
        match self {
            Self::Read(kind) => kind.select(quoted),
            Self::Printed(..) => quoted.to_string(),
        }
    }
}

/// One non-NULL field's binary form as the value `PgKind::decode` makes of it.
fn field_value(kind: &PgKind, field: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    fn exact<const N: usize>(field: &[u8]) -> Result<[u8; N], String> {
        field
            .try_into()
            .map_err(|_| format!("a field of {} bytes where {N} were expected", field.len()))
    }
    match kind {
        PgKind::Bool => put_bool(out, exact::<1>(field)?[0] != 0),
        PgKind::Int2 => put_int(out, i16::from_be_bytes(exact(field)?).into()),
        PgKind::Int4 => put_int(out, i32::from_be_bytes(exact(field)?).into()),
        PgKind::Int8 => put_int(out, i64::from_be_bytes(exact(field)?)),
        PgKind::Float4 => put_float(out, f32::from_be_bytes(exact(field)?).into()),
        PgKind::Float8 => put_float(out, f64::from_be_bytes(exact(field)?)),
        PgKind::Bytes => put_blob(out, field).map_err(|err| err.to_string())?,
        PgKind::Text(text) => put_text(out, *text, field).map_err(|err| err.to_string())?,
        PgKind::Other(type_name) => {
            put_other(out, type_name, field).map_err(|err| err.to_string())?
        }
    }
    Ok(())
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::Value;

    fn data(rows: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for field in *row {
                match field {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(bytes) => {
                        out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                        out.extend_from_slice(bytes);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn kinds() -> Arc<[Field]> {
        vec![
            Field::Read(PgKind::Int8),
            Field::of("numeric(12,2)"),
            Field::Read(PgKind::Float4),
            Field::Read(PgKind::Other("inet".into())),
        ]
        .into()
    }

    fn rows() -> Vec<Vec<Value>> {
        vec![
            vec![
                Value::Int(-7),
                Value::Decimal("12.50".into()),
                Value::Float(f64::from(1.5f32)),
                Value::Other {
                    type_name: "inet".into(),
                    text: "10.0.0.1".into(),
                },
            ],
            vec![Value::Int(i64::MAX), Value::Null, Value::Null, Value::Null],
        ]
    }

    fn copy_data() -> Vec<u8> {
        let big = i64::MAX.to_be_bytes();
        let small = (-7i64).to_be_bytes();
        // 12.50: one digit group, weight 0, positive, scale 2; then 5000.
        let numeric = [0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 0x13, 0x88];
        let float = 1.5f32.to_be_bytes();
        data(&[
            &[
                Some(&small),
                Some(&numeric),
                Some(&float),
                Some(b"10.0.0.1"),
            ],
            &[Some(&big), None, None, None],
        ])
    }

    fn expected() -> Checksummer {
        let mut sum = Checksummer::new();
        for row in rows() {
            sum.add_row(&row).unwrap();
        }
        sum
    }

    /// Any bytes, in any chunks, into any columns: an error or a sum, never
    /// a panic; the printers take whatever a field holds.
    mod arbitrary {
        use super::*;
        use proptest::prelude::*;

        fn field() -> impl Strategy<Value = Field> {
            prop_oneof![
                Just(Field::Read(PgKind::Bool)),
                Just(Field::Read(PgKind::Int2)),
                Just(Field::Read(PgKind::Int8)),
                Just(Field::Read(PgKind::Float4)),
                Just(Field::Read(PgKind::Bytes)),
                Just(Field::Read(PgKind::Text(TextKind::Json))),
                Just(Field::Read(PgKind::Other("inet".into()))),
                Just(Field::of("numeric")),
                Just(Field::of("date")),
                Just(Field::of("timestamp without time zone")),
                Just(Field::of("timestamp with time zone")),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn never_panics(
                fields in proptest::collection::vec(field(), 1..6),
                body in proptest::collection::vec(any::<u8>(), 0..400),
                cut in 1usize..64,
            ) {
                // A valid header, then anything.
                let mut data = SIGNATURE.to_vec();
                data.extend_from_slice(&[0; 8]);
                data.extend_from_slice(&body);
                let mut rows = CopyRows::new(fields.into());
                for chunk in data.chunks(cut) {
                    if rows.feed(chunk).is_err() {
                        break;
                    }
                }
                let _ = rows.finish();
            }

            #[test]
            fn printed_fields_of_any_bytes_never_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..64),
                words in proptest::collection::vec(any::<u16>(), 0..12),
                micros in any::<i64>(),
                days in any::<i32>(),
            ) {
                let mut out = Vec::new();
                let _ = Printed::Numeric.print(&bytes, &mut out);
                let numeric: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
                let _ = Printed::Numeric.print(&numeric, &mut out);
                // Well-formed but extreme: any weight, sign word and scale.
                let mut shaped = (words.len() as u16).to_be_bytes().to_vec();
                shaped.extend_from_slice(&(micros as i16).to_be_bytes());
                shaped.extend_from_slice(&[[0x00, 0x40, 0xC0, 0xD0, 0xF0][(days as usize) % 5], 0]);
                shaped.extend_from_slice(&((days >> 8) as u16).to_be_bytes());
                shaped.extend(words.iter().flat_map(|w| (w % 10_000).to_be_bytes()));
                out.clear();
                Printed::Numeric.print(&shaped, &mut out).unwrap();
                Printed::Timestamp.print(&micros.to_be_bytes(), &mut out).unwrap();
                Printed::TimestampTz.print(&micros.to_be_bytes(), &mut out).unwrap();
                Printed::Date.print(&days.to_be_bytes(), &mut out).unwrap();
            }
        }
    }

    #[test]
    fn page_ranges_cover_every_page_once() {
        assert_eq!(page_ranges(10, 1), ["TRUE"]);
        assert_eq!(
            page_ranges(10, 3),
            [
                "ctid < '(3,0)'::tid",
                "ctid >= '(3,0)'::tid AND ctid < '(6,0)'::tid",
                "ctid >= '(6,0)'::tid",
            ]
        );
    }

    #[test]
    fn copy_data_hashes_as_the_same_rows_read_as_values_do() {
        let mut rows = CopyRows::new(kinds());
        rows.feed(&copy_data()).unwrap();
        let sum = rows.finish().unwrap();
        assert_eq!(sum.checksum(), expected().checksum());
    }

    #[test]
    fn chunks_cut_anywhere_give_the_same_sum() {
        let data = copy_data();
        for size in 1..data.len() {
            let mut rows = CopyRows::new(kinds());
            for chunk in data.chunks(size) {
                rows.feed(chunk).unwrap();
            }
            let sum = rows.finish().unwrap();
            assert_eq!(sum.checksum(), expected().checksum(), "chunks of {size}");
        }
    }

    #[test]
    fn data_that_ends_early_or_does_not_fit_the_columns_is_an_error() {
        let data = copy_data();
        let mut cut = CopyRows::new(kinds());
        cut.feed(&data[..data.len() - 5]).unwrap();
        assert!(cut.finish().unwrap_err().contains("ended early"));

        let mut fewer = CopyRows::new(vec![Field::Read(PgKind::Int8)].into());
        assert!(fewer.feed(&data).unwrap_err().contains("4 fields, 1 were"));

        let mut wrong = CopyRows::new(
            vec![
                Field::Read(PgKind::Int4),
                Field::of("numeric"),
                Field::Read(PgKind::Float4),
                Field::Read(PgKind::Other("inet".into())),
            ]
            .into(),
        );
        assert!(wrong.feed(&data).unwrap_err().contains("8 bytes where 4"));

        let mut text = CopyRows::new(kinds());
        let err = text.feed(b"1\t12.50\t1.5\t10.0.0.1\n\\.\n").unwrap_err();
        assert!(err.contains("binary signature"), "{err}");
    }
}
