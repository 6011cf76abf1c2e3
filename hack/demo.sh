#!/usr/bin/env bash
# The main walk-through, for real: a local cluster with a real node, jobsink installed from
# deploy/ (our image, its ServiceAccount and RBAC), the seed's job-sink-logger applied
# unchanged, the seed's event sent exactly as the seed sends it (curl in a pod, to the
# Service's cluster DNS name), and the Job's pod printing the event.
#
#   hack/demo.sh           # a cluster started here is stopped and removed at the end
#   hack/demo.sh --keep    # leave everything running to explore (stop with hack/down.sh)
#
# Needs root (the node). Builds what is missing: the cluster's binaries once (cached under
# ~/.cache/jobsink), the release jobsink binary and the images.
set -euo pipefail
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
title() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }

title "Starting the local cluster (control plane + one real node)"
already_up=""
if kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz >/dev/null 2>&1; then
  already_up=yes
fi
export KUBECONFIG
KUBECONFIG=$("$here/up.sh")
cleanup() {
  # A cluster that was already running is left as it was; one started here is stopped and
  # its state removed, so that the next run starts from nothing again.
  if [ "$keep" = "--keep" ] || [ -n "$already_up" ]; then return; fi
  "$here/down.sh" --purge
}
trap cleanup EXIT
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
# A copy of the event already sent (a second demo run) is answered 202 without a new Job.
show kubectl run curl --image=curlimages/curl --rm=true --restart=Never -ti -- -X POST -v \
  -H "content-type: application/json" \
  -H "ce-specversion: 1.0" \
  -H "ce-source: my/curl/command" \
  -H "ce-type: my.demo.event" \
  -H "ce-id: 123" \
  -d '{"details":"JobSinkDemo"}' \
  http://job-sink.knative-eventing.svc.cluster.local/default/job-sink-logger

title "The Job it created, and its pod printing the event"
selector=sinks.knative.dev/job-sink-name=job-sink-logger
job=$(kubectl get jobs -l "$selector" -o jsonpath='{.items[0].metadata.name}')
show kubectl wait --for=condition=Complete "job/$job" --timeout=120s
show kubectl get jobs -l "$selector"
pod=$(kubectl get pods -l "batch.kubernetes.io/job-name=$job" -o jsonpath='{.items[0].metadata.name}')
show kubectl logs "$pod"
echo

if [ "$keep" = "--keep" ]; then
  echo
  echo "Still running. export KUBECONFIG=$KUBECONFIG; stop everything with hack/down.sh"
fi
