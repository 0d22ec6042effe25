//! Group commit for the SQLite store: one thread owns the write connection and runs every write
//! that arrived while the last batch was being committed in ONE transaction, each write in a
//! savepoint of its own, then commits once, so that one fsync serves the whole batch. Each
//! caller is answered only after the commit that holds its change.
//!
//! The writes still run one after another on the one connection, under the write lock taken
//! by `BEGIN IMMEDIATE`, so every rule that a single write transaction enforced (the quota
//! count and its insert, the use check and its update, the idempotency lookups) holds exactly
//! as before: a write sees every earlier write of its batch. A write that fails is rolled back
//! to its savepoint and answered with its error; the others commit. When the batch's commit
//! fails, no write of it is acknowledged: every caller gets the error.
//!
//! The thread is a plain thread, not a runtime task: its statements (and the commit's fsync)
//! are synchronous calls into SQLite (`direct.rs`), which must not hold up a runtime thread.
//!
//! A caller that gives up (its call cancelled) after its write was queued does not stop the
//! write: it commits, and a retry with the same idempotency key is answered as a replay.

use std::any::Any;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::direct::closed;
use super::{classify, BEGIN_WRITE};
use crate::store::StoreError;

/// Writes waiting at most; a caller beyond that waits for room (back-pressure, not loss).
const QUEUE: usize = 1024;
/// Writes in one transaction at most.
const MAX_BATCH: usize = 128;

type Answer = Result<Box<dyn Any + Send>, StoreError>;
type Work = Box<dyn FnOnce(&Connection) -> Answer + Send>;

enum Message {
    Write {
        work: Work,
        reply: oneshot::Sender<Answer>,
    },
    /// Stop after the writes queued before this one, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// The handle that queues writes for the writing thread; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct GroupWriter {
    messages: mpsc::Sender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Write { .. } => "Write",
            Message::Close(_) => "Close",
        })
    }
}

impl GroupWriter {
    /// Starts the writing thread over `connection`. It ends when every handle is gone, or at
    /// [`GroupWriter::close`].
    pub(super) fn start(connection: Connection) -> Result<Self, StoreError> {
        let (messages, receiver) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("epass-sqlite-writer".into())
            .spawn(move || write_batches(connection, receiver))
            .map_err(|error| StoreError::Unavailable(sqlx::Error::Io(error)))?;
        Ok(Self { messages })
    }

    /// Runs `work` inside the next batch's transaction and returns its answer once that
    /// transaction has committed. The error is not yet classified (the caller does that).
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let work: Work =
            Box::new(move |connection| work(connection).map(|value| Box::new(value) as Box<dyn Any + Send>));
        self.messages.send(Message::Write { work, reply }).await.map_err(|_| closed())?;
        let value = answer.await.map_err(|_| closed())??;
        Ok(*value.downcast::<T>().expect("a job answers with the type it was queued with"))
    }

    /// Writes what was queued before this call, then closes the connection (the last
    /// connection to close copies the write-ahead log into the database file). Writes queued
    /// after it fail with [`StoreError::Unavailable`].
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.messages.send(Message::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

#[cfg(test)]
impl GroupWriter {
    /// Writes queued and not yet taken by the writing thread.
    pub(super) fn queued(&self) -> usize {
        self.messages.max_capacity() - self.messages.capacity()
    }
}

fn write_batches(connection: Connection, mut receiver: mpsc::Receiver<Message>) {
    while let Some(first) = receiver.blocking_recv() {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut close = None;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Write { work, reply } => batch.push((work, reply)),
                Message::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = receiver.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            write_batch(&connection, batch);
        }
        if let Some(done) = close {
            receiver.close();
            // Writes queued behind the close are refused: dropping them answers "closed".
            while receiver.try_recv().is_ok() {}
            drop(connection);
            let _ = done.send(());
            return;
        }
    }
}

/// The same failure for every caller of a batch: errors cannot be cloned, so each gets the
/// classified kind with the first error's text.
fn shared_failure(error: StoreError) -> impl Fn() -> StoreError {
    let error = classify(error);
    let text = error.to_string();
    let kind: fn(sqlx::Error) -> StoreError = match error {
        StoreError::Unavailable(_) => StoreError::Unavailable,
        StoreError::DiskFull(_) => StoreError::DiskFull,
        StoreError::Database(_) | StoreError::Migration(_) | StoreError::Corrupt(_) => StoreError::Database,
    };
    move || kind(sqlx::Error::Protocol(text.clone()))
}

fn fail_all(replies: impl IntoIterator<Item = oneshot::Sender<Answer>>, error: StoreError) {
    let failure = shared_failure(error);
    for reply in replies {
        let _ = reply.send(Err(failure()));
    }
}

fn write_batch(connection: &Connection, jobs: Vec<(Work, oneshot::Sender<Answer>)>) {
    if let Err(error) = connection.execute_batch(BEGIN_WRITE) {
        return fail_all(jobs.into_iter().map(|(_, reply)| reply), error.into());
    }
    let mut answered = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    let mut broken = None;
    for (work, reply) in jobs.by_ref() {
        if let Err(error) = connection.execute_batch("SAVEPOINT write") {
            broken = Some((reply, error));
            break;
        }
        // A panicking write must not take the writer (and every later write) down with it.
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(connection)))
            .unwrap_or_else(|_| Err(StoreError::Database(sqlx::Error::Protocol("the write panicked".into()))));
        let mut ended = Ok(());
        if answer.is_err() {
            ended = connection.execute_batch("ROLLBACK TO write");
        }
        if ended.is_ok() {
            ended = connection.execute_batch("RELEASE write");
        }
        if let Err(error) = ended {
            // The transaction is in an unknown state (SQLite may have rolled it back on its
            // own, as it does on a full disk): nothing of this batch is acknowledged.
            broken = Some((reply, error));
            break;
        }
        answered.push((reply, answer));
    }
    if let Some((reply, error)) = broken {
        let _ = connection.execute_batch("ROLLBACK");
        let rest = jobs.map(|(_, reply)| reply);
        let written = answered.into_iter().map(|(reply, _)| reply);
        return fail_all(std::iter::once(reply).chain(written).chain(rest), error.into());
    }
    match connection.execute_batch("COMMIT") {
        Ok(()) => {
            for (reply, answer) in answered {
                let _ = reply.send(answer);
            }
        }
        Err(error) => {
            let _ = connection.execute_batch("ROLLBACK");
            fail_all(answered.into_iter().map(|(reply, _)| reply), error.into());
        }
    }
}
