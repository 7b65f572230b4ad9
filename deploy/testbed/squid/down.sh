#!/bin/bash
# down.sh [--purge] [PORT...] — stop squid instances that up.sh started in
# $SQUID_BASE; without ports, every instance recorded anywhere under
# $SQUID_BASE (the test packages use subdirectories of it), which cleans up
# after a test run that died before its TestMain could.
#
# Only the PID recorded in $SQUID_BASE/PORT/up.pid is signalled, and only if
# its command line names that instance's squid.conf (a recycled PID is left
# alone): SIGTERM, then SIGKILL if it is still alive after 10 s. Caches and
# logs stay for inspection; --purge removes the instance directories too.
set -uo pipefail
SQUID_BASE=${SQUID_BASE:-/run/canopy-squid-testbed}
PURGE=0
ports=()
for a in "$@"; do
  case "$a" in
    --purge) PURGE=1 ;;
    *) ports+=("$a") ;;
  esac
done
log() { echo "[squid-testbed down] $*" >&2; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
ours() { alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2/squid.conf"; }

dirs=()
for p in "${ports[@]}"; do dirs+=("$SQUID_BASE/$p"); done
if [ ${#ports[@]} -eq 0 ] && [ -d "$SQUID_BASE" ]; then
  while IFS= read -r f; do dirs+=("$(dirname "$f")"); done < <(find "$SQUID_BASE" -maxdepth 3 -name up.pid)
fi
for DIR in "${dirs[@]}"; do
  PORT=$(basename "$DIR")
  PID=$(cat "$DIR/up.pid" 2>/dev/null || true)
  if ! ours "$PID" "$DIR"; then
    log "port $PORT: nothing of ours running"
  else
    kill -TERM "$PID" 2>/dev/null
    for _ in $(seq 1 100); do alive "$PID" || break; sleep 0.1; done
    if alive "$PID"; then
      log "port $PORT: pid $PID still alive after 10 s: SIGKILL"
      kill -KILL "$PID" 2>/dev/null
    fi
    log "port $PORT: stopped pid $PID"
  fi
  rm -f "$DIR/up.pid"
  if [ $PURGE = 1 ]; then rm -rf "$DIR"; fi
done
exit 0
