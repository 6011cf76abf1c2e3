#!/usr/bin/env bash
# Restarts one process of the local cluster from the command line hack/up.sh saved for it
# ($PID_DIR/<name>.cmd), logging to the same file (appended) and saving the new PID, so that
# hack/down.sh stops it as usual. For chaos tests and benchmarks (benches/chaos.rs).
#
#   hack/restart.sh [--kill] <name>     e.g. hack/restart.sh --kill kube-apiserver
#
# --kill stops the running process with SIGKILL (a crash) instead of SIGTERM. Does not wait
# for the restarted process to become ready.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
SCRIPT_TAG=restart
# shellcheck source=lib.sh
. "$here/lib.sh"

signal=TERM
if [ "${1:-}" = "--kill" ]; then
  signal=KILL
  shift
fi
name=${1:?usage: hack/restart.sh [--kill] <name>}
cmd_file=$PID_DIR/$name.cmd
[ -f "$cmd_file" ] || fail "no saved command line for $name ($cmd_file): start the cluster with hack/up.sh"
mapfile -t cmd <"$cmd_file"
if alive "$name"; then
  pid=$(cat "$PID_DIR/$name.pid")
  kill "-$signal" "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  say "stopped $name (pid $pid, SIG$signal)"
fi
# Its own session, so that a signal to the caller (Ctrl-C on a benchmark) does not reach it.
setsid "${cmd[@]}" >>"$LOG_DIR/$name.log" 2>&1 &
echo $! >"$PID_DIR/$name.pid"
say "restarted $name (pid $!)"
