# Helpers shared by the cluster's scripts (sourced; expects cluster-env.sh first).
# Every process is started with its PID saved under $PID_DIR and stopped by that PID, never
# by name, so that two clusters or other programs on the machine are never touched.

say() { echo "[${SCRIPT_TAG:-hack}] $*" >&2; }

# fail <message>: prints the message and the tail of every log, then exits 1.
fail() {
  echo "[${SCRIPT_TAG:-hack}] FAILED: $*" >&2
  for f in "$LOG_DIR"/*.log; do
    [ -f "$f" ] || continue
    echo "---- last lines of $f" >&2
    tail -n 25 "$f" >&2
  done
  exit 1
}

alive() { [ -f "$PID_DIR/$1.pid" ] && kill -0 "$(cat "$PID_DIR/$1.pid")" 2>/dev/null; }

# The processes of a running cluster, in the order hack/up.sh starts them.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd registry
  kubelet kube-proxy coredns)
# running_components: the ones whose saved PID is alive, one a line.
running_components() {
  local c
  for c in "${COMPONENTS[@]}"; do
    if alive "$c"; then echo "$c"; fi
  done
}

# start <name> <command...>: runs it in the background, logging to $LOG_DIR/<name>.log. The
# command line is saved beside the PID ($PID_DIR/<name>.cmd, one argument per line) so that
# tools can restart the same process (hack/restart.sh, benches/chaos.rs).
start() {
  local name=$1
  shift
  if alive "$name"; then
    say "$name already running (pid $(cat "$PID_DIR/$name.pid"))"
    return
  fi
  printf '%s\n' "$@" >"$PID_DIR/$name.cmd"
  "$@" >"$LOG_DIR/$name.log" 2>&1 &
  echo $! >"$PID_DIR/$name.pid"
  say "started $name (pid $!)"
}

# stop <name>: SIGTERM by saved PID, SIGKILL after 5 s.
stop() {
  local f=$PID_DIR/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    say "stopped $1 (pid $pid)"
  fi
  rm -f "$f" "$PID_DIR/$1.cmd"
}

# wait_for <what> <seconds> <command...>: retries the command until it succeeds.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "$what not ready after ${secs}s"
    sleep 0.2
  done
}

kc() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }
