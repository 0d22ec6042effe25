//! The transaction bodies and queries of [`SqliteStore`]: issue, revoke, record an entry, write
//! an audit row, probe the write lock; read status events and the audit trail.
//!
//! Every write transaction opens with [`BEGIN_WRITE`], so the read that decides (the quota
//! count, the use check) and the write it allows run under the one write lock. Errors are
//! returned as [`StoreError::Database`]; the `Store` methods in `mod.rs` classify them.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnection;
use sqlx::{Executor, Sqlite};

use super::{SqliteStore, BEGIN_WRITE};
use crate::store::rows::{nanos, pass_columns, time, AuditEntryRow, PassRow, RequestRow};
use crate::store::rules::{decide, parse_mode, parse_verdict, verdict_name};
use crate::store::{
    Actor, AuditAction, AuditEntry, AuditOutcome, AuditRecord, EntryAttempt, EntryOutcome, IssueOutcome, NewPass,
    PassRecord, RevokeOutcome, StatusEvents, StoreError,
};
use epass_core::ids::PassId;
use epass_core::pass::TransportMode;
use epass_core::status::{PassEvent, StatusEntry};
use epass_core::verify::Reason;

impl SqliteStore {
    pub(super) async fn issue_inner(&self, new: NewPass, monthly_limit: u32) -> Result<IssueOutcome, StoreError> {
        self.writer.run(move |connection| Box::pin(issue_in(connection, new, monthly_limit))).await
    }

