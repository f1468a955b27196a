//! Deadlines on every database call: the adapter [`connect`](super::connect)
//! hands out wraps an engine's, so that a server that accepts connections and
//! never answers cannot hang a command or the daemon.
//!
//! Connecting gets `database.connect_timeout`, whole. A call (a statement, a
//! transaction's step, the next row of a stream, a bulk load) that has had no
//! answer for `database.statement_timeout` is not given up on time alone: a
//! big table's `INSERT … SELECT` or the sort before a stream's first row may
//! take longer, and the server sends nothing meanwhile. Instead the server is
//! asked a `SELECT 1` on a connection of its own (outside the pool, so a busy
//! pool is not mistaken for a dead server): when that has no answer within
//! `connect_timeout` either, the call fails naming the database, what it was
//! doing and how long it waited; when it answers, the call goes on and is
//! asked about again after another `statement_timeout`. So a server that stops
//! answering is given up on within `statement_timeout + connect_timeout`, and
//! a busy one never is.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::{
    Adapter, Applied, DbError, EncodedStream, Engine, LockGuard, MigrationRecord, RowStream,
    Session, TableInfo,
};
use crate::vault::{Checksummer, Value};

/// How long the database may take to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Connecting (TCP, TLS, authentication), taking a pooled connection, and
    /// the `SELECT 1` that tells a busy server from one that stopped answering.
    pub connect: Duration,
    /// How long a call may go without an answer (for a stream: without its
    /// next row) before the server is asked whether it still answers at all.
    pub statement: Duration,
}

impl From<&crate::config::DatabaseConfig> for Deadlines {
    fn from(config: &crate::config::DatabaseConfig) -> Self {
        Self {
            connect: config.connect_timeout.0,
            statement: config.statement_timeout.0,
        }
    }
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            statement: Duration::from_secs(60),
        }
    }
}

/// A duration as the configuration writes it (`1s`, `1m 30s`).
pub(super) fn text(duration: Duration) -> String {
    // Whole milliseconds: the waits measured are not worth microseconds.
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    humantime::format_duration(Duration::from_millis(millis)).to_string()
}

/// What watches each call: the engine's own adapter (for the `SELECT 1` on a
/// connection of its own), the deadlines, and the database's name for messages.
#[derive(Clone)]
struct Watch {
    inner: Arc<dyn Adapter>,
    deadlines: Deadlines,
    /// The URL with its password masked.
    database: Arc<str>,
}

impl Watch {
    /// Whether the server answers a `SELECT 1` on a new connection within the
    /// connect deadline; else how it failed to.
    async fn probe(&self) -> Result<(), String> {
        match tokio::time::timeout(self.deadlines.connect, self.inner.ping()).await {
            Ok(Ok(())) => Ok(()),
            // The server refused with an answer of its own (too many clients,
            // say): it is there.
            Ok(Err(err)) if err.server_message().is_some() => Ok(()),
            Ok(Err(DbError::Query { source, .. })) => Err(source.to_string()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!(
                "no answer within {} (database.connect_timeout)",
                text(self.deadlines.connect)
            )),
        }
    }

    /// Runs `call`, giving it up only when it has had no answer for the
    /// statement deadline and the server does not answer a `SELECT 1` on a
    /// connection of its own either. `call` goes on while the server is asked.
    async fn call<F: Future>(&self, what: &str, call: F) -> Result<F::Output, DbError> {
        tokio::pin!(call);
        let started = Instant::now();
        loop {
            if let Ok(answer) = tokio::time::timeout(self.deadlines.statement, &mut call).await {
                return Ok(answer);
            }
            let ping = self.probe();
            tokio::pin!(ping);
            tokio::select! {
                answer = &mut call => return Ok(answer),
                alive = &mut ping => match alive {
                    Ok(()) => tracing::info!(
                        database = %self.database,
                        what,
                        waited = %text(started.elapsed()),
                        "still waiting for the database, which answers on another connection"
                    ),
                    Err(cause) => {
                        let waited = text(started.elapsed());
                        tracing::error!(database = %self.database, what, %waited, ping = %cause, "the database stopped answering; giving up");
                        return Err(DbError::Unresponsive {
                            url: self.database.to_string(),
                            what: what.to_string(),
                            waited,
                            cause,
                        });
                    }
                },
            }
        }
    }

