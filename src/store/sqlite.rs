//! SQLite implementation of [`Store`](super::Store) (placeholder, being written).

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore;
