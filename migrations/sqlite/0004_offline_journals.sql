-- Entries admitted by checkpoints that were offline (SyncEntries): the journals they upload,
-- each entry synced, and the double entries of passes admitted more than once.
--
-- A pass's entry stays in passes.used_*: it is the first entry by recorded time, so an offline
-- entry earlier than the pass's entry replaces it there, and the replaced one moves to
-- double_entries. passes.double_entries counts a pass's rows there, so that reading a pass
-- (the verification hot path) costs a second query only for the rare pass that has some.

-- Per caller and journal, the last entry acknowledged: a batch must continue it.
CREATE TABLE journals (
    caller     TEXT    NOT NULL,
    journal_id TEXT    NOT NULL,
    last_seq   INTEGER NOT NULL CHECK (last_seq >= 0),
    last_hash  BLOB    NOT NULL CHECK (length(last_hash) = 32),
    PRIMARY KEY (caller, journal_id)
) STRICT;

-- Every entry acknowledged, with its hash: an entry uploaded again must be the same.
CREATE TABLE journal_entries (
    caller        TEXT    NOT NULL,
    journal_id    TEXT    NOT NULL,
    seq           INTEGER NOT NULL CHECK (seq > 0),
    hash          BLOB    NOT NULL CHECK (length(hash) = 32),
    scan_id       TEXT    NOT NULL,
    pass_id       BLOB    NOT NULL CHECK (length(pass_id) = 16),
    checkpoint_id TEXT    NOT NULL,
    mode          TEXT    NOT NULL, -- TransportMode::name()
    recorded_at   INTEGER NOT NULL, -- the checkpoint's clock
    synced_at     INTEGER NOT NULL, -- the server's clock
    PRIMARY KEY (caller, journal_id, seq)
) STRICT;

-- Entries of a pass besides its entry: never deleted.
CREATE TABLE double_entries (
    id            INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    pass_id       BLOB    NOT NULL CHECK (length(pass_id) = 16),
    scan_id       TEXT    NOT NULL,
    checkpoint_id TEXT    NOT NULL,
    mode          TEXT    NOT NULL, -- TransportMode::name()
    recorded_at   INTEGER NOT NULL,
    noted_at      INTEGER NOT NULL  -- the server's clock when it became a double entry
) STRICT;

CREATE INDEX double_entries_by_pass ON double_entries (pass_id, recorded_at);

ALTER TABLE passes ADD COLUMN double_entries INTEGER NOT NULL DEFAULT 0 CHECK (double_entries >= 0);

-- The audit trail gains the action 'admit_offline' and the outcome 'double_entry'. SQLite
-- cannot alter a CHECK constraint, so the table is rebuilt with every row kept, numbers
-- included.
CREATE TABLE audit_offline (
    seq           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL, -- the server clock when the call was decided; an offline entry's recorded time
    action        TEXT    NOT NULL CHECK (action IN ('issue', 'revoke', 'verify', 'admit', 'admit_offline')),
    outcome       TEXT    NOT NULL CHECK (outcome IN ('issued', 'quota_exhausted', 'request_id_conflict',
                      'revoked', 'already_revoked', 'not_found', 'accepted', 'rejected', 'scan_id_conflict',
                      'double_entry')),
    reason        TEXT, -- Reason::as_str() of a rejection
    pass_id       BLOB    CHECK (length(pass_id) = 16),
    caller        TEXT    NOT NULL,
    role          TEXT, -- Role::name(); NULL on rows from before callers existed
    peer          TEXT, -- the connection's remote address; NULL when unknown
    request_key   TEXT, -- the caller's request_id or scan_id
    checkpoint_id TEXT,
    mode          TEXT, -- TransportMode::name()
    permit_masked TEXT,
    CHECK ((outcome = 'rejected') = (reason IS NOT NULL))
) STRICT;

INSERT INTO audit_offline (seq, at, action, outcome, reason, pass_id, caller, role, peer, request_key,
        checkpoint_id, mode, permit_masked)
    SELECT seq, at, action, outcome, reason, pass_id, caller, role, peer, request_key, checkpoint_id, mode,
        permit_masked
    FROM audit ORDER BY seq;

DROP TABLE audit;
ALTER TABLE audit_offline RENAME TO audit;
CREATE INDEX audit_by_pass ON audit (pass_id, seq);
