//! The file source: tails the files a glob matches, new ones included, through
//! rotation (rename-and-create and copytruncate), deletion and restarts.
//!
//! One blocking thread per configured glob. It wakes on filesystem notifications
//! (`notify`) and at least every `poll_interval` (the fallback where
//! notifications do not arrive), lists the glob, reads what each file gained,
//! joins lines into events ([`multiline`]) and hands them on. Positions are
//! checkpointed ([`checkpoint`]) at the first byte of the first event not yet
//! handed on, so a restart resumes exactly there. Open files are kept open after
//! they leave the glob (renamed by rotation, deleted) until they are read to
//! their end. A file that cannot be opened is reported once, counted, and retried
//! while the others go on.

mod checkpoint;
mod multiline;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use checkpoint::{Checkpoint, Checkpoints, FileId, Head};
pub use multiline::{Assembler, Finished, Rule};

use super::{SourceStats, decode_record};
use crate::config::{FileLogConfig, ReadFrom};
use crate::event::{Event, Payload};

/// Bytes read from one file before the others get their turn.
const READ_BURST: usize = 8 << 20;
const READ_CHUNK: usize = 256 << 10;
/// Checkpoints are written at most this often while lines flow (and at exit).
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// A file that left the glob is let go after this long without growing.
const LINGER: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error("logs.file path {glob:?} is not a valid glob: {message}")]
    Glob { glob: String, message: String },
    #[error("logs.file path {glob:?}: {message}")]
    Config { glob: String, message: String },
    #[error("checkpoints of logs.file {glob:?}: {message}")]
    Checkpoints { glob: String, message: String },
    #[error("the file source for {glob:?} stopped unexpectedly: {message}")]
    Thread { glob: String, message: String },
}

/// Where the checkpoints of the file source for `glob` are kept.
pub fn checkpoint_path(state_dir: &Path, glob: &str) -> PathBuf {
    let digest = Sha256::digest(glob.as_bytes());
    let name = checkpoint::hex(&digest[..8]);
    state_dir
        .join("checkpoints")
        .join(format!("file-{name}.json"))
}

/// Tails `config.path` until `shutdown`, handing events to `tx`.
pub async fn run(
    config: FileLogConfig,
    state_dir: PathBuf,
    tx: mpsc::Sender<Event>,
    stats: SourceStats,
    shutdown: CancellationToken,
) -> Result<(), FileSourceError> {
    let glob = config.path.clone();
    let mut tailer = Tailer::new(config, &state_dir, tx, stats, shutdown)?;
    tokio::task::spawn_blocking(move || tailer.run())
        .await
        .map_err(|err| FileSourceError::Thread {
            glob,
            message: err.to_string(),
        })
}

/// Why reading stopped early.
enum Stop {
    /// Shutdown, or nobody listens any more.
    Shutdown,
}

struct Tracked {
    path: PathBuf,
    file: File,
    id: FileId,
    head: Head,
    /// `file:<path>` as first seen.
    source: Arc<str>,
    /// The next byte to read.
    read_at: u64,
    /// An incomplete last line (kept up to the limit), starting at `partial_start`.
    partial: Vec<u8>,
    partial_start: u64,
    assembler: Assembler,
    /// Everything before this offset was handed on.
    committed: u64,
    last_line: Instant,
    last_growth: Instant,
    /// Whether the glob still lists it (a rotated or deleted file does not).
    in_glob: bool,
    /// The bytes the file held when it was opened, and its modification time
    /// then: events within them were written by that time.
    held_at_open: (u64, Option<SystemTime>),
}

struct Tailer {
    config: FileLogConfig,
    rule: Rule,
    /// The label of this source's counters: the configured glob.
    label: String,
    tx: mpsc::Sender<Event>,
    stats: SourceStats,
    shutdown: CancellationToken,
    runtime: tokio::runtime::Handle,
    checkpoints: Checkpoints,
    files: HashMap<FileId, Tracked>,
    /// Paths that failed to open, with the error, so each failure is logged once.
    failing: HashMap<PathBuf, String>,
    first_scan: bool,
    last_save: Instant,
    saved: Vec<Checkpoint>,
    /// Checkpoints of files no longer tailed, kept so that one coming back
    /// resumes where it was (`left_at` set).
    departed: HashMap<FileId, Checkpoint>,
}

