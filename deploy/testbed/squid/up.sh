#!/bin/bash
# up.sh [PORT...] — bring up private squid instances on 127.0.0.1 for
# Canopy's squid discovery tests, idempotently. Without ports it only makes
# sure squid is installed (deploy/testbed/up.sh calls it so; the test
# packages' TestMains start the instances they use, each under its own
# SQUID_BASE and ports).
#
# Each instance lives in $SQUID_BASE/PORT/ (squid.conf rendered from
# squid.conf.tmpl next to this script, cache/, logs/access.log,
# logs/cache.log, squid.pid) and runs as `squid -N -f squid.conf -n
# canopyPORT`: one process, no daemon fork, no SMP kids, so the recorded PID
# is the whole instance. An instance already running from the same
# directory is left alone.
#
# Debian's squid package is installed when missing. Its maintainer scripts
# would start the system squid on port 3128: a policy-rc.d that denies
# service starts is put in place for the install (and removed after it, if
# this script created it), so nothing but the instances below ever runs.
#
# stdout, one line per instance, for test harnesses:
#   SQUID PORT=<port> PID=<pid> STARTED=<1 if this run started it> DIR=<dir>
# Progress and errors go to stderr. Exit status is non-zero if any
# instance could not be brought up.
#
# Environment: SQUID_BASE (default /run/canopy-squid-testbed),
# SQUID_USER (default proxy), SQUID_WAIT (seconds, default 30).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SQUID_BASE=${SQUID_BASE:-/run/canopy-squid-testbed}
SQUID_USER=${SQUID_USER:-proxy}
SQUID_WAIT=${SQUID_WAIT:-30}
SQUID=/usr/sbin/squid

log() { echo "[squid-testbed up] $*" >&2; }
die() { echo "[squid-testbed up] ERROR: $*" >&2; exit 1; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
# ours PID DIR: PID is a squid running from DIR's config.
ours() { alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2/squid.conf"; }

[ "$(id -u)" = 0 ] || die "must run as root (squid drops to $SQUID_USER)"
# Ports inside the ephemeral range can be held at any moment by some
# outgoing connection ("Address already in use"): refuse them.
read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range || { EPH_LO=32768; EPH_HI=60999; }
for p in "$@"; do
  [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -ge 1024 ] && [ "$p" -le 65535 ] || die "bad port '$p' (1024-65535)"
  if [ "$p" -ge "$EPH_LO" ] && [ "$p" -le "$EPH_HI" ]; then
    die "port $p is in the ephemeral range $EPH_LO-$EPH_HI (net.ipv4.ip_local_port_range): pick one outside it"
  fi
done

# ------------------------------------------------------------------ package
# Test packages may run this script in parallel: one installs, the others
# wait for it (and the policy-rc.d it may have put in place stays until the
# install is over).
mkdir -p /run/lock
exec 9>/run/lock/canopy-squid-testbed-install.lock
flock -w 900 9 || die "waited 15 min for another up.sh's squid install"
if ! [ -x "$SQUID" ]; then
  POLICY=/usr/sbin/policy-rc.d
  made_policy=0
  if ! [ -e "$POLICY" ]; then
    printf '#!/bin/sh\n# canopy squid test bed: no service starts during the install\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    made_policy=1
  fi
  cleanup_policy() { if [ "$made_policy" = 1 ]; then rm -f "$POLICY"; fi; }
  trap cleanup_policy EXIT
  log "installing squid (service start denied by $POLICY)"
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q install -y --no-install-recommends squid >&2
  }
  apt_install || { apt-get -o DPkg::Lock::Timeout=600 -q update >&2 && apt_install; } || die "apt-get install squid failed"
  cleanup_policy
  trap - EXIT
  [ -x "$SQUID" ] || die "$SQUID missing after install"
fi
flock -u 9
exec 9>&-
id "$SQUID_USER" >/dev/null 2>&1 || die "user $SQUID_USER does not exist"

# ------------------------------------------------------------------ instances
mkdir -p "$SQUID_BASE"
status=0
for PORT in "$@"; do
  DIR=$SQUID_BASE/$PORT
  mkdir -p "$DIR/cache" "$DIR/logs"
  PID=$(cat "$DIR/up.pid" 2>/dev/null || true)
  if ours "$PID" "$DIR"; then
    log "squid on 127.0.0.1:$PORT already running (pid $PID)"
    echo "SQUID PORT=$PORT PID=$PID STARTED=0 DIR=$DIR"
    continue
  fi
  rm -f "$DIR/up.pid" "$DIR/squid.pid"
  sed -e "s|@PORT@|$PORT|g" -e "s|@DIR@|$DIR|g" "$HERE/squid.conf.tmpl" >"$DIR/squid.conf"
  if [ -f "$DIR/extra.conf" ]; then
    { echo; echo "# --- $DIR/extra.conf"; cat "$DIR/extra.conf"; } >>"$DIR/squid.conf"
  fi
  chown "$SQUID_USER" "$DIR"
  chown -R "$SQUID_USER" "$DIR/cache" "$DIR/logs"
  NAME=canopy$PORT # service name: keeps the instances' shared memory apart
  if ! "$SQUID" -k parse -f "$DIR/squid.conf" -n "$NAME" >"$DIR/logs/parse.log" 2>&1; then
    log "squid.conf for port $PORT does not parse:"; tail -20 "$DIR/logs/parse.log" >&2
    status=1; continue
  fi
  if ! [ -d "$DIR/cache/00" ]; then
    "$SQUID" -z -N -f "$DIR/squid.conf" -n "$NAME" >>"$DIR/logs/parse.log" 2>&1 ||
      { log "squid -z failed for port $PORT"; tail -20 "$DIR/logs/parse.log" >&2; status=1; continue; }
  fi
  OFFSET=$(stat -c %s "$DIR/logs/cache.log" 2>/dev/null || echo 0)
  setsid "$SQUID" -N -f "$DIR/squid.conf" -n "$NAME" </dev/null >>"$DIR/logs/squid.out" 2>&1 &
  PID=$!
  echo "$PID" >"$DIR/up.pid"
  # Ready when the process logs that it accepts on the port (no probe
  # request, so access.log holds only what tests send).
  end=$((SECONDS + SQUID_WAIT))
  ready=0
  while [ $SECONDS -lt $end ]; do
    if ! alive "$PID"; then break; fi
    if tail -c +"$((OFFSET + 1))" "$DIR/logs/cache.log" 2>/dev/null |
      grep -q "Accepting HTTP Socket connections at .*local=127.0.0.1:$PORT "; then
      ready=1; break
    fi
    sleep 0.1
  done
  if [ $ready != 1 ]; then
    log "squid on port $PORT did not come up within ${SQUID_WAIT}s; tail of cache.log:"
    tail -20 "$DIR/logs/cache.log" >&2 || true
    if alive "$PID"; then kill -KILL "$PID" 2>/dev/null || true; fi
    rm -f "$DIR/up.pid"
    status=1; continue
  fi
  log "squid up on 127.0.0.1:$PORT (pid $PID)"
  echo "SQUID PORT=$PORT PID=$PID STARTED=1 DIR=$DIR"
done
exit $status
