-- Retention: indexes the pruning task selects its batches by, so that a batch reads only the
-- rows it removes, never the whole table. Numbered 0005 like SQLite's migration of the same
-- change.
--
-- Building them locks each table against writes for the build: on a large existing database,
-- run `epass db migrate` in a quiet hour (README, Upgrades).

-- Audit rows by action and time: verifications are kept for less time than changes.
CREATE INDEX audit_by_action_time ON audit (action, at);

-- Scans by time.
CREATE INDEX scans_by_time ON scans (scanned_at);

-- Passes that still hold a name, by the time they ended: the first of expiry, use and
-- revocation (LEAST ignores NULLs). Partial, so it holds only the passes whose names are
-- still to be removed. The pruning query repeats this expression and this condition.
CREATE INDEX passes_named_by_end ON passes (LEAST(valid_until, used_at, revoked_at))
    WHERE name_latin IS NOT NULL OR name_chinese IS NOT NULL;
