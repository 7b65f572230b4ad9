#!/bin/bash
# down.sh [--purge] — stop the HTCondor test pool that up.sh started.
#
# Only the condor_master recorded in $HTC_STATE/run/master.pid is
# signalled, and only if it is ours (its command line is condor_master and
# its environment names our CONDOR_CONFIG; a recycled PID is left alone).
# Its descendants (collector, negotiator, schedd, procd, shadows) are
# listed first; SIGTERM to the master shuts them down gracefully. If the
# master is still alive after 30 s it gets SIGQUIT (fast shutdown), then
# SIGKILL 10 s later; whatever of the listed descendants is left then is
# killed too. Worker masters started by tests (internal/condortest) are
# stopped by the tests themselves.
#
# Nothing was installed as a system service, so nothing is disabled here.
# The extracted HTCondor tree, the accounts and the state directory stay
# (the signing key with them); --purge also deletes the state directory.
set -uo pipefail
HTC_STATE=${HTC_STATE:-/var/lib/canopy-testbed/htcondor}
PIDFILE=$HTC_STATE/run/master.pid
CONF=$HTC_STATE/condor_config
PURGE=0; [ "${1:-}" = --purge ] && PURGE=1

log() { echo "[htcondor-testbed down] $*" >&2; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
ours() {
  alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'condor_master' &&
    tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF "CONDOR_CONFIG=$CONF"
}
# descendants PID: every process below PID, from /proc (bounded by the
# number of processes).
descendants() {
  local -A kids=()
  local d p pp
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    pp=$(awk '{print $4}' "$d/stat" 2>/dev/null) || continue
    [ -n "$pp" ] && kids[$pp]+=" $p"
  done
  local queue=("$1") out=() n=0
  while [ ${#queue[@]} -gt 0 ] && [ $n -lt 100000 ]; do
    p=${queue[0]}; queue=("${queue[@]:1}"); n=$((n + 1))
    for c in ${kids[$p]:-}; do out+=("$c"); queue+=("$c"); done
  done
  echo "${out[@]:-}"
}
# wait_gone SECONDS PID...: wait until none of the PIDs is alive.
wait_gone() {
  local end=$((SECONDS + $1)); shift
  while :; do
    local any=0 p
    for p in "$@"; do alive "$p" && any=1; done
    [ $any = 0 ] && return 0
    [ $SECONDS -ge $end ] && return 1
    sleep 0.2
  done
}

PID=$(cat "$PIDFILE" 2>/dev/null || true)
if ours "$PID"; then
  read -r -a KIDS <<<"$(descendants "$PID")"
  log "stopping condor_master pid $PID (and its ${#KIDS[@]} descendants)"
  kill -TERM "$PID" 2>/dev/null
  if ! wait_gone 30 "$PID"; then
    log "pid $PID still alive after 30 s: SIGQUIT"
    kill -QUIT "$PID" 2>/dev/null
    if ! wait_gone 10 "$PID"; then
      log "pid $PID still alive: SIGKILL"
      kill -KILL "$PID" 2>/dev/null
      wait_gone 5 "$PID"
    fi
  fi
  left=()
  for k in "${KIDS[@]}"; do
    # Only processes that are still what they were: HTCondor programs.
    if alive "$k" && tr '\0' ' ' <"/proc/$k/cmdline" 2>/dev/null | grep -q 'condor_'; then left+=("$k"); fi
  done
  if [ ${#left[@]} -gt 0 ] && ! wait_gone 10 "${left[@]}"; then
    log "SIGKILL left-over daemons ${left[*]}"
    for k in "${left[@]}"; do alive "$k" && kill -KILL "$k" 2>/dev/null; done
    wait_gone 5 "${left[@]}"
  fi
  log "stopped"
else
  log "nothing of ours running"
fi
rm -f "$PIDFILE"
if [ $PURGE = 1 ]; then
  rm -rf "$HTC_STATE"
  log "purged $HTC_STATE"
fi
exit 0
