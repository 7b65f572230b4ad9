#!/usr/bin/env bash
# deploy/testbed/openstack/down.sh -- stop what up.sh started, by the PIDs it
# recorded. Each $OSTB_DIR/run/NAME.pid holds "PID STARTTIME"; a PID is
# signalled only if its start time still matches, so a recycled PID that now
# belongs to something else is never touched.
#   ./down.sh           stop the services (state kept: the next up.sh skips migrations)
#   ./down.sh --purge   also delete the state dir ($OSTB_DIR, default /var/lib/canopy-testbed/openstack)
set -uo pipefail
BASE=${OSTB_DIR:-/var/lib/canopy-testbed/openstack}
RUN=$BASE/run
if [ ! -d "$RUN" ]; then
  echo "nothing to stop ($RUN missing)"
else
  starttime() { awk '{sub(/.*\) /,""); print $20}' "/proc/$1/stat" 2>/dev/null; }
  stop() {  # name [signal]
    local name=$1 sig=${2:-TERM} f=$RUN/$1.pid pid st i
    [ -f "$f" ] || return 0
    read -r pid st < "$f"
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then rm -f "$f"; return 0; fi
    if [ "$(starttime "$pid")" != "$st" ]; then echo "pid $pid is no longer $name (start time differs), leaving it"; rm -f "$f"; return 0; fi
    kill -"$sig" "$pid" 2>/dev/null
    for i in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then echo "$name (pid $pid) ignored SIG$sig for 20 s, sending KILL"; kill -KILL "$pid" 2>/dev/null; sleep 0.5; fi
    echo "stopped $name (pid $pid)"
    rm -f "$f"
  }
  rm -f "$BASE/.ready"
  # APIs and workers first (in parallel: each takes 1 to 10 s to stop
  # gracefully), then the message bus, then the database.
  for s in nova-api nova-compute nova-scheduler nova-conductor neutron-server glance-api placement-api keystone; do
    stop "$s" TERM &
  done
  wait
  stop rabbitmq TERM
  stop epmd TERM
  stop postgres INT      # SIGINT = PostgreSQL's "fast" shutdown
  for f in "$RUN"/*.pid; do [ -e "$f" ] && stop "$(basename "$f" .pid)" TERM; done
fi
if [ "${1:-}" = "--purge" ] && [ -d "$BASE" ]; then
  rm -rf --one-file-system "$BASE"
  echo "removed $BASE"
fi
exit 0
