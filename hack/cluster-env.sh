# Shared settings of the local cluster; sourced by the hack/ scripts.
#
# A cluster lives in its own network namespace (the control plane, the node, its pods and
# their iptables rules), joined to this machine by one veth pair, and in its own cgroup
# subtree. So several clusters can run on one machine side by side, each with its own
# index: JOBSINK_CLUSTER_INDEX=0 (the default) .. 49. Everything below derives from it and
# can be overridden one by one.
JOBSINK_CLUSTER_INDEX=${JOBSINK_CLUSTER_INDEX:-0}
_i=$JOBSINK_CLUSTER_INDEX
if [ "$_i" = 0 ]; then _suffix=""; else _suffix="-$_i"; fi
# State (certificates, etcd data, the node's runtime state, logs, PIDs), outside the clone so
# that a fresh clone finds nothing stale.
JOBSINK_CLUSTER_DIR=${JOBSINK_CLUSTER_DIR:-/tmp/jobsink-cluster$_suffix}
CLUSTER_NETNS=${CLUSTER_NETNS:-jobsink-$_i}
# The veth pair between this machine (HOST_IP) and the cluster's namespace (NETNS_IP).
HOST_VETH=${HOST_VETH:-jsk$_i}
HOST_IP=${HOST_IP:-10.250.$_i.1}
NETNS_IP=${NETNS_IP:-10.250.$_i.2}
# The one real node. Its address is the gateway of the pod bridge: kubelet refuses a loopback
# node IP, pods reach the API server, cluster DNS and the kubelet there, and this machine
# reaches it (and the pods) through the veth.
NODE_NAME=${NODE_NAME:-jobsink-node}
NODE_BRIDGE=${NODE_BRIDGE:-cbr0}
NODE_IP=${NODE_IP:-10.244.$_i.1}
POD_CIDR=${POD_CIDR:-10.244.$_i.0/24}
# Inside the namespace only, so the same for every cluster.
SERVICE_CIDR=${SERVICE_CIDR:-10.96.0.0/16}
# The first address of SERVICE_CIDR: the `kubernetes` Service (in the apiserver's certificate).
KUBERNETES_SERVICE_IP=${KUBERNETES_SERVICE_IP:-10.96.0.1}
CLUSTER_DOMAIN=${CLUSTER_DOMAIN:-cluster.local}
# kubelet's cgroup root in every hierarchy, so that two kubelets never manage each other's pods.
KUBELET_CGROUP_ROOT=${KUBELET_CGROUP_ROOT:-/jobsink-$_i}

# Ports inside the cluster's namespace; only the API server's is reached from this machine.
ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-2379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-2380}
APISERVER_PORT=${APISERVER_PORT:-6443}
KCM_PORT=${KCM_PORT:-10257}
SCHEDULER_PORT=${SCHEDULER_PORT:-10259}
KUBELET_PORT=${KUBELET_PORT:-10250}
KUBELET_HEALTHZ_PORT=${KUBELET_HEALTHZ_PORT:-10248}
KUBE_PROXY_HEALTHZ_PORT=${KUBE_PROXY_HEALTHZ_PORT:-10256}
KUBE_PROXY_METRICS_PORT=${KUBE_PROXY_METRICS_PORT:-10249}
COREDNS_READY_PORT=${COREDNS_READY_PORT:-8181}
# The node's only registry: an in-memory OCI registry on the namespace's 127.0.0.1 holding
# the local stand-ins for docker.io images. containerd pulls every image reference from it,
# so that `imagePullPolicy: Always` works with no internet and no pull leaves the machine.
REGISTRY_PORT=${REGISTRY_PORT:-5000}

KUBECONFIG_PATH=$JOBSINK_CLUSTER_DIR/admin.kubeconfig
LOG_DIR=$JOBSINK_CLUSTER_DIR/logs
PID_DIR=$JOBSINK_CLUSTER_DIR/pids
NODE_DIR=$JOBSINK_CLUSTER_DIR/node
CONTAINERD_SOCK=$NODE_DIR/containerd/containerd.sock
# Runs a command inside the cluster's network namespace (only that: `ip netns exec` would
# also mount a new /sys, hiding the cgroup hierarchies from kubelet).
IN_NETNS=(nsenter "--net=/run/netns/$CLUSTER_NETNS")
unset _i _suffix

# image_profile: the cargo profile of the jobsink image's binary (hack/images.sh jobsink,
# hack/build.sh demo), from JOBSINK_IMAGE_PROFILE: release (the default: tests, CI and
# benchmarks), or quick-release, quicker to build and slower to run (hack/demo.sh's default;
# Cargo.toml).
image_profile() {
  case "${JOBSINK_IMAGE_PROFILE:-release}" in
  release | quick-release) echo "${JOBSINK_IMAGE_PROFILE:-release}" ;;
  *)
    echo "JOBSINK_IMAGE_PROFILE=$JOBSINK_IMAGE_PROFILE: it is release or quick-release" >&2
    return 1
    ;;
  esac
}
