#!/usr/bin/env bash
# The full test suite: builds the test hooks, starts the local control plane if it is not
# running (and stops it again afterwards), then runs every Rust test against it.
#
#   hack/test.sh [extra cargo test args]
#
# Needs: Go (builds the control plane once, cached), Rust with the wasm32-wasip2 target,
# kubectl, openssl. Nothing is skipped: a test that needs the cluster fails without it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"

if [ -x plugins/build.sh ]; then
  plugins/build.sh
fi
cargo build --all-targets

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
started=""
if ! kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz >/dev/null 2>&1; then
  FAKE_KUBELET="$target_dir/debug/fake-kubelet" "$here/up.sh" >/dev/null
  started=yes
fi
cleanup() { if [ -n "$started" ]; then "$here/down.sh"; fi; }
trap cleanup EXIT
export KUBECONFIG=$KUBECONFIG_PATH
# Benchmarks are not tests: `cargo test` runs the lib, bin and integration tests only.
cargo test --no-fail-fast "$@"
