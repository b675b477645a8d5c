# Shared helpers for scripts/run and scripts/test. Source it; do not run it.

# Debian packages rkube needs to build and test (see docs/architecture.md):
#   protobuf-compiler, libprotobuf-dev  build the gRPC clients (etcd, CRI)
#   etcd-server                          the HA store backend, and the test target for it
#   containerd runc                      the node agent's container runtime (CRI)
#   containernetworking-plugins          the pod network (bridge, host-local)
#   busybox-static                       the busybox and pause images (rkube image busybox|pause)
#   nftables                             the service proxy's data plane
RKUBE_PACKAGES=(protobuf-compiler libprotobuf-dev etcd-server containerd runc containernetworking-plugins busybox-static nftables)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs whatever of RKUBE_PACKAGES is missing (needs root, or nothing to do).
ensure_packages() {
  local missing=()
  for p in "${RKUBE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}"
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed (is a Debian mirror reachable?)"
  apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

ensure_cargo() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"
}
