//! The pruning batches of [`SqliteStore`]: each one a write of the group writer, so it runs on
//! the one write connection between the service's own writes, never beside them, and removes
//! at most `limit` rows selected by an index of migration 0005 (a few milliseconds of the
//! writer for a few hundred rows).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::SqliteStore;
use crate::store::rows::nanos;
use crate::store::{audit_actions_sql, PruneKind, StoreError};

impl SqliteStore {
    pub(super) async fn prune_inner(
        &self,
        kind: PruneKind,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let cutoff = nanos(cutoff)?;
        self.writer.run(move |connection| prune_in(connection, kind, cutoff, limit)).await
    }
}

fn prune_in(tx: &Connection, kind: PruneKind, cutoff: i64, limit: u32) -> Result<u64, StoreError> {
    let removed = tx.prepare_cached(&prune_sql(kind))?.execute(params![cutoff, i64::from(limit)])?;
    Ok(u64::try_from(removed).unwrap_or(u64::MAX))
}

/// The statement of one batch of `kind`: `?1` the cutoff, `?2` the limit.
fn prune_sql(kind: PruneKind) -> String {
    match kind {
        PruneKind::VerificationAudit | PruneKind::ChangeAudit => format!(
            "DELETE FROM audit WHERE seq IN \
             (SELECT seq FROM audit WHERE action IN ({}) AND at < ?1 LIMIT ?2)",
            audit_actions_sql(kind == PruneKind::VerificationAudit)
        ),
        PruneKind::Scans => {
            "DELETE FROM scans WHERE rowid IN (SELECT rowid FROM scans WHERE scanned_at < ?1 LIMIT ?2)".to_owned()
        }
        // The newest event stays: its number is the status list's sequence (MAX(seq)), which
        // must never go back. `+seq` keeps SQLite from walking the table by seq instead of the
        // index on valid_until.
        PruneKind::StatusEvents => "DELETE FROM status_events WHERE seq IN \
             (SELECT seq FROM status_events WHERE valid_until < ?1 \
              AND +seq < (SELECT MAX(seq) FROM status_events) LIMIT ?2)"
            .to_owned(),
        // The expression and condition of the index passes_named_by_end, word for word.
        PruneKind::HolderNames => "UPDATE passes SET name_latin = NULL, name_chinese = NULL WHERE rowid IN \
             (SELECT rowid FROM passes WHERE (name_latin IS NOT NULL OR name_chinese IS NOT NULL) \
              AND min(valid_until, coalesce(used_at, valid_until), coalesce(revoked_at, valid_until)) < ?1 \
              LIMIT ?2)"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::behaviour::{admin, at, issued, new_pass, pass_id};
    use crate::store::Store;

    async fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("epass.db")).await.unwrap();
        (dir, store)
    }

    /// Each batch finds its rows through an index of migration 0005 (or the status events'),
    /// never by reading a whole table: a regression would hold the one writer for as long as
    /// the table takes to read, at every run.
    #[tokio::test]
    async fn every_batch_reads_by_an_index() {
        let (_dir, store) = open().await;
        for kind in PruneKind::ALL {
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {}", prune_sql(kind)))
                .bind(0_i64)
                .bind(10_i64)
                .fetch_all(&store.reader)
                .await
                .unwrap_or_else(|error| panic!("{kind:?}: {error}"));
            let plan = plan.into_iter().map(|(_, _, _, detail)| detail).collect::<Vec<_>>().join("\n");
            assert!(!plan.contains("SCAN "), "{kind:?} reads a whole table:\n{plan}");
            let index = match kind {
                PruneKind::VerificationAudit | PruneKind::ChangeAudit => "INDEX audit_by_action_time",
                PruneKind::Scans => "INDEX scans_by_time",
                PruneKind::StatusEvents => "INDEX status_events_by_validity",
                PruneKind::HolderNames => "INDEX passes_named_by_end",
            };
            assert!(plan.contains(index), "{kind:?} does not use {index}:\n{plan}");
        }
    }

    /// The status list's sequence is the newest event's number: pruning keeps that event, even
    /// when its pass ended long ago.
    #[tokio::test]
    async fn the_newest_status_event_is_kept() {
        let (_dir, store) = open().await;
        for n in 1..=2 {
            issued(&store, new_pass(n, n as u8, "2026-11")).await;
            store.revoke(pass_id(n), "lost", at("2026-11-26T12:00:00Z"), &admin()).await.unwrap();
        }
        let later = at("2027-01-01T00:00:00Z");
        assert_eq!(store.prune(PruneKind::StatusEvents, later, 10).await.unwrap(), 1);
        assert_eq!(store.prune(PruneKind::StatusEvents, later, 10).await.unwrap(), 0);
        let events = store.status_events(0, later).await.unwrap();
        assert_eq!((events.sequence, events.entries.len()), (2, 0));
        let seqs: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM status_events").fetch_all(&store.reader).await.unwrap();
        assert_eq!(seqs, vec![2]);
    }
}
