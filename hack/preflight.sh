#!/usr/bin/env bash
# Checks, before anything is built, everything hack/demo.sh and hack/test.sh need, and names
# the one command that fixes each missing piece; lists every problem at once, then fails.
# The node's Debian packages are installed here when missing and run as root
# (hack/install-node-packages.sh).
#
#   hack/preflight.sh          what hack/demo.sh needs
#   hack/preflight.sh --tests  also what hack/test.sh needs (the wasm32-wasip2 target, node
#                              and python3 for the JS and Python example hooks)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
# shellcheck source=lib.sh
. "$here/lib.sh"
tests=""
[ "${1:-}" != "--tests" ] || tests=yes
problems=()
problem() { problems+=("$*"); }
# version_at_least <have> <need>: dotted versions.
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

root=""
[ "$(id -u)" != 0 ] || root=yes
[ -n "$root" ] ||
  problem "not root: the local cluster runs a real node (network namespaces, cgroups, mounts): run it as root"

mapfile -t packages < <("$here/install-node-packages.sh" --check)
if [ ${#packages[@]} -gt 0 ] && [ -n "$root" ]; then
  echo "[preflight] installing the node's Debian packages: ${packages[*]} (hack/install-node-packages.sh)" >&2
  "$here/install-node-packages.sh" >&2 || true
  mapfile -t packages < <("$here/install-node-packages.sh" --check)
fi
if [ ${#packages[@]} -gt 0 ] && [ -n "$root" ]; then
  problem "Debian packages missing: ${packages[*]}: hack/install-node-packages.sh failed (above)"
elif [ ${#packages[@]} -gt 0 ]; then
  problem "Debian packages missing: ${packages[*]}: run as root: hack/install-node-packages.sh"
fi

# Go builds the cluster (hack/tools/*/go.mod name the version they need; no toolchain is
# downloaded).
go_need=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$here"/tools/*/go.mod | sort -V | tail -n 1)
if ! command -v go >/dev/null; then
  problem "Go is missing: install Go $go_need or newer (go.dev/dl) and put its bin on PATH"
else
  go_have=$(go env GOVERSION | sed 's/^go//')
  version_at_least "$go_have" "$go_need" ||
    problem "Go $go_have is older than the $go_need hack/tools/*/go.mod need: install Go $go_need or newer"
fi

rust_need=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' "$repo/Cargo.toml")
if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
  problem "Rust is missing: install it with rustup (rustup.rs), toolchain $rust_need or newer"
else
  rust_have=$(rustc --version | awk '{print $2}')
  version_at_least "$rust_have" "$rust_need" ||
    problem "Rust $rust_have is older than Cargo.toml's rust-version $rust_need: rustup update"
  if [ -n "$tests" ] && [ ! -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip2" ]; then
    problem "the test hooks need Rust's wasm32-wasip2 target: rustup target add wasm32-wasip2"
  fi
fi

# The JavaScript and Python example hooks (tests/polyglot.rs, plugins/build-polyglot.sh)
# install their pinned toolchains from npm and PyPI with these.
if [ -n "$tests" ]; then
  command -v node >/dev/null && command -v npm >/dev/null ||
    problem "the JavaScript example hook needs Node.js 20 or newer with npm (nodejs.org)"
  python3 -c 'import venv, sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null ||
    problem "the Python example hook needs python3 3.10 or newer with venv"
fi
command -v kubectl >/dev/null ||
  problem "kubectl is missing: install kubectl (v1.36, the cluster's version, or near it) on PATH"
command -v openssl >/dev/null ||
  problem "openssl is missing (the cluster's certificates): run as root: apt-get install openssl"

# What the node needs of the kernel (loaded as modules where it can be).
if [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
  [ -z "$root" ] || modprobe br_netfilter 2>/dev/null || true
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] ||
    problem "the kernel's bridge netfilter is missing (Services on the pod bridge): run as root: modprobe br_netfilter"
fi
if ! grep -qw overlay /proc/filesystems; then
  [ -z "$root" ] || modprobe overlay 2>/dev/null || true
  grep -qw overlay /proc/filesystems ||
    problem "the kernel has no overlay filesystem (containerd's snapshotter): run as root: modprobe overlay"
fi

# A cluster of this index left half-running (a run killed before it could stop it).
mapfile -t running < <(running_components)
if [ ${#running[@]} -gt 0 ] && [ ${#running[@]} -lt ${#COMPONENTS[@]} ]; then
  problem "cluster $JOBSINK_CLUSTER_INDEX is partly running (${running[*]}): JOBSINK_CLUSTER_INDEX=$JOBSINK_CLUSTER_INDEX hack/down.sh"
fi

# Room for a first build: a first demo fills about 10 GiB (the Go build and module caches
# about 6, cargo's registry and release build 2 to 3, the cluster's state up to 1.2); the
# tests' debug build of every target adds 5 to 6.
need_gib=12
[ -z "$tests" ] || need_gib=18
cache_root=$("$here/cache-dir.sh" --root)
for dir in "$cache_root" "${CARGO_TARGET_DIR:-$repo/target}" "$(dirname "$JOBSINK_CLUSTER_DIR")"; do
  while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
  free_gib=$(($(df -Pk "$dir" | awk 'NR == 2 {print $4}') / 1024 / 1024))
  [ "$free_gib" -ge "$need_gib" ] ||
    problem "$free_gib GiB free under $dir; a first run needs about $need_gib GiB: free some space"
done

if [ ${#problems[@]} -gt 0 ]; then
  echo "[preflight] not ready to run; nothing was built or started:" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
fi
echo "[preflight] ready: root, Debian packages, Go $go_have, Rust $rust_have, kubectl, openssl, kernel" >&2