    /// [`call`](Self::call) of a call that may fail itself. A pooled
    /// connection not given within the connect deadline is said so, naming the
    /// database, instead of as the pool's bare "timed out".
    async fn run<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        match self.call(what, call).await? {
            Err(DbError::Query {
                what,
                source: sqlx::Error::PoolTimedOut,
            }) => Err(DbError::NoConnection {
                url: self.database.to_string(),
                what,
                waited: text(self.deadlines.connect),
            }),
            other => other,
        }
    }

    /// `stream` with each next item watched as a call; it ends after an error.
    fn stream<'a, T: Send + 'a>(
        &'a self,
        what: String,
        stream: BoxStream<'a, Result<T, DbError>>,
    ) -> BoxStream<'a, Result<T, DbError>> {
        // Shared, not copied, per row.
        let what: Arc<str> = Arc::from(what);
        Box::pin(futures_util::stream::unfold(Some(stream), move |state| {
            let what = what.clone();
            async move {
                let mut stream = state?;
                match self.call(&what, stream.next()).await {
                    Ok(Some(item)) => Some((item, Some(stream))),
                    Ok(None) => None,
                    Err(err) => Some((Err(err), None)),
                }
            }
        }))
    }
}

/// The adapter [`connect`](super::connect) hands out: the engine's, every call
/// under the deadlines.
pub(super) struct Watched {
    watch: Watch,
}

impl Watched {
    pub(super) fn new(inner: Box<dyn Adapter>, deadlines: Deadlines, database: String) -> Self {
        Self {
            watch: Watch {
                inner: Arc::from(inner),
                deadlines,
                database: Arc::from(database),
            },
        }
    }

    fn inner(&self) -> &dyn Adapter {
        self.watch.inner.as_ref()
    }
}

#[async_trait]
impl Adapter for Watched {
    fn engine(&self) -> Engine {
        self.inner().engine()
    }

    async fn ping(&self) -> Result<(), DbError> {
        self.watch
            .probe()
            .await
            .map_err(|cause| DbError::Unanswered {
                url: self.watch.database.to_string(),
                cause,
            })
    }

    async fn server_version(&self) -> Result<String, DbError> {
        self.watch
            .run("reading the server version", self.inner().server_version())
            .await
    }

    async fn table_exists(&self, table: &str) -> Result<bool, DbError> {
        self.watch
            .run(
                &format!("looking up table {table}"),
                self.inner().table_exists(table),
            )
            .await
    }

    async fn introspect(&self, table: &str) -> Result<Option<TableInfo>, DbError> {
        self.watch
            .run(
                &format!("reading the definition of table {table}"),
                self.inner().introspect(table),
            )
            .await
    }

