#!/usr/bin/env bash
# Constant memory through the S3 tier: push one blob of SIZE, let it be tiered (multipart) and
# evicted, pull it back through read-through, and report the node's peak RSS. Run with two
# sizes: the peak must not grow with the blob.
#   bash bench/tier_memory.sh 2G      (moto keeps objects in RAM: keep SIZE within memory)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1G}
T="${CARGO_TARGET_DIR:-target}"
cargo build -q --release --bin berth
D=$(mktemp -d)
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
S3=$(port); P=$(port)
moto_server -H 127.0.0.1 -p "$S3" >"$D/moto.log" 2>&1 & MOTO=$!
trap 'kill $NODE $MOTO 2>/dev/null || true; rm -rf "$D"' EXIT
until curl -s "http://127.0.0.1:$S3/" >/dev/null; do sleep 0.2; done
curl -s -X PUT "http://127.0.0.1:$S3/bench" >/dev/null
BERTH_STORAGE__S3__BUCKET=bench BERTH_STORAGE__S3__ENDPOINT="http://127.0.0.1:$S3" BERTH_STORAGE__S3__PATH_STYLE=true \
BERTH_STORAGE__S3__ACCESS_KEY_ID=t BERTH_STORAGE__S3__SECRET_ACCESS_KEY=t BERTH_CACHE__MAX_BYTES=1 \
BERTH_CACHE__CHECK_INTERVAL_SECS=1 RUST_LOG=warn BERTH_METRICS__PUBLIC=open \
  "$T/release/berth" serve --listen 127.0.0.1:$P --data-dir "$D/data" --workers 2 2>"$D/node.log" & NODE=$!
until curl -sf "http://127.0.0.1:$P/healthz" >/dev/null; do sleep 0.1; done
head -c "$SIZE" /dev/urandom > "$D/blob"
DIGEST="sha256:$(sha256sum "$D/blob" | cut -c1-64)"
LOC=$(curl -s -D - -o /dev/null -X POST "http://127.0.0.1:$P/v2/mem/blob/blobs/uploads/" | awk 'tolower($1)=="location:" {print $2}' | tr -d '\r')
curl -sf -T "$D/blob" -H 'Content-Type: application/octet-stream' "http://127.0.0.1:$P$LOC&digest=$DIGEST" -o /dev/null 2>/dev/null \
  || curl -sf -T "$D/blob" "http://127.0.0.1:$P$LOC?digest=$DIGEST" -o /dev/null
rm -f "$D/blob"
metric() { curl -s "http://127.0.0.1:$P/metrics" | awk -v m="$1" '$1==m {print $2}'; }
s=$(date +%s)
until [ "$(metric berth_tier_pending_blobs)" = "0" ] && [ "$(metric berth_store_local_bytes)" = "0" ]; do sleep 0.5; done
echo "tiered (multipart) and evicted in $(( $(date +%s) - s )) s; node $(awk '/VmHWM/ {printf "peak RSS %d MiB", $2/1024}' /proc/$NODE/status)"
s=$(date +%s)
GOT="sha256:$(curl -sf "http://127.0.0.1:$P/v2/mem/blob/blobs/$DIGEST" | sha256sum | cut -c1-64)"
[ "$GOT" = "$DIGEST" ] || { echo "read-through bytes differ"; exit 1; }
echo "read through $SIZE in $(( $(date +%s) - s )) s, digest verified; node $(awk '/VmHWM/ {printf "peak RSS %d MiB", $2/1024}' /proc/$NODE/status)"
