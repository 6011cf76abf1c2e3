#!/usr/bin/env bash
# The main walk-through, for real: a local cluster with a real node, jobsink installed from
# deploy/ (our image, its ServiceAccount and RBAC), the seed's job-sink-logger applied
# unchanged, the seed's event sent as the seed sends it (curl in a pod, to the Service's
# cluster DNS name), and the Job's pod printing the event.
#
#   hack/demo.sh           # a cluster started here is stopped and removed at the end
#   hack/demo.sh --keep    # leave everything running to explore (stop with hack/down.sh)
#
# Needs root (the node). Checks every prerequisite first (hack/preflight.sh: installs the
# node's Debian packages when missing), then builds what is missing, the cluster's Go binaries
# (cached under ~/.cache/jobsink) and the jobsink binary side by side (hack/build.sh), then the
# images. A run that fails stops the cluster it started (its logs are kept).
set -euo pipefail
# The image's binary is built with the quick-release profile (Cargo.toml): from nothing, about
# 0.7x release's build time; JOBSINK_IMAGE_PROFILE=release builds it as tests, CI and the
# benchmarks do.
export JOBSINK_IMAGE_PROFILE=${JOBSINK_IMAGE_PROFILE:-quick-release}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
keep=${1:-}

# show <command...>: prints the command as one would type it, then runs it.
show() {
  local a line=""
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@%,+-]+$ ]]; then line+="$a "; else line+="'$a' "; fi
  done
  printf '\n\033[1m$ %s\033[0m\n' "${line% }"
  "$@"
}
elapsed() { printf '%dm%02ds' $((SECONDS / 60)) $((SECONDS % 60)); }
title() { printf '\n\033[1;34m== %s\033[0m (%s)\n' "$*" "$(elapsed)"; }

title "Checking what the demo needs (hack/preflight.sh)"
"$here/preflight.sh"

already_up=""
if kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz >/dev/null 2>&1; then
  already_up=yes
fi

title "Building the cluster's binaries (Go) and jobsink (Rust), side by side (hack/build.sh)"
"$here/build.sh" demo

title "Starting the local cluster (control plane + one real node)"
started=""
cleanup() {
  local status=$?
  # A cluster that was already running is left as it was. One started here is stopped; after
  # a success its state is removed too (so the next run starts from nothing), after a failure
  # its logs are kept.
  if [ -n "$started" ] && [ -z "$already_up" ]; then
    if [ $status -ne 0 ]; then
      echo "demo failed: stopping the cluster it started; logs kept in $LOG_DIR" >&2
      "$here/down.sh"
    elif [ "$keep" != "--keep" ]; then
      "$here/down.sh" --purge
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export KUBECONFIG
# up.sh stops what it started itself when it fails.
KUBECONFIG=$("$here/up.sh")
started=yes
show kubectl get nodes -o wide

title "Building the jobsink image and loading it into the node"
"$here/images.sh" jobsink

title "Installing jobsink: kubectl apply -f deploy/"
show kubectl apply -f deploy/
kubectl wait --for=condition=Established crd/jobsinks.sinks.knative.dev --timeout=60s >/dev/null
# The same tag may hold a newer build than the running pod's: start it again.
kubectl -n knative-eventing rollout restart deployment/job-sink >/dev/null
show kubectl -n knative-eventing rollout status deployment/job-sink --timeout=120s
show kubectl -n knative-eventing get pods -o wide

title "Applying the seed's job-sink-logger, unchanged"
show cat deploy/examples/job-sink-logger.yaml
show kubectl apply -f deploy/examples/job-sink-logger.yaml
kubectl wait --for=condition=Ready jobsink/job-sink-logger --timeout=60s >/dev/null
show kubectl get jobsinks.sinks.knative.dev

title "Triggering it as the seed does: curl in a pod, to the Service's cluster address"
# The seed runs this pod attached (`--rm=true -ti`). But curl has answered before kubectl's
# attach is set up: on a terminal kubectl then shows nothing of it, and without one it falls
# back to the log ("couldn't attach to pod/curl") only while the pod is still there. So the
# same pod runs detached, and its log (curl -v: the request, then the answer's status and
# headers) is printed once it has ended.
# A copy of the event already sent (a second demo run) is answered 202 without a new Job.
kubectl delete pod curl --ignore-not-found --wait=true >/dev/null
show kubectl run curl --image=curlimages/curl --restart=Never -- -X POST -v \
  -H "content-type: application/json" \
  -H "ce-specversion: 1.0" \
  -H "ce-source: my/curl/command" \
  -H "ce-type: my.demo.event" \
  -H "ce-id: 123" \
  -d '{"details":"JobSinkDemo"}' \
  http://job-sink.knative-eventing.svc.cluster.local/default/job-sink-logger
phase=""
for _ in $(seq 1 240); do
  phase=$(kubectl get pod curl -o jsonpath='{.status.phase}')
  [ "$phase" != Succeeded ] && [ "$phase" != Failed ] || break
  sleep 0.5
done
show kubectl logs curl
kubectl logs curl | grep -q '^< HTTP/1.1 202' || {
  echo "the curl pod ($phase) did not get 202 Accepted (its log is above)" >&2
  exit 1
}
kubectl delete pod curl --wait=false >/dev/null

title "The Job it created, and its pod printing the event"
selector=sinks.knative.dev/job-sink-name=job-sink-logger
job=$(kubectl get jobs -l "$selector" -o jsonpath='{.items[0].metadata.name}')
show kubectl wait --for=condition=Complete "job/$job" --timeout=120s
show kubectl get jobs -l "$selector"
pod=$(kubectl get pods -l "batch.kubernetes.io/job-name=$job" -o jsonpath='{.items[0].metadata.name}')
show kubectl logs "$pod"
echo

title "Done"
if [ "$keep" = "--keep" ]; then
  echo "Still running. export KUBECONFIG=$KUBECONFIG; stop everything with hack/down.sh"
fi
