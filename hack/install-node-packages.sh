#!/usr/bin/env bash
# Installs the Debian packages the local node and its images need, when any is missing:
# runc (the OCI runtime), the CNI plugins, iptables and conntrack (kube-proxy), podman (builds
# the images), and bash-static, busybox-static and curl (the stand-ins for the seed's images).
set -euo pipefail
need=()
for pkg in runc containernetworking-plugins iptables conntrack podman bash-static \
  busybox-static curl gcc libc6-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
[ ${#need[@]} -gt 0 ] || exit 0
echo "installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
