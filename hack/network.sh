#!/usr/bin/env bash
# The cluster's network (needs root):
#   hack/network.sh up     the cluster's network namespace, joined to this machine by a veth
#                          pair; inside it, the pod bridge with the node address, a route for
#                          Service IPs and forwarding; on this machine, a route to the node
#                          and pods through the veth
#   hack/network.sh down   removes the namespace (with everything in it, kube-proxy's rules
#                          included) and the route
# Idempotent: `up` over a crashed cluster's leftovers starts clean. The namespace has no
# default route, so nothing a pod sends leaves this machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"

down() {
  ip netns delete "$CLUSTER_NETNS" 2>/dev/null || true
  ip link delete "$HOST_VETH" 2>/dev/null || true
}

case "${1:-}" in
up)
  down
  # kubelet needs shared mount propagation for volumes mounted into containers.
  mount --make-rshared /
  ip netns add "$CLUSTER_NETNS"
  ip link add "$HOST_VETH" type veth peer name eth0 netns "$CLUSTER_NETNS"
  ip addr add "$HOST_IP/30" dev "$HOST_VETH"
  ip link set "$HOST_VETH" up
  "${IN_NETNS[@]}" sh -eu -c "
    ip link set lo up
    ip addr add $NETNS_IP/30 dev eth0
    ip link set eth0 up
    # Service traffic between pods on one bridge must pass iptables (kube-proxy's DNAT)
    # and be routed back onto the bridge.
    sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
    ip link add $NODE_BRIDGE type bridge
    ip addr add $NODE_IP/${POD_CIDR#*/} dev $NODE_BRIDGE
    ip link set $NODE_BRIDGE up
    # Service IPs go to the bridge (where kube-proxy's rules pick an endpoint).
    ip route add $SERVICE_CIDR dev $NODE_BRIDGE src $NODE_IP
  "
  ip route replace "$POD_CIDR" via "$NETNS_IP" dev "$HOST_VETH"
  ;;
down) down ;;
*)
  echo "usage: $0 up|down" >&2
  exit 2
  ;;
esac