impl Tailer {
    fn new(
        config: FileLogConfig,
        state_dir: &Path,
        tx: mpsc::Sender<Event>,
        stats: SourceStats,
        shutdown: CancellationToken,
    ) -> Result<Self, FileSourceError> {
        let label = config.path.clone();
        glob::Pattern::new(&label).map_err(|err| FileSourceError::Glob {
            glob: label.clone(),
            message: err.to_string(),
        })?;
        let rule =
            Rule::new(config.multiline, config.multiline_start.as_deref()).map_err(|err| {
                FileSourceError::Config {
                    glob: label.clone(),
                    message: format!("multiline_start: {err}"),
                }
            })?;
        let checkpoints =
            Checkpoints::load(&checkpoint_path(state_dir, &label)).map_err(|message| {
                FileSourceError::Checkpoints {
                    glob: label.clone(),
                    message,
                }
            })?;
        Ok(Self {
            config,
            rule,
            label,
            tx,
            stats,
            shutdown,
            runtime: tokio::runtime::Handle::current(),
            checkpoints,
            files: HashMap::new(),
            failing: HashMap::new(),
            first_scan: true,
            last_save: Instant::now(),
            saved: Vec::new(),
            departed: HashMap::new(),
        })
    }

    fn run(&mut self) {
        let (wake_tx, wake) = std_mpsc::channel::<()>();
        let _watcher = self.watch(wake_tx);
        tracing::info!(glob = %self.label, "tailing files");
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            self.discover();
            let busy = match self.read_all() {
                Ok(busy) => busy,
                Err(Stop::Shutdown) => break,
            };
            if self.flush_idle().is_err() {
                break;
            }
            self.let_go_of_drained();
            if self.last_save.elapsed() >= SAVE_EVERY {
                self.save();
            }
            if !busy {
                let wait = self.next_wait();
                if wake.recv_timeout(wait).is_ok() {
                    while wake.try_recv().is_ok() {}
                }
            }
        }
        self.save();
        tracing::info!(glob = %self.label, "file source stopped");
    }

    /// Filesystem notifications on the glob's fixed directory wake the loop; when
    /// they cannot be had, polling alone does.
    fn watch(&self, wake: std_mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let (dir, recursive) = fixed_dir(&self.label);
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|event| !wakes(&event.kind)) {
                return;
            }
            let _ = wake.send(());
        })
        .map_err(|err| tracing::warn!(glob = %self.label, error = %err, "no filesystem notifications; polling only"))
        .ok()?;
        let mode = if recursive {
            notify::RecursiveMode::Recursive
        } else {
            notify::RecursiveMode::NonRecursive
        };
        match watcher.watch(&dir, mode) {
            Ok(()) => Some(watcher),
            Err(err) => {
                tracing::info!(glob = %self.label, dir = %dir.display(), error = %err, "cannot watch the directory; polling every {:?}", self.config.poll_interval.0);
                None
            }
        }
    }

    fn next_wait(&self) -> Duration {
        let poll = self.config.poll_interval.0;
        let timeout = self.config.multiline_timeout.0;
        self.files
            .values()
            .filter(|t| t.assembler.pending_start().is_some())
            .map(|t| timeout.saturating_sub(t.last_line.elapsed()))
            .fold(poll, Duration::min)
            .max(Duration::from_millis(5))
    }

    /// Lists the glob: new files are opened and placed (checkpoint, `read_from`,
    /// or the beginning); known ones may have been renamed within it.
    fn discover(&mut self) {
        let mut listed = HashSet::new();
        let paths = match glob::glob(&self.label) {
            Ok(paths) => paths,
            Err(err) => {
                tracing::error!(glob = %self.label, error = %err, "invalid glob");
                return;
            }
        };
        for entry in paths {
            let path = match entry {
                Ok(path) => path,
                Err(err) => {
                    self.open_failed(err.path().to_path_buf(), err.error().to_string());
                    continue;
                }
            };
            if !self.may_follow(&path) {
                continue;
            }
            let Ok(metadata) = std::fs::metadata(&path) else {
                continue; // gone between listing and looking
            };
            if !metadata.is_file() {
                continue;
            }
            let id = FileId::of(&metadata);
            listed.insert(id);
            if let Some(tracked) = self.files.get_mut(&id) {
                tracked.path = path;
                tracked.in_glob = true;
                continue;
            }
            match File::open(&path) {
                Ok(file) => {
                    if self.failing.remove(&path).is_some() {
                        tracing::info!(path = %path.display(), "file readable again");
                    }
                    if let Err(err) = self.track(path.clone(), file, true) {
                        self.open_failed(path, err.to_string());
                    }
                }
                Err(err) => self.open_failed(path, err.to_string()),
            }
        }
        for tracked in self.files.values_mut() {
            if !listed.contains(&tracked.id) && tracked.in_glob {
                tracing::debug!(path = %tracked.path.display(), "left the glob; reading it to its end");
                tracked.in_glob = false;
                tracked.last_growth = Instant::now();
            }
        }
        if self.first_scan {
            self.first_scan = false;
            self.recover_rotated();
            let now = unix_now();
            self.departed = self
                .checkpoints
                .entries()
                .filter(|c| !self.files.contains_key(&c.id))
                .map(|c| {
                    let mut kept = c.clone();
                    kept.left_at.get_or_insert(now);
                    (c.id, kept)
                })
                .collect();
        }
        self.stats
            .files
            .with_label_values(&[&self.label])
            .set(self.files.len() as i64);
    }

    /// After a restart: files checkpointed at a path the glob no longer lists may
    /// have been rotated away while dropguard was stopped. One found beside its old
    /// path with the same inode and head is read to its end from its checkpoint.
    fn recover_rotated(&mut self) {
        let missing: Vec<Checkpoint> = self
            .checkpoints
            .entries()
            .filter(|c| c.left_at.is_none() && !self.files.contains_key(&c.id))
            .cloned()
            .collect();
        for checkpoint in missing {
            let Some(dir) = checkpoint.path.parent() else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(metadata) = entry.metadata() else {
                    continue;
                };
                if metadata.is_file() && FileId::of(&metadata) == checkpoint.id {
                    if let Ok(file) = File::open(entry.path()) {
                        tracing::info!(path = %entry.path().display(), was = %checkpoint.path.display(), "reading the rest of a file rotated while stopped");
                        if self.track(entry.path(), file, false).is_ok()
                            && let Some(tracked) = self.files.get_mut(&checkpoint.id)
                        {
                            tracked.in_glob = false;
                        }
                    }
                    break;
                }
            }
        }
    }

    /// Whether `path` may be read: a regular path, or a symlink whose target
    /// lies in the glob's own directory or in `symlinks_into`. A refused link
    /// is reported once, like a file that cannot be opened.
    fn may_follow(&mut self, path: &Path) -> bool {
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            return true;
        }
        let Ok(target) = std::fs::canonicalize(path) else {
            return false; // dangling: nothing to read
        };
        let (fixed, _) = fixed_dir(&self.label);
        let allowed = std::iter::once(&fixed)
            .chain(&self.config.symlinks_into)
            .filter_map(|dir| std::fs::canonicalize(dir).ok())
            .any(|dir| target.starts_with(dir));
        if !allowed {
            self.open_failed(
                path.to_path_buf(),
                format!(
                    "it is a symlink to {}, outside {} and logs.file.symlinks_into; it is not read (add its directory to symlinks_into to read it)",
                    target.display(),
                    fixed.display()
                ),
            );
        }
        allowed
    }

    fn open_failed(&mut self, path: PathBuf, error: String) {
        if self.failing.get(&path) != Some(&error) {
            tracing::warn!(path = %path.display(), error = %error, "cannot open log file; the others go on, and it is retried (check its permissions for the dropguard user)");
            self.stats
                .errors
                .with_label_values(&[&self.label, "open"])
                .inc();
            self.failing.insert(path, error);
        }
    }

    /// Starts tailing `file`: at its checkpoint when it has a valid one; at its end
    /// when this source has never run and `read_from = "end"`; else from the start.
    fn track(&mut self, path: PathBuf, mut file: File, in_glob: bool) -> io::Result<()> {
        let metadata = file.metadata()?;
        let id = FileId::of(&metadata);
        let size = metadata.len();
        let start = match self.checkpoints.get(id) {
            Some(cp) if cp.offset <= size && cp.head.matches(&mut file) => cp.offset,
            Some(_) => 0, // truncated or rewritten while stopped
            None if !self.checkpoints.existed
                && self.first_scan
                && self.config.read_from == ReadFrom::End =>
            {
                size
            }
            None => 0,
        };
        let head = Head::read(&mut file, size)?;
        if self.departed.remove(&id).is_some() && start > 0 {
            tracing::info!(path = %path.display(), offset = start, "a file tailed before is back; resuming where it was");
        }
        tracing::debug!(path = %path.display(), start, size, "tailing file");
        let now = Instant::now();
        self.files.insert(
            id,
            Tracked {
                source: format!("file:{}", path.display()).into(),
                path,
                file,
                id,
                head,
                read_at: start,
                partial: Vec::new(),
                partial_start: start,
                assembler: Assembler::new(self.rule.clone(), self.config.max_event_bytes),
                committed: start,
                last_line: now,
                last_growth: now,
                in_glob,
                held_at_open: (size, metadata.modified().ok()),
            },
        );
        Ok(())
    }

    /// Reads what every file gained. `Ok(true)` when a file had more than one
    /// burst waiting, so the loop should not sleep.
    fn read_all(&mut self) -> Result<bool, Stop> {
        let mut busy = false;
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        for id in ids {
            let Some(mut tracked) = self.files.remove(&id) else {
                continue;
            };
            let result = self.read_file(&mut tracked);
            if let Err(ReadError::Stop { unsent_from }) = result {
                tracked.committed = unsent_from;
            }
            self.files.insert(id, tracked);
            match result {
                Ok(more) => busy |= more,
                Err(ReadError::Stop { .. }) => return Err(Stop::Shutdown),
                Err(ReadError::Io(err)) => {
                    tracing::warn!(glob = %self.label, error = %err, "reading a log file failed; retrying");
                    self.stats
                        .errors
                        .with_label_values(&[&self.label, "read"])
                        .inc();
                }
            }
        }
        Ok(busy)
    }

    fn read_file(&self, t: &mut Tracked) -> Result<bool, ReadError> {
        let size = t.file.metadata()?.len();
        // The head is re-read only when the size moved: an idle file costs one
        // fstat a round, not a read.
        if size < t.read_at || (size != t.read_at && !t.head.matches(&mut t.file)) {
            // copytruncate (or a rewrite): the old content's last event is complete.
            tracing::info!(path = %t.path.display(), was = t.read_at, now = size, "file truncated; reading it from the start");
            let mut emit = self.emitter(&t.source, t.held_at_open);
            t.assembler.flush(&mut emit)?;
            t.assembler.reset();
            t.partial.clear();
            t.read_at = 0;
            t.held_at_open = (0, None);
            t.partial_start = 0;
            t.committed = 0;
            t.head = Head::read(&mut t.file, size)?;
        }
        if size == t.read_at {
            return Ok(false);
        }
        if t.head.len < checkpoint::HEAD_BYTES && size > t.head.len {
            t.head = Head::read(&mut t.file, size)?;
        }
        t.file.seek(SeekFrom::Start(t.read_at))?;
        let limit = self.config.max_event_bytes + 1;
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut total = 0usize;
        let mut emit = self.emitter(&t.source, t.held_at_open);
        while total < READ_BURST {
            let n = t.file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            total += n;
            let chunk = &buffer[..n];
            let chunk_start = t.read_at;
            let mut from = 0;
            for newline in memchr::memchr_iter(b'\n', chunk) {
                let end = chunk_start + newline as u64 + 1;
                if t.partial.is_empty() && t.partial_start == chunk_start + from as u64 {
                    t.assembler
                        .push(&chunk[from..newline], t.partial_start, end, &mut emit)?;
                } else {
                    let room = limit.saturating_sub(t.partial.len());
                    let piece = &chunk[from..newline];
                    t.partial.extend_from_slice(&piece[..piece.len().min(room)]);
                    t.assembler
                        .push(&t.partial, t.partial_start, end, &mut emit)?;
                    t.partial.clear();
                }
                t.partial_start = end;
                from = newline + 1;
                t.last_line = Instant::now();
            }
            let rest = &chunk[from..];
            let room = limit.saturating_sub(t.partial.len());
            t.partial.extend_from_slice(&rest[..rest.len().min(room)]);
            t.read_at += n as u64;
        }
        self.stats
            .bytes
            .with_label_values(&[&self.label])
            .inc_by(total as u64);
        t.last_growth = Instant::now();
        t.committed = t.assembler.pending_start().unwrap_or(t.partial_start);
        Ok(total >= READ_BURST)
    }

    /// The closure that turns a finished event into an [`Event`] and hands it on,
    /// waiting while the channel is full, giving up on shutdown.
    fn emitter<'a>(
        &'a self,
        source: &'a Arc<str>,
        (held, modified): (u64, Option<SystemTime>),
    ) -> impl FnMut(Finished<'_>) -> Result<(), Unsent> + 'a {
        move |finished: Finished<'_>| {
            let (record, logged_at) = decode_record(
                finished.bytes,
                self.config.format,
                &self.config.fields,
                self.config.max_event_bytes,
                &self.stats,
                &self.label,
            );
            let event = Event {
                source: source.clone(),
                observed_at: SystemTime::now(),
                logged_at,
                written_by: modified.filter(|_| finished.end <= held),
                payload: Payload::Log(record),
            };
            let sent = self.runtime.block_on(async {
                tokio::select! {
                    sent = self.tx.send(event) => sent.is_ok(),
                    () = self.shutdown.cancelled() => false,
                }
            });
            if !sent {
                return Err(Unsent {
                    from: finished.start,
                });
            }
            self.stats.events.with_label_values(&[&self.label]).inc();
            Ok(())
        }
    }

    /// Hands on multi-line events that waited `multiline_timeout` for another line.
    fn flush_idle(&mut self) -> Result<(), Stop> {
        let timeout = self.config.multiline_timeout.0;
        let ids: Vec<FileId> = self
            .files
            .values()
            .filter(|t| t.assembler.pending_start().is_some() && t.last_line.elapsed() >= timeout)
            .map(|t| t.id)
            .collect();
        for id in ids {
            let Some(mut t) = self.files.remove(&id) else {
                continue;
            };
            let result = {
                let mut emit = self.emitter(&t.source, t.held_at_open);
                t.assembler.flush(&mut emit)
            };
            t.committed = match result {
                Ok(()) => t.partial_start,
                Err(Unsent { from }) => from,
            };
            self.files.insert(id, t);
            if result.is_err() {
                return Err(Stop::Shutdown);
            }
        }
        Ok(())
    }

    /// Lets go of files that left the glob and stopped growing, once read to the end.
    fn let_go_of_drained(&mut self) {
        let done: Vec<FileId> = self
            .files
            .values()
            .filter(|t| !t.in_glob && t.last_growth.elapsed() >= LINGER)
            .filter(|t| t.file.metadata().is_ok_and(|m| m.len() <= t.read_at))
            .map(|t| t.id)
            .collect();
        for id in done {
            if let Some(mut t) = self.files.remove(&id) {
                let flushed = {
                    let source = t.source.clone();
                    let mut emit = self.emitter(&source, t.held_at_open);
                    t.assembler.flush(&mut emit)
                };
                if flushed.is_err() {
                    // Shutdown: keep it, so its checkpoint stays at the pending event.
                    self.files.insert(id, t);
                    return;
                }
                tracing::debug!(path = %t.path.display(), "finished a rotated or deleted file");
                self.departed.insert(
                    id,
                    Checkpoint {
                        id,
                        path: t.path.clone(),
                        head: t.head.clone(),
                        offset: t.committed,
                        left_at: Some(unix_now()),
                    },
                );
            }
        }
    }

    fn save(&mut self) {
        self.forget_old_departed();
        let current: Vec<Checkpoint> = self
            .files
            .values()
            .map(|t| Checkpoint {
                id: t.id,
                path: t.path.clone(),
                head: t.head.clone(),
                offset: t.committed,
                left_at: None,
            })
            .chain(self.departed.values().cloned())
            .collect();
        self.last_save = Instant::now();
        let mut sorted = current.clone();
        sorted.sort_by_key(|c| (c.id.dev, c.id.ino));
        if sorted == self.saved && self.checkpoints.existed {
            return;
        }
        self.checkpoints.set_all(current);
        match self.checkpoints.save() {
            Ok(()) => self.saved = sorted,
            Err(err) => {
                tracing::error!(glob = %self.label, error = %err, "cannot write checkpoints; a restart may repeat lines (is the state dir writable?)");
                self.stats
                    .errors
                    .with_label_values(&[&self.label, "checkpoint"])
                    .inc();
            }
        }
    }
}

