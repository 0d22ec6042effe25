-- Idempotency keys scoped to the calling identity, and the audit trail.
--
-- The same request_id (or scan_id) from two callers is two requests: passes become
-- UNIQUE (caller, request_id) and scans are keyed on (caller, scan_id). SQLite cannot alter a
-- constraint, so both tables are rebuilt with every row kept. No foreign key, trigger or view
-- refers to them.
--
-- Rows written before callers existed get the caller 'legacy (unauthenticated)': nobody knows
-- who sent them, and the name (it has a space) is one no configured caller can have, so no
-- caller inherits another's idempotency keys or appears in the audit trail for what it did not
-- do. A retry of a pre-upgrade request after the upgrade is therefore a new request (the quota
-- still applies).

CREATE TABLE passes_scoped (
    pass_id         BLOB    NOT NULL PRIMARY KEY CHECK (length(pass_id) = 16),
    key_id          BLOB    NOT NULL CHECK (length(key_id) = 8),
    signature       BLOB    NOT NULL CHECK (length(signature) = 64),
    name_latin      TEXT,
    name_chinese    TEXT,
    permit_masked   TEXT    NOT NULL,
    issued_at       INTEGER NOT NULL,
    valid_from      INTEGER NOT NULL,
    valid_until     INTEGER NOT NULL,
    modes           INTEGER NOT NULL, -- Modes::bits()
    entries_allowed INTEGER NOT NULL CHECK (entries_allowed >= 0),
    holder_key      BLOB    NOT NULL CHECK (length(holder_key) = 32),
    quota_month     TEXT    NOT NULL, -- YYYY-MM in China Standard Time
    -- The caller that issued the pass: its idempotency key is unique among its own requests.
    caller          TEXT    NOT NULL,
    request_id      TEXT    NOT NULL,
    fingerprint     BLOB    NOT NULL CHECK (length(fingerprint) = 32),
    revoked_at      INTEGER,
    revoke_reason   TEXT,
    used_at         INTEGER,
    used_checkpoint TEXT,
    used_mode       TEXT, -- TransportMode::name()
    used_scan_id    TEXT,
    UNIQUE (caller, request_id),
    CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL)),
    CHECK ((used_at IS NULL) = (used_checkpoint IS NULL)
       AND (used_at IS NULL) = (used_mode IS NULL)
       AND (used_at IS NULL) = (used_scan_id IS NULL))
) STRICT;

INSERT INTO passes_scoped (pass_id, key_id, signature, name_latin, name_chinese, permit_masked, issued_at,
        valid_from, valid_until, modes, entries_allowed, holder_key, quota_month, caller, request_id,
        fingerprint, revoked_at, revoke_reason, used_at, used_checkpoint, used_mode, used_scan_id)
    SELECT pass_id, key_id, signature, name_latin, name_chinese, permit_masked, issued_at,
        valid_from, valid_until, modes, entries_allowed, holder_key, quota_month, 'legacy (unauthenticated)',
        request_id, fingerprint, revoked_at, revoke_reason, used_at, used_checkpoint, used_mode, used_scan_id
    FROM passes;

DROP TABLE passes;
ALTER TABLE passes_scoped RENAME TO passes;
CREATE INDEX passes_by_holder_month ON passes (holder_key, quota_month);

CREATE TABLE scans_scoped (
    -- The checkpoint caller that sent the scan: scan ids are unique among its own scans.
    caller        TEXT    NOT NULL,
    scan_id       TEXT    NOT NULL,
    pass_id       BLOB    NOT NULL CHECK (length(pass_id) = 16),
    verdict       TEXT    NOT NULL, -- 'admitted' or Reason::as_str()
    checkpoint_id TEXT    NOT NULL,
    mode          TEXT    NOT NULL, -- TransportMode::name()
    scanned_at    INTEGER NOT NULL,
    PRIMARY KEY (caller, scan_id)
) STRICT;

INSERT INTO scans_scoped (caller, scan_id, pass_id, verdict, checkpoint_id, mode, scanned_at)
    SELECT 'legacy (unauthenticated)', scan_id, pass_id, verdict, checkpoint_id, mode, scanned_at FROM scans;

DROP TABLE scans;
ALTER TABLE scans_scoped RENAME TO scans;
CREATE INDEX scans_by_pass ON scans (pass_id);

-- Who issued, revoked, verified and admitted which pass, when and from where, numbered in
-- commit order. Issue, revoke and admit rows are written in the transaction of the change they
-- record; verify rows (nothing changes) are written after the answer. Refusals are rows too.
-- No permit or phone number: the masked permit only, on issue rows.
CREATE TABLE audit (
    seq           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL, -- the server clock when the call was decided
    action        TEXT    NOT NULL CHECK (action IN ('issue', 'revoke', 'verify', 'admit')),
    outcome       TEXT    NOT NULL CHECK (outcome IN ('issued', 'quota_exhausted', 'request_id_conflict',
                      'revoked', 'already_revoked', 'not_found', 'accepted', 'rejected', 'scan_id_conflict')),
    reason        TEXT, -- Reason::as_str() of a rejection
    -- The pass concerned; NULL when there is none (a refused application, a QR that is not an
    -- authentic pass: its claimed id is not trusted into a pass's trail).
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

CREATE INDEX audit_by_pass ON audit (pass_id, seq);

-- What the existing rows tell, oldest first: issues, recorded scans and revocations, by the
-- legacy caller from an unknown address. (Verifications left no trace before.)
INSERT INTO audit (at, action, outcome, reason, pass_id, caller, request_key, checkpoint_id, mode, permit_masked)
    SELECT at, action, outcome, reason, pass_id, caller, request_key, checkpoint_id, mode, permit_masked FROM (
        SELECT issued_at AS at, 0 AS kind, 'issue' AS action, 'issued' AS outcome, NULL AS reason, pass_id,
            caller, request_id AS request_key, NULL AS checkpoint_id, NULL AS mode, permit_masked
        FROM passes
        UNION ALL
        SELECT scanned_at, 1, 'admit', CASE verdict WHEN 'admitted' THEN 'accepted' ELSE 'rejected' END,
            CASE verdict WHEN 'admitted' THEN NULL ELSE verdict END, pass_id, caller, scan_id, checkpoint_id,
            mode, NULL
        FROM scans
        UNION ALL
        SELECT revoked_at, 2, 'revoke', 'revoked', NULL, pass_id, caller, NULL, NULL, NULL, NULL
        FROM passes WHERE revoked_at IS NOT NULL
    )
    ORDER BY at, kind;
