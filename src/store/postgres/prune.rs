//! The pruning batches of [`PostgresStore`]: one statement each, so one short transaction,
//! removing at most `limit` rows selected by an index of migration 0005. Rows another
//! transaction holds locked (a pass being used or revoked right now, or the batch of another
//! replica's pruning task) are skipped, never waited for: the next batch or run takes them.

use chrono::{DateTime, Utc};

use super::{Attempt, PostgresStore};
use crate::store::rows::nanos;
use crate::store::{audit_actions_sql, PruneKind, StoreError};

impl PostgresStore {
    pub(super) async fn prune_once(
        &self,
        kind: PruneKind,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Attempt<u64>, StoreError> {
        let sql = match kind {
            PruneKind::VerificationAudit | PruneKind::ChangeAudit => format!(
                "DELETE FROM audit WHERE seq IN \
                 (SELECT seq FROM audit WHERE action IN ({}) AND at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                audit_actions_sql(kind == PruneKind::VerificationAudit)
            ),
            PruneKind::Scans => "DELETE FROM scans WHERE (caller, scan_id) IN \
                 (SELECT caller, scan_id FROM scans WHERE scanned_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
                .to_owned(),
            // The list's sequence is status_sequence.last, not an event's: every old event may go.
            PruneKind::StatusEvents => "DELETE FROM status_events WHERE seq IN \
                 (SELECT seq FROM status_events WHERE valid_until < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
                .to_owned(),
            // The expression and condition of the index passes_named_by_end.
            PruneKind::HolderNames => "UPDATE passes SET name_latin = NULL, name_chinese = NULL WHERE pass_id IN \
                 (SELECT pass_id FROM passes WHERE (name_latin IS NOT NULL OR name_chinese IS NOT NULL) \
                  AND LEAST(valid_until, used_at, revoked_at) < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
                .to_owned(),
        };
        let removed =
            sqlx::query(&sql).bind(nanos(cutoff)?).bind(i64::from(limit)).execute(&self.writer).await?.rows_affected();
        Ok(Attempt::Done(removed))
    }
}
