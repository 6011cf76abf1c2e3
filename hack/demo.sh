#!/usr/bin/env bash
# The main walk-through: the dispatcher against a local control plane, from `kubectl apply`
# of the seed's job-sink-logger to the event file and the Job completing.
#
#   hack/demo.sh           # everything is stopped at the end
#   hack/demo.sh --keep    # leave the control plane and the dispatcher running to explore
#
# Builds what is missing (the control plane once, cached; the jobsink binaries), starts
# etcd, kube-apiserver, kube-controller-manager and the fake kubelet, runs `jobsink serve`
# on 127.0.0.1, applies the unchanged seed manifest, sends the seed's curl event, and shows
# each step.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
port=${JOBSINK_DEMO_PORT:-8080}
keep=${1:-}

show() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
title() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }

title "Building jobsink and starting the local control plane"
cargo build --quiet --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
already_up=""
if [ -f "$PID_DIR/etcd.pid" ] && kill -0 "$(cat "$PID_DIR/etcd.pid")" 2>/dev/null; then
  already_up=yes
fi
export KUBECONFIG
KUBECONFIG=$(FAKE_KUBELET="$target_dir/debug/fake-kubelet" "$here/up.sh")
cleanup() {
  # A control plane that was already running is left as it was; one started here is
  # stopped and its state removed, so that the next run starts from nothing again.
  if [ "$keep" = "--keep" ]; then return; fi
  if [ -n "$already_up" ]; then
    [ -f "$PID_DIR/jobsink.pid" ] && kill "$(cat "$PID_DIR/jobsink.pid")" 2>/dev/null
    rm -f "$PID_DIR/jobsink.pid"
  else
    "$here/down.sh" --purge
  fi
}
trap cleanup EXIT

title "Installing the JobSink CRD and starting the dispatcher"
show kubectl apply -f deploy/crd.yaml
kubectl wait --for=condition=Established crd/jobsinks.sinks.knative.dev --timeout=60s >/dev/null
if ! [ -f "$PID_DIR/jobsink.pid" ] || ! kill -0 "$(cat "$PID_DIR/jobsink.pid")" 2>/dev/null; then
  "$target_dir/debug/jobsink" serve --listen "127.0.0.1:$port" \
    --metrics-listen 127.0.0.1:0 >"$LOG_DIR/jobsink.log" 2>&1 &
  echo $! >"$PID_DIR/jobsink.pid"
fi
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || {
  echo "the dispatcher did not become ready; see $LOG_DIR/jobsink.log" >&2
  exit 1
}
echo "dispatcher listening on http://127.0.0.1:$port (log: $LOG_DIR/jobsink.log)"

title "Applying the seed's job-sink-logger, unchanged"
show cat deploy/examples/job-sink-logger.yaml
show kubectl apply -n default -f deploy/examples/job-sink-logger.yaml
kubectl wait -n default --for=condition=Ready jobsink/job-sink-logger --timeout=60s >/dev/null
show kubectl get jobsinks -n default

title "Sending the seed's event (binary mode) to the local receiver"
show curl -sS -i -X POST \
  -H "content-type: application/json" \
  -H "ce-specversion: 1.0" \
  -H "ce-source: my/curl/command" \
  -H "ce-type: my.demo.event" \
  -H "ce-id: 123" \
  -d '{"details":"JobSinkDemo"}' \
  "http://127.0.0.1:$port/default/job-sink-logger"

title "The Job and the Secret created for it"
selector=sinks.knative.dev/job-sink-name=job-sink-logger
show kubectl get jobs,secrets -n default -l "$selector" --show-labels
job=$(kubectl get jobs -n default -l "$selector" -o jsonpath='{.items[0].metadata.name}')

title "The event file the Job's container reads at /etc/jobsink-event/event"
show kubectl get job -n default "$job" \
  -o jsonpath='{.spec.template.spec.containers[0].volumeMounts}{"\n"}{.spec.template.spec.volumes}{"\n"}'
printf '\n\033[1m$ kubectl get secret %s -o jsonpath={.data.event} | base64 -d\033[0m\n' "$job"
kubectl get secret -n default "$job" -o jsonpath='{.data.event}' | base64 -d
echo

title "The Job reaching Complete (pods played by the fake kubelet)"
show kubectl wait -n default --for=condition=Complete "job/$job" --timeout=90s
show kubectl get job -n default "$job"
show curl -sS -i "http://127.0.0.1:$port/namespaces/default/name/job-sink-logger/sources/my%2Fcurl%2Fcommand/ids/123"

if [ "$keep" = "--keep" ]; then
  echo
  echo "Still running. export KUBECONFIG=$KUBECONFIG; stop everything with hack/down.sh"
fi
