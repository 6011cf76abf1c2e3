#!/usr/bin/env bash
# The Knative tests (tests/knative.rs): Knative Eventing's Broker, Trigger and dead-letter
# sink delivering into jobsink, installed next to Knative as deploy/knative/ describes.
# Kept out of hack/test.sh so that the quick path stays quick; CI runs it as its own step.
#
#   hack/test-knative.sh [extra cargo test args]
#
# Starts the local cluster if it is not running (and stops it again afterwards), builds
# Knative Eventing's components once (cached by version, see hack/knative.sh) and installs
# them, builds the jobsink image, installs jobsink with deploy/knative/install.sh, runs
# `cargo test --test knative`, and finally checks that deploy/knative/uninstall.sh gives
# JobSinks back to Knative. Same needs as hack/test.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
phase() { echo "[test-knative] $* ($(date +%T))" >&2; }
t0=$(date +%s)

"$here/preflight.sh" --tests
plugins/build.sh >/dev/null
cargo build --tests

started=""
if ! kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz >/dev/null 2>&1; then
  phase "starting the local cluster"
  "$here/up.sh" >/dev/null
  started=yes
fi
cleanup() { if [ -n "$started" ]; then "$here/down.sh"; fi; }
trap cleanup EXIT
export KUBECONFIG=$KUBECONFIG_PATH

phase "Knative Eventing: build (cached) and install"
"$here/knative.sh" install
phase "jobsink next to Knative (deploy/knative/install.sh)"
"$here/images.sh" jobsink
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
export JOBSINK_IMAGE=localhost/jobsink:$version
deploy/knative/install.sh >/dev/null
# The same tag may hold a newer build than a pod already running: start it again.
kubectl -n knative-eventing rollout restart deployment/jobsink >/dev/null
kubectl -n knative-eventing rollout status deployment/jobsink --timeout=180s >/dev/null

phase "cargo test --test knative"
export KNATIVE_MANIFESTS=$JOBSINK_CLUSTER_DIR/knative
cargo test --test knative "$@"

phase "deploy/knative/uninstall.sh gives JobSinks back to Knative"
deploy/knative/uninstall.sh "$KNATIVE_MANIFESTS/core" >/dev/null
kubectl delete namespace knative-uninstalled --ignore-not-found >/dev/null
kubectl create namespace knative-uninstalled >/dev/null
kubectl -n knative-uninstalled apply -f deploy/examples/job-sink-logger.yaml >/dev/null
status_writer() {
  kubectl -n knative-uninstalled get jobsink/job-sink-logger --show-managed-fields \
    -o jsonpath='{.metadata.managedFields[?(@.subresource=="status")].manager}'
}
for _ in $(seq 60); do
  [ "$(status_writer)" = controller ] && break
  sleep 1
done
[ "$(status_writer)" = controller ] || {
  echo "after uninstall.sh, Knative's controller did not take JobSink status back" >&2
  exit 1
}
kubectl delete namespace knative-uninstalled --wait=false >/dev/null
phase "done in $(($(date +%s) - t0)) s"
