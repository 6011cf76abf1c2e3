# shellcheck shell=bash
# Runs long builds side by side and reports on them; sourced by hack/build.sh and
# hack/build-control-plane.sh. Each job's output goes to its own log. One line is printed
# when a job starts and when it ends (with its time), and every minute one line per job still
# running (its time so far and the last line of its log), so a long build is never silent.
# A job that fails stops the others (each job runs in a process group of its own, stopped
# whole, by its id), and its log's tail is printed. Interrupting the caller stops every job.
#
#   jobs_start <name> <log> <command...>   starts a job
#   jobs_wait                              waits for every job; fails if one failed
# JOBS_TAG names the caller in the lines printed (stderr).

_jobs_names=()
_jobs_pids=()
_jobs_logs=()
_jobs_t0=()
_jobs_left=()

_jobs_say() { echo "[${JOBS_TAG:-build}] $*" >&2; }

# _jobs_time <seconds>: 75 -> 1m15s
_jobs_time() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

jobs_start() {
  local name=$1 log=$2
  shift 2
  mkdir -p "$(dirname "$log")"
  set -m
  "$@" >"$log" 2>&1 </dev/null &
  set +m
  _jobs_names+=("$name")
  _jobs_pids+=($!)
  _jobs_logs+=("$log")
  _jobs_t0+=("$SECONDS")
  _jobs_left+=(yes)
  _jobs_say "$name: started (log: $log)"
}

# Stops every job still running (its whole process group).
_jobs_stop_all() {
  local i
  for i in "${!_jobs_pids[@]}"; do
    [ "${_jobs_left[$i]}" = yes ] || continue
    kill -TERM -- "-${_jobs_pids[$i]}" 2>/dev/null || true
    wait "${_jobs_pids[$i]}" 2>/dev/null || true
    _jobs_left[i]=""
    _jobs_say "${_jobs_names[$i]}: stopped"
  done
}
trap _jobs_stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

jobs_wait() {
  local i running next_report=$((SECONDS + 60)) status last
  while :; do
    running=0
    for i in "${!_jobs_pids[@]}"; do
      [ "${_jobs_left[$i]}" = yes ] || continue
      if kill -0 "${_jobs_pids[$i]}" 2>/dev/null; then
        running=$((running + 1))
        continue
      fi
      status=0
      wait "${_jobs_pids[$i]}" || status=$?
      _jobs_left[i]=""
      if [ $status -ne 0 ]; then
        _jobs_say "${_jobs_names[$i]}: FAILED after $(_jobs_time $((SECONDS - _jobs_t0[i]))) (exit $status); last lines of ${_jobs_logs[$i]}:"
        tail -n 60 "${_jobs_logs[$i]}" >&2
        _jobs_stop_all
        return 1
      fi
      _jobs_say "${_jobs_names[$i]}: done in $(_jobs_time $((SECONDS - _jobs_t0[i])))"
    done
    [ $running -gt 0 ] || return 0
    if [ $SECONDS -ge $next_report ]; then
      next_report=$((SECONDS + 60))
      for i in "${!_jobs_pids[@]}"; do
        [ "${_jobs_left[$i]}" = yes ] || continue
        last=$(tail -n 1 "${_jobs_logs[$i]}" 2>/dev/null | tr -d '\r\0' | cut -c 1-100)
        _jobs_say "${_jobs_names[$i]}: $(_jobs_time $((SECONDS - _jobs_t0[i]))) so far${last:+ ($last)}"
      done
    fi
    sleep 1
  done
}
