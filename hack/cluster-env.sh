# Shared settings of the local cluster; sourced by the hack/ scripts.
# Everything lives under one state directory (certificates, etcd data, the node's runtime
# state, logs, PIDs), outside the clone by default so that a fresh clone finds nothing stale.
JOBSINK_CLUSTER_DIR=${JOBSINK_CLUSTER_DIR:-/tmp/jobsink-cluster}
# Control plane ports, chosen away from the well-known defaults so that they do not clash
# with another cluster's on the same machine.
ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
APISERVER_PORT=${APISERVER_PORT:-16443}
KCM_PORT=${KCM_PORT:-10357}
SCHEDULER_PORT=${SCHEDULER_PORT:-10359}

# The one real node. Its address is the gateway of the pod bridge: kubelet refuses a loopback
# node IP, and pods reach the API server, cluster DNS and the kubelet there. A node owns
# machine-wide things (a bridge, iptables rules, cgroups, kubelet's port 10250), so one node
# runs per machine at a time.
NODE_NAME=${NODE_NAME:-jobsink-node}
NODE_BRIDGE=${NODE_BRIDGE:-jobsink0}
NODE_IP=${NODE_IP:-10.244.0.1}
POD_CIDR=${POD_CIDR:-10.244.0.0/24}
SERVICE_CIDR=${SERVICE_CIDR:-10.96.0.0/16}
# The first address of SERVICE_CIDR: the `kubernetes` Service (in the apiserver's certificate).
KUBERNETES_SERVICE_IP=${KUBERNETES_SERVICE_IP:-10.96.0.1}
CLUSTER_DOMAIN=${CLUSTER_DOMAIN:-cluster.local}
KUBELET_PORT=${KUBELET_PORT:-10250}
KUBELET_HEALTHZ_PORT=${KUBELET_HEALTHZ_PORT:-10248}
KUBE_PROXY_HEALTHZ_PORT=${KUBE_PROXY_HEALTHZ_PORT:-10256}
KUBE_PROXY_METRICS_PORT=${KUBE_PROXY_METRICS_PORT:-10249}
COREDNS_READY_PORT=${COREDNS_READY_PORT:-18181}
# The node's only registry: an in-memory OCI registry on 127.0.0.1 holding the local stand-ins
# for docker.io images. containerd pulls every image reference from it, so that
# `imagePullPolicy: Always` works with no internet and no pull ever leaves the machine.
REGISTRY_PORT=${REGISTRY_PORT:-5001}

KUBECONFIG_PATH=$JOBSINK_CLUSTER_DIR/admin.kubeconfig
LOG_DIR=$JOBSINK_CLUSTER_DIR/logs
PID_DIR=$JOBSINK_CLUSTER_DIR/pids
NODE_DIR=$JOBSINK_CLUSTER_DIR/node
CONTAINERD_SOCK=$NODE_DIR/containerd/containerd.sock
