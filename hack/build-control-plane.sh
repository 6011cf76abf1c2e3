#!/usr/bin/env bash
# Builds the local cluster's binaries from their Go modules into caches outside the clone,
# keyed by version, and does nothing for what is already there:
#   k8s-<k8s>-etcd-<etcd>/bin: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#                              kubelet, kube-proxy
#   node-<versions>/bin: containerd, containerd-shim-runc-v2, ctr, coredns, crictl, registry
# Prints the control plane's bin directory on stdout (hack/cache-dir.sh --node prints the
# other). The modules are built side by side (one `go build` each, so that a module's
# binaries share one compile), with one line when each starts and ends and every minute while
# they run (hack/jobs.sh: the package being compiled); each build's output (`go build -v`) is
# in build-<first binary>.log beside its bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
JOBS_TAG=${JOBS_TAG:-go}
# shellcheck source=jobs.sh
. "$here/jobs.sh"

# go_build <bin dir> <tools module dir> <ldflags> <name=package>...: builds the named
# binaries of one module in one `go build` into a scratch directory, then moves them in.
go_build() {
  local bin=$1 module=$2 ldflags=$3
  shift 3
  local out pair pkgs=()
  out=$(mktemp -d "$bin/.build.XXXXXX")
  for pair in "$@"; do pkgs+=("${pair#*=}"); done
  echo "building ${*%%=*}"
  if [ $# -eq 1 ]; then
    (cd "$module" && go build -v -trimpath -ldflags "$ldflags" -o "$out/${1%%=*}" "${pkgs[@]}")
  else
    # Several main packages: each binary is named after its package's last element.
    (cd "$module" && go build -v -trimpath -ldflags "$ldflags" -o "$out/" "${pkgs[@]}")
  fi
  for pair in "$@"; do mv "$out/${pair%%=*}" "$bin/${pair%%=*}"; done
  rmdir "$out"
  echo "built ${*%%=*}"
}

# build <cache dir> <tools module dir> <ldflags> <name=package>...: starts a job building
# the missing ones. With plan=yes, only notes that something is missing (in needed).
plan=""
needed=""
build() {
  local dir=$1 module=$2 ldflags=$3
  shift 3
  local pair missing=()
  for pair in "$@"; do
    [ -x "$dir/bin/${pair%%=*}" ] || missing+=("$pair")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ -n "$plan" ]; then
    needed=yes
    return 0
  fi
  mkdir -p "$dir/bin"
  local first=${missing[0]%%=*}
  jobs_start "${missing[*]%%=*}" "$dir/build-$first.log" \
    go_build "$dir/bin" "$module" "$ldflags" "${missing[@]}"
}

k8s_dir=$("$here/cache-dir.sh")
node_dir=$("$here/cache-dir.sh" --node)
ldflags="-s -w"
for kv in gitVersion=$K8S_VERSION gitMajor=1 gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) \
  gitTreeState=clean buildDate=1970-01-01T00:00:00Z; do
  ldflags="$ldflags -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
done
# every_module: calls build once per module.
every_module() {
  build "$k8s_dir" "$here/tools/etcd" "-s -w" etcd=go.etcd.io/etcd/server/v3
  build "$k8s_dir" "$here/tools/k8s" "$ldflags" \
    kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
    kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
    kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
    kubelet=k8s.io/kubernetes/cmd/kubelet \
    kube-proxy=k8s.io/kubernetes/cmd/kube-proxy

  # containerd's btrfs snapshotter needs C headers we do not install; overlayfs is what we use,
  # so the other snapshotters and the tracing exporters are left out too.
  GOFLAGS="${GOFLAGS:-} -tags=no_btrfs,no_devmapper,no_zfs,no_tracing" build "$node_dir" "$here/tools/containerd" \
    "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
    containerd=github.com/containerd/containerd/v2/cmd/containerd \
    containerd-shim-runc-v2=github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    ctr=github.com/containerd/containerd/v2/cmd/ctr
  # CoreDNS with only the plugins the cluster uses (hack/tools/coredns/main.go).
  build "$node_dir" "$here/tools/coredns" "-s -w" coredns=jobsink.dev/hack/tools/coredns
  build "$node_dir" "$here/tools/cri-tools" "-s -w" crictl=sigs.k8s.io/cri-tools/cmd/crictl
  build "$node_dir" "$here/tools/registry" "-s -w" \
    registry=github.com/google/go-containerregistry/cmd/registry
}

plan=yes every_module
if [ -n "$needed" ]; then
  # Every module links the same standard library. Side by side, each `go build` would compile
  # it again (the build cache is shared, but a package is only found there once a build has
  # finished it); compiled once first, with the same flags, the modules find it there.
  echo "[${JOBS_TAG}] the standard library: building (once, for every module)" >&2
  t_std=$SECONDS
  (cd "$here" && go build -trimpath std)
  echo "[${JOBS_TAG}] the standard library: done in $(_jobs_time $((SECONDS - t_std)))" >&2
fi
every_module
jobs_wait

echo "$k8s_dir/bin"
