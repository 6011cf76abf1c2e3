#!/usr/bin/env bash
# Builds what the two commands need before anything starts, the Go and the Rust builds side
# by side: the local cluster's binaries (hack/build-control-plane.sh, cached by version) and
# the Rust code. On 2 cores the two fill each other's gaps (downloads, links, the last crates
# of a build). One line when each build starts and ends, and every minute while it runs
# (hack/jobs.sh); the full output is in the logs named (under $(hack/cache-dir.sh --root)/logs).
#
#   hack/build.sh demo    the cluster's binaries, and the jobsink binary of the image
#                         (hack/images.sh jobsink; release, or JOBSINK_IMAGE_PROFILE's profile)
#   hack/build.sh test    the same, and the test hooks (plugins/build.sh) and every test
#                         target (`cargo build --all-targets`)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
JOBS_TAG=build
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
# shellcheck source=jobs.sh
. "$here/jobs.sh"
logs=$("$here/cache-dir.sh" --root)/logs

# The Rust builds, one after the other: they share cargo's lock on the target directory.
rust() {
  if [ "$1" = test ]; then
    echo "plugins/build.sh"
    plugins/build.sh
    echo "cargo build --all-targets"
    cargo build --all-targets
  fi
  echo "cargo build --profile $profile --bin jobsink"
  cargo build --profile "$profile" --locked --bin jobsink
}

case "${1:-}" in
demo | test) ;;
*)
  echo "usage: $0 demo|test" >&2
  exit 2
  ;;
esac
profile=$(image_profile)
t0=$SECONDS
# The Rust build is a long chain of crates that must follow each other (cranelift, wasmtime,
# jobsink); the Go builds are wide. At equal priority Go's many compile processes starve that
# chain and leave it running alone at the end, so Go runs at nice 10 and takes the CPU the
# Rust build leaves.
jobs_start "cluster binaries (Go)" "$logs/build-go.log" nice -n 10 "$here/build-control-plane.sh"
jobs_start "jobsink (Rust)" "$logs/build-rust.log" rust "$1"
jobs_wait
echo "[build] everything built in $(_jobs_time $((SECONDS - t0)))" >&2
