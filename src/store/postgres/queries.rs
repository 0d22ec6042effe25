//! The transaction bodies and queries of [`PostgresStore`]: issue, revoke, record an entry,
//! write audit rows, probe a write; read status events and the audit trail.
//!
//! Each write transaction runs at READ COMMITTED and is one try ([`Attempt`]): `mod.rs` tries
//! again after a serialization failure or a deadlock, or after a lost race for an idempotency
//! key. The statement that decides (the quota upsert, the conditional use, the insert of an
//! idempotency key) is the one that writes, so a concurrent transaction on another server can
//! only make it wait, never slip in between a read and a write. Locks are taken in one order,
//! pass row, then idempotency key, then quota or journal counter, so transactions do not
//! deadlock one another. Every time is converted to nanoseconds before the transaction starts,
//! so an unstorable time changes nothing.
//!
//! Errors are returned as [`StoreError::Database`]; the `Store` methods in `mod.rs` classify
//! them.

use chrono::{DateTime, Utc};
use sqlx::{Executor, PgConnection, Postgres};

use super::{Attempt, PostgresStore};
use crate::store::rows::{
    double_entry, nanos, pass_columns, time, AuditEntryRow, PassRow, RequestRow, DOUBLE_ENTRY_COLUMNS,
};
use crate::store::rules::{
    already_recorded, decide, parse_mode, parse_verdict, plan_sync, seq_value, split_batch, verdict_name,
};
use crate::store::{
    Actor, AuditAction, AuditEntry, AuditOutcome, AuditRecord, EntryAttempt, EntryOutcome, IssueOutcome, NewPass,
    OfflineBatch, PassRecord, RevokeOutcome, StatusEvents, StoreError, SyncRefusal, SyncedEntry,
};
use epass_core::ids::PassId;
use epass_core::journal::{EntryHash, GENESIS};
use epass_core::pass::TransportMode;
use epass_core::status::{PassEvent, StatusEntry};
use epass_core::verify::EntryRecord;
use epass_core::verify::Reason;

/// A consistent snapshot for the two reads of a status list; read-only, so it never fails to
/// serialize.
const BEGIN_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