    pub(super) async fn revoke_inner(
        &self,
        pass_id: PassId,
        reason: &str,
        at: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<RevokeOutcome, StoreError> {
        let (reason, actor) = (reason.to_owned(), actor.clone());
        self.writer.run(move |connection| Box::pin(revoke_in(connection, pass_id, reason, at, actor))).await
    }

    pub(super) async fn record_entry_inner(&self, attempt: EntryAttempt) -> Result<EntryOutcome, StoreError> {
        self.writer.run(move |connection| Box::pin(record_entry_in(connection, attempt))).await
    }

    pub(super) async fn record_audits_inner(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.writer.run(move |connection| Box::pin(record_audits_in(connection, records))).await
    }
}

async fn issue_in(tx: &mut SqliteConnection, new: NewPass, monthly_limit: u32) -> Result<IssueOutcome, StoreError> {
    let earlier = fetch_request(&mut *tx, &new.actor.caller.name, &new.request_id).await?;
    let audit = |outcome: AuditOutcome, pass_id: Option<PassId>| AuditRow {
        at: new.pass.issued_at,
        action: AuditAction::Issue,
        outcome,
        pass_id,
        actor: &new.actor,
        request_key: Some(&new.request_id),
        checkpoint_id: None,
        mode: None,
        permit_masked: Some(&new.pass.permit_masked),
    };
    if let Some((fingerprint, record)) = earlier {
        if fingerprint == new.fingerprint {
            return Ok(IssueOutcome::Replayed(record));
        }
        insert_audit(&mut *tx, &audit(AuditOutcome::RequestIdConflict, None)).await?;
        return Ok(IssueOutcome::RequestIdConflict);
    }
    let count = count_in_month(&mut *tx, &new.holder_key, &new.quota_month).await?;
    if count >= i64::from(monthly_limit) {
        insert_audit(&mut *tx, &audit(AuditOutcome::QuotaExhausted, None)).await?;
        return Ok(IssueOutcome::QuotaExhausted);
    }
    let pass = &new.pass;
    sqlx::query(
        "INSERT INTO passes (pass_id, key_id, signature, name_latin, name_chinese, permit_masked, \
             issued_at, valid_from, valid_until, modes, entries_allowed, holder_key, quota_month, \
             caller, request_id, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(pass.pass_id.as_bytes().as_slice())
    .bind(pass.key_id.as_bytes().as_slice())
    .bind(pass.signature.as_slice())
    .bind(pass.name_latin.as_deref())
    .bind(pass.name_chinese.as_deref())
    .bind(&pass.permit_masked)
    .bind(nanos(pass.issued_at)?)
    .bind(nanos(pass.valid_from)?)
    .bind(nanos(pass.valid_until)?)
    .bind(i64::from(pass.modes.bits()))
    .bind(i64::from(pass.entries_allowed))
    .bind(new.holder_key.as_slice())
    .bind(&new.quota_month)
    .bind(&new.actor.caller.name)
    .bind(&new.request_id)
    .bind(new.fingerprint.as_slice())
    .execute(&mut *tx)
    .await?;
    insert_audit(&mut *tx, &audit(AuditOutcome::Issued, Some(pass.pass_id))).await?;
    Ok(IssueOutcome::Issued(PassRecord { pass: new.pass, revocation: None, entry: None }))
}

async fn revoke_in(
    tx: &mut SqliteConnection,
    pass_id: PassId,
    reason: String,
    at: DateTime<Utc>,
    actor: Actor,
) -> Result<RevokeOutcome, StoreError> {
    let actor = &actor;
    let audit = |outcome: AuditOutcome| AuditRow {
        at,
        action: AuditAction::Revoke,
        outcome,
        pass_id: Some(pass_id),
        actor,
        request_key: None,
        checkpoint_id: None,
        mode: None,
        permit_masked: None,
    };
    let Some(record) = fetch_pass(&mut *tx, pass_id).await? else {
        insert_audit(&mut *tx, &audit(AuditOutcome::NotFound)).await?;
        return Ok(RevokeOutcome::NotFound);
    };
    if record.revocation.is_some() {
        insert_audit(&mut *tx, &audit(AuditOutcome::AlreadyRevoked)).await?;
        return Ok(RevokeOutcome::Revoked(record));
    }
    sqlx::query("UPDATE passes SET revoked_at = ?, revoke_reason = ? WHERE pass_id = ? AND revoked_at IS NULL")
        .bind(nanos(at)?)
        .bind(&reason)
        .bind(pass_id.as_bytes().as_slice())
        .execute(&mut *tx)
        .await?;
    let record = fetch_pass(&mut *tx, pass_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("pass {pass_id} vanished while being revoked")))?;
    sqlx::query(
        "INSERT INTO status_events (pass_id, event, at, checkpoint_id, mode, valid_until) \
             VALUES (?, 'revoked', ?, '', '', ?)",
    )
    .bind(pass_id.as_bytes().as_slice())
    .bind(nanos(at)?)
    .bind(nanos(record.pass.valid_until)?)
    .execute(&mut *tx)
    .await?;
    insert_audit(&mut *tx, &audit(AuditOutcome::Revoked)).await?;
    Ok(RevokeOutcome::Revoked(record))
}

async fn record_entry_in(tx: &mut SqliteConnection, attempt: EntryAttempt) -> Result<EntryOutcome, StoreError> {
    let pass_id = attempt.pass_id;
    let audit = |outcome: AuditOutcome| AuditRow {
        at: attempt.at,
        action: AuditAction::Admit,
        outcome,
        pass_id: Some(pass_id),
        actor: &attempt.actor,
        request_key: Some(&attempt.scan_id),
        checkpoint_id: Some(&attempt.checkpoint_id),
        mode: Some(attempt.mode),
        permit_masked: None,
    };
    let earlier: Option<(Vec<u8>, String, String, String)> =
        sqlx::query_as("SELECT pass_id, verdict, checkpoint_id, mode FROM scans WHERE caller = ? AND scan_id = ?")
            .bind(&attempt.actor.caller.name)
            .bind(&attempt.scan_id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((scanned, verdict, checkpoint_id, mode)) = earlier {
        // Only the same scan resent gets the first answer: the same id for another pass, at
        // another checkpoint or of another mode would open a second gate on one admission.
        let same_scan = scanned.as_slice() == pass_id.as_bytes()
            && checkpoint_id == attempt.checkpoint_id
            && mode == attempt.mode.name();
        if !same_scan {
            insert_audit(&mut *tx, &audit(AuditOutcome::ScanIdConflict)).await?;
            return Ok(EntryOutcome::ScanIdConflict);
        }
        let verdict = parse_verdict(&verdict)
            .ok_or_else(|| StoreError::Corrupt(format!("scan {:?}: unknown verdict {verdict:?}", attempt.scan_id)))?;
        let record = fetch_pass(&mut *tx, pass_id).await?;
        return Ok(EntryOutcome::Decided { verdict, record, replayed: true });
    }

    let mut record = fetch_pass(&mut *tx, pass_id).await?;
    let mut verdict = decide(&attempt.offline_verdict, record.as_ref());
    if verdict.is_ok() {
        let updated = sqlx::query(
            "UPDATE passes SET used_at = ?, used_checkpoint = ?, used_mode = ?, used_scan_id = ? \
                 WHERE pass_id = ? AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(nanos(attempt.at)?)
        .bind(&attempt.checkpoint_id)
        .bind(attempt.mode.name())
        .bind(&attempt.scan_id)
        .bind(pass_id.as_bytes().as_slice())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        record = fetch_pass(&mut *tx, pass_id).await?;
        if let (1, Some(used)) = (updated, &record) {
            sqlx::query(
                "INSERT INTO status_events (pass_id, event, at, checkpoint_id, mode, valid_until) \
                     VALUES (?, 'used', ?, ?, ?, ?)",
            )
            .bind(pass_id.as_bytes().as_slice())
            .bind(nanos(attempt.at)?)
            .bind(&attempt.checkpoint_id)
            .bind(attempt.mode.name())
            .bind(nanos(used.pass.valid_until)?)
            .execute(&mut *tx)
            .await?;
        }
        if updated != 1 {
            // Cannot happen while the write lock is held from the read on; should it ever,
            // the row as it now stands decides, and the update alone can admit.
            verdict = decide(&attempt.offline_verdict, record.as_ref());
            if verdict.is_ok() {
                return Err(StoreError::Corrupt(format!(
                    "pass {pass_id} is unused and unrevoked, yet using it up changed nothing"
                )));
            }
        }
    }

    sqlx::query(
        "INSERT INTO scans (caller, scan_id, pass_id, verdict, checkpoint_id, mode, scanned_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&attempt.actor.caller.name)
    .bind(&attempt.scan_id)
    .bind(pass_id.as_bytes().as_slice())
    .bind(verdict_name(verdict))
    .bind(&attempt.checkpoint_id)
    .bind(attempt.mode.name())
    .bind(nanos(attempt.at)?)
    .execute(&mut *tx)
    .await?;
    let outcome = match verdict {
        Ok(()) => AuditOutcome::Accepted,
        Err(reason) => AuditOutcome::Rejected(reason),
    };
    insert_audit(&mut *tx, &audit(outcome)).await?;
    Ok(EntryOutcome::Decided { verdict, record, replayed: false })
}

async fn record_audits_in(tx: &mut SqliteConnection, records: Vec<AuditRecord>) -> Result<(), StoreError> {
    for record in &records {
        let row = AuditRow {
            at: record.at,
            action: record.action,
            outcome: record.outcome,
            pass_id: record.pass_id,
            actor: &record.actor,
            request_key: record.request_key.as_deref(),
            checkpoint_id: record.checkpoint_id.as_deref(),
            mode: record.mode,
            permit_masked: record.permit_masked.as_deref(),
        };
        insert_audit(&mut *tx, &row).await?;
    }
    Ok(())
}

impl SqliteStore {
    pub(super) async fn status_events_inner(&self, after: u64, now: DateTime<Utc>) -> Result<StatusEvents, StoreError> {
        // One read transaction: the sequence and the rows come from the same snapshot.
        let mut tx = self.reader.begin().await?;
        let sequence: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM status_events").fetch_one(&mut *tx).await?;
        let rows: Vec<(Vec<u8>, String, i64, String, String, i64)> = sqlx::query_as(
            "SELECT pass_id, event, at, checkpoint_id, mode, valid_until FROM status_events \
             WHERE seq > ? AND valid_until > ? ORDER BY seq",
        )
        // A caller's sequence past any stored one simply has no events after it.
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(nanos(now)?)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let entries = rows
            .into_iter()
            .map(|(pass_id, event, at, checkpoint_id, mode, valid_until)| {
                let pass_id = PassId::from_slice(&pass_id)
                    .ok_or_else(|| StoreError::Corrupt("status event pass id is not 16 bytes".into()))?;
                let event = match event.as_str() {
                    "revoked" => PassEvent::Revoked,
                    "used" => PassEvent::Used {
                        checkpoint_id,
                        mode: parse_mode(&mode)
                            .ok_or_else(|| StoreError::Corrupt(format!("status event: unknown mode {mode:?}")))?,
                    },
                    other => return Err(StoreError::Corrupt(format!("status event: unknown event {other:?}"))),
                };
                Ok(StatusEntry { pass_id, event, at: time(at), valid_until: time(valid_until) })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(StatusEvents { sequence: u64::try_from(sequence).unwrap_or(0), entries })
    }

    pub(super) async fn audit_trail_inner(&self, pass_id: PassId) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditEntryRow> = sqlx::query_as(
            "SELECT seq, at, action, outcome, reason, pass_id, caller, role, peer, request_key, checkpoint_id, \
             mode, permit_masked FROM audit WHERE pass_id = ? ORDER BY at, seq",
        )
        .bind(pass_id.as_bytes().as_slice())
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(AuditEntryRow::into_entry).collect()
    }

    pub(super) async fn probe_writable_inner(&self) -> Result<(), StoreError> {
        // The write lock (busy, locked), then a write statement that matches no row: SQLite
        // grants the lock on a read-only connection and refuses only the write. Nothing reaches
        // the disk, so a full disk or an I/O error shows only at the next real write, which
        // reports the store unavailable again.
        let mut tx = self.write_pool.begin_with(BEGIN_WRITE).await?;
        sqlx::query("DELETE FROM audit WHERE 0").execute(&mut *tx).await?;
        tx.rollback().await?;
        Ok(())
    }
}

/// The passes of a holder in a quota month: issued and revoked ones alike.
pub(super) async fn count_in_month<'e, E>(
    executor: E,
    holder_key: &[u8; 32],
    quota_month: &str,
) -> Result<i64, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let count = sqlx::query_scalar("SELECT COUNT(*) FROM passes WHERE holder_key = ? AND quota_month = ?")
        .bind(holder_key.as_slice())
        .bind(quota_month)
        .fetch_one(executor)
        .await?;
    Ok(count)
}

pub(super) async fn fetch_pass<'e, E>(executor: E, pass_id: PassId) -> Result<Option<PassRecord>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let row: Option<PassRow> = sqlx::query_as(concat!("SELECT ", pass_columns!(), " FROM passes WHERE pass_id = ?"))
        .bind(pass_id.as_bytes().as_slice())
        .fetch_optional(executor)
        .await?;
    row.map(PassRow::into_record).transpose()
}

/// The fingerprint and pass of an earlier request of `caller` with this id.
pub(super) async fn fetch_request<'e, E>(
    executor: E,
    caller: &str,
    request_id: &str,
) -> Result<Option<(Vec<u8>, PassRecord)>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let row: Option<RequestRow> = sqlx::query_as(concat!(
        "SELECT fingerprint, ",
        pass_columns!(),
        " FROM passes WHERE caller = ? AND request_id = ?"
    ))
    .bind(caller)
    .bind(request_id)
    .fetch_optional(executor)
    .await?;
    row.map(|row| Ok((row.fingerprint, row.pass.into_record()?))).transpose()
}

