//! Owns the data file format (`NNN.rows.zst`): streaming rows in and out with
//! flat memory, and the file-level integrity checks. It must never buffer a
//! whole object, never report a file as good without reaching its end marker,
//! and never allocate from an unchecked length read from disk.
//!
//! Layout:
//!
//! ```text
//!   header (uncompressed): magic "DGVROWS\0", u16 BE data format version
//!   zstd stream (with zstd's own content checksum), containing:
//!     frame*   : u32 BE length (>= 4), canonical row bytes
//!     end      : u32 0 (no row encodes to 0 bytes: the value count alone is 4)
//!     trailer  : u64 BE row count, 32-byte checksum sum
//! ```
//!
//! The trailer makes each file self-verifying and lets a reader tell a
//! complete file from one cut at a frame boundary. Separately, the SHA-256 of
//! the file's bytes is computed while writing and reading, because some bytes
//! (zstd's window descriptor, for one) can change without changing any row:
//! verify reports such a change instead of passing it silently. The manifest
//! records the longest row, so a damaged length is refused before it is
//! buffered.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::checksum::{Checksummer, ObjectChecksum};
use super::encoding::{decode_row, encode_row};
use super::error::VaultError;
use super::fsutil;
use super::value::Value;

const MAGIC: [u8; 8] = *b"DGVROWS\0";
const DATA_FORMAT: u16 = 1;
const HEADER_LEN: usize = MAGIC.len() + 2;
// Level 1: measured on 1M rows of ~300 bytes, it writes 1.5-2x faster than
// level 3 for a few percent more bytes, and snapshots sit on the critical
// path of a deploy. Readers do not depend on the level.
const ZSTD_LEVEL: i32 = 1;
const IO_BUFFER: usize = 256 * 1024;

/// Streams rows into one data file.
pub(super) struct RowFileWriter {
    /// For error messages.
    path: PathBuf,
    /// Batches small row writes before they reach zstd, whose per-call
    /// overhead dominates for rows of a few hundred bytes.
    out: BufWriter<zstd::Encoder<'static, Hashing<File>>>,
    /// Running checksum of everything written.
    checksummer: Checksummer,
    /// Reused per-row encoding buffer, so memory stays flat.
    scratch: Vec<u8>,
    /// Set once a write failed: the compressed stream is then in an unknown
    /// state and must not be finished as if it were good.
    broken: bool,
    /// The longest row frame written, recorded so readers can refuse a
    /// corrupt length before buffering it.
    max_row_bytes: u32,
}

impl RowFileWriter {
    pub(super) fn create(path: &Path) -> Result<Self, VaultError> {
        let mut file = Hashing::new(fsutil::create_private_file(path)?);
        let mut header = [0u8; HEADER_LEN];
        header[..MAGIC.len()].copy_from_slice(&MAGIC);
        header[MAGIC.len()..].copy_from_slice(&DATA_FORMAT.to_be_bytes());
        file.write_all(&header)
            .map_err(|e| VaultError::io("write", path, e))?;
        let mut encoder = zstd::Encoder::new(file, ZSTD_LEVEL)
            .map_err(|e| VaultError::io("start compressing", path, e))?;
        encoder
            .include_checksum(true)
            .map_err(|e| VaultError::io("start compressing", path, e))?;
        Ok(RowFileWriter {
            path: path.to_owned(),
            out: BufWriter::with_capacity(IO_BUFFER, encoder),
            checksummer: Checksummer::new(),
            scratch: Vec::with_capacity(1024),
            broken: false,
            max_row_bytes: 0,
        })
    }

    pub(super) fn is_broken(&self) -> bool {
        self.broken
    }

    pub(super) fn rows(&self) -> u64 {
        self.checksummer.rows()
    }

