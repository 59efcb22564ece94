#!/usr/bin/env bash
# GC at scale: BLOBS blob records and MANIFESTS manifests (8 blobs each, half tagged), then a
# dry run and a real run with untagged manifests deleted; reports time and the node's peak RSS.
#   bash bench/gc.sh [BLOBS] [MANIFESTS]     (default 100000 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
BLOBS=${1:-100000}
MANIFESTS=${2:-10000}
T="${CARGO_TARGET_DIR:-target}"
cargo build -q --release --bin berth -p berth-node
cargo build -q --release -p berth-bench --example fill_gc
D=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$D"' EXIT
"$T/release/examples/fill_gc" "$D/data" "$BLOBS" "$MANIFESTS"
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
RUST_LOG=warn "$T/release/berth" serve --listen 127.0.0.1:$PORT --data-dir "$D/data" --workers 2 2>"$D/node.log" &
PID=$!
until curl -sf http://127.0.0.1:$PORT/healthz >/dev/null; do sleep 0.1; done
rss() { awk '/VmRSS|VmHWM/ {printf "%s %d MiB  ", $1, $2/1024}' /proc/$PID/status; }
echo "before:  $(rss)"
for mode in --dry-run --delete; do
  s=$(date +%s.%N)
  "$T/release/berth" gc $mode --grace 0s --untagged-max-age 0s --data-dir "$D/data" | head -2
  e=$(date +%s.%N)
  echo "gc $mode: $(python3 -c "print(f'{$e-$s:.2f} s')")   $(rss)"
done
