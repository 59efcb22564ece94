#!/usr/bin/env bash
# Memory bound: push and pull one blob of SIZE (default 10 GiB) through a release Berth and
# report the node's peak RSS (VmHWM) and the time of each step. Target: peak RSS <= 100 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-10G}
cargo build --release -q --bin berth
target=${CARGO_TARGET_DIR:-target}
dir=$(mktemp -d /var/tmp/berth-mem.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
truncate -s "$size" "$dir/blob"          # sparse: reads at page-cache speed, no disk needed for the source
digest="sha256:$(sha256sum "$dir/blob" | cut -d' ' -f1)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn "$target/release/berth" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" &
pid=$!
until curl -sf -o /dev/null "http://127.0.0.1:$port/v2/"; do sleep 0.05; done
hwm() { awk '/VmHWM/ {print $2}' /proc/$pid/status; }
echo "idle: peak RSS $(( $(hwm) / 1024 )) MiB"
t0=$(date +%s.%N)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -T "$dir/blob" -H 'Content-Type: application/octet-stream' \
  "http://127.0.0.1:$port/v2/mem/test/blobs/uploads?digest=$digest")   # no trailing slash: curl -T appends the file name to one
t1=$(date +%s.%N)
[ "$code" = 201 ] || { echo "push failed: $code"; exit 1; }
echo "push $size: $(python3 -c "print(f'{$t1-$t0:.1f}')") s, peak RSS $(( $(hwm) / 1024 )) MiB"
got=$(curl -s "http://127.0.0.1:$port/v2/mem/test/blobs/$digest" | sha256sum | cut -d' ' -f1)
t2=$(date +%s.%N)
[ "sha256:$got" = "$digest" ] || { echo "pull digest mismatch"; exit 1; }
echo "pull $size (verified): $(python3 -c "print(f'{$t2-$t1:.1f}')") s, peak RSS $(( $(hwm) / 1024 )) MiB"
