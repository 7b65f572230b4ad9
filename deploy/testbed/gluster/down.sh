#!/bin/bash
# down.sh [--purge] — stop the test bed that up.sh brought up.
#
# Stops recorded PIDs only, never processes found by a program name:
#   * $GL_STATE/pids/{fuse,sshd,glusterd}.pid — written when up.sh started them
#   * glusterd's own records for the test bed's volumes and session:
#     /var/run/gluster/vols/<vol>/*.pid (bricks),
#     /var/run/gluster/shd/<vol>/*.pid (self-heal daemon),
#     /var/run/gluster/gsyncd-<vol>-<host>-<secvol>.pid (geo-rep monitor)
#   * the geo-rep session's aux-gfid mounts, whose command line names the
#     session's log directory (see below)
# Each PID is checked against the program it should be (/proc/PID/cmdline)
# before it is signalled, so a recycled PID is left alone. SIGTERM first,
# SIGKILL for what is still alive 10 s later.
#
# Before that, while glusterd still answers, the geo-rep session is stopped
# through the CLI (its workers exit) and the FUSE mount is unmounted.
# Volumes stay "Started" in glusterd's store: the next up.sh gets the bricks
# back from glusterd itself.
#
# --purge also deletes the test volumes' state, the geo-rep session and the
# brick directories, so that the next up.sh starts from nothing.
set -uo pipefail
GL_STATE=${GL_STATE:-/run/canopy-gluster-testbed}
# shellcheck disable=SC1091
[ -f "$GL_STATE/testbed.env" ] && . "$GL_STATE/testbed.env"
GL_HOST=${GL_HOST:-$(hostname)}
GL_BASE=${GL_BASE:-/srv/canopy-gluster}
GL_VOL=${GL_VOL:-canopyrep}
GL_SEC_VOL=${GL_SEC_VOL:-canopygeo}
GL_MNT=${GL_MNT:-$GL_STATE/mnt}
PIDS=$GL_STATE/pids
PURGE=0; [ "${1:-}" = --purge ] && PURGE=1
SESSION=${GL_VOL}_${GL_HOST}_${GL_SEC_VOL}

log() { echo "[gluster-testbed down] $*" >&2; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { if [ -s "$1" ]; then cat "$1" 2>/dev/null; fi; }
gl() { (cd / && timeout 60 gluster --mode=script "$@"); }
# is PID WORD: PID is alive and its command line contains WORD.
is() { alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"; }

GLUSTERD_PID=$(pid_of "$PIDS/glusterd.pid")

# 1. geo-rep session, through glusterd (only if it is ours and answers)
if is "$GLUSTERD_PID" glusterd && [ -d "/var/lib/glusterd/geo-replication/$SESSION" ]; then
  gl volume geo-replication "$GL_VOL" "$GL_HOST::$GL_SEC_VOL" stop force >/dev/null 2>&1 &&
    log "geo-rep session stopped"
fi

# 2. our FUSE mount
if awk -v m="$GL_MNT" '$2 == m {f=1} END {exit !f}' /proc/mounts; then
  umount "$GL_MNT" 2>/dev/null || umount -l "$GL_MNT"
  log "unmounted $GL_MNT"
fi

# 3. recorded PIDs, each with the word its command line must contain
TARGETS=()
add() { # pid word
  if is "$1" "$2"; then TARGETS+=("$1"); fi
}
add "$(pid_of "$PIDS/fuse.pid")" "$GL_MNT"
add "$(pid_of "/var/run/gluster/gsyncd-${GL_VOL}-${GL_HOST}-${GL_SEC_VOL}.pid")" gsyncd
for v in "$GL_VOL" "$GL_SEC_VOL"; do
  for f in /var/run/gluster/vols/"$v"/*.pid /var/run/gluster/shd/"$v"/*.pid; do
    [ -f "$f" ] && add "$(pid_of "$f")" "$v"
  done
done
# gsyncd's aux-gfid mounts of this session: glusterfs clients that a
# geo-rep worker starts and lazily unmounts; they outlive workers killed by
# "stop force". Their only record is their command line, which names the
# session's own log directory; nothing else on the machine matches it.
for d in /proc/[0-9]*; do
  c=$(tr '\0' ' ' 2>/dev/null <"$d/cmdline") || continue
  case "$c" in
    *--aux-gfid-mount*"/geo-replication/$SESSION/"* | *--aux-gfid-mount*"/geo-replication-secondaries/$SESSION/"*)
      add "${d#/proc/}" "$SESSION" ;;
  esac
done
add "$GLUSTERD_PID" glusterd
add "$(pid_of "$PIDS/sshd.pid")" sshd

if [ ${#TARGETS[@]} -gt 0 ]; then
  log "SIGTERM ${TARGETS[*]}"
  kill -TERM "${TARGETS[@]}" 2>/dev/null
  left=("${TARGETS[@]}")
  for _ in $(seq 1 100); do
    still=()
    for p in "${left[@]}"; do alive "$p" && still+=("$p"); done
    left=("${still[@]}")
    [ ${#left[@]} -eq 0 ] && break
    sleep 0.1
  done
  if [ ${#left[@]} -gt 0 ]; then
    log "SIGKILL ${left[*]}"
    kill -KILL "${left[@]}" 2>/dev/null
  fi
else
  log "nothing of the test bed is running"
fi
rm -f "$PIDS/glusterd.pid" "$PIDS/sshd.pid" "$PIDS/fuse.pid"

# 4. optional purge
if [ $PURGE = 1 ]; then
  rm -rf "/var/lib/glusterd/vols/$GL_VOL" "/var/lib/glusterd/vols/$GL_SEC_VOL" \
    "/var/lib/glusterd/geo-replication/$SESSION" \
    "/var/lib/misc/gluster/gsyncd/$SESSION" \
    "/var/run/gluster/vols/$GL_VOL" "/var/run/gluster/vols/$GL_SEC_VOL" \
    "/var/run/gluster/shd/$GL_VOL" "/var/run/gluster/shd/$GL_SEC_VOL" \
    "$GL_BASE/b1" "$GL_BASE/b2" "$GL_BASE/b3" "$GL_BASE/s1"
  log "purged the test volumes' state and bricks under $GL_BASE"
fi
exit 0
