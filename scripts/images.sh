#!/usr/bin/env bash
# Builds the images every rkube node needs, without a registry, into an images directory the
# agent imports at start-up (like k3s airgap images):
#   localhost/busybox:1  the host's busybox-static with applet links
#   localhost/pause:1    the sandbox image: busybox sh as PID 1 that sleeps, reaps, exits on TERM
#
#   scripts/images.sh [IMAGES_DIR]     default: /var/lib/rkube/agent/images
#   RKUBE=path/to/rkube scripts/images.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

dir=${1:-/var/lib/rkube/agent/images}
rkube=${RKUBE:-target/debug/rkube}
[ -x "$rkube" ] || die "$rkube not found: build it first (cargo build -p rkube) or set RKUBE"
[ -x /bin/busybox ] || die "/bin/busybox missing: apt-get install busybox-static"
mkdir -p "$dir"
say "building localhost/busybox:1 and localhost/pause:1 into $dir"
"$rkube" image busybox --out "$dir/busybox.tar"
"$rkube" image pause --out "$dir/pause.tar"
