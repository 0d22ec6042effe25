//! The transaction bodies and queries of [`SqliteStore`]: issue, revoke, record an entry, write
//! an audit row, probe the write lock; read a pass, a request, status events and the audit
//! trail.
//!
//! The writes and the reads of one pass or one request run on direct connections (`direct.rs`);
//! status events and the audit trail are read through sqlx. Every write runs in a batch of the
//! group writer, which opens with [`super::BEGIN_WRITE`], so the read that decides (the quota
//! count, the use check) and the write it allows run under the one write lock. Errors are
//! returned as [`StoreError::Database`]; the `Store` methods in `mod.rs` classify them.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension as _};

use super::SqliteStore;
use crate::store::rows::{double_entry, nanos, pass_columns, time, AuditEntryRow, PassRow, DOUBLE_ENTRY_COLUMNS};
use crate::store::rules::{
    already_recorded, decide, parse_mode, parse_verdict, plan_sync, seq_value, split_batch, verdict_name,
};
use crate::store::{
    Actor, AuditAction, AuditEntry, AuditOutcome, AuditRecord, EntryAttempt, EntryOutcome, IssueOutcome, NewPass,
    OfflineBatch, OfflineEntry, PassRecord, RevokeOutcome, StatusEvents, StoreError, SyncRefusal, SyncedEntry,
};
use epass_core::ids::PassId;
use epass_core::journal::{EntryHash, GENESIS};
use epass_core::pass::TransportMode;
use epass_core::status::{PassEvent, StatusEntry};
use epass_core::verify::EntryRecord;
use epass_core::verify::Reason;

impl SqliteStore {
    pub(super) async fn issue_inner(&self, new: NewPass, monthly_limit: u32) -> Result<IssueOutcome, StoreError> {
        self.writer.run(move |connection| issue_in(connection, &new, monthly_limit)).await
    }

    pub(super) async fn revoke_inner(
        &self,
        pass_id: PassId,
        reason: &str,
        at: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<RevokeOutcome, StoreError> {
        let (reason, actor) = (reason.to_owned(), actor.clone());
        self.writer.run(move |connection| revoke_in(connection, pass_id, &reason, at, &actor)).await
    }

    pub(super) async fn record_entry_inner(&self, attempt: EntryAttempt) -> Result<EntryOutcome, StoreError> {
        self.writer.run(move |connection| record_entry_in(connection, &attempt)).await
    }

    pub(super) async fn sync_offline_entries_inner(
        &self,
        batch: OfflineBatch,
    ) -> Result<Result<Vec<SyncedEntry>, SyncRefusal>, StoreError> {
        self.writer.run(move |connection| sync_offline_entries_in(connection, &batch)).await
    }

    pub(super) async fn record_audits_inner(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.writer.run(move |connection| record_audits_in(connection, &records)).await
    }
}

fn issue_in(tx: &Connection, new: &NewPass, monthly_limit: u32) -> Result<IssueOutcome, StoreError> {
    let earlier = fetch_request(tx, &new.actor.caller.name, &new.request_id)?;
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
        insert_audit(tx, &audit(AuditOutcome::RequestIdConflict, None))?;
        return Ok(IssueOutcome::RequestIdConflict);
    }
    let count = count_in_month(tx, &new.holder_key, &new.quota_month)?;
    if count >= i64::from(monthly_limit) {
        insert_audit(tx, &audit(AuditOutcome::QuotaExhausted, None))?;
        return Ok(IssueOutcome::QuotaExhausted);
    }
    let pass = &new.pass;
    tx.prepare_cached(
        "INSERT INTO passes (pass_id, key_id, signature, name_latin, name_chinese, permit_masked, \
             issued_at, valid_from, valid_until, modes, entries_allowed, holder_key, quota_month, \
             caller, request_id, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        pass.pass_id.as_bytes().as_slice(),
        pass.key_id.as_bytes().as_slice(),
        pass.signature.as_slice(),
        pass.name_latin.as_deref(),
        pass.name_chinese.as_deref(),
        &pass.permit_masked,
        nanos(pass.issued_at)?,
        nanos(pass.valid_from)?,
        nanos(pass.valid_until)?,
        i64::from(pass.modes.bits()),
        i64::from(pass.entries_allowed),
        new.holder_key.as_slice(),
        &new.quota_month,
        &new.actor.caller.name,
        &new.request_id,
        new.fingerprint.as_slice(),
    ])?;
    insert_audit(tx, &audit(AuditOutcome::Issued, Some(pass.pass_id)))?;
    Ok(IssueOutcome::Issued(PassRecord {
        pass: new.pass.clone(),
        revocation: None,
        entry: None,
        double_entries: Vec::new(),
    }))
}

