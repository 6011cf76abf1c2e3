#!/usr/bin/env bash
# Builds the local cluster's binaries from their Go modules into caches outside the clone,
# keyed by version, and does nothing for what is already there:
#   k8s-<k8s>-etcd-<etcd>/bin: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#                              kubelet, kube-proxy
#   node-<versions>/bin: containerd, containerd-shim-runc-v2, ctr, coredns, crictl, registry
# Prints the control plane's bin directory on stdout (hack/cache-dir.sh --node prints the
# other). Build logs go to build.log beside each bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

# build <cache dir> <tools module dir> <ldflags> <name=package>...: builds the missing ones.
build() {
  local dir=$1 module=$2 ldflags=$3
  shift 3
  local bin=$dir/bin missing=()
  for pair in "$@"; do
    [ -x "$bin/${pair%%=*}" ] || missing+=("$pair")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  mkdir -p "$bin"
  local start log=$dir/build.log
  start=$(date +%s)
  {
    for pair in "${missing[@]}"; do
      local t=$SECONDS
      echo "building ${pair%%=*} from ${pair#*=}"
      (cd "$module" && go build -trimpath -ldflags "$ldflags" -o "$bin/${pair%%=*}.tmp" "${pair#*=}")
      mv "$bin/${pair%%=*}.tmp" "$bin/${pair%%=*}"
      echo "built ${pair%%=*} in $((SECONDS - t)) s"
    done
    echo "built ${missing[*]%%=*} in $(($(date +%s) - start)) s"
  } >>"$log" 2>&1 || { tail -n 60 "$log" >&2; exit 1; }
  tail -n 1 "$log" >&2
}

k8s_dir=$("$here/cache-dir.sh")
ldflags="-s -w"
for kv in gitVersion=$K8S_VERSION gitMajor=1 gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) \
  gitTreeState=clean buildDate=1970-01-01T00:00:00Z; do
  ldflags="$ldflags -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
done
build "$k8s_dir" "$here/tools/etcd" "-s -w" etcd=go.etcd.io/etcd/server/v3
build "$k8s_dir" "$here/tools/k8s" "$ldflags" \
  kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
  kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
  kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
  kubelet=k8s.io/kubernetes/cmd/kubelet \
  kube-proxy=k8s.io/kubernetes/cmd/kube-proxy

node_dir=$("$here/cache-dir.sh" --node)
# containerd's btrfs snapshotter needs C headers we do not install; overlayfs is what we use.
GOFLAGS="${GOFLAGS:-} -tags=no_btrfs" build "$node_dir" "$here/tools/containerd" \
  "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
  containerd=github.com/containerd/containerd/v2/cmd/containerd \
  containerd-shim-runc-v2=github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
  ctr=github.com/containerd/containerd/v2/cmd/ctr
build "$node_dir" "$here/tools/coredns" "-s -w" coredns=github.com/coredns/coredns
build "$node_dir" "$here/tools/cri-tools" "-s -w" crictl=sigs.k8s.io/cri-tools/cmd/crictl
build "$node_dir" "$here/tools/registry" "-s -w" \
  registry=github.com/google/go-containerregistry/cmd/registry

echo "$k8s_dir/bin"
