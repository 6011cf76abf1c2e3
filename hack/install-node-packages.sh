#!/usr/bin/env bash
# Installs the Debian packages the local node and its images need, when any is missing:
# runc (the OCI runtime), the CNI plugins, iptables and conntrack (kube-proxy), iproute2 and
# procps (the cluster's network namespace), podman (builds the images), bash-static,
# busybox-static and curl (the stand-ins for the seed's images), and gcc with libc6-dev (the
# static pause image; Rust links with cc).
#
#   hack/install-node-packages.sh           installs what is missing (needs root)
#   hack/install-node-packages.sh --check   prints the missing packages, one a line; installs
#                                           nothing (hack/preflight.sh)
set -euo pipefail
need=()
for pkg in runc containernetworking-plugins iptables conntrack iproute2 procps podman \
  bash-static busybox-static curl gcc libc6-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if [ "${1:-}" = "--check" ]; then
  [ ${#need[@]} -eq 0 ] || printf '%s\n' "${need[@]}"
  exit 0
fi
[ ${#need[@]} -gt 0 ] || exit 0
[ "$(id -u)" = 0 ] || {
  echo "install-node-packages.sh: installing ${need[*]} needs root" >&2
  exit 1
}
echo "installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