impl PostgresStore {
    pub(super) async fn issue_once(
        &self,
        new: &NewPass,
        monthly_limit: u32,
    ) -> Result<Attempt<IssueOutcome>, StoreError> {
        let pass = &new.pass;
        let (issued_at, valid_from, valid_until) =
            (nanos(pass.issued_at)?, nanos(pass.valid_from)?, nanos(pass.valid_until)?);
        let audit = |outcome: AuditOutcome, pass_id: Option<PassId>| AuditRow {
            at: issued_at,
            action: AuditAction::Issue,
            outcome,
            pass_id,
            actor: &new.actor,
            request_key: Some(&new.request_id),
            checkpoint_id: None,
            mode: None,
            permit_masked: Some(&pass.permit_masked),
        };
        let mut tx = self.writer.begin().await?;
        // The request id is claimed first, by the insert itself: a new request (the common
        // case) costs no read. A retry of this very request sent to another server meanwhile
        // waits here for this transaction, then inserts nothing and is answered as a replay,
        // rather than waiting on the quota row and being refused a pass that this request was
        // in fact issued.
        let claimed = sqlx::query(
            "INSERT INTO passes (pass_id, key_id, signature, name_latin, name_chinese, permit_masked, \
             issued_at, valid_from, valid_until, modes, entries_allowed, holder_key, quota_month, \
             caller, request_id, fingerprint) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (caller, request_id) DO NOTHING",
        )
        .bind(pass.pass_id.as_bytes().as_slice())
        .bind(pass.key_id.as_bytes().as_slice())
        .bind(pass.signature.as_slice())
        .bind(pass.name_latin.as_deref())
        .bind(pass.name_chinese.as_deref())
        .bind(&pass.permit_masked)
        .bind(issued_at)
        .bind(valid_from)
        .bind(valid_until)
        .bind(i64::from(pass.modes.bits()))
        .bind(i64::from(pass.entries_allowed))
        .bind(new.holder_key.as_slice())
        .bind(&new.quota_month)
        .bind(&new.actor.caller.name)
        .bind(&new.request_id)
        .bind(new.fingerprint.as_slice())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            // The key is taken, and the insert waited for the transaction that took it: at
            // READ COMMITTED this next statement sees its row.
            return match fetch_request(&mut *tx, &new.actor.caller.name, &new.request_id).await? {
                Some((fingerprint, record)) if fingerprint == new.fingerprint => {
                    tx.rollback().await?;
                    Ok(Attempt::Done(IssueOutcome::Replayed(record)))
                }
                Some(_) => {
                    insert_audit(&mut *tx, &audit(AuditOutcome::RequestIdConflict, None)).await?;
                    tx.commit().await?;
                    Ok(Attempt::Done(IssueOutcome::RequestIdConflict))
                }
                None => {
                    tx.rollback().await?;
                    Ok(Attempt::LostRace)
                }
            };
        }
        // The quota: one statement counts and increments. The counter row's lock is held to
        // commit, so concurrent issues for this holder and month, on any server, take turns,
        // and the WHERE is evaluated on the count the previous one committed. (Counting the
        // passes instead would let two transactions count the same n and both insert; an
        // advisory lock would work too, but the counter row needs no convention outside SQL,
        // and SERIALIZABLE would turn every collision into a retry.) The audit row of the
        // issue is inserted by the same statement, for the count it allows only: one round
        // trip fewer on the common path.
        let issued = audit(AuditOutcome::Issued, Some(pass.pass_id));
        let counted = sqlx::query(
            "WITH counted AS (\
                 INSERT INTO quota_counts (holder_key, quota_month, issued) SELECT $1, $2, 1 WHERE $3 > 0 \
                 ON CONFLICT (holder_key, quota_month) DO UPDATE SET issued = quota_counts.issued + 1 \
                 WHERE quota_counts.issued < $3 RETURNING issued), \
             audited AS (\
                 INSERT INTO audit (at, action, outcome, reason, pass_id, caller, role, peer, request_key, \
                 checkpoint_id, mode, permit_masked) \
                 SELECT $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 FROM counted) \
             SELECT issued FROM counted",
        )
        .bind(new.holder_key.as_slice())
        .bind(&new.quota_month)
        .bind(i64::from(monthly_limit));
        let counted = bind_audit(counted, &issued).fetch_optional(&mut *tx).await?;
        if counted.is_none() {
            // Refused: the pass inserted above goes in the same transaction, so nobody ever
            // sees it.
            sqlx::query("DELETE FROM passes WHERE pass_id = $1")
                .bind(pass.pass_id.as_bytes().as_slice())
                .execute(&mut *tx)
                .await?;
            insert_audit(&mut *tx, &audit(AuditOutcome::QuotaExhausted, None)).await?;
            tx.commit().await?;
            return Ok(Attempt::Done(IssueOutcome::QuotaExhausted));
        }
        tx.commit().await?;
        Ok(Attempt::Done(IssueOutcome::Issued(PassRecord {
            pass: pass.clone(),
            revocation: None,
            entry: None,
            double_entries: Vec::new(),
        })))
    }

    pub(super) async fn revoke_once(
        &self,
        pass_id: PassId,
        reason: &str,
        at: DateTime<Utc>,
        actor: &Actor,
    ) -> Result<Attempt<RevokeOutcome>, StoreError> {
        let revoked_at = nanos(at)?;
        let audit = |outcome: AuditOutcome| AuditRow {
            at: revoked_at,
            action: AuditAction::Revoke,
            outcome,
            pass_id: Some(pass_id),
            actor,
            request_key: None,
            checkpoint_id: None,
            mode: None,
            permit_masked: None,
        };
        let mut tx = self.writer.begin().await?;
        // The first revocation stands: a concurrent one waits for this row, then matches
        // nothing.
        let revoked: Option<PassRow> = sqlx::query_as(concat!(
            "UPDATE passes SET revoked_at = $1, revoke_reason = $2 WHERE pass_id = $3 AND revoked_at IS NULL \
             RETURNING ",
            pass_columns!()
        ))
        .bind(revoked_at)
        .bind(reason)
        .bind(pass_id.as_bytes().as_slice())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(revoked) = revoked else {
            // Unrevoked passes matched the update, so the pass is either missing or revoked,
            // the latter committed before this statement: this one sees it.
            let outcome = match fetch_pass(&mut tx, pass_id).await? {
                None => RevokeOutcome::NotFound,
                Some(record) if record.revocation.is_some() => RevokeOutcome::Revoked(record),
                Some(_) => {
                    return Err(StoreError::Corrupt(format!(
                        "pass {pass_id} is unrevoked, yet revoking it changed nothing"
                    )))
                }
            };
            let audited = match outcome {
                RevokeOutcome::NotFound => AuditOutcome::NotFound,
                RevokeOutcome::Revoked(_) => AuditOutcome::AlreadyRevoked,
            };
            insert_audit(&mut *tx, &audit(audited)).await?;
            tx.commit().await?;
            return Ok(Attempt::Done(outcome));
        };
        let record = if revoked.has_double_entries() {
            fetch_pass(&mut tx, pass_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("pass {pass_id} vanished while being revoked")))?
        } else {
            revoked.into_record()?
        };
        insert_audit(&mut *tx, &audit(AuditOutcome::Revoked)).await?;
        // Last: the journal's counter row stays locked until commit.
        append_status_event(&mut *tx, pass_id, "revoked", revoked_at, "", "", nanos(record.pass.valid_until)?).await?;
        tx.commit().await?;
        Ok(Attempt::Done(RevokeOutcome::Revoked(record)))
    }

    pub(super) async fn record_entry_once(&self, attempt: &EntryAttempt) -> Result<Attempt<EntryOutcome>, StoreError> {
        let pass_id = attempt.pass_id;
        let scanned_at = nanos(attempt.at)?;
        let audit = |outcome: AuditOutcome| AuditRow {
            at: scanned_at,
            action: AuditAction::Admit,
            outcome,
            pass_id: Some(pass_id),
            actor: &attempt.actor,
            request_key: Some(&attempt.scan_id),
            checkpoint_id: Some(&attempt.checkpoint_id),
            mode: Some(attempt.mode),
            permit_masked: None,
        };
        let mut tx = self.writer.begin().await?;

        let earlier: Option<(Vec<u8>, String, String, String)> = sqlx::query_as(
            "SELECT pass_id, verdict, checkpoint_id, mode FROM scans WHERE caller = $1 AND scan_id = $2",
        )
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
                tx.commit().await?;
                return Ok(Attempt::Done(EntryOutcome::ScanIdConflict));
            }
            let verdict = parse_verdict(&verdict).ok_or_else(|| {
                StoreError::Corrupt(format!("scan {:?}: unknown verdict {verdict:?}", attempt.scan_id))
            })?;
            let record = fetch_pass(&mut tx, pass_id).await?;
            tx.rollback().await?;
            return Ok(Attempt::Done(EntryOutcome::Decided { verdict, record, replayed: true }));
        }

        let mut record = fetch_pass(&mut tx, pass_id).await?;
        let mut verdict = decide(&attempt.offline_verdict, record.as_ref());
        let mut used_until = None;
        if verdict.is_ok() {
            // The one entry. A concurrent scan of this pass on any server waits for this row,
            // then matches nothing; the pass it reads next is the one this scan used up.
            let used: Option<PassRow> = sqlx::query_as(concat!(
                "UPDATE passes SET used_at = $1, used_checkpoint = $2, used_mode = $3, used_scan_id = $4 \
                 WHERE pass_id = $5 AND used_at IS NULL AND revoked_at IS NULL RETURNING ",
                pass_columns!()
            ))
            .bind(scanned_at)
            .bind(&attempt.checkpoint_id)
            .bind(attempt.mode.name())
            .bind(&attempt.scan_id)
            .bind(pass_id.as_bytes().as_slice())
            .fetch_optional(&mut *tx)
            .await?;
            match used {
                Some(used) => {
                    let used = used.into_record()?;
                    used_until = Some(nanos(used.pass.valid_until)?);
                    record = Some(used);
                }
                None => {
                    // Another transaction used or revoked the pass after it was read above and
                    // has committed (this update waited for it): this statement sees it.
                    record = fetch_pass(&mut tx, pass_id).await?;
                    verdict = decide(&attempt.offline_verdict, record.as_ref());
                    if verdict.is_ok() {
                        return Err(StoreError::Corrupt(format!(
                            "pass {pass_id} is unused and unrevoked, yet using it up changed nothing"
                        )));
                    }
                }
            }
        }

        // The scan id: a resend of this scan sent to another server meanwhile waited for this
        // transaction and inserts nothing; it asks again and gets this scan's answer.
        let recorded = sqlx::query(
            "INSERT INTO scans (caller, scan_id, pass_id, verdict, checkpoint_id, mode, scanned_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (caller, scan_id) DO NOTHING",
        )
        .bind(&attempt.actor.caller.name)
        .bind(&attempt.scan_id)
        .bind(pass_id.as_bytes().as_slice())
        .bind(verdict_name(verdict))
        .bind(&attempt.checkpoint_id)
        .bind(attempt.mode.name())
        .bind(scanned_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if recorded == 0 {
            // Rolls back the use above too, if any: the pass stays for the scan that won.
            tx.rollback().await?;
            return Ok(Attempt::LostRace);
        }
        let outcome = match verdict {
            Ok(()) => AuditOutcome::Accepted,
            Err(reason) => AuditOutcome::Rejected(reason),
        };
        insert_audit(&mut *tx, &audit(outcome)).await?;
        if let Some(valid_until) = used_until {
            // Last: the journal's counter row stays locked until commit.
            append_status_event(
                &mut *tx,
                pass_id,
                "used",
                scanned_at,
                &attempt.checkpoint_id,
                attempt.mode.name(),
                valid_until,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Attempt::Done(EntryOutcome::Decided { verdict, record, replayed: false }))
    }

    /// Locks the journal row, then the passes (in id order, so two syncs never deadlock), then
    /// checks the whole batch before it writes anything.
    pub(super) async fn sync_offline_entries_once(
        &self,
        batch: &OfflineBatch,
    ) -> Result<Attempt<Result<Vec<SyncedEntry>, SyncRefusal>>, StoreError> {
        let synced_at = nanos(batch.at)?;
        for entry in &batch.entries {
            nanos(entry.recorded_at)?;
            seq_value(entry.seq)?;
        }
        let caller = &batch.actor.caller.name;
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO journals (caller, journal_id, last_seq, last_hash) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (caller, journal_id) DO NOTHING",
        )
        .bind(caller)
        .bind(&batch.journal_id)
        .bind(GENESIS.0.as_slice())
        .execute(&mut *tx)
        .await?;
        let (last_seq, last_hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT last_seq, last_hash FROM journals WHERE caller = $1 AND journal_id = $2 FOR UPDATE")
                .bind(caller)
                .bind(&batch.journal_id)
                .fetch_one(&mut *tx)
                .await?;
        let corrupt = |what: &str| StoreError::Corrupt(format!("journal {:?}: {what}", batch.journal_id));
        let acknowledged = u64::try_from(last_seq).map_err(|_| corrupt("negative sequence"))?;
        let last_hash = EntryHash::from_slice(&last_hash).ok_or_else(|| corrupt("hash is not 32 bytes"))?;
        let (old, new) = split_batch(&batch.entries, acknowledged);

        let refuse = |refusal: SyncRefusal| Ok(Attempt::Done(Err(refusal)));
        for entry in old {
            let stored: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT hash FROM journal_entries WHERE caller = $1 AND journal_id = $2 AND seq = $3",
            )
            .bind(caller)
            .bind(&batch.journal_id)
            .bind(seq_value(entry.seq)?)
            .fetch_optional(&mut *tx)
            .await?;
            if stored.as_deref() != Some(entry.hash.0.as_slice()) {
                tx.rollback().await?;
                return refuse(SyncRefusal::Altered { seq: entry.seq });
            }
        }
        if let Some(first) = new.first() {
            if first.seq != acknowledged + 1 || first.prev_hash != last_hash {
                tx.rollback().await?;
                return refuse(SyncRefusal::BrokenChain { seq: first.seq, acknowledged });
            }
        }
        let mut ids: Vec<Vec<u8>> = new.iter().map(|e| e.pass_id.as_bytes().to_vec()).collect();
        ids.sort();
        ids.dedup();
        let known: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT pass_id FROM passes WHERE pass_id = ANY($1) ORDER BY pass_id FOR UPDATE")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
        for entry in new {
            let used: Option<i32> = sqlx::query_scalar("SELECT 1 FROM scans WHERE caller = $1 AND scan_id = $2")
                .bind(caller)
                .bind(&entry.scan_id)
                .fetch_optional(&mut *tx)
                .await?;
            if used.is_some() {
                tx.rollback().await?;
                return refuse(SyncRefusal::ScanIdReused { seq: entry.seq, scan_id: entry.scan_id.clone() });
            }
            if !known.iter().any(|id| id.as_slice() == entry.pass_id.as_bytes()) {
                tx.rollback().await?;
                return refuse(SyncRefusal::UnknownPass { seq: entry.seq, pass_id: entry.pass_id });
            }
        }

        let mut synced = Vec::with_capacity(batch.entries.len());
        for entry in old {
            let record = fetch_pass(&mut tx, entry.pass_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("pass {} of a synced entry is gone", entry.pass_id)))?;
            synced.push(already_recorded(entry, record)?);
        }
        let mut first_uses = Vec::new();
        for entry in new {
            let pass_id = entry.pass_id;
            let record = fetch_pass(&mut tx, pass_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("pass {pass_id} vanished while syncing")))?;
            let this = entry.entry_record();
            let recorded_at = nanos(this.recorded_at)?;
            let plan = plan_sync(&record, &this);
            if plan.becomes_entry {
                sqlx::query(
                    "UPDATE passes SET used_at = $1, used_checkpoint = $2, used_mode = $3, used_scan_id = $4 \
                     WHERE pass_id = $5",
                )
                .bind(recorded_at)
                .bind(&this.checkpoint_id)
                .bind(this.mode.name())
                .bind(&this.scan_id)
                .bind(pass_id.as_bytes().as_slice())
                .execute(&mut *tx)
                .await?;
                if plan.first_use {
                    first_uses.push((pass_id, recorded_at, this.clone(), nanos(record.pass.valid_until)?));
                }
            }
            if let Some(double) = &plan.double_entry {
                sqlx::query(
                    "INSERT INTO double_entries (pass_id, scan_id, checkpoint_id, mode, recorded_at, noted_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(pass_id.as_bytes().as_slice())
                .bind(&double.scan_id)
                .bind(&double.checkpoint_id)
                .bind(double.mode.name())
                .bind(nanos(double.recorded_at)?)
                .bind(synced_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE passes SET double_entries = double_entries + 1 WHERE pass_id = $1")
                    .bind(pass_id.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await?;
            }
            // A scan of this id sent to another server meanwhile waited for this transaction:
            // this one inserts nothing, rolls back and asks again, and is then refused.
            let recorded = sqlx::query(
                "INSERT INTO scans (caller, scan_id, pass_id, verdict, checkpoint_id, mode, scanned_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (caller, scan_id) DO NOTHING",
            )
            .bind(caller)
            .bind(&entry.scan_id)
            .bind(pass_id.as_bytes().as_slice())
            .bind(verdict_name(Ok(())))
            .bind(&entry.checkpoint_id)
            .bind(entry.mode.name())
            .bind(recorded_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if recorded == 0 {
                tx.rollback().await?;
                return Ok(Attempt::LostRace);
            }
            sqlx::query(
                "INSERT INTO journal_entries (caller, journal_id, seq, hash, scan_id, pass_id, checkpoint_id, mode, \
                 recorded_at, synced_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(caller)
            .bind(&batch.journal_id)
            .bind(seq_value(entry.seq)?)
            .bind(entry.hash.0.as_slice())
            .bind(&entry.scan_id)
            .bind(pass_id.as_bytes().as_slice())
            .bind(&entry.checkpoint_id)
            .bind(entry.mode.name())
            .bind(recorded_at)
            .bind(synced_at)
            .execute(&mut *tx)
            .await?;
            let this_is_double = plan.double_entry.as_ref() == Some(&this);
            fn audit<'a>(
                batch: &'a OfflineBatch,
                pass_id: PassId,
                outcome: AuditOutcome,
                at: i64,
                of: &'a EntryRecord,
            ) -> AuditRow<'a> {
                AuditRow {
                    at,
                    action: AuditAction::AdmitOffline,
                    outcome,
                    pass_id: Some(pass_id),
                    actor: &batch.actor,
                    request_key: Some(&of.scan_id),
                    checkpoint_id: Some(&of.checkpoint_id),
                    mode: Some(of.mode),
                    permit_masked: None,
                }
            }
            let outcome = if this_is_double { AuditOutcome::DoubleEntry } else { AuditOutcome::Accepted };
            insert_audit(&mut *tx, &audit(batch, pass_id, outcome, recorded_at, &this)).await?;
            if let Some(displaced) = plan.double_entry.as_ref().filter(|_| !this_is_double) {
                insert_audit(&mut *tx, &audit(batch, pass_id, AuditOutcome::DoubleEntry, synced_at, displaced)).await?;
            }
            synced.push(plan.answer(entry.seq));
        }
        if let Some(last) = new.last() {
            sqlx::query("UPDATE journals SET last_seq = $3, last_hash = $4 WHERE caller = $1 AND journal_id = $2")
                .bind(caller)
                .bind(&batch.journal_id)
                .bind(seq_value(last.seq)?)
                .bind(last.hash.0.as_slice())
                .execute(&mut *tx)
                .await?;
        }
        // Last: the status journal's counter row stays locked until commit.
        for (pass_id, at, entry, valid_until) in &first_uses {
            append_status_event(&mut *tx, *pass_id, "used", *at, &entry.checkpoint_id, entry.mode.name(), *valid_until)
                .await?;
        }
        tx.commit().await?;
        Ok(Attempt::Done(Ok(synced)))
    }

    pub(super) async fn status_events_once(
        &self,
        after: u64,
        now: DateTime<Utc>,
    ) -> Result<Attempt<StatusEvents>, StoreError> {
        let now = nanos(now)?;
        // One snapshot: the sequence and the rows agree. Journal numbers commit in order, so
        // a snapshot holds every event up to its sequence and none after.
        let mut tx = self.reader.begin_with(BEGIN_SNAPSHOT).await?;
        let sequence: i64 = sqlx::query_scalar("SELECT last FROM status_sequence").fetch_one(&mut *tx).await?;
        let rows: Vec<(Vec<u8>, String, i64, String, String, i64)> = sqlx::query_as(
            "SELECT pass_id, event, at, checkpoint_id, mode, valid_until FROM status_events \
             WHERE seq > $1 AND valid_until > $2 ORDER BY seq",
        )
        // A caller's sequence past any stored one simply has no events after it.
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(now)
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
        let sequence = u64::try_from(sequence)
            .map_err(|_| StoreError::Corrupt(format!("status sequence {sequence} is negative")))?;
        Ok(Attempt::Done(StatusEvents { sequence, entries }))
    }

    pub(super) async fn record_audits_once(&self, records: &[AuditRecord]) -> Result<Attempt<()>, StoreError> {
        if records.is_empty() {
            return Ok(Attempt::Done(()));
        }
        // One statement, so one transaction and one round trip for the batch, whatever its
        // size; rows numbered in the order given.
        let mut at = Vec::with_capacity(records.len());
        for record in records {
            at.push(nanos(record.at)?);
        }
        let column = |f: fn(&AuditRecord) -> Option<&str>| records.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO audit (at, action, outcome, reason, pass_id, caller, role, peer, request_key, \
             checkpoint_id, mode, permit_masked) \
             SELECT at, action, outcome, reason, pass_id, caller, role, peer, request_key, checkpoint_id, mode, \
             permit_masked \
             FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BYTEA[], $6::TEXT[], $7::TEXT[], \
             $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[]) WITH ORDINALITY \
             AS batch (at, action, outcome, reason, pass_id, caller, role, peer, request_key, checkpoint_id, mode, \
             permit_masked, position) \
             ORDER BY position",
        )
        .bind(at)
        .bind(column(|r| Some(r.action.as_str())))
        .bind(column(|r| Some(r.outcome.as_str())))
        .bind(column(|r| r.outcome.reason().map(Reason::as_str)))
        .bind(records.iter().map(|r| r.pass_id.map(|id| id.as_bytes().to_vec())).collect::<Vec<_>>())
        .bind(column(|r| Some(r.actor.caller.name.as_str())))
        .bind(column(|r| Some(r.actor.caller.role.name())))
        .bind(records.iter().map(|r| r.actor.peer.map(|peer| peer.to_string())).collect::<Vec<_>>())
        .bind(column(|r| r.request_key.as_deref()))
        .bind(column(|r| r.checkpoint_id.as_deref()))
        .bind(column(|r| r.mode.map(TransportMode::name)))
        .bind(column(|r| r.permit_masked.as_deref()))
        .execute(&self.writer)
        .await?;
        Ok(Attempt::Done(()))
    }

    pub(super) async fn audit_trail_inner(&self, pass_id: PassId) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditEntryRow> = sqlx::query_as(
            "SELECT seq, at, action, outcome, reason, pass_id, caller, role, peer, request_key, checkpoint_id, \
             mode, permit_masked FROM audit WHERE pass_id = $1 ORDER BY at, seq",
        )
        .bind(pass_id.as_bytes().as_slice())
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter().map(AuditEntryRow::into_entry).collect()
    }

    pub(super) async fn probe_writable_inner(&self) -> Result<(), StoreError> {
        // A real row inserted and rolled back: fails on a standby or a database set read-only,
        // when no connection can be had, and when the statement timeout passes. A full disk
        // shows at the next commit, which reports the store unavailable again.
        let mut tx = self.writer.begin().await?;
        sqlx::query("INSERT INTO write_probe (probed) VALUES (TRUE)").execute(&mut *tx).await?;
        tx.rollback().await?;
        Ok(())
    }
}

