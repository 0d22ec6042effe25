-- The PostgreSQL schema: passes, the quota counters, scans, the status list's journal and the
-- audit trail. Permit and phone numbers are never stored: the quota is counted on holder_key,
-- a keyed hash of the permit number.
--
-- Every time is BIGINT unix nanoseconds, UTC, as in the SQLite store: the server clock's
-- readings round-trip exactly (TIMESTAMPTZ keeps microseconds only), and the range, 1677 to
-- 2262, is ample.
--
-- Several servers may share this database. Every rule that must hold across them is enforced
-- here, by a row lock or a unique constraint, never by a lock inside one process: see the
-- comments on quota_counts, passes, scans and status_sequence.

CREATE TABLE passes (
    pass_id         BYTEA  NOT NULL PRIMARY KEY CHECK (octet_length(pass_id) = 16),
    key_id          BYTEA  NOT NULL CHECK (octet_length(key_id) = 8),
    -- With the application, the signature rebuilds the exact envelope for a retried request.
    signature       BYTEA  NOT NULL CHECK (octet_length(signature) = 64),
    name_latin      TEXT,
    name_chinese    TEXT,
    permit_masked   TEXT   NOT NULL,
    issued_at       BIGINT NOT NULL,
    valid_from      BIGINT NOT NULL,
    valid_until     BIGINT NOT NULL,
    modes           BIGINT NOT NULL, -- Modes::bits()
    entries_allowed BIGINT NOT NULL CHECK (entries_allowed >= 0),
    holder_key      BYTEA  NOT NULL CHECK (octet_length(holder_key) = 32),
    quota_month     TEXT   NOT NULL, -- YYYY-MM in China Standard Time
    -- The caller that issued the pass and its idempotency key, unique among its own requests:
    -- of two servers inserting the same key at once, the second waits for the first and then
    -- inserts nothing (ON CONFLICT DO NOTHING), and answers as a replay.
    caller          TEXT   NOT NULL,
    request_id      TEXT   NOT NULL,
    fingerprint     BYTEA  NOT NULL CHECK (octet_length(fingerprint) = 32),
    -- Set once; the first revocation stands.
    revoked_at      BIGINT,
    revoke_reason   TEXT,
    -- The one entry, set once by a conditional update.
    used_at         BIGINT,
    used_checkpoint TEXT,
    used_mode       TEXT, -- TransportMode::name()
    used_scan_id    TEXT,
    UNIQUE (caller, request_id),
    CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL)),
    CHECK ((used_at IS NULL) = (used_checkpoint IS NULL)
       AND (used_at IS NULL) = (used_mode IS NULL)
       AND (used_at IS NULL) = (used_scan_id IS NULL))
);

CREATE INDEX passes_by_holder_month ON passes (holder_key, quota_month);

-- How many passes each holder was issued in each quota month: what the quota counts. An issue
-- increments its row with one INSERT ... ON CONFLICT DO UPDATE ... WHERE issued < limit, in the
-- transaction that inserts the pass; the row lock makes concurrent issues for one holder and
-- month, on any server, take turns, and each sees the count its predecessor committed.
-- Revoked passes still count; nothing ever decrements.
CREATE TABLE quota_counts (
    holder_key  BYTEA  NOT NULL CHECK (octet_length(holder_key) = 32),
    quota_month TEXT   NOT NULL,
    issued      BIGINT NOT NULL CHECK (issued >= 0),
    PRIMARY KEY (holder_key, quota_month)
);

-- Every scan recorded, admitted or not, keyed on the scanning caller and its idempotency key,
-- so that a resent scan gets the first answer. No foreign key: scans of passes the service
-- has no record of are kept too.
CREATE TABLE scans (
    caller        TEXT   NOT NULL,
    scan_id       TEXT   NOT NULL,
    pass_id       BYTEA  NOT NULL CHECK (octet_length(pass_id) = 16),
    verdict       TEXT   NOT NULL, -- 'admitted' or Reason::as_str()
    checkpoint_id TEXT   NOT NULL,
    mode          TEXT   NOT NULL, -- TransportMode::name()
    scanned_at    BIGINT NOT NULL,
    PRIMARY KEY (caller, scan_id)
);

