#!/usr/bin/env bash
# Starts the local cluster without Docker: etcd, kube-apiserver, kube-controller-manager (real
# Job controller, garbage collector, namespace, service account and TTL controllers),
# kube-scheduler, and one real node (hack/node-up.sh: containerd + runc, kubelet, kube-proxy,
# CoreDNS, CNI bridge networking), all in the cluster's own network namespace
# (hack/network.sh). Waits until all are ready. Needs root (network namespaces, cgroups).
# JOBSINK_CLUSTER_INDEX=N runs another cluster beside the first (see hack/cluster-env.sh).
#
#   hack/up.sh            # builds what is missing, starts, waits; prints the kubeconfig path
#   export KUBECONFIG=$(hack/up.sh)
#
# Logs: $JOBSINK_CLUSTER_DIR/logs/<process>.log; PIDs: $JOBSINK_CLUSTER_DIR/pids/. Stop with
# hack/down.sh. A run that fails half-way (or is interrupted) stops what it started itself,
# keeping the logs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
SCRIPT_TAG=up
# shellcheck source=lib.sh
. "$here/lib.sh"

[ "$(id -u)" = 0 ] || fail "the local cluster runs a real node and needs root"
mapfile -t running < <(running_components)
if [ ${#running[@]} -eq ${#COMPONENTS[@]} ] && kc get --raw /readyz >/dev/null 2>&1; then
  say "cluster $JOBSINK_CLUSTER_INDEX already running ($JOBSINK_CLUSTER_DIR)"
  echo "$KUBECONFIG_PATH"
  exit 0
fi
[ ${#running[@]} -eq 0 ] ||
  fail "cluster $JOBSINK_CLUSTER_INDEX is partly running (${running[*]}): JOBSINK_CLUSTER_INDEX=$JOBSINK_CLUSTER_INDEX hack/down.sh first"
t0=$(date +%s.%N)
bin=$("$here/build-control-plane.sh")
mkdir -p "$LOG_DIR" "$PID_DIR" "$JOBSINK_CLUSTER_DIR/pki"
# From here on, a failure (or an interrupt) stops everything this run started, keeping the
# logs, so that the next hack/up.sh starts from nothing.
stop_on_failure() {
  local status=$?
  if [ $status -ne 0 ]; then
    say "stopping what this run started (logs kept in $LOG_DIR)"
    "$here/down.sh" >&2 || true
  fi
  exit "$status"
}
trap stop_on_failure EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$here/certs.sh" "$JOBSINK_CLUSTER_DIR"
pki=$JOBSINK_CLUSTER_DIR/pki
# The API server listens on the node address (the pod bridge's gateway, in the cluster's
# namespace), so the network comes first.
"$here/network.sh" up

t1=$(date +%s.%N)
start etcd "${IN_NETNS[@]}" "$bin/etcd" \
  --name default \
  --data-dir "$JOBSINK_CLUSTER_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" \
  --listen-metrics-urls "" \
  --unsafe-no-fsync \
  --log-level warn
wait_for etcd 30 "${IN_NETNS[@]}" curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

# OwnerReferencesPermissionEnforcement (on in OpenShift, off by default upstream) makes
# blockOwnerDeletion need `update` on the owner's finalizers, so tests running as the
# job-sink ServiceAccount prove that deploy/rbac.yaml grants it.
# Pods reach the API server through the `kubernetes` Service, whose endpoint is the
# advertised node address; the kubelet is reached on its InternalIP (its hostname does not
# resolve) with the admin certificate.
start kube-apiserver "${IN_NETNS[@]}" "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address "$NODE_IP" \
  --advertise-address "$NODE_IP" \
  --secure-port "$APISERVER_PORT" \
  --tls-cert-file "$pki/apiserver.crt" \
  --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins OwnerReferencesPermissionEnforcement \
  --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file "$pki/sa.pub" \
  --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --kubelet-client-certificate "$pki/admin.crt" \
  --kubelet-client-key "$pki/admin.key" \
  --kubelet-preferred-address-types InternalIP \
  --profiling=false
apiserver_ready() {
  curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://$NODE_IP:$APISERVER_PORT/readyz"
}
wait_for kube-apiserver 120 apiserver_ready
t2=$(date +%s.%N)

start kube-controller-manager "${IN_NETNS[@]}" "$bin/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG_PATH" \
  --authentication-kubeconfig "$KUBECONFIG_PATH" \
  --authorization-kubeconfig "$KUBECONFIG_PATH" \
  --leader-elect=false \
  --bind-address 127.0.0.1 \
  --secure-port "$KCM_PORT" \
  --cert-dir "$JOBSINK_CLUSTER_DIR/kcm-certs" \
  --service-account-private-key-file "$pki/sa.key" \
  --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=false \
  --controllers '*' \
  --profiling=false
start kube-scheduler "${IN_NETNS[@]}" "$bin/kube-scheduler" \
  --kubeconfig "$KUBECONFIG_PATH" \
  --authentication-kubeconfig "$KUBECONFIG_PATH" \
  --authorization-kubeconfig "$KUBECONFIG_PATH" \
  --leader-elect=false \
  --bind-address 127.0.0.1 \
  --secure-port "$SCHEDULER_PORT" \
  --profiling=false
wait_for kube-controller-manager 60 "${IN_NETNS[@]}" curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
wait_for kube-scheduler 60 "${IN_NETNS[@]}" curl -fsSk "https://127.0.0.1:$SCHEDULER_PORT/healthz"
# The namespace and service-account controllers are working once `default` has its account.
wait_for "service account controller" 60 kc -n default get serviceaccount default
t3=$(date +%s.%N)

"$here/node-up.sh"
t4=$(date +%s.%N)
say "$(awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" 'BEGIN {
  printf "ready: binaries+certs+network %.1fs, etcd+kube-apiserver %.1fs, controllers %.1fs, node %.1fs",
    b-a, c-b, d-c, e-d }')"
say "logs in $LOG_DIR; stop with hack/down.sh"
echo "$KUBECONFIG_PATH"
