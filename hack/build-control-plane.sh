#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager from their Go modules into a cache
# outside the clone, keyed by version. Does nothing when the binaries are already there.
# Prints the bin directory on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
bin=$("$here/cache-dir.sh")/bin
if [ -x "$bin/etcd" ] && [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kube-controller-manager" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
log=$("$here/cache-dir.sh")/build.log
start=$(date +%s)
{
  echo "building control plane $K8S_VERSION / etcd $ETCD_VERSION into $bin"
  cd "$here/tools/etcd"
  go build -trimpath -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$bin/etcd.tmp" "$bin/etcd"
  cd "$here/tools/k8s"
  ldflags="-s -w"
  for kv in gitVersion=$K8S_VERSION gitMajor=1 gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) \
    gitTreeState=clean buildDate=1970-01-01T00:00:00Z; do
    ldflags="$ldflags -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
  done
  for cmd in kube-apiserver kube-controller-manager; do
    go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$bin/$cmd.tmp" "$bin/$cmd"
  done
  echo "built in $(($(date +%s) - start)) s"
} >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
cat "$log" >&2
echo "$bin"