fn revoke_in(
    tx: &Connection,
    pass_id: PassId,
    reason: &str,
    at: DateTime<Utc>,
    actor: &Actor,
) -> Result<RevokeOutcome, StoreError> {
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
    let Some(record) = fetch_pass(tx, pass_id)? else {
        insert_audit(tx, &audit(AuditOutcome::NotFound))?;
        return Ok(RevokeOutcome::NotFound);
    };
    if record.revocation.is_some() {
        insert_audit(tx, &audit(AuditOutcome::AlreadyRevoked))?;
        return Ok(RevokeOutcome::Revoked(record));
    }
    tx.prepare_cached("UPDATE passes SET revoked_at = ?, revoke_reason = ? WHERE pass_id = ? AND revoked_at IS NULL")?
        .execute(params![nanos(at)?, reason, pass_id.as_bytes().as_slice()])?;
    let record = fetch_pass(tx, pass_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("pass {pass_id} vanished while being revoked")))?;
    tx.prepare_cached(
        "INSERT INTO status_events (pass_id, event, at, checkpoint_id, mode, valid_until) \
             VALUES (?, 'revoked', ?, '', '', ?)",
    )?
    .execute(params![pass_id.as_bytes().as_slice(), nanos(at)?, nanos(record.pass.valid_until)?])?;
    insert_audit(tx, &audit(AuditOutcome::Revoked))?;
    Ok(RevokeOutcome::Revoked(record))
}

