#!/usr/bin/env bash
# Measures the retention task beside issuance on SQLite:
#   scripts/retention-load.sh [ROWS] [SECONDS] [RATE]
# (defaults: 126000 rows, what a short verification load left; 10 s; 200 issues a second).
# Builds the release binary, provisions a scratch data directory, fills the audit table with
# ROWS verification rows 100 days old (with the sqlite3 command), then runs `epass bench issue`
# open loop at RATE twice on a fresh copy of that database: once with retention off, once with
# the task pruning those rows at start, beside the issues (the bench covers the start of the
# pruning when it takes longer). Prints both latency summaries and how long the pruning took
# (from the server's log). Needs python3 and sqlite3.
# BATCH=N sets retention.batch_rows (default 100). PROFILE=debug measures the debug build instead (quicker to build, slower to run).
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-126000}
seconds=${2:-10}
rate=${3:-200}
profile=${PROFILE:-release}
if [ "$profile" = release ]; then cargo build --release --quiet --bin epass; else cargo build --quiet --bin epass; fi
epass=${CARGO_TARGET_DIR:-$PWD/target}/$profile/epass
work=$(mktemp -d)
server=
trap 'if [ -n "$server" ]; then kill $server 2>/dev/null || true; fi; rm -rf "$work"' EXIT
port=50081

start() { # config-file log-file
  "$epass" serve --config "$1" --data-dir "$work/data" --listen 127.0.0.1:$port 2>"$2" &
  server=$!
  for _ in $(seq 100); do grep -q "epass listening" "$2" 2>/dev/null && return; sleep 0.1; done
  echo "server did not start:"; cat "$2"; exit 1
}
stop() { kill -TERM $server; wait $server || true; server=; }

cat > "$work/off.toml" <<TOML
[limits]
rate_per_second = 1000000
[retention]
enabled = false
TOML
cat > "$work/on.toml" <<TOML
[limits]
rate_per_second = 1000000
[retention]
batch_rows = ${BATCH:-100}
TOML

start "$work/off.toml" "$work/provision.log"
stop
sqlite3 "$work/data/epass.sqlite3" <<SQL
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $rows)
INSERT INTO audit (at, action, outcome, pass_id, caller, role, peer, checkpoint_id, mode)
SELECT (unixepoch() - 100 * 86400) * 1000000000 + i * 1000000, 'verify', 'accepted', randomblob(16),
       'bench-checkpoint', 'checkpoint', '127.0.0.1:40000', 'SZX-AIR-01', 'air' FROM n;
SQL
cp "$work/data/epass.sqlite3" "$work/filled.sqlite3"
echo "audit rows: $(sqlite3 "$work/data/epass.sqlite3" 'SELECT COUNT(*) FROM audit'), $(du -h "$work/data/epass.sqlite3" | cut -f1)"
export EPASS_SERVER=http://127.0.0.1:$port EPASS_DATA_DIR=$work/data
bench() { "$epass" bench issue --connections 4 --in-flight 16 --rate "$rate" --duration "$seconds"; }

echo "== retention off: bench issue at $rate/s for ${seconds}s"
start "$work/off.toml" "$work/off.log"
bench
stop

echo "== retention on (batches of ${BATCH:-100}), pruning at start: bench issue at $rate/s for ${seconds}s"
cp "$work/filled.sqlite3" "$work/data/epass.sqlite3"
rm -f "$work/data/epass.sqlite3-wal" "$work/data/epass.sqlite3-shm"
start "$work/on.toml" "$work/on.log"
bench
# The run logs once it is done: wait for it (at most 10 minutes) before stopping the server.
for _ in $(seq 3000); do grep -q "retention: pruned" "$work/on.log" && break; sleep 0.2; done
stop
python3 - "$work/on.log" <<'PY'
import re, sys, datetime
lines = open(sys.argv[1]).read().splitlines()
def when(pattern):
    for line in lines:
        if pattern in line:
            stamp = re.match(r"(\S+)", line).group(1)
            return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")[:26] + "+00:00"), line
    return None, None
start, _ = when("retention=verification audit")
start = start or when("epass listening")[0]
end, line = when("retention: pruned")
print("pruned:", line.split("retention: pruned rows past their retention period")[-1].strip() if line else "nothing")
if start and end:
    print(f"pruning took {(end - start).total_seconds():.2f} s from the task's start")
PY
echo "audit rows left: $(sqlite3 "$work/data/epass.sqlite3" "SELECT COUNT(*) FROM audit WHERE action = 'verify'") verification rows"
