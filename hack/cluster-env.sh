# Shared settings of the local control plane; sourced by the hack/ scripts.
# Everything lives under one state directory (certificates, etcd data, logs, PIDs), outside the
# clone by default so that a fresh clone finds nothing stale.
JOBSINK_CLUSTER_DIR=${JOBSINK_CLUSTER_DIR:-/tmp/jobsink-cluster}
# Ports on 127.0.0.1, chosen away from the well-known defaults so that they do not clash with
# another cluster on the same machine.
ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
APISERVER_PORT=${APISERVER_PORT:-16443}
KCM_PORT=${KCM_PORT:-10357}
# Name of the one simulated Node every pod is bound to.
FAKE_NODE_NAME=${FAKE_NODE_NAME:-jobsink-node}
KUBECONFIG_PATH=$JOBSINK_CLUSTER_DIR/admin.kubeconfig
LOG_DIR=$JOBSINK_CLUSTER_DIR/logs
PID_DIR=$JOBSINK_CLUSTER_DIR/pids
