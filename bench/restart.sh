#!/usr/bin/env bash
# Restart benchmark: a node whose index holds N blobs (default 1,000,000) must serve within 1 s.
# Prints the time from exec to the first 200 from /healthz and from /v2/.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
cargo build --release -q --bin berth
cargo build --release -q -p berth-bench --example fill_index
target=${CARGO_TARGET_DIR:-target}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$target/release/examples/fill_index" "$dir" "$n"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for run in 1 2 3; do
  start=$(date +%s.%N)
  RUST_LOG=warn "$target/release/berth" serve --listen "127.0.0.1:$port" --data-dir "$dir" &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$port/v2/"; do sleep 0.005; done
  end=$(date +%s.%N)
  kill -TERM $pid; wait $pid
  echo "restart with $n blobs: serving after $(python3 -c "print(f'{$end-$start:.3f}')") s (run $run)"
done
