#!/usr/bin/env bash
# Measures the hot-path ratios of docs/PERFORMANCE.md against a fresh local server, each next
# to its bare baseline in the same run: `scripts/perf-table.sh [SECONDS]` (default 10).
# Builds the release binary, starts `epass serve` on a scratch data directory with the rate
# limits raised, runs `epass bench` for every row, and prints the results. Run it on a quiet
# machine: on a shared one, fsync latency (and so every write figure) swings several-fold.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
cargo build --release --quiet
epass=${CARGO_TARGET_DIR:-$PWD/target}/release/epass
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/epass.toml" <<TOML
[limits]
rate_per_second = 1000000
concurrency_per_connection = 256
TOML
"$epass" serve --config "$work/epass.toml" --data-dir "$work/data" --listen 127.0.0.1:50071 2>"$work/serve.log" &
server=$!
for _ in $(seq 50); do grep -q "epass listening" "$work/serve.log" 2>/dev/null && break; sleep 0.2; done
export EPASS_SERVER=http://127.0.0.1:50071 EPASS_DATA_DIR=$work/data
rss() { grep -E '^(VmRSS|VmHWM)' "/proc/$server/status" | tr -s ' \t' ' ' | sed "s/^/server ($1): /"; }
rss idle
echo "disk: $(dd if=/dev/zero of="$work/dd" bs=4k count=100 oflag=dsync 2>&1 | tail -1)"
bench() { echo "== epass bench $*"; "$epass" bench "$@" --duration "$seconds"; }
bench verify --connections 4 --in-flight 64 --baseline verify
bench issue --connections 4 --in-flight 16 --baseline sqlite --baseline-dir "$work"
bench issue-png --connections 4 --in-flight 16 --baseline sqlite --baseline-dir "$work"
bench admit --connections 4 --in-flight 16 --passes 5000 --baseline sqlite --baseline-dir "$work"
# p99 at half the saturating rate: closed loop first, then open loop at half its rate.
for workload in verify issue; do
  rate=$("$epass" bench "$workload" --connections 4 --in-flight 16 --duration "$seconds" --json | sed -E 's/.*"ok_per_s":([0-9.]+).*/\1/')
  half=$(awk -v r="$rate" 'BEGIN { printf "%.0f", r / 2 }')
  bench "$workload" --connections 4 --in-flight 64 --rate "$half"
done
rss peak
