#!/usr/bin/env bash
# The full test suite: checks every prerequisite (hack/preflight.sh --tests: installs the
# node's Debian packages when missing), builds the cluster's binaries, the test hooks and the
# test binaries side by side (hack/build.sh test), starts the local cluster (control plane +
# real node) if it is not running (and stops it again afterwards, whether the run passes or
# fails), builds the jobsink image and loads it into the node, then runs every Rust test
# against the cluster.
#
#   hack/test.sh [extra cargo test args]
#
# Needs root (the node), Go (builds the cluster once, cached), Rust with the wasm32-wasip2
# target, kubectl and openssl; preflight names what is missing. Nothing is skipped: a test
# that needs the cluster fails without it, and a cluster that does not come up fails the run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"

"$here/preflight.sh" --tests
"$here/build.sh" test

started=""
cleanup() {
  local status=$?
  if [ -n "$started" ]; then "$here/down.sh"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if ! kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz >/dev/null 2>&1; then
  # up.sh stops what it started itself when it fails.
  "$here/up.sh" >/dev/null
  started=yes
fi
export KUBECONFIG=$KUBECONFIG_PATH
# The in-cluster tests (tests/in_cluster.rs) run the image built from this tree.
"$here/images.sh" jobsink
# Benchmarks are not tests: `cargo test` runs the lib, bin, integration and doc tests only.
if [ $# -gt 0 ]; then
  cargo test --no-fail-fast "$@"
  exit
fi
# Every other test binary runs its own controller in process; the installed one (deploy/)
# would compete with it for the same JobSinks' status. So the installed product is removed
# first and tests/in_cluster.rs and tests/in_cluster_secure.rs, which install it, run last
# (the second one turns on strict TLS and OIDC in knative-eventing, and restores them).
kubectl delete deployment -n knative-eventing job-sink --ignore-not-found --wait=true >/dev/null
targets=()
for f in tests/*.rs; do
  name=$(basename "$f" .rs)
  case $name in
    # in_cluster and in_cluster_secure run last (below); knative needs Knative Eventing:
    # hack/test-knative.sh.
    in_cluster | in_cluster_secure | knative) ;;
    *) targets+=(--test "$name") ;;
  esac
done
status=0
cargo test --no-fail-fast --lib --bins "${targets[@]}" || status=1
cargo test --no-fail-fast --doc || status=1
cargo test --no-fail-fast --test in_cluster || status=1
cargo test --no-fail-fast --test in_cluster_secure || status=1
exit $status