/// An audit row to insert.
struct AuditRow<'a> {
    at: DateTime<Utc>,
    action: AuditAction,
    outcome: AuditOutcome,
    pass_id: Option<PassId>,
    actor: &'a Actor,
    request_key: Option<&'a str>,
    checkpoint_id: Option<&'a str>,
    mode: Option<TransportMode>,
    permit_masked: Option<&'a str>,
}

async fn insert_audit<'e, E>(executor: E, row: &AuditRow<'_>) -> Result<(), StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    sqlx::query(
        "INSERT INTO audit (at, action, outcome, reason, pass_id, caller, role, peer, request_key, checkpoint_id, \
         mode, permit_masked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(nanos(row.at)?)
    .bind(row.action.as_str())
    .bind(row.outcome.as_str())
    .bind(row.outcome.reason().map(Reason::as_str))
    .bind(row.pass_id.as_ref().map(|id| id.as_bytes().to_vec()))
    .bind(&row.actor.caller.name)
    .bind(row.actor.caller.role.name())
    .bind(row.actor.peer.map(|peer| peer.to_string()))
    .bind(row.request_key)
    .bind(row.checkpoint_id)
    .bind(row.mode.map(TransportMode::name))
    .bind(row.permit_masked)
    .execute(executor)
    .await?;
    Ok(())
}
