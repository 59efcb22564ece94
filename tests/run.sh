#!/usr/bin/env bash
# The test command: builds the berth binary (the process-level tests start it) and runs every
# test of the workspace: unit, property, in-process protocol, and real-client end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --bin berth
cargo test --locked --workspace "$@"
