-- Entries admitted by checkpoints that were offline (SyncEntries): the journals they upload,
-- each entry synced, and the double entries of passes admitted more than once. Numbered 0004
-- like SQLite's migration of the same change (this backend's 0001 holds SQLite's 0001 to 0003).
--
-- A pass's entry stays in passes.used_*: it is the first entry by recorded time, so an offline
-- entry earlier than the pass's entry replaces it there, and the replaced one moves to
-- double_entries. passes.double_entries counts a pass's rows there, so that reading a pass
-- (the verification hot path) costs a second query only for the rare pass that has some.

-- Per caller and journal, the last entry acknowledged: a batch must continue it. Its row lock
-- makes two syncs of one journal, on any servers, take turns.
CREATE TABLE journals (
    caller     TEXT   NOT NULL,
    journal_id TEXT   NOT NULL,
    last_seq   BIGINT NOT NULL CHECK (last_seq >= 0),
    last_hash  BYTEA  NOT NULL CHECK (octet_length(last_hash) = 32),
    PRIMARY KEY (caller, journal_id)
);

-- Every entry acknowledged, with its hash: an entry uploaded again must be the same.
CREATE TABLE journal_entries (
    caller        TEXT   NOT NULL,
    journal_id    TEXT   NOT NULL,
    seq           BIGINT NOT NULL CHECK (seq > 0),
    hash          BYTEA  NOT NULL CHECK (octet_length(hash) = 32),
    scan_id       TEXT   NOT NULL,
    pass_id       BYTEA  NOT NULL CHECK (octet_length(pass_id) = 16),
    checkpoint_id TEXT   NOT NULL,
    mode          TEXT   NOT NULL, -- TransportMode::name()
    recorded_at   BIGINT NOT NULL, -- the checkpoint's clock
    synced_at     BIGINT NOT NULL, -- the server's clock
    PRIMARY KEY (caller, journal_id, seq)
);

-- Entries of a pass besides its entry: never deleted.
CREATE TABLE double_entries (
    id            BIGINT NOT NULL GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pass_id       BYTEA  NOT NULL CHECK (octet_length(pass_id) = 16),
    scan_id       TEXT   NOT NULL,
    checkpoint_id TEXT   NOT NULL,
    mode          TEXT   NOT NULL, -- TransportMode::name()
    recorded_at   BIGINT NOT NULL,
    noted_at      BIGINT NOT NULL  -- the server's clock when it became a double entry
);

CREATE INDEX double_entries_by_pass ON double_entries (pass_id, recorded_at);

ALTER TABLE passes ADD COLUMN double_entries BIGINT NOT NULL DEFAULT 0 CHECK (double_entries >= 0);

ALTER TABLE audit DROP CONSTRAINT audit_action_check,
    ADD CONSTRAINT audit_action_check CHECK (action IN ('issue', 'revoke', 'verify', 'admit', 'admit_offline'));
ALTER TABLE audit DROP CONSTRAINT audit_outcome_check,
    ADD CONSTRAINT audit_outcome_check CHECK (outcome IN ('issued', 'quota_exhausted', 'request_id_conflict',
        'revoked', 'already_revoked', 'not_found', 'accepted', 'rejected', 'scan_id_conflict', 'double_entry'));
