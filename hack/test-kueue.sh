#!/usr/bin/env bash
# The Kueue tests (tests/kueue.rs): JobSinks whose Jobs Kueue queues and admits, on a
# cluster with Kueue installed from its own module and manifests (hack/kueue.sh). Kept out of
# hack/test.sh because Kueue's webhooks sit in front of every Job and Pod of the cluster;
# CI runs it as its own step, on a cluster of its own.
#
#   hack/test-kueue.sh [extra cargo test args]
#
# Starts the local cluster if it is not running (and stops it again afterwards), builds
# Kueue once (cached by version) and installs it, then runs `cargo test --test kueue` (the
# receiver and controller run in the test process, as the product's ServiceAccount). Same
# needs as hack/test.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
phase() { echo "[test-kueue] $* ($(date +%T))" >&2; }
t0=$(date +%s)

plugins/build.sh >/dev/null
cargo build --test kueue

started=""
if ! kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz >/dev/null 2>&1; then
  phase "starting the local cluster"
  "$here/up.sh" >/dev/null
  started=yes
fi
cleanup() { if [ -n "$started" ]; then "$here/down.sh"; fi; }
trap cleanup EXIT
export KUBECONFIG=$KUBECONFIG_PATH

phase "Kueue: build (cached) and install"
"$here/kueue.sh" install
# The tests run their own controller: an installed one would manage the same JobSinks.
kubectl delete deployment -n knative-eventing job-sink --ignore-not-found --wait=true >/dev/null

phase "cargo test --test kueue"
cargo test --test kueue "$@"
phase "done in $(($(date +%s) - t0)) s"
