-- Passes and scans. Permit and phone numbers are never stored: the quota is counted on
-- holder_key, a keyed hash of the permit number.
--
-- Every time is INTEGER unix nanoseconds, UTC: the server clock's readings round-trip exactly
-- (the range, 1677 to 2262, is ample). STRICT makes SQLite refuse a value of the wrong type.

CREATE TABLE passes (
    pass_id         BLOB    NOT NULL PRIMARY KEY CHECK (length(pass_id) = 16),
    key_id          BLOB    NOT NULL CHECK (length(key_id) = 8),
    -- With the application, the signature rebuilds the exact envelope for a retried request.
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
    -- The caller's idempotency key, and a digest of the request to tell a retry from reuse.
    request_id      TEXT    NOT NULL UNIQUE,
    fingerprint     BLOB    NOT NULL CHECK (length(fingerprint) = 32),
    -- Set once; the first revocation stands.
    revoked_at      INTEGER,
    revoke_reason   TEXT,
    -- The one entry, set once by a conditional update.
    used_at         INTEGER,
    used_checkpoint TEXT,
    used_mode       TEXT, -- TransportMode::name()
    used_scan_id    TEXT,
    CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL)),
    CHECK ((used_at IS NULL) = (used_checkpoint IS NULL)
       AND (used_at IS NULL) = (used_mode IS NULL)
       AND (used_at IS NULL) = (used_scan_id IS NULL))
) STRICT;

-- The quota count.
CREATE INDEX passes_by_holder_month ON passes (holder_key, quota_month);

-- Every scan recorded, admitted or not, keyed on the scanner's idempotency key so a resent
-- scan gets the first answer.
CREATE TABLE scans (
    -- No foreign key: scans of passes the service has no record of are kept too.
    scan_id       TEXT    NOT NULL PRIMARY KEY,
    pass_id       BLOB    NOT NULL CHECK (length(pass_id) = 16),
    verdict       TEXT    NOT NULL, -- 'admitted' or Reason::as_str()
    checkpoint_id TEXT    NOT NULL,
    mode          TEXT    NOT NULL, -- TransportMode::name()
    scanned_at    INTEGER NOT NULL
) STRICT;

CREATE INDEX scans_by_pass ON scans (pass_id);