fn record_entry_in(tx: &Connection, attempt: &EntryAttempt) -> Result<EntryOutcome, StoreError> {
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
    let earlier: Option<(Vec<u8>, String, String, String)> = tx
        .prepare_cached("SELECT pass_id, verdict, checkpoint_id, mode FROM scans WHERE caller = ? AND scan_id = ?")?
        .query_row(params![&attempt.actor.caller.name, &attempt.scan_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    if let Some((scanned, verdict, checkpoint_id, mode)) = earlier {
        // Only the same scan resent gets the first answer: the same id for another pass, at
        // another checkpoint or of another mode would open a second gate on one admission.
        let same_scan = scanned.as_slice() == pass_id.as_bytes()
            && checkpoint_id == attempt.checkpoint_id
            && mode == attempt.mode.name();
        if !same_scan {
            insert_audit(tx, &audit(AuditOutcome::ScanIdConflict))?;
            return Ok(EntryOutcome::ScanIdConflict);
        }
        let verdict = parse_verdict(&verdict)
            .ok_or_else(|| StoreError::Corrupt(format!("scan {:?}: unknown verdict {verdict:?}", attempt.scan_id)))?;
        let record = fetch_pass(tx, pass_id)?;
        return Ok(EntryOutcome::Decided { verdict, record, replayed: true });
    }

    let mut record = fetch_pass(tx, pass_id)?;
    let mut verdict = decide(&attempt.offline_verdict, record.as_ref());
    if verdict.is_ok() {
        let updated = tx
            .prepare_cached(
                "UPDATE passes SET used_at = ?, used_checkpoint = ?, used_mode = ?, used_scan_id = ? \
                 WHERE pass_id = ? AND used_at IS NULL AND revoked_at IS NULL",
            )?
            .execute(params![
                nanos(attempt.at)?,
                &attempt.checkpoint_id,
                attempt.mode.name(),
                &attempt.scan_id,
                pass_id.as_bytes().as_slice(),
            ])?;
        record = fetch_pass(tx, pass_id)?;
        if let (1, Some(used)) = (updated, &record) {
            tx.prepare_cached(
                "INSERT INTO status_events (pass_id, event, at, checkpoint_id, mode, valid_until) \
                 VALUES (?, 'used', ?, ?, ?, ?)",
            )?
            .execute(params![
                pass_id.as_bytes().as_slice(),
                nanos(attempt.at)?,
                &attempt.checkpoint_id,
                attempt.mode.name(),
                nanos(used.pass.valid_until)?,
            ])?;
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

    tx.prepare_cached(
        "INSERT INTO scans (caller, scan_id, pass_id, verdict, checkpoint_id, mode, scanned_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        &attempt.actor.caller.name,
        &attempt.scan_id,
        pass_id.as_bytes().as_slice(),
        verdict_name(verdict),
        &attempt.checkpoint_id,
        attempt.mode.name(),
        nanos(attempt.at)?,
    ])?;
    let outcome = match verdict {
        Ok(()) => AuditOutcome::Accepted,
        Err(reason) => AuditOutcome::Rejected(reason),
    };
    insert_audit(tx, &audit(outcome))?;
    Ok(EntryOutcome::Decided { verdict, record, replayed: false })
}

/// Checks the whole batch before it writes anything, so that a refusal leaves nothing behind.
fn sync_offline_entries_in(
    tx: &Connection,
    batch: &OfflineBatch,
) -> Result<Result<Vec<SyncedEntry>, SyncRefusal>, StoreError> {
    let caller = &batch.actor.caller.name;
    let journal: Option<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT last_seq, last_hash FROM journals WHERE caller = ? AND journal_id = ?")?
        .query_row(params![caller, &batch.journal_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let (acknowledged, last_hash) = match journal {
        None => (0, GENESIS),
        Some((seq, hash)) => (
            u64::try_from(seq)
                .map_err(|_| StoreError::Corrupt(format!("journal {:?}: negative sequence", batch.journal_id)))?,
            EntryHash::from_slice(&hash)
                .ok_or_else(|| StoreError::Corrupt(format!("journal {:?}: hash is not 32 bytes", batch.journal_id)))?,
        ),
    };
    let (old, new) = split_batch(&batch.entries, acknowledged);
    for entry in old {
        let stored: Option<Vec<u8>> = tx
            .prepare_cached("SELECT hash FROM journal_entries WHERE caller = ? AND journal_id = ? AND seq = ?")?
            .query_row(params![caller, &batch.journal_id, seq_value(entry.seq)?], |row| row.get(0))
            .optional()?;
        if stored.as_deref() != Some(entry.hash.0.as_slice()) {
            return Ok(Err(SyncRefusal::Altered { seq: entry.seq }));
        }
    }
    if let Some(first) = new.first() {
        if first.seq != acknowledged + 1 || first.prev_hash != last_hash {
            return Ok(Err(SyncRefusal::BrokenChain { seq: first.seq, acknowledged }));
        }
    }
    for entry in new {
        let used: Option<i64> = tx
            .prepare_cached("SELECT 1 FROM scans WHERE caller = ? AND scan_id = ?")?
            .query_row(params![caller, &entry.scan_id], |row| row.get(0))
            .optional()?;
        if used.is_some() {
            return Ok(Err(SyncRefusal::ScanIdReused { seq: entry.seq, scan_id: entry.scan_id.clone() }));
        }
        if fetch_pass(tx, entry.pass_id)?.is_none() {
            return Ok(Err(SyncRefusal::UnknownPass { seq: entry.seq, pass_id: entry.pass_id }));
        }
    }

    let mut synced = Vec::with_capacity(batch.entries.len());
    for entry in old {
        let record = fetch_pass(tx, entry.pass_id)?
            .ok_or_else(|| StoreError::Corrupt(format!("pass {} of a synced entry is gone", entry.pass_id)))?;
        synced.push(already_recorded(entry, record)?);
    }
    for entry in new {
        synced.push(sync_one_in(tx, batch, entry)?);
    }
    if let Some(last) = new.last() {
        tx.prepare_cached(
            "INSERT INTO journals (caller, journal_id, last_seq, last_hash) VALUES (?, ?, ?, ?) \
             ON CONFLICT (caller, journal_id) DO UPDATE SET last_seq = excluded.last_seq, last_hash = excluded.last_hash",
        )?
        .execute(params![caller, &batch.journal_id, seq_value(last.seq)?, last.hash.0.as_slice()])?;
    }
    Ok(Ok(synced))
}

/// Records one new entry: the pass's entry if it has none or a later one, else a double entry.
fn sync_one_in(tx: &Connection, batch: &OfflineBatch, entry: &OfflineEntry) -> Result<SyncedEntry, StoreError> {
    let pass_id = entry.pass_id;
    let record = fetch_pass(tx, pass_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("pass {pass_id} vanished while syncing")))?;
    let audit = |outcome: AuditOutcome, at: DateTime<Utc>, of: &EntryRecord| {
        insert_audit(
            tx,
            &AuditRow {
                at,
                action: AuditAction::AdmitOffline,
                outcome,
                pass_id: Some(pass_id),
                actor: &batch.actor,
                request_key: Some(&of.scan_id),
                checkpoint_id: Some(&of.checkpoint_id),
                mode: Some(of.mode),
                permit_masked: None,
            },
        )
    };
    let this = entry.entry_record();
    let plan = plan_sync(&record, &this);
    if plan.becomes_entry {
        use_pass_in(tx, pass_id, &this)?;
        if plan.first_use {
            tx.prepare_cached(
                "INSERT INTO status_events (pass_id, event, at, checkpoint_id, mode, valid_until) \
                 VALUES (?, 'used', ?, ?, ?, ?)",
            )?
            .execute(params![
                pass_id.as_bytes().as_slice(),
                nanos(this.recorded_at)?,
                &this.checkpoint_id,
                this.mode.name(),
                nanos(record.pass.valid_until)?,
            ])?;
        }
    }
    if let Some(double) = &plan.double_entry {
        insert_double_entry_in(tx, pass_id, double, batch.at)?;
    }
    tx.prepare_cached(
        "INSERT INTO scans (caller, scan_id, pass_id, verdict, checkpoint_id, mode, scanned_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        &batch.actor.caller.name,
        &entry.scan_id,
        pass_id.as_bytes().as_slice(),
        verdict_name(Ok(())),
        &entry.checkpoint_id,
        entry.mode.name(),
        nanos(entry.recorded_at)?,
    ])?;
    tx.prepare_cached(
        "INSERT INTO journal_entries (caller, journal_id, seq, hash, scan_id, pass_id, checkpoint_id, mode, \
         recorded_at, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        &batch.actor.caller.name,
        &batch.journal_id,
        seq_value(entry.seq)?,
        entry.hash.0.as_slice(),
        &entry.scan_id,
        pass_id.as_bytes().as_slice(),
        &entry.checkpoint_id,
        entry.mode.name(),
        nanos(entry.recorded_at)?,
        nanos(batch.at)?,
    ])?;
    let this_is_double = plan.double_entry.as_ref() == Some(&this);
    audit(if this_is_double { AuditOutcome::DoubleEntry } else { AuditOutcome::Accepted }, this.recorded_at, &this)?;
    if let Some(displaced) = plan.double_entry.as_ref().filter(|_| !this_is_double) {
        audit(AuditOutcome::DoubleEntry, batch.at, displaced)?;
    }
    Ok(plan.answer(entry.seq))
}

fn use_pass_in(tx: &Connection, pass_id: PassId, entry: &EntryRecord) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE passes SET used_at = ?, used_checkpoint = ?, used_mode = ?, used_scan_id = ? WHERE pass_id = ?",
    )?
    .execute(params![
        nanos(entry.recorded_at)?,
        &entry.checkpoint_id,
        entry.mode.name(),
        &entry.scan_id,
        pass_id.as_bytes().as_slice(),
    ])?;
    Ok(())
}