CREATE INDEX scans_by_pass ON scans (pass_id);

-- The status list's journal: one row each time a pass is revoked or used. The sequence of the
-- status list is status_sequence.last; a delta is the rows after a sequence.
--
-- A reader asks for "the rows after n", so it must never see row n + 1 while row n is still
-- uncommitted: it would move past n and never ask for it again. A SERIAL cannot promise that
-- (numbers are handed out at insert, transactions commit in any order). So the number comes
-- from the single row of status_sequence, incremented in the transaction that inserts the
-- event: the row lock is held to commit, so the transaction that takes n + 1 waits until the
-- one that took n has committed (and takes n itself if that one rolled back). Numbers are
-- gap-free, and commit in order.
CREATE TABLE status_events (
    seq           BIGINT NOT NULL PRIMARY KEY CHECK (seq > 0),
    pass_id       BYTEA  NOT NULL CHECK (octet_length(pass_id) = 16),
    event         TEXT   NOT NULL CHECK (event IN ('revoked', 'used')),
    at            BIGINT NOT NULL,
    checkpoint_id TEXT   NOT NULL, -- '' for a revocation
    mode          TEXT   NOT NULL, -- TransportMode::name(), '' for a revocation
    valid_until   BIGINT NOT NULL  -- the pass's; rows after it no longer matter
);

CREATE INDEX status_events_by_validity ON status_events (valid_until);

CREATE TABLE status_sequence (
    only_row BOOLEAN NOT NULL PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    last     BIGINT  NOT NULL CHECK (last >= 0)
);

INSERT INTO status_sequence (last) VALUES (0);

-- Who issued, revoked, verified and admitted which pass, when and from where. Issue, revoke
-- and admit rows are written in the transaction of the change they record; verify rows
-- (nothing changes) are written after the answer, in batches. Refusals are rows too. No permit
-- or phone number: the masked permit only, on issue rows.
--
-- seq is the order in which rows were inserted, not strictly the order of commit: two servers'
-- transactions may commit in the other order, and a rolled-back row leaves a gap. Nothing
-- reads the trail as "rows after seq"; it is read per pass, by time, ties by seq.
CREATE TABLE audit (
    seq           BIGINT NOT NULL GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            BIGINT NOT NULL, -- the server clock when the call was decided
    action        TEXT   NOT NULL CHECK (action IN ('issue', 'revoke', 'verify', 'admit')),
    outcome       TEXT   NOT NULL CHECK (outcome IN ('issued', 'quota_exhausted', 'request_id_conflict',
                      'revoked', 'already_revoked', 'not_found', 'accepted', 'rejected', 'scan_id_conflict')),
    reason        TEXT, -- Reason::as_str() of a rejection
    -- The pass concerned; NULL when there is none (a refused application, a QR that is not an
    -- authentic pass: its claimed id is not trusted into a pass's trail).
    pass_id       BYTEA  CHECK (octet_length(pass_id) = 16),
    caller        TEXT   NOT NULL,
    role          TEXT, -- Role::name()
    peer          TEXT, -- the connection's remote address; NULL when unknown
    request_key   TEXT, -- the caller's request_id or scan_id
    checkpoint_id TEXT,
    mode          TEXT, -- TransportMode::name()
    permit_masked TEXT,
    CHECK ((outcome = 'rejected') = (reason IS NOT NULL))
);

CREATE INDEX audit_by_pass ON audit (pass_id, at, seq);

-- What probe_writable inserts and rolls back: a real write that touches no table the service
-- reads and takes no lock that a request waits for. It stays empty.
CREATE TABLE write_probe (
    probed BOOLEAN NOT NULL
);
