//! The SQLite store's direct connections: the hot paths (every write, and the reads of one
//! pass or one request) run on rusqlite connections called synchronously, not through sqlx's
//! SQLite driver, which hands every statement to a worker thread of the connection's and waits
//! for the answer (two thread wake-ups a statement, five to seven statements a write;
//! docs/PERFORMANCE.md). Both drivers link the one bundled SQLite library, so its locks see
//! every connection of the process.
//!
//! A read runs on the calling runtime thread: a point lookup by key, answered from the page
//! cache in microseconds, is cheaper than any hand-off. In WAL mode a reader does not wait for
//! the writer; should SQLite still answer busy (a log being recovered, say), the read is done
//! again on a blocking thread, where it may wait the full busy timeout without holding up
//! the runtime.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sqlx::error::{DatabaseError, ErrorKind};

use crate::store::StoreError;

/// Prepared statements kept per connection: every statement of the hot paths, with room.
const STATEMENT_CACHE: usize = 32;

/// How a direct connection opens the file: for the writer, or for reads only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// The writer's connection of a store that writes.
    Write,
    /// A reader's connection, or every connection of a read-only store.
    Read,
    /// The writer's connection of a store opened read-only: writes fail as SQLite refuses them.
    ReadOnly,
}

/// Opens a direct connection on an existing database file (the sqlx side created and migrated
/// it), synced as the store's connections are.
pub(super) fn connect(path: &Path, access: Access, busy: Duration) -> Result<Connection, StoreError> {
    let mode = match access {
        Access::Write => OpenFlags::SQLITE_OPEN_READ_WRITE,
        Access::Read | Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
    };
    // NO_MUTEX: a connection is used by one thread at a time (the writer's thread, or the
    // reader that took it from the idle list).
    let connection = Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    connection.busy_timeout(busy)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    if access == Access::Write {
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", true)?;
    }
    Ok(connection)
}

/// The direct read connections: taken by a read, returned after it; as many exist as reads
/// ever ran at once (at most one per runtime thread, plus the reads retried on blocking
/// threads).
#[derive(Debug)]
pub(super) struct Readers {
    path: PathBuf,
    /// How long a read retried on a blocking thread waits for a lock.
    wait: Duration,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl Readers {
    pub(super) fn new(path: &Path, wait: Duration) -> Arc<Self> {
        Arc::new(Self { path: path.to_owned(), wait, idle: Mutex::new(Vec::new()), closed: AtomicBool::new(false) })
    }

    /// Runs `read` on a direct read connection: on this thread without waiting for a lock,
    /// or, when SQLite answers busy, on a blocking thread allowed to wait.
    pub(super) async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        match self.read_on(Duration::ZERO, &read) {
            Err(error) if is_busy(&error) => {
                let readers = Arc::clone(self);
                tokio::task::spawn_blocking(move || readers.read_on(readers.wait, &read)).await.map_err(|_| closed())?
            }
            other => other,
        }
    }

    fn read_on<T>(&self, busy: Duration, read: impl Fn(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let connection = match idle {
            Some(connection) => connection,
            None => connect(&self.path, Access::Read, Duration::ZERO)?,
        };
        connection.busy_timeout(busy)?;
        let result = read(&connection);
        if !self.closed.load(Ordering::Acquire) {
            self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(connection);
        }
        result
    }

    /// Closes the idle connections; reads after this fail with [`StoreError::Unavailable`].
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }
}

/// The error of a call on a closed store.
pub(super) fn closed() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

/// SQLite's `SQLITE_BUSY` and `SQLITE_LOCKED`, with any extended code.
fn is_busy(error: &StoreError) -> bool {
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    matches!(error, StoreError::Database(sqlx::Error::Database(failure))
        if failure.try_downcast_ref::<SqliteFailure>().is_some_and(|f| matches!(f.code & 0xff, BUSY | LOCKED)))
}

/// A rusqlite error in the form the store reports (and `classify` reads) sqlx's: a database
/// error carrying SQLite's extended result code.
#[derive(Debug)]
pub(super) struct SqliteFailure {
    /// SQLite's extended result code; 1 (`SQLITE_ERROR`) for errors of the Rust side, such as
    /// a column of an unexpected type.
    code: i32,
    message: String,
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        let code = match &error {
            rusqlite::Error::SqliteFailure(failure, _) => failure.extended_code,
            _ => 1,
        };
        let failure = SqliteFailure { code, message: error.to_string() };
        StoreError::Database(sqlx::Error::Database(Box::new(failure)))
    }
}

impl std::fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl StdError for SqliteFailure {}

impl DatabaseError for SqliteFailure {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        // https://www.sqlite.org/rescode.html: the extended constraint codes.
        match self.code {
            1555 | 2067 => ErrorKind::UniqueViolation,
            787 => ErrorKind::ForeignKeyViolation,
            1299 => ErrorKind::NotNullViolation,
            275 => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}
