#!/usr/bin/env bash
# Prints a versioned cache directory outside the clone:
#   hack/cache-dir.sh           the control plane (Kubernetes + etcd)
#   hack/cache-dir.sh --node    the node's runtime (containerd, CoreDNS, crictl, registry)
#   hack/cache-dir.sh --knative Knative Eventing's components (hack/knative.sh)
#   hack/cache-dir.sh --kueue   Kueue's manager (hack/kueue.sh)
#   hack/cache-dir.sh --root    the root of all caches
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
root=${JOBSINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobsink}
case "${1:-}" in
  --node) echo "$root/node-containerd-$CONTAINERD_VERSION-coredns-$COREDNS_VERSION-crictl-$CRI_TOOLS_VERSION-ggcr-$GGCR_VERSION" ;;
  --knative) echo "$root/knative-$KNATIVE_EVENTING_VERSION" ;;
  --kueue) echo "$root/kueue-$KUEUE_VERSION" ;;
  --root) echo "$root" ;;
  *) echo "$root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION" ;;
esac