    /// Encodes and appends one row. An unencodable row is refused without
    /// touching the file; an I/O failure marks the writer broken.
    pub(super) fn write_row(&mut self, row: &[Value]) -> Result<(), VaultError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let written = encode_row(row, &mut scratch).and_then(|()| self.write_encoded(&scratch));
        // A single huge row should not pin its buffer for the rest of the
        // object.
        if scratch.capacity() <= 4 * IO_BUFFER {
            self.scratch = scratch;
        }
        written
    }

    /// Appends one row given as its canonical encoding.
    pub(super) fn write_encoded(&mut self, canonical: &[u8]) -> Result<(), VaultError> {
        let len = u32::try_from(canonical.len()).map_err(|_| VaultError::Unencodable {
            reason: "the row encodes to 4 GiB or more, which a data file frame cannot hold",
        })?;
        let written = self
            .out
            .write_all(&len.to_be_bytes())
            .and_then(|()| self.out.write_all(canonical));
        if let Err(e) = written {
            self.broken = true;
            return Err(VaultError::io("write", &self.path, e));
        }
        self.checksummer.add_encoded(canonical);
        self.max_row_bytes = self.max_row_bytes.max(len);
        Ok(())
    }

    /// Writes the end marker and trailer, completes the zstd stream and
    /// fsyncs.
    pub(super) fn finish(mut self) -> Result<FinishedFile, VaultError> {
        let checksum = self.checksummer.checksum();
        let path = self.path.clone();
        let io = |action| {
            let path = path.clone();
            move |e| VaultError::io(action, path, e)
        };
        self.out
            .write_all(&0u32.to_be_bytes())
            .and_then(|()| self.out.write_all(&checksum.rows.to_be_bytes()))
            .and_then(|()| self.out.write_all(&checksum.sum))
            .map_err(io("write"))?;
        let encoder = self
            .out
            .into_inner()
            .map_err(|e| VaultError::io("write", &self.path, e.into_error()))?;
        let hashing = encoder.finish().map_err(io("finish compressing"))?;
        let Hashing {
            inner: file,
            hasher,
            bytes,
        } = hashing;
        file.sync_all().map_err(io("fsync"))?;
        Ok(FinishedFile {
            checksum,
            compressed_bytes: bytes,
            file_sha256: hasher.finalize().into(),
            max_row_bytes: self.max_row_bytes,
        })
    }
}

/// What a completed data file is recorded as in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FinishedFile {
    /// Row count and multiset hash of the rows.
    pub(super) checksum: ObjectChecksum,
    /// The file's size on disk.
    pub(super) compressed_bytes: u64,
    /// SHA-256 of the file's bytes.
    pub(super) file_sha256: [u8; 32],
    /// The longest row's encoded length.
    pub(super) max_row_bytes: u32,
}

