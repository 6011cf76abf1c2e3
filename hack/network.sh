#!/usr/bin/env bash
# The node's network on this machine (needs root):
#   hack/network.sh up     the pod bridge with the node address, a route for Service IPs,
#                          forwarding, and a rule that keeps pod traffic inside the machine
#   hack/network.sh down   removes all of it, and kube-proxy's rules
# Idempotent: `up` over a crashed cluster's leftovers starts clean.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
chain=JOBSINK-EGRESS

case "${1:-}" in
up)
  # kubelet needs shared mount propagation for volumes mounted into containers.
  mount --make-rshared /
  # Service traffic between pods on one bridge must pass iptables (kube-proxy's DNAT) and be
  # routed back onto the bridge.
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge
  ip addr flush dev "$NODE_BRIDGE"
  ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # Service IPs are reached through the bridge, never through the default route: a Service
  # without endpoints must not send anything off the machine.
  ip route replace "$SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP"
  # Pods may talk to each other, the node and Services; nothing they send is forwarded to
  # another interface, so no pod reaches beyond this machine.
  iptables -N "$chain" 2>/dev/null || iptables -F "$chain"
  iptables -A "$chain" -i "$NODE_BRIDGE" ! -o "$NODE_BRIDGE" -j DROP
  iptables -C FORWARD -j "$chain" 2>/dev/null || iptables -I FORWARD 1 -j "$chain"
  ;;
down)
  kube_proxy="$("$here/cache-dir.sh")/bin/kube-proxy"
  [ -x "$kube_proxy" ] && "$kube_proxy" --cleanup >/dev/null 2>&1 || true
  # Our chain, and the ones kubelet creates (it never removes them).
  for table in filter nat mangle; do
    for c in "$chain" KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
      for parent in INPUT OUTPUT FORWARD; do
        while iptables -t "$table" -D "$parent" -j "$c" 2>/dev/null; do :; done
      done
      iptables -t "$table" -F "$c" 2>/dev/null || true
      iptables -t "$table" -X "$c" 2>/dev/null || true
    done
  done
  ip route del "$SERVICE_CIDR" dev "$NODE_BRIDGE" 2>/dev/null || true
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  ;;
*)
  echo "usage: $0 up|down" >&2
  exit 2
  ;;
esac
