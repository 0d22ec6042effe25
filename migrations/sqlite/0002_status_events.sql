-- The status list's journal: one row each time a pass is revoked or used, numbered in commit
-- order. The sequence of the status list is the highest seq; a delta is the rows after one.
CREATE TABLE status_events (
    seq           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    pass_id       BLOB    NOT NULL CHECK (length(pass_id) = 16),
    event         TEXT    NOT NULL CHECK (event IN ('revoked', 'used')),
    at            INTEGER NOT NULL,
    checkpoint_id TEXT    NOT NULL, -- '' for a revocation
    mode          TEXT    NOT NULL, -- TransportMode::name(), '' for a revocation
    valid_until   INTEGER NOT NULL  -- the pass's; rows after it no longer matter
) STRICT;

CREATE INDEX status_events_by_validity ON status_events (valid_until);

-- Passes revoked or used before this table existed.
INSERT INTO status_events (pass_id, event, at, checkpoint_id, mode, valid_until)
    SELECT pass_id, 'used', used_at, used_checkpoint, used_mode, valid_until FROM passes
    WHERE used_at IS NOT NULL ORDER BY used_at;
INSERT INTO status_events (pass_id, event, at, checkpoint_id, mode, valid_until)
    SELECT pass_id, 'revoked', revoked_at, '', '', valid_until FROM passes
    WHERE revoked_at IS NOT NULL ORDER BY revoked_at;
