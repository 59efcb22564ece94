#!/usr/bin/env bash
# The test command: builds the berth binary (the process-level tests start it) and runs every
# test of the workspace: unit, property, in-process protocol, and real-client end-to-end tests.
# Ends with one summary line "N passed, N failed, N skipped" over all test binaries. A test that
# returns early because a tool is missing is counted as skipped (never as passed), with what to
# install; under CI (CI set) a missing tool fails its test instead, so CI skips nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --bin berth --bin berth-admin
log=$(mktemp)
skips=$(mktemp)
trap 'rm -f "$log" "$skips"' EXIT
export BERTH_SKIP_LOG="$skips"
set +e
cargo test --locked --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
# Each skipped test once (a test may skip for several reasons; it reported the first).
skipped=$(cut -f1 "$skips" | sort -u | grep -c . || true)
passed=$((passed - skipped))
echo
if [ "$skipped" -gt 0 ]; then
  echo "skipped tests (install what they name, or run under CI=true to make them fail):"
  sort -u "$skips" | sed 's/^/  /'
fi
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$status"