fn insert_double_entry_in(
    tx: &Connection,
    pass_id: PassId,
    double: &EntryRecord,
    noted_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO double_entries (pass_id, scan_id, checkpoint_id, mode, recorded_at, noted_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        pass_id.as_bytes().as_slice(),
        &double.scan_id,
        &double.checkpoint_id,
        double.mode.name(),
        nanos(double.recorded_at)?,
        nanos(noted_at)?,
    ])?;
    tx.prepare_cached("UPDATE passes SET double_entries = double_entries + 1 WHERE pass_id = ?")?
        .execute(params![pass_id.as_bytes().as_slice()])?;
    Ok(())
}

fn record_audits_in(tx: &Connection, records: &[AuditRecord]) -> Result<(), StoreError> {
    for record in records {
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
        insert_audit(tx, &row)?;
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
        // Room on the disk first: the write below reaches no disk (see there), so alone it
        // would call a full disk writable, and health would go back and forth for as long as
        // the write-ahead log still had room that a failed commit left behind.
        if let Some(scratch) = self.space_probe.clone() {
            tokio::task::spawn_blocking(move || super::probe_space(&scratch))
                .await
                .map_err(|_| super::direct::closed())?
                .map_err(|error| StoreError::Database(sqlx::Error::Io(error)))?;
        }
        // Queued as a write: its batch takes the write lock (busy, locked); then a write
        // statement that matches no row, since SQLite grants the lock on a read-only
        // connection and refuses only the write. Nothing reaches the disk.
        self.writer
            .run(|connection| {
                connection.prepare_cached("DELETE FROM audit WHERE 0")?.execute([])?;
                Ok(())
            })
            .await
    }
}

