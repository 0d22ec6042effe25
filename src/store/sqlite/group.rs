//! Group commit for the SQLite store: one task owns the write connection and runs every write
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
//! A caller that gives up (its call cancelled) after its write was queued does not stop the
//! write: it commits, and a retry with the same idempotency key is answered as a replay.

use std::any::Any;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{classify, BEGIN_WRITE};
use crate::store::StoreError;

/// Writes waiting at most; a caller beyond that waits for room (back-pressure, not loss).
const QUEUE: usize = 1024;
/// Writes in one transaction at most.
const MAX_BATCH: usize = 128;

type Answer = Result<Box<dyn Any + Send>, StoreError>;
type Work = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Answer> + Send>;

struct Job {
    work: Work,
    reply: oneshot::Sender<Answer>,
}

/// The handle that queues writes for the writing task; cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct GroupWriter {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl GroupWriter {
    /// Starts the writing task over `pool` (one connection). It ends when every handle is gone.
    pub(super) fn start(pool: SqlitePool) -> Self {
        let (jobs, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(pool, receiver));
        Self { jobs }
    }

    /// Runs `work` inside the next batch's transaction and returns its answer once that
    /// transaction has committed. The error is not yet classified (the caller does that).
    pub(super) async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |connection| {
            Box::pin(async move { work(connection).await.map(|value| Box::new(value) as Box<dyn Any + Send>) })
        });
        let closed = || StoreError::Unavailable(sqlx::Error::PoolClosed);
        self.jobs.send(Job { work, reply }).await.map_err(|_| closed())?;
        let value = answer.await.map_err(|_| closed())??;
        Ok(*value.downcast::<T>().expect("a job answers with the type it was queued with"))
    }
}

#[cfg(test)]
impl GroupWriter {
    /// Writes queued and not yet taken by the writing task.
    pub(super) fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }
}

async fn write_batches(pool: SqlitePool, mut receiver: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write_batch(&pool, std::mem::take(&mut batch)).await;
    }
}

/// The same failure for every caller of a batch: sqlx errors cannot be cloned, so each gets
/// the classified kind with the first error's text.
fn shared_failure(error: StoreError) -> impl Fn() -> StoreError {
    let error = classify(error);
    let text = error.to_string();
    let unavailable = matches!(error, StoreError::Unavailable(_));
    move || {
        let error = sqlx::Error::Protocol(text.clone());
        if unavailable {
            StoreError::Unavailable(error)
        } else {
            StoreError::Database(error)
        }
    }
}

fn fail_all(jobs: impl IntoIterator<Item = oneshot::Sender<Answer>>, error: StoreError) {
    let failure = shared_failure(error);
    for reply in jobs {
        let _ = reply.send(Err(failure()));
    }
}

async fn write_batch(pool: &SqlitePool, jobs: Vec<Job>) {
    let mut connection = match pool.acquire().await {
        Ok(connection) => connection,
        Err(error) => return fail_all(jobs.into_iter().map(|job| job.reply), error.into()),
    };
    if let Err(error) = sqlx::query(BEGIN_WRITE).execute(&mut *connection).await {
        return fail_all(jobs.into_iter().map(|job| job.reply), error.into());
    }
    let mut answered = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    let mut broken = None;
    for job in jobs.by_ref() {
        if let Err(error) = sqlx::query("SAVEPOINT write").execute(&mut *connection).await {
            broken = Some((job.reply, error));
            break;
        }
        let answer = (job.work)(&mut connection).await;
        let mut ended = Ok(());
        if answer.is_err() {
            ended = sqlx::query("ROLLBACK TO write").execute(&mut *connection).await.map(drop);
        }
        if ended.is_ok() {
            ended = sqlx::query("RELEASE write").execute(&mut *connection).await.map(drop);
        }
        if let Err(error) = ended {
            // The transaction is in an unknown state (SQLite may have rolled it back on its
            // own, as it does on a full disk): nothing of this batch is acknowledged.
            broken = Some((job.reply, error));
            break;
        }
        answered.push((job.reply, answer));
    }
    if let Some((reply, error)) = broken {
        let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
        let rest = jobs.map(|job| job.reply);
        let written = answered.into_iter().map(|(reply, _)| reply);
        return fail_all(std::iter::once(reply).chain(written).chain(rest), error.into());
    }
    match sqlx::query("COMMIT").execute(&mut *connection).await {
        Ok(_) => {
            for (reply, answer) in answered {
                let _ = reply.send(answer);
            }
        }
        Err(error) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
            fail_all(answered.into_iter().map(|(reply, _)| reply), error.into());
        }
    }
}
