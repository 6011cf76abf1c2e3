#!/usr/bin/env bash
# Runs a benchmark with the receiver on a CPU of its own: every other process on the machine
# (the API server, etcd, the node, the benchmark's client) is moved to the other CPUs for
# the run, and the benchmark starts its `jobsink` processes on the last CPU
# (JOBSINK_RECEIVER_CPUS, read by testkit/src/process.rs). Affinities are set back to all CPUs at
# the end. On these 2-core machines the receiver otherwise shares its cores with the API
# server it is loading, and its wall-clock figures (own time per event) mostly count the
# kernel's preemptions; this shows what they are when it has a core, as a pod with a CPU
# request of its own would.
#
#   hack/bench-isolated.sh cargo bench --bench load -- --events 600 --oidc
#
# Build first (`cargo bench --no-run`): the build would otherwise run on the other CPUs only.
set -euo pipefail
[[ $# -gt 0 ]] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
cpus=$(nproc --all)
if (( cpus < 2 )); then
  echo "one CPU only: nothing to isolate" >&2
  exit 1
fi
last=$(( cpus - 1 ))
others="0-$(( last - 1 ))"
all="0-$last"

move_all() {
  local pid
  for pid in /proc/[0-9]*; do
    taskset -a -p -c "$1" "${pid##*/}" >/dev/null 2>&1 || true
  done
}

trap 'move_all "$all"; echo "[bench-isolated] affinities set back to CPUs $all" >&2' EXIT
move_all "$others"
echo "[bench-isolated] everything on CPUs $others; the receiver on CPU $last" >&2
JOBSINK_RECEIVER_CPUS=$last "$@"