/// Passes bytes through while hashing and counting them.
struct Hashing<T> {
    /// The file being written or read.
    inner: T,
    /// SHA-256 of every byte that went through.
    hasher: Sha256,
    /// How many bytes went through.
    bytes: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn note(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.note(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.note(&buf[..n]);
        Ok(n)
    }
}

/// Streams rows back out of one data file, checking as it goes.
pub(super) struct RowFileReader {
    /// For error messages.
    path: PathBuf,
    /// The snapshot id, for error messages.
    id: String,
    /// Decompressed stream, buffered so 4-byte length reads are cheap.
    input: BufReader<zstd::Decoder<'static, BufReader<Hashing<File>>>>,
    /// Running checksum of the rows read so far.
    checksummer: Checksummer,
    /// Reused frame buffer.
    buf: Vec<u8>,
    /// Set after the trailer was checked or an error was returned; later
    /// calls yield nothing rather than garbage.
    done: bool,
    /// Frames longer than this are corrupt; bounds memory when a damaged
    /// length would otherwise make us buffer gigabytes.
    max_row_bytes: u32,
}

impl RowFileReader {
    /// Opens the file and checks its header. Rows longer than
    /// `max_row_bytes` (the writer's record of its longest row) are treated
    /// as corruption. A missing file is reported as `VaultError::Io` with
    /// kind `NotFound`.
    pub(super) fn open(id: &str, path: &Path, max_row_bytes: u32) -> Result<Self, VaultError> {
        let file = File::open(path).map_err(|e| VaultError::io("open", path, e))?;
        let mut raw = BufReader::with_capacity(IO_BUFFER, Hashing::new(file));
        let corrupt = |detail: String| VaultError::CorruptData {
            id: id.to_owned(),
            file: path.to_owned(),
            row: 0,
            detail,
        };
        let mut header = [0u8; HEADER_LEN];
        raw.read_exact(&mut header).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                corrupt("the file is shorter than its header".to_owned())
            } else {
                VaultError::io("read", path, e)
            }
        })?;
        if header[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not a dropguard data file (bad magic)".to_owned()));
        }
        let version = u16::from_be_bytes([header[MAGIC.len()], header[MAGIC.len() + 1]]);
        if version != DATA_FORMAT {
            return Err(corrupt(format!(
                "data format {version}, but this dropguard reads format {DATA_FORMAT}"
            )));
        }
        let decoder = zstd::Decoder::with_buffer(raw)
            .map_err(|e| corrupt(format!("cannot start decompressing: {e}")))?;
        Ok(RowFileReader {
            path: path.to_owned(),
            id: id.to_owned(),
            input: BufReader::with_capacity(IO_BUFFER, decoder),
            checksummer: Checksummer::new(),
            buf: Vec::new(),
            done: false,
            max_row_bytes,
        })
    }

    /// The checksum of the rows read so far (of the whole file once
    /// `next_row` has returned `Ok(None)`).
    pub(super) fn checksum(&self) -> ObjectChecksum {
        self.checksummer.checksum()
    }

    /// SHA-256 of the file's bytes; meaningful once `next_row` has returned
    /// `Ok(None)`, which happens only after the whole file was consumed.
    pub(super) fn file_sha256(&self) -> [u8; 32] {
        self.input
            .get_ref()
            .get_ref()
            .get_ref()
            .hasher
            .clone()
            .finalize()
            .into()
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The next row, `Ok(None)` after a verified end, or the first error.
    pub(super) fn next_row(&mut self) -> Result<Option<Vec<Value>>, VaultError> {
        if self.done {
            return Ok(None);
        }
        let result = self.read_frame();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn corrupt(&self, detail: String) -> VaultError {
        VaultError::CorruptData {
            id: self.id.clone(),
            file: self.path.clone(),
            row: self.checksummer.rows() + 1,
            detail,
        }
    }

    fn read_error(&self, e: io::Error) -> VaultError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.corrupt("the file is truncated".to_owned())
        } else {
            // zstd reports damaged compressed data as I/O errors too.
            self.corrupt(format!("cannot read: {e}"))
        }
    }

    fn read_frame(&mut self) -> Result<Option<Vec<Value>>, VaultError> {
        let mut len = [0u8; 4];
        if let Err(e) = self.input.read_exact(&mut len) {
            return Err(self.read_error(e));
        }
        let len = u32::from_be_bytes(len);
        if len == 0 {
            self.check_trailer()?;
            return Ok(None);
        }
        if len > self.max_row_bytes {
            return Err(self.corrupt(format!(
                "a row claims {len} bytes but the longest row written had {}",
                self.max_row_bytes
            )));
        }
        self.buf.clear();
        // `take` grows the buffer only as bytes arrive, so a corrupt length
        // cannot make us allocate gigabytes up front.
        let read = (&mut self.input)
            .take(u64::from(len))
            .read_to_end(&mut self.buf);
        match read {
            Ok(n) if n == len as usize => {}
            Ok(_) => return Err(self.corrupt("the file is truncated".to_owned())),
            Err(e) => return Err(self.read_error(e)),
        }
        let row = decode_row(&self.buf).map_err(|e| self.corrupt(e.to_string()))?;
        self.checksummer.add_encoded(&self.buf);
        if self.buf.capacity() > 4 * IO_BUFFER {
            self.buf = Vec::new();
        }
        Ok(Some(row))
    }

    fn check_trailer(&mut self) -> Result<(), VaultError> {
        let mut trailer = [0u8; 8 + 32];
        if let Err(e) = self.input.read_exact(&mut trailer) {
            return Err(self.read_error(e));
        }
        let mut rows = [0u8; 8];
        rows.copy_from_slice(&trailer[..8]);
        let mut sum = [0u8; 32];
        sum.copy_from_slice(&trailer[8..]);
        let recorded = ObjectChecksum {
            rows: u64::from_be_bytes(rows),
            sum,
        };
        let found = self.checksummer.checksum();
        if recorded != found {
            return Err(self.corrupt(format!(
                "its trailer records {recorded} but its rows add up to {found}"
            )));
        }
        let mut extra = [0u8; 1];
        match self.input.read(&mut extra) {
            Ok(0) => {}
            Ok(_) => return Err(self.corrupt("data after the trailer".to_owned())),
            Err(e) => return Err(self.read_error(e)),
        }
        // zstd has seen the end of its input; anything it left unread would
        // have been an error, but hash it too so the digest covers the file.
        let raw = self.input.get_mut().get_mut();
        io::copy(raw, &mut io::sink()).map_err(|e| VaultError::io("read", &self.path, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, rows: &[Vec<Value>]) -> FinishedFile {
        let mut w = RowFileWriter::create(path).expect("create");
        for row in rows {
            w.write_row(row).expect("write");
        }
        w.finish().expect("finish")
    }

    fn read_all(path: &Path) -> Result<(Vec<Vec<Value>>, FinishedFile), VaultError> {
        let mut r = RowFileReader::open("ID", path, u32::MAX)?;
        let mut rows = Vec::new();
        while let Some(row) = r.next_row()? {
            rows.push(row);
        }
        let size = std::fs::metadata(path).expect("metadata").len();
        let read = FinishedFile {
            checksum: r.checksum(),
            compressed_bytes: size,
            file_sha256: r.file_sha256(),
            max_row_bytes: r.max_row_bytes,
        };
        Ok((rows, read))
    }

    fn sample_rows(n: i64) -> Vec<Vec<Value>> {
        (0..n)
            .map(|i| vec![Value::Int(i), Value::Text(format!("row {i}"))])
            .collect()
    }

    #[test]
    fn round_trip_including_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in [0, 1, 1000] {
            let path = dir.path().join(format!("{n}.rows.zst"));
            let rows = sample_rows(n);
            let written = write(&path, &rows);
            let (read, found) = read_all(&path).expect("reads back");
            assert_eq!(read, rows);
            assert_eq!(found.checksum, written.checksum);
            assert_eq!(found.compressed_bytes, written.compressed_bytes);
            assert_eq!(found.file_sha256, written.file_sha256);
            assert_eq!(
                &Sha256::digest(std::fs::read(&path).expect("read"))[..],
                &written.file_sha256[..]
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.rows.zst");
        write(&path, &sample_rows(50));
        let bytes = std::fs::read(&path).expect("read");
        let cut_path = dir.path().join("cut.rows.zst");
        for cut in 0..bytes.len() {
            std::fs::write(&cut_path, &bytes[..cut]).expect("write");
            assert!(
                matches!(read_all(&cut_path), Err(VaultError::CorruptData { .. })),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.rows.zst");
        let rows = sample_rows(20);
        let written = write(&path, &rows);
        let bytes = std::fs::read(&path).expect("read");
        let bad_path = dir.path().join("bad.rows.zst");
        let mut caught_only_by_digest = 0;
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[at] ^= 1 << bit;
                std::fs::write(&bad_path, &bad).expect("write");
                // Either reading fails, or the rows are intact and only the
                // file digest tells: never wrong rows passed off as good.
                if let Ok((read, found)) = read_all(&bad_path) {
                    assert_eq!(read, rows, "flip at {at}.{bit} changed rows silently");
                    assert_eq!(found.checksum, written.checksum);
                    assert_ne!(found.file_sha256, written.file_sha256);
                    caught_only_by_digest += 1;
                }
            }
        }
        // Harmless bits exist (zstd's window size, slack in entropy tables)
        // but are rare.
        assert!(
            caught_only_by_digest * 20 < bytes.len() * 8,
            "{caught_only_by_digest}"
        );
    }

    #[test]
    fn rows_longer_than_recorded_are_refused_before_buffering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.rows.zst");
        let rows = vec![vec![Value::Text("x".repeat(1000))], vec![Value::Null]];
        let written = write(&path, &rows);
        assert_eq!(written.max_row_bytes, 4 + 1 + 4 + 1000);
        let mut exact = RowFileReader::open("ID", &path, written.max_row_bytes).expect("open");
        while exact.next_row().expect("reads").is_some() {}
        let mut short = RowFileReader::open("ID", &path, written.max_row_bytes - 1).expect("open");
        match short.next_row() {
            Err(VaultError::CorruptData { row: 1, detail, .. }) => {
                assert!(detail.contains("1009"), "{detail}")
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        assert!(matches!(short.next_row(), Ok(None)), "fused after an error");
    }

    #[test]
    fn trailing_garbage_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.rows.zst");
        write(&path, &sample_rows(3));
        let mut bytes = std::fs::read(&path).expect("read");
        bytes.extend_from_slice(b"junk");
        std::fs::write(&path, &bytes).expect("write");
        assert!(read_all(&path).is_err());
    }

    #[test]
    fn missing_file_is_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        match RowFileReader::open("ID", &dir.path().join("nope"), u32::MAX) {
            Err(VaultError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound)
            }
            _ => panic!("expected NotFound"),
        }
    }
}
