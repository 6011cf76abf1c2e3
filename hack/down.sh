#!/usr/bin/env bash
# Stops what hack/up.sh started, by saved PID (never by process name), newest first.
# Keeps the logs; `hack/down.sh --purge` also removes the state directory.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
for name in jobsink fake-kubelet kube-controller-manager kube-apiserver etcd; do
  f=$PID_DIR/$name.pid
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    echo "[down] stopped $name (pid $pid)" >&2
  fi
  rm -f "$f"
done
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$JOBSINK_CLUSTER_DIR"
fi
