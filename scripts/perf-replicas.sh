#!/usr/bin/env bash
# Measures epass on PostgreSQL with 1 and 2 replicas, next to a bare PostgreSQL quota count +
# insert at the same concurrency, in one run: `scripts/perf-replicas.sh [SECONDS]` (default 10).
# EPASS_PERF_POSTGRES names the server (default postgres://postgres@127.0.0.1:5432/postgres);
# the script works in a scratch database it creates and drops. Builds the release binary, starts
# the replicas on loopback with the rate limits raised, and prints each row and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
server_url=${EPASS_PERF_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
cargo build --release --quiet
epass=${CARGO_TARGET_DIR:-$PWD/target}/release/epass
work=$(mktemp -d)
database="epass_perf_$$"
base_url=${server_url%/*}
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$server_url" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql -q "$server_url" -c "CREATE DATABASE $database" >/dev/null
export EPASS_DATABASE_URL="$base_url/$database"
cat > "$work/epass.toml" <<TOML
[limits]
rate_per_second = 1000000
concurrency_per_connection = 256
TOML
start() { # start N PORT
  "$epass" serve --config "$work/epass.toml" --data-dir "$work/data$1" --listen "127.0.0.1:$2" 2>"$work/serve$1.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q "epass listening" "$work/serve$1.log" 2>/dev/null && return; sleep 0.2; done
  echo "replica $1 did not start:" >&2; cat "$work/serve$1.log" >&2; exit 1
}
start 1 50091
# The second replica shares the first one's keys, hashing secret, trust list and tokens
# (README, "Several replicas").
mkdir -m 0700 "$work/data2"
for file in signing-key.pem hashing-secret root-key.pem trust-list.bin local-tokens.toml; do
  [ -e "$work/data1/$file" ] && cp -p "$work/data1/$file" "$work/data2/"
done
[ -d "$work/data1/retired-keys" ] && cp -rp "$work/data1/retired-keys" "$work/data2/"
start 2 50092
one=http://127.0.0.1:50091
two=http://127.0.0.1:50091,http://127.0.0.1:50092
export EPASS_DATA_DIR=$work/data1
echo "disk: $(dd if=/dev/zero of="$work/dd" bs=4k count=100 oflag=dsync 2>&1 | tail -1)"
rate() { sed -E 's/.*"ok_per_s":([0-9.]+).*/\1/' <<<"$1"; }
row() { # row LABEL ARGS...: prints the text report and keeps the JSON's first rate
  local label=$1; shift
  echo "== $label: epass bench $*"
  "$epass" bench "$@" --duration "$seconds"
}
row "IssuePass, 1 replica, with the bare baseline" issue --server "$one" --connections 4 --in-flight 16 \
  --baseline postgres --baseline-database-url "$server_url"
issue1=$(rate "$("$epass" bench issue --server "$one" --connections 4 --in-flight 16 --duration "$seconds" --json)")
issue2=$(rate "$("$epass" bench issue --server "$two" --connections 4 --in-flight 16 --duration "$seconds" --json)")
verify1=$(rate "$("$epass" bench verify --server "$one" --connections 4 --in-flight 64 --duration "$seconds" --json)")
verify2=$(rate "$("$epass" bench verify --server "$two" --connections 4 --in-flight 64 --duration "$seconds" --json)")
echo "IssuePass: 1 replica $issue1/s, 2 replicas $issue2/s: $(awk -v a="$issue2" -v b="$issue1" 'BEGIN { printf "%.2f", a / b }')x"
echo "VerifyPass: 1 replica $verify1/s, 2 replicas $verify2/s: $(awk -v a="$verify2" -v b="$verify1" 'BEGIN { printf "%.2f", a / b }')x"
