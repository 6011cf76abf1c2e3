#!/usr/bin/env bash
# Starts a local Kubernetes control plane on 127.0.0.1 without Docker: etcd, kube-apiserver,
# kube-controller-manager (real Job controller, garbage collector, namespace, service account
# and TTL controllers) and the fake kubelet that plays one Node. Waits until all are ready.
#
#   hack/up.sh            # builds what is missing, starts, waits; prints the kubeconfig path
#   export KUBECONFIG=$(hack/up.sh)
#
# Logs: $JOBSINK_CLUSTER_DIR/logs/<process>.log; PIDs: $JOBSINK_CLUSTER_DIR/pids/. Stop with
# hack/down.sh. Set FAKE_KUBELET=<path> to use an already built simulator binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"

say() { echo "[up] $*" >&2; }
fail() {
  echo "[up] FAILED: $*" >&2
  for f in "$LOG_DIR"/*.log; do
    [ -f "$f" ] || continue
    echo "---- last lines of $f" >&2
    tail -n 25 "$f" >&2
  done
  exit 1
}
alive() { [ -f "$PID_DIR/$1.pid" ] && kill -0 "$(cat "$PID_DIR/$1.pid")" 2>/dev/null; }
start() { # name, command...
  local name=$1
  shift
  if alive "$name"; then
    say "$name already running (pid $(cat "$PID_DIR/$name.pid"))"
    return
  fi
  "$@" >"$LOG_DIR/$name.log" 2>&1 &
  echo $! >"$PID_DIR/$name.pid"
  say "started $name (pid $!)"
}
wait_for() { # what, seconds, command...
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "$what not ready after ${secs}s"
    sleep 0.2
  done
}

t0=$(date +%s.%N)
bin=$("$here/build-control-plane.sh")
mkdir -p "$LOG_DIR" "$PID_DIR" "$JOBSINK_CLUSTER_DIR/pki"
"$here/certs.sh" "$JOBSINK_CLUSTER_DIR"
pki=$JOBSINK_CLUSTER_DIR/pki

t1=$(date +%s.%N)
start etcd "$bin/etcd" \
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
wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address 127.0.0.1 \
  --advertise-address 127.0.0.1 \
  --secure-port "$APISERVER_PORT" \
  --tls-cert-file "$pki/apiserver.crt" \
  --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --authorization-mode Node,RBAC \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" \
  --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --endpoint-reconciler-type none \
  --profiling=false
apiserver_ready() {
  curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz"
}
wait_for kube-apiserver 120 apiserver_ready
t2=$(date +%s.%N)

start kube-controller-manager "$bin/kube-controller-manager" \
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
wait_for kube-controller-manager 60 curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"

fake_kubelet=${FAKE_KUBELET:-}
if [ -z "$fake_kubelet" ]; then
  say "building the fake kubelet (cargo build --bin fake-kubelet)"
  (cd "$repo" && cargo build --quiet --bin fake-kubelet) || fail "cargo build of fake-kubelet"
  fake_kubelet="$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug/fake-kubelet"
fi
KUBECONFIG="$KUBECONFIG_PATH" start fake-kubelet "$fake_kubelet" --node-name "$FAKE_NODE_NAME"

kc() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }
# The namespace and service-account controllers are working once `default` has its account.
wait_for "service account controller" 60 kc -n default get serviceaccount default
wait_for "fake kubelet node" 60 kc get node "$FAKE_NODE_NAME"
t3=$(date +%s.%N)
say "$(awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" \
  'BEGIN { printf "ready: binaries+certs %.1fs, etcd+kube-apiserver to /readyz %.1fs, controllers+node %.1fs", b-a, c-b, d-c }')"
say "logs in $LOG_DIR; stop with hack/down.sh"
echo "$KUBECONFIG_PATH"
