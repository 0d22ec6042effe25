//! The rows both backends return and their checked conversion into store types; times as
//! Unix nanoseconds. The SQLite and PostgreSQL schemas give every column the same kind of SQL
//! type (bytes, text, 64-bit integers), so one set of row types reads both.
//!
//! A row is read into plain SQL types first and checked afterwards, so that a value this code
//! cannot read back is reported as [`StoreError::Corrupt`] naming the row, not as a decode
//! error of the driver.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::access::Role;
use crate::store::rules::parse_mode;
use crate::store::{AuditAction, AuditEntry, AuditOutcome, PassRecord, Revocation, StoreError, StoredPass};
use epass_core::ids::{KeyId, PassId};
use epass_core::pass::Modes;
use epass_core::verify::{EntryRecord, Reason};

/// The columns [`PassRow`] reads, as a macro so that queries stay `&'static str`.
macro_rules! pass_columns {
    () => {
        "pass_id, key_id, signature, name_latin, name_chinese, permit_masked, issued_at, \
         valid_from, valid_until, modes, entries_allowed, revoked_at, revoke_reason, used_at, \
         used_checkpoint, used_mode, used_scan_id, double_entries"
    };
}
pub(super) use pass_columns;

/// An `audit` row as the database returns it, before its values are checked.
#[derive(FromRow)]
pub(super) struct AuditEntryRow {
    seq: i64,
    at: i64,
    action: String,
    outcome: String,
    reason: Option<String>,
    pass_id: Option<Vec<u8>>,
    caller: String,
    role: Option<String>,
    peer: Option<String>,
    request_key: Option<String>,
    checkpoint_id: Option<String>,
    mode: Option<String>,
    permit_masked: Option<String>,
}

impl AuditEntryRow {
    pub(super) fn into_entry(self) -> Result<AuditEntry, StoreError> {
        let seq = self.seq;
        let corrupt = |what: String| StoreError::Corrupt(format!("audit row {seq}: {what}"));
        let reason = self
            .reason
            .map(|name| Reason::from_name(&name).ok_or_else(|| corrupt(format!("unknown reason {name:?}"))))
            .transpose()?;
        Ok(AuditEntry {
            seq: u64::try_from(seq).map_err(|_| corrupt("negative sequence".into()))?,
            at: time(self.at),
            action: AuditAction::from_name(&self.action)
                .ok_or_else(|| corrupt(format!("unknown action {:?}", self.action)))?,
            outcome: AuditOutcome::from_name(&self.outcome, reason)
                .ok_or_else(|| corrupt(format!("unknown outcome {:?} (reason {reason:?})", self.outcome)))?,
            pass_id: self
                .pass_id
                .map(|id| PassId::from_slice(&id).ok_or_else(|| corrupt("pass_id is not 16 bytes".into())))
                .transpose()?,
            caller: self.caller,
            role: self
                .role
                .map(|name| {
                    Role::ALL
                        .into_iter()
                        .find(|r| r.name() == name)
                        .ok_or_else(|| corrupt(format!("unknown role {name:?}")))
                })
                .transpose()?,
            peer: self
                .peer
                .map(|peer| peer.parse::<SocketAddr>().map_err(|_| corrupt(format!("peer {peer:?} is not an address"))))
                .transpose()?,
            request_key: self.request_key,
            checkpoint_id: self.checkpoint_id,
            mode: self
                .mode
                .map(|mode| parse_mode(&mode).ok_or_else(|| corrupt(format!("unknown mode {mode:?}"))))
                .transpose()?,
            permit_masked: self.permit_masked,
        })
    }
}

/// A `passes` row as the database returns it, before its values are checked.
#[derive(FromRow)]
pub(super) struct PassRow {
    pass_id: Vec<u8>,
    key_id: Vec<u8>,
    signature: Vec<u8>,
    name_latin: Option<String>,
    name_chinese: Option<String>,
    permit_masked: String,
    issued_at: i64,
    valid_from: i64,
    valid_until: i64,
    modes: i64,
    entries_allowed: i64,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
    used_at: Option<i64>,
    used_checkpoint: Option<String>,
    used_mode: Option<String>,
    used_scan_id: Option<String>,
    /// How many rows of `double_entries` the pass has.
    double_entries: i64,
}

/// A `passes` row with the fingerprint of its request.
#[derive(FromRow)]
pub(super) struct RequestRow {
    pub(super) fingerprint: Vec<u8>,
    #[sqlx(flatten)]
    pub(super) pass: PassRow,
}