impl Tailer {
    /// Drops the checkpoints of departed files past [`checkpoint::KEEP_DEPARTED`],
    /// and the oldest beyond [`checkpoint::MAX_DEPARTED`].
    fn forget_old_departed(&mut self) {
        let oldest = unix_now().saturating_sub(checkpoint::KEEP_DEPARTED.as_secs());
        self.departed
            .retain(|_, c| c.left_at.is_some_and(|at| at >= oldest));
        if self.departed.len() > checkpoint::MAX_DEPARTED {
            let mut ages: Vec<(u64, FileId)> = self
                .departed
                .values()
                .map(|c| (c.left_at.unwrap_or(0), c.id))
                .collect();
            ages.sort_unstable_by_key(|(at, id)| (*at, id.dev, id.ino));
            let excess = self.departed.len() - checkpoint::MAX_DEPARTED;
            for (_, id) in ages.into_iter().take(excess) {
                self.departed.remove(&id);
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

enum ReadError {
    /// Shutdown while handing on the event that starts at `unsent_from`: the
    /// events before it were handed on, so a restart resumes there.
    Stop {
        unsent_from: u64,
    },
    Io(io::Error),
}

/// Shutdown came while handing on the event that starts at `from`.
struct Unsent {
    from: u64,
}

impl From<Unsent> for ReadError {
    fn from(unsent: Unsent) -> Self {
        ReadError::Stop {
            unsent_from: unsent.from,
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(err: io::Error) -> Self {
        ReadError::Io(err)
    }
}

/// Whether a notification can mean new bytes or files to read. Opening and
/// reading are not: the source's own listing of the directory and its own reads
/// raise them (inotify's `IN_OPEN`, which notify watches), so waking on them
/// would wake the source forever on an idle directory.
fn wakes(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

/// The directory part of a glob before its first wildcard, and whether the
/// wildcards reach into subdirectories.
fn fixed_dir(glob: &str) -> (PathBuf, bool) {
    let path = Path::new(glob);
    let mut fixed = PathBuf::new();
    let components: Vec<_> = path.components().collect();
    for (i, component) in components.iter().enumerate() {
        let text = component.as_os_str().to_string_lossy();
        if text.contains(['*', '?', '[', '{']) {
            return (fixed, i + 1 < components.len());
        }
        if i + 1 < components.len() {
            fixed.push(component);
        }
    }
    (fixed, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watched_directory_of_a_glob() {
        assert_eq!(
            fixed_dir("/var/log/app/*.log"),
            (PathBuf::from("/var/log/app"), false)
        );
        assert_eq!(
            fixed_dir("/var/log/app/web.log"),
            (PathBuf::from("/var/log/app"), false)
        );
        assert_eq!(
            fixed_dir("/var/log/*/web.log"),
            (PathBuf::from("/var/log"), true)
        );
        assert_eq!(
            fixed_dir("/var/log/**/*.log"),
            (PathBuf::from("/var/log"), true)
        );
    }

    #[test]
    fn checkpoint_files_are_per_glob() {
        let dir = Path::new("/state");
        assert_ne!(
            checkpoint_path(dir, "/a/*.log"),
            checkpoint_path(dir, "/b/*.log")
        );
        assert!(checkpoint_path(dir, "/a/*.log").starts_with("/state/checkpoints"));
    }
}
