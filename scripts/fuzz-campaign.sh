#!/usr/bin/env bash
# The fuzzing campaign of docs/RELIABILITY.md: `scripts/fuzz-campaign.sh [RUNS] [TARGET...]`
# (default 100000000 executions for each of qr_text, payload and lists).
# Builds the targets of core/fuzz/ with libFuzzer's coverage instrumentation on the stable
# toolchain (no sanitizer: the core has no `unsafe`), seeds each corpus from the conformance
# vectors (core/tests/vectors/), runs each target for RUNS executions, and prints libFuzzer's
# last status line (executions, coverage, features, corpus size) and any crash. The corpora
# stay in core/fuzz/corpus/ (not in git) so that a second run continues where the first ended.
set -euo pipefail
cd "$(dirname "$0")/../core/fuzz"
runs=${1:-100000000}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(qr_text payload lists)
triple=x86_64-unknown-linux-gnu

RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
  cargo build --quiet --release --target "$triple" --bins

# Seeds: every vector's QR text, payload, and signed lists (raw, and as the payload that the
# `lists` target signs itself, behind its selector byte; see fuzz_targets/lists.rs).
vectors=../tests/vectors
mkdir -p corpus/qr_text corpus/payload corpus/lists
for case in "$vectors"/*/; do
  name=$(basename "$case")
  [ -f "$case/qr.txt" ] && cp "$case/qr.txt" "corpus/qr_text/seed-$name"
  [ -f "$case/payload.hex" ] && xxd -r -p "$case/payload.hex" > "corpus/payload/seed-$name"
  # A list is `version (1) | key id (8) | payload | signature (64)`.
  if [ -f "$case/trust-list.bin" ]; then
    { printf '\x00'; cat "$case/trust-list.bin"; } > "corpus/lists/seed-trust-$name"
    { printf '\x01'; head -c -64 "$case/trust-list.bin" | tail -c +10; } > "corpus/lists/seed-trust-payload-$name"
  fi
  if [ -f "$case/status-list.bin" ]; then
    { printf '\x02'; cat "$case/status-list.bin"; } > "corpus/lists/seed-status-$name"
    { printf '\x03'; head -c -64 "$case/status-list.bin" | tail -c +10; } > "corpus/lists/seed-status-payload-$name"
  fi
done

mkdir -p artifacts
status=0
for target in "${targets[@]}"; do
  mkdir -p "artifacts/$target"
  log=$(mktemp)
  started=$(date +%s)
  echo "== $target: $runs runs, corpus $(ls "corpus/$target" | wc -l) files"
  if ! "target/$triple/release/$target" "corpus/$target" -runs="$runs" -print_final_stats=1 \
      -artifact_prefix="artifacts/$target/" >"$log" 2>&1; then
    status=1
    echo "$target FOUND A CRASH: see core/fuzz/artifacts/$target/" >&2
  fi
  grep -E '^#[0-9]+\s+(DONE|INITED)' "$log" | tail -2
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log"
  grep -E 'panicked|ERROR' "$log" | head -5 || true
  echo "$target: $(($(date +%s) - started)) s"
  rm -f "$log"
done
exit $status
