-- Retention: indexes the pruning task selects its batches by, so that a batch reads only the
-- rows it removes, never the whole table, and the single writer is held for milliseconds.
--
-- Nothing else changes: the task deletes audit rows, scans and status events past their
-- periods, and sets the names of passes that ended long enough ago to NULL.

-- Audit rows by action and time: verifications are kept for less time than changes.
CREATE INDEX audit_by_action_time ON audit (action, at);

-- Scans by time.
CREATE INDEX scans_by_time ON scans (scanned_at);

-- Passes that still hold a name, by the time they ended: the first of expiry, use and
-- revocation. Partial, so it holds only the passes whose names are still to be removed, and a
-- pass leaves it when they are. The pruning query repeats this expression and this condition
-- word for word, which is what lets SQLite use the index.
CREATE INDEX passes_named_by_end
    ON passes (min(valid_until, coalesce(used_at, valid_until), coalesce(revoked_at, valid_until)))
    WHERE name_latin IS NOT NULL OR name_chinese IS NOT NULL;
