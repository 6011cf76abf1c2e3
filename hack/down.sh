#!/usr/bin/env bash
# Stops what hack/up.sh started, by saved PID (never by process name), the node first:
# kubelet, then every pod sandbox and container (through the CRI, so CNI releases each pod's
# network), containerd, the volumes kubelet mounted, then the control plane and the cluster's
# network namespace. Keeps the logs; `hack/down.sh --purge` also removes the state
# directory.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
SCRIPT_TAG=down
# shellcheck source=lib.sh
. "$here/lib.sh"

stop jobsink
stop coredns
stop kube-proxy
stop kubelet
crictl="$("$here/cache-dir.sh" --node)/bin/crictl"
if alive containerd && [ -x "$crictl" ]; then
  # Stopping and removing every pod sandbox (which stops its containers) through the CRI.
  "$crictl" --runtime-endpoint "unix://$CONTAINERD_SOCK" --timeout 30s rmp --all --force \
    >/dev/null 2>&1 || say "some pods could not be removed (see crictl pods)"
fi
stop containerd
stop registry
# What kubelet and containerd mounted under the state directory (volumes, rootfs, netns).
if [ -d "$NODE_DIR" ]; then
  findmnt -rn -o TARGET | grep -F "$NODE_DIR/" | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
fi
for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop "$name"
done
"$here/network.sh" down
# kubelet's cgroup subtree, now empty.
for hierarchy in /sys/fs/cgroup/*/; do
  [ -d "$hierarchy${KUBELET_CGROUP_ROOT#/}" ] || continue
  find "$hierarchy${KUBELET_CGROUP_ROOT#/}" -depth -type d -exec rmdir {} + 2>/dev/null || true
done
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$JOBSINK_CLUSTER_DIR"
fi