/// The passes of a holder in a quota month: issued and revoked ones alike.
pub(super) fn count_in_month(
    connection: &Connection,
    holder_key: &[u8; 32],
    quota_month: &str,
) -> Result<i64, StoreError> {
    let count = connection
        .prepare_cached("SELECT COUNT(*) FROM passes WHERE holder_key = ? AND quota_month = ?")?
        .query_row(params![holder_key.as_slice(), quota_month], |row| row.get(0))?;
    Ok(count)
}

pub(super) fn fetch_pass(connection: &Connection, pass_id: PassId) -> Result<Option<PassRecord>, StoreError> {
    let row = connection
        .prepare_cached(concat!("SELECT ", pass_columns!(), " FROM passes WHERE pass_id = ?"))?
        .query_row(params![pass_id.as_bytes().as_slice()], |row| PassRow::from_direct(row, 0))
        .optional()?;
    let Some(row) = row else { return Ok(None) };
    let doubles = row.has_double_entries();
    let mut record = row.into_record()?;
    if doubles {
        record.double_entries = fetch_double_entries(connection, pass_id)?;
    }
    Ok(Some(record))
}

fn fetch_double_entries(connection: &Connection, pass_id: PassId) -> Result<Vec<EntryRecord>, StoreError> {
    let rows = connection
        .prepare_cached(&format!(
            "SELECT {DOUBLE_ENTRY_COLUMNS} FROM double_entries WHERE pass_id = ? ORDER BY recorded_at, id"
        ))?
        .query_map(params![pass_id.as_bytes().as_slice()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(double_entry).collect()
}

/// The fingerprint and pass of an earlier request of `caller` with this id.
pub(super) fn fetch_request(
    connection: &Connection,
    caller: &str,
    request_id: &str,
) -> Result<Option<(Vec<u8>, PassRecord)>, StoreError> {
    let row = connection
        .prepare_cached(concat!(
            "SELECT fingerprint, ",
            pass_columns!(),
            " FROM passes WHERE caller = ? AND request_id = ?"
        ))?
        .query_row(params![caller, request_id], |row| Ok((row.get::<_, Vec<u8>>(0)?, PassRow::from_direct(row, 1)?)))
        .optional()?;
    row.map(|(fingerprint, pass)| Ok((fingerprint, pass.into_record()?))).transpose()
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

fn insert_audit(tx: &Connection, row: &AuditRow<'_>) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO audit (at, action, outcome, reason, pass_id, caller, role, peer, request_key, checkpoint_id, \
         mode, permit_masked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        nanos(row.at)?,
        row.action.as_str(),
        row.outcome.as_str(),
        row.outcome.reason().map(Reason::as_str),
        row.pass_id.as_ref().map(|id| id.as_bytes().as_slice()),
        &row.actor.caller.name,
        row.actor.caller.role.name(),
        row.actor.peer.map(|peer| peer.to_string()),
        row.request_key,
        row.checkpoint_id,
        row.mode.map(TransportMode::name),
        row.permit_masked,
    ])?;
    Ok(())
}
