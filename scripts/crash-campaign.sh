#!/usr/bin/env bash
# The crash campaign (tests/crash_campaign.rs; figures in docs/RELIABILITY.md): CYCLES kill -9
# cycles of the real `epass serve` under mixed load, each followed by a restart on the same data
# and a check of the whole history, on SQLite and then on PostgreSQL:
#
#   scripts/crash-campaign.sh [CYCLES]      (default 100 per backend)
#
# EPASS_TEST_POSTGRES names the PostgreSQL server (default
# postgres://postgres@127.0.0.1:5432/postgres); the test creates and drops a database of its
# own there. EPASS_CRASH_SEED fixes the random choices (the kill still lands where it lands).
# Every cycle reads every pass acknowledged so far and retries the calls acknowledged in it
# and 200 older ones of each kind; every EPASS_CRASH_FULL_EVERY cycles (default 10) and in the
# last, it retries every call acknowledged since the first cycle.
# Runs at nice 10, so that other work on the machine keeps going. Prints a line per cycle, the
# summary of each backend and the machine, and keeps everything in target/crash-campaign.log
# (or EPASS_CRASH_LOG). Exits non-zero when a cycle finds a violation, printing all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=${1:-100}
case $cycles in
  '' | *[!0-9]*) echo "usage: $0 [CYCLES]  (a number of cycles per backend)" >&2; exit 64 ;;
esac
export EPASS_TEST_POSTGRES=${EPASS_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
export EPASS_CRASH_CYCLES=$cycles
export EPASS_CRASH_FULL_EVERY=${EPASS_CRASH_FULL_EVERY:-10}
log=${EPASS_CRASH_LOG:-${CARGO_TARGET_DIR:-target}/crash-campaign.log}
mkdir -p "$(dirname "$log")"
: > "$log"

nice -n 10 cargo test --quiet --test crash_campaign --no-run
{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
  echo "postgresql: $(psql -tA "$EPASS_TEST_POSTGRES" -c 'SHOW server_version' 2>/dev/null || echo unknown)"
  echo "started: $(date -u +%Y-%m-%dT%H:%M:%SZ), $cycles cycles per backend"
} | tee -a "$log"
for backend in sqlite postgresql; do
  nice -n 10 cargo test --quiet --test crash_campaign "crash_campaign_on_$backend" -- --exact --nocapture \
    2>&1 | tee -a "$log"
done
echo "finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)" | tee -a "$log"
grep -h "crash campaign summary" "$log"
