#!/usr/bin/env bash
# The test command: builds the berth binary (the process-level tests start it) and runs every
# test of the workspace: unit, property, in-process protocol, and real-client end-to-end tests.
# Ends with one summary line "N passed, N failed" over all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --bin berth --bin berth-admin
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
