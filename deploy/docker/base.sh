#!/usr/bin/env bash
# Build the base image Berth's images start from, without pulling anything from a registry:
# mmdebstrap (Debian's package) makes a minimal bookworm root filesystem from Debian's mirror
# with RocksDB's runtime library, and `docker import` turns it into an image.
#
#   deploy/docker/base.sh [IMAGE]          # default berth-base:bookworm
#
# The root filesystem tarball is cached in $BERTH_CACHE (default /var/cache/berth) and reused
# while it is younger than a week, so CI builds it once per machine.
set -euo pipefail
image=${1:-berth-base:bookworm}
cache=${BERTH_CACHE:-/var/cache/berth}
tar="$cache/bookworm-minbase-rocksdb.tar"
mkdir -p "$cache"
# One builder at a time (tests build images in parallel).
exec 9>"$cache/.base.lock"
flock 9
command -v mmdebstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }
if [ ! -s "$tar" ] || [ -n "$(find "$tar" -mtime +7 2>/dev/null)" ]; then
  echo "base: building $tar with mmdebstrap (minbase bookworm + librocksdb7.8)"
  mmdebstrap --quiet --variant=minbase --format=tar \
    --include=librocksdb7.8,ca-certificates,tzdata \
    --aptopt='APT::Install-Recommends "false"' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    bookworm "$tar.tmp" http://deb.debian.org/debian
  mv "$tar.tmp" "$tar"
fi
if ! docker image inspect "$image" >/dev/null 2>&1 || [ "$tar" -nt "$cache/.imported-$(echo "$image" | tr '/:' '__')" ]; then
  docker import --change 'CMD ["/bin/bash"]' "$tar" "$image" >/dev/null
  touch "$cache/.imported-$(echo "$image" | tr '/:' '__')"
fi
echo "base: $image"
