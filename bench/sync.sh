#!/usr/bin/env bash
# Admin sidecar throughput: a node with BLOBS blob records and MANIFESTS manifests (bench/gc.sh's
# fill), a fresh Postgres; time for berth-admin to apply the whole change feed, then the time of
# a full `berth-admin resync` and `berth-admin check` of the same data.
#   bash bench/sync.sh [BLOBS] [MANIFESTS]     (default 100000 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
BLOBS=${1:-100000}
MANIFESTS=${2:-10000}
T="${CARGO_TARGET_DIR:-target}"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
cargo build -q --release --bin berth --bin berth-admin
cargo build -q --release -p berth-bench --example fill_gc
D=$(mktemp -d); chmod 755 "$D"
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PGP=$(port); P=$(port); A=$(port)
mkdir "$D/pg"; chown postgres "$D/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$D/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$D/pg" -o "-p $PGP -c listen_addresses=127.0.0.1 -k $D/pg" -l "$D/pg/log" -w start >/dev/null
cleanup() { kill $NODE $ADMIN 2>/dev/null || true; runuser -u postgres -- "$PGBIN/pg_ctl" -D "$D/pg" -m fast stop >/dev/null 2>&1 || true; rm -rf "$D"; }
trap cleanup EXIT
psql -q -h 127.0.0.1 -p $PGP -U postgres -c "CREATE DATABASE berth"
"$T/release/examples/fill_gc" "$D/data" "$BLOBS" "$MANIFESTS"
RUST_LOG=warn "$T/release/berth" serve --listen 127.0.0.1:$P --data-dir "$D/data" --workers 2 2>"$D/node.log" & NODE=$!
until curl -sf http://127.0.0.1:$P/healthz >/dev/null; do sleep 0.1; done
HEAD=$(curl -s -H "Authorization: Bearer $(cat $D/data/internal.token)" "http://$(cat $D/data/internal.addr)/internal/v1/stats" | python3 -c 'import json,sys;print(json.load(sys.stdin)["feed_head"])')
export BERTH_ADMIN_POSTGRES="host=127.0.0.1 port=$PGP user=postgres dbname=berth" BERTH_ADMIN_NODE_DATA_DIR="$D/data" \
       BERTH_ADMIN_API_TOKEN=t BERTH_ADMIN_LISTEN=127.0.0.1:$A RUST_LOG=warn
s=$(date +%s.%N)
"$T/release/berth-admin" serve 2>"$D/admin.log" & ADMIN=$!
until [ "$(psql -At -h 127.0.0.1 -p $PGP -U postgres -d berth -c 'SELECT last_seq FROM sync_state' 2>/dev/null)" = "$HEAD" ]; do sleep 0.2; done
e=$(date +%s.%N)
python3 -c "print(f'feed sync: {$HEAD} changes in {$e-$s:.1f} s = {$HEAD/($e-$s):.0f} changes/s; sidecar peak RSS', end=' ')"
awk '/VmHWM/ {print $2/1024 " MiB"}' /proc/$ADMIN/status
kill $ADMIN; wait $ADMIN 2>/dev/null || true
s=$(date +%s.%N); "$T/release/berth-admin" resync; e=$(date +%s.%N)
python3 -c "print(f'resync: {$e-$s:.1f} s')"
s=$(date +%s.%N); "$T/release/berth-admin" check | cut -c1-120; e=$(date +%s.%N)
python3 -c "print(f'check: {$e-$s:.1f} s')"