/// Appends an event to the status journal, numbered from the single `status_sequence` row.
/// That row stays locked until this transaction ends, so the next event's transaction waits
/// for this one to commit (or roll back, and then takes this number): numbers are gap-free and
/// commit in order, and a reader never sees n + 1 before n. Call it last in a transaction, to
/// hold the lock only through the commit.
async fn append_status_event<'e, E>(
    executor: E,
    pass_id: PassId,
    event: &str,
    at: i64,
    checkpoint_id: &str,
    mode: &str,
    valid_until: i64,
) -> Result<(), StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    sqlx::query(
        "WITH next AS (UPDATE status_sequence SET last = last + 1 RETURNING last) \
         INSERT INTO status_events (seq, pass_id, event, at, checkpoint_id, mode, valid_until) \
         SELECT last, $1, $2, $3, $4, $5, $6 FROM next",
    )
    .bind(pass_id.as_bytes().as_slice())
    .bind(event)
    .bind(at)
    .bind(checkpoint_id)
    .bind(mode)
    .bind(valid_until)
    .execute(executor)
    .await?;
    Ok(())
}

/// What `issue` counts for a holder in a quota month: issued and revoked passes alike.
pub(super) async fn quota_count<'e, E>(executor: E, holder_key: &[u8; 32], quota_month: &str) -> Result<i64, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let count: Option<i64> =
        sqlx::query_scalar("SELECT issued FROM quota_counts WHERE holder_key = $1 AND quota_month = $2")
            .bind(holder_key.as_slice())
            .bind(quota_month)
            .fetch_optional(executor)
            .await?;
    Ok(count.unwrap_or(0))
}