    fn stream_rows<'a>(&'a self, table: &'a TableInfo, columns: &'a [String]) -> RowStream<'a> {
        self.watch.stream(
            format!("reading rows of {}", table.name),
            self.inner().stream_rows(table, columns),
        )
    }

    fn stream_encoded<'a>(
        &'a self,
        table: &'a TableInfo,
        columns: &'a [String],
    ) -> Option<EncodedStream<'a>> {
        let stream = self.inner().stream_encoded(table, columns)?;
        Some(
            self.watch
                .stream(format!("reading rows of {}", table.name), stream),
        )
    }

    async fn split_rows<'a>(
        &'a self,
        table: &'a TableInfo,
        columns: &'a [String],
        parts: usize,
    ) -> Result<Option<Vec<RowStream<'a>>>, DbError> {
        let what = format!("reading rows of {}", table.name);
        let streams = self
            .watch
            .run(&what, self.inner().split_rows(table, columns, parts))
            .await?;
        Ok(streams.map(|streams| {
            streams
                .into_iter()
                .map(|stream| self.watch.stream(what.clone(), stream))
                .collect()
        }))
    }

    async fn checksum_rows(
        &self,
        table: &TableInfo,
        columns: &[String],
        parts: usize,
    ) -> Result<Option<Checksummer>, DbError> {
        self.watch
            .run(
                &format!("reading back the rows of {}", table.name),
                self.inner().checksum_rows(table, columns, parts),
            )
            .await
    }

    async fn count_rows(&self, table: &str) -> Result<u64, DbError> {
        self.watch
            .run(
                &format!("counting the rows of {table}"),
                self.inner().count_rows(table),
            )
            .await
    }

    async fn count_non_null(&self, table: &str, columns: &[String]) -> Result<u64, DbError> {
        self.watch
            .run(
                &format!("counting the values of {table}.{}", columns.join(",")),
                self.inner().count_non_null(table, columns),
            )
            .await
    }

    async fn count(&self, sql: &str, what: &str) -> Result<u64, DbError> {
        self.watch.run(what, self.inner().count(sql, what)).await
    }

    async fn string_pairs(&self, sql: &str, what: &str) -> Result<Vec<(String, String)>, DbError> {
        self.watch
            .run(what, self.inner().string_pairs(sql, what))
            .await
    }

    async fn text_rows(
        &self,
        sql: &str,
        binds: &[String],
        what: &str,
    ) -> Result<Vec<Vec<Option<String>>>, DbError> {
        self.watch
            .run(what, self.inner().text_rows(sql, binds, what))
            .await
    }

    async fn applied_migrations(&self) -> Result<Applied, DbError> {
        self.watch
            .run(
                "reading django_migrations",
                self.inner().applied_migrations(),
            )
            .await
    }

    async fn django_migrations_max_id(&self) -> Result<i64, DbError> {
        self.watch
            .run(
                "reading the last id of django_migrations",
                self.inner().django_migrations_max_id(),
            )
            .await
    }

    async fn django_migrations_after(&self, after: i64) -> Result<Vec<MigrationRecord>, DbError> {
        self.watch
            .run(
                "reading new rows of django_migrations",
                self.inner().django_migrations_after(after),
            )
            .await
    }

    async fn lock(&self, name: &str) -> Result<Box<dyn LockGuard>, DbError> {
        // Waiting for another holder is the server's own wait (bounded by
        // LOCK_WAIT); a server that answers the SELECT 1 meanwhile is waited for.
        let guard = self
            .watch
            .run(&format!("taking lock {name:?}"), self.inner().lock(name))
            .await?;
        Ok(Box::new(WatchedLock {
            inner: guard,
            deadline: self.watch.deadlines.statement,
        }))
    }

    async fn begin(&self) -> Result<Box<dyn Session>, DbError> {
        let session = self
            .watch
            .run("starting a transaction", self.inner().begin())
            .await?;
        Ok(Box::new(WatchedSession {
            inner: session,
            watch: self.watch.clone(),
        }))
    }

    async fn reset_generator(&self, table: &str, column: &str) -> Result<(), DbError> {
        self.watch
            .run(
                &format!("resetting the sequence of {table}.{column}"),
                self.inner().reset_generator(table, column),
            )
            .await
    }

    async fn close(&self) {
        // Closing waits for the pool's connections; a server that stopped
        // answering must not hold the exit.
        if tokio::time::timeout(self.watch.deadlines.connect, self.inner().close())
            .await
            .is_err()
        {
            tracing::warn!(database = %self.watch.database, "closing the database connections took too long; leaving them");
        }
    }
}

/// A transaction whose every step is watched.
struct WatchedSession {
    inner: Box<dyn Session>,
    watch: Watch,
}

#[async_trait]
impl Session for WatchedSession {
    async fn execute(&mut self, sql: &str, values: &[Value], what: &str) -> Result<u64, DbError> {
        self.watch
            .run(what, self.inner.execute(sql, values, what))
            .await
    }

    async fn count(&mut self, sql: &str, what: &str) -> Result<u64, DbError> {
        self.watch.run(what, self.inner.count(sql, what)).await
    }

    async fn copy_in(
        &mut self,
        table: &str,
        columns: &[String],
        binary: bool,
        chunks: &mut tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> Result<Option<u64>, DbError> {
        self.watch
            .run(
                &format!("copying rows into {table}"),
                self.inner.copy_in(table, columns, binary, chunks),
            )
            .await
    }

    async fn commit(self: Box<Self>) -> Result<(), DbError> {
        let WatchedSession { inner, watch } = *self;
        watch.run("committing", inner.commit()).await
    }
}

/// A held lock whose release cannot hang: past the deadline the guard is
/// dropped, which frees the lock with its connection.
struct WatchedLock {
    inner: Box<dyn LockGuard>,
    deadline: Duration,
}

#[async_trait]
impl LockGuard for WatchedLock {
    async fn release(self: Box<Self>) {
        let WatchedLock { inner, deadline } = *self;
        if tokio::time::timeout(deadline, inner.release())
            .await
            .is_err()
        {
            tracing::warn!(
                "releasing an advisory lock got no answer; its connection is dropped instead"
            );
        }
    }
}