impl PassRow {
    /// Reads the [`pass_columns`] of a row of the SQLite store's direct connections, the first
    /// at column `first`.
    pub(super) fn from_direct(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            pass_id: row.get(first)?,
            key_id: row.get(first + 1)?,
            signature: row.get(first + 2)?,
            name_latin: row.get(first + 3)?,
            name_chinese: row.get(first + 4)?,
            permit_masked: row.get(first + 5)?,
            issued_at: row.get(first + 6)?,
            valid_from: row.get(first + 7)?,
            valid_until: row.get(first + 8)?,
            modes: row.get(first + 9)?,
            entries_allowed: row.get(first + 10)?,
            revoked_at: row.get(first + 11)?,
            revoke_reason: row.get(first + 12)?,
            used_at: row.get(first + 13)?,
            used_checkpoint: row.get(first + 14)?,
            used_mode: row.get(first + 15)?,
            used_scan_id: row.get(first + 16)?,
            double_entries: row.get(first + 17)?,
        })
    }

    /// Whether the pass has double entries, which [`PassRow::into_record`] leaves out: the
    /// backend reads them with a second query, paid only by such passes.
    pub(super) fn has_double_entries(&self) -> bool {
        self.double_entries > 0
    }

    pub(super) fn into_record(self) -> Result<PassRecord, StoreError> {
        let id = hex::encode(&self.pass_id);
        let corrupt = |what: &str| StoreError::Corrupt(format!("pass {id}: {what}"));
        let pass_id = PassId::from_slice(&self.pass_id).ok_or_else(|| corrupt("pass_id is not 16 bytes"))?;
        let key_id = self.key_id.try_into().map(KeyId::from_bytes).map_err(|_| corrupt("key_id is not 8 bytes"))?;
        let signature = self.signature.try_into().map_err(|_| corrupt("signature is not 64 bytes"))?;
        let modes = u32::try_from(self.modes)
            .ok()
            .and_then(Modes::from_bits)
            .ok_or_else(|| corrupt("modes is not a valid bit set"))?;
        let entries_allowed =
            u32::try_from(self.entries_allowed).map_err(|_| corrupt("entries_allowed out of range"))?;
        let revocation = match (self.revoked_at, self.revoke_reason) {
            (None, None) => None,
            (Some(revoked_at), Some(reason)) => Some(Revocation { revoked_at: time(revoked_at), reason }),
            _ => return Err(corrupt("revocation is half recorded")),
        };
        let entry = match (self.used_at, self.used_checkpoint, self.used_mode, self.used_scan_id) {
            (None, None, None, None) => None,
            (Some(used_at), Some(checkpoint_id), Some(mode), Some(scan_id)) => Some(EntryRecord {
                recorded_at: time(used_at),
                checkpoint_id,
                mode: parse_mode(&mode).ok_or_else(|| corrupt("used_mode is not a transport mode"))?,
                scan_id,
            }),
            _ => return Err(corrupt("entry is half recorded")),
        };
        Ok(PassRecord {
            pass: StoredPass {
                pass_id,
                key_id,
                signature,
                name_latin: self.name_latin,
                name_chinese: self.name_chinese,
                permit_masked: self.permit_masked,
                issued_at: time(self.issued_at),
                valid_from: time(self.valid_from),
                valid_until: time(self.valid_until),
                modes,
                entries_allowed,
            },
            revocation,
            entry,
            double_entries: Vec::new(),
        })
    }
}

/// The columns of a `double_entries` row that [`double_entry`] reads.
pub(super) const DOUBLE_ENTRY_COLUMNS: &str = "recorded_at, checkpoint_id, mode, scan_id";

/// A `double_entries` row ([`DOUBLE_ENTRY_COLUMNS`]) as an entry.
pub(super) fn double_entry(
    (recorded_at, checkpoint_id, mode, scan_id): (i64, String, String, String),
) -> Result<EntryRecord, StoreError> {
    let mode = parse_mode(&mode)
        .ok_or_else(|| StoreError::Corrupt(format!("double entry {scan_id:?}: unknown mode {mode:?}")))?;
    Ok(EntryRecord { recorded_at: time(recorded_at), checkpoint_id, mode, scan_id })
}

/// Unix nanoseconds: the clock's readings round-trip exactly.
pub(super) fn nanos(at: DateTime<Utc>) -> Result<i64, StoreError> {
    at.timestamp_nanos_opt().ok_or_else(|| {
        StoreError::Database(sqlx::Error::Encode(
            format!("time {at} is outside the storable years 1677 to 2262").into(),
        ))
    })
}

pub(super) fn time(nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(nanos)
}