/// The pass with this id, with its double entries if it has some (a second query).
pub(super) async fn fetch_pass(
    connection: &mut PgConnection,
    pass_id: PassId,
) -> Result<Option<PassRecord>, StoreError> {
    let row: Option<PassRow> = sqlx::query_as(concat!("SELECT ", pass_columns!(), " FROM passes WHERE pass_id = $1"))
        .bind(pass_id.as_bytes().as_slice())
        .fetch_optional(&mut *connection)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let doubles = row.has_double_entries();
    let mut record = row.into_record()?;
    if doubles {
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as(&format!(
            "SELECT {DOUBLE_ENTRY_COLUMNS} FROM double_entries WHERE pass_id = $1 ORDER BY recorded_at, id"
        ))
        .bind(pass_id.as_bytes().as_slice())
        .fetch_all(&mut *connection)
        .await?;
        record.double_entries = rows.into_iter().map(double_entry).collect::<Result<_, _>>()?;
    }
    Ok(Some(record))
}

/// The fingerprint and pass of an earlier request of `caller` with this id.
pub(super) async fn fetch_request<'e, E>(
    executor: E,
    caller: &str,
    request_id: &str,
) -> Result<Option<(Vec<u8>, PassRecord)>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let row: Option<RequestRow> = sqlx::query_as(concat!(
        "SELECT fingerprint, ",
        pass_columns!(),
        " FROM passes WHERE caller = $1 AND request_id = $2"
    ))
    .bind(caller)
    .bind(request_id)
    .fetch_optional(executor)
    .await?;
    row.map(|row| Ok((row.fingerprint, row.pass.into_record()?))).transpose()
}

/// An audit row to insert, its time already in nanoseconds.
struct AuditRow<'a> {
    at: i64,
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
    E: Executor<'e, Database = Postgres>,
{
    let query = sqlx::query(
        "INSERT INTO audit (at, action, outcome, reason, pass_id, caller, role, peer, request_key, checkpoint_id, \
         mode, permit_masked) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    );
    bind_audit(query, row).execute(executor).await?;
    Ok(())
}

/// Binds an audit row's twelve columns, in `insert_audit`'s order, after a query's own
/// parameters.
fn bind_audit<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    row: &AuditRow<'q>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(row.at)
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
}
