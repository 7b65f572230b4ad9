#!/bin/bash
# up.sh — bring up Canopy's loopback-only GlusterFS test bed, idempotently.
#
# What it makes (everything on 127.0.0.1):
#   * glusterd on 127.0.0.1:24007 (config: glusterd.vol next to this script)
#   * $GL_VOL: replica 3 arbiter 1, bricks b1 b2 b3 under $GL_BASE
#   * $GL_MNT: a FUSE mount of $GL_VOL (for writes that create pending heals)
#   * (GL_GEOREP=1) $GL_SEC_VOL (1 brick) and the geo-replication session
#     $GL_VOL -> $GL_HOST::$GL_SEC_VOL over a private sshd on
#     127.0.0.1:$GL_SSH_PORT (root, key auth)
#
# Re-running is safe: what is up is left alone; a stopped volume is started,
# dead bricks are restarted ("volume start force"), a stopped, paused or
# faulty geo-replication session is (re)started.
#
# Missing packages (glusterfs-server, openssh-server) are installed with
# apt-get. PIDs of the processes this script starts itself (glusterd, sshd,
# the FUSE client) are recorded under $GL_STATE/pids; bricks, self-heal
# daemons and gsyncd are started by glusterd, which records them in its own
# pid files under /var/run/gluster. down.sh stops only those recorded PIDs.
#
# stdout: KEY=VALUE lines for test harnesses (STARTED_GLUSTERD=1 when this
# run started glusterd). Progress and errors go to stderr.
#
# Environment (defaults):
#   GL_HOST        brick host name; must resolve to 127.0.0.1 and must not be
#                  localhost/127.0.0.1 (the CLI rejects those). Default: the
#                  machine's host name if it resolves to 127.0.0.1, else the
#                  alias canopy-gluster-lo, appended to /etc/hosts if missing.
#   GL_BASE=/srv/canopy-gluster        brick directories
#   GL_VOL=canopyrep                   replica volume (geo-rep primary)
#   GL_SEC_VOL=canopygeo               geo-rep secondary volume
#   GL_GEOREP=1                        0 skips sshd and geo-replication
#   GL_SSH_PORT=2222                   private sshd port (127.0.0.1 only)
#   GL_WAIT_GEOREP=90                  seconds to wait for Active workers
#   GL_STATE=/run/canopy-gluster-testbed   pid records, sshd config, env file
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
GL_BASE=${GL_BASE:-/srv/canopy-gluster}
GL_VOL=${GL_VOL:-canopyrep}
GL_SEC_VOL=${GL_SEC_VOL:-canopygeo}
GL_GEOREP=${GL_GEOREP:-1}
GL_SSH_PORT=${GL_SSH_PORT:-2222}
GL_WAIT_GEOREP=${GL_WAIT_GEOREP:-90}
GL_STATE=${GL_STATE:-/run/canopy-gluster-testbed}
GL_MNT=${GL_MNT:-$GL_STATE/mnt}
PIDS=$GL_STATE/pids
# Daemons get a clean environment: gsyncd is a python script found through
# PATH and must not pick up a virtualenv python from the caller.
CLEAN_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root)

log() { echo "[gluster-testbed up] $*" >&2; }
die() { echo "[gluster-testbed up] ERROR: $*" >&2; exit 1; }
gl() { (cd / && timeout 120 gluster --mode=script "$@"); }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { if [ -s "$1" ]; then cat "$1"; fi; }
# wait_for SECONDS CMD...: run CMD every 0.2 s until it succeeds or time is up.
wait_for() {
  local end=$((SECONDS + $1)); shift
  while :; do
    "$@" && return 0
    [ $SECONDS -ge $end ] && return 1
    sleep 0.2
  done
}

[ "$(id -u)" = 0 ] || die "must run as root"

# ------------------------------------------------------------------ packages
need=()
command -v glusterd >/dev/null 2>&1 || need+=(glusterfs-server)
[ "$GL_GEOREP" = 1 ] && ! [ -x /usr/sbin/sshd ] && need+=(openssh-server)
[ "$GL_GEOREP" = 1 ] && ! command -v rsync >/dev/null 2>&1 && need+=(rsync)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q install -y \
      --no-install-recommends "${need[@]}" >&2
  }
  apt_install || { apt-get -o DPkg::Lock::Timeout=600 -q update >&2 && apt_install; } ||
    die "apt-get install ${need[*]} failed"
fi
for b in glusterd gluster glusterfsd glusterfs; do
  command -v $b >/dev/null || die "$b missing after install"
done
mkdir -p "$GL_STATE" "$PIDS" /var/log/glusterfs /var/run/gluster

# ------------------------------------------------------------------ host name
resolves_to_lo() { [ "$(getent ahostsv4 "$1" 2>/dev/null | awk 'NR==1{print $1}')" = 127.0.0.1 ]; }
if [ -z "${GL_HOST:-}" ]; then
  if [ "$(hostname)" != localhost ] && resolves_to_lo "$(hostname)"; then
    GL_HOST=$(hostname)
  else
    GL_HOST=canopy-gluster-lo
    if ! resolves_to_lo "$GL_HOST"; then
      log "adding '127.0.0.1 $GL_HOST' to /etc/hosts"
      echo "127.0.0.1 $GL_HOST" >>/etc/hosts
    fi
  fi
fi
resolves_to_lo "$GL_HOST" || die "GL_HOST=$GL_HOST does not resolve to 127.0.0.1"
case "$GL_HOST" in localhost | 127.0.0.1) die "GL_HOST must not be localhost or 127.0.0.1" ;; esac

cat >"$GL_STATE/testbed.env" <<EOF
GL_HOST=$GL_HOST
GL_BASE=$GL_BASE
GL_VOL=$GL_VOL
GL_SEC_VOL=$GL_SEC_VOL
GL_GEOREP=$GL_GEOREP
GL_SSH_PORT=$GL_SSH_PORT
GL_MNT=$GL_MNT
EOF

# ------------------------------------------------------------------ glusterd
STARTED_GLUSTERD=0
glusterd_answers() { gl pool list >/dev/null 2>&1; }
if alive "$(pid_of "$PIDS/glusterd.pid")"; then
  log "glusterd already running (pid $(pid_of "$PIDS/glusterd.pid"))"
elif glusterd_answers; then
  # Someone else's glusterd: use it, but it is not ours to stop.
  log "a glusterd not started by this script answers; using it (down.sh will leave it)"
else
  rm -f "$PIDS/glusterd.pid"
  "${CLEAN_ENV[@]}" /usr/sbin/glusterd -f "$HERE/glusterd.vol" -p "$PIDS/glusterd.pid"
  wait_for 30 glusterd_answers || die "glusterd did not answer within 30 s; see /var/log/glusterfs/glusterd.log"
  STARTED_GLUSTERD=1
  log "glusterd up (pid $(pid_of "$PIDS/glusterd.pid"))"
fi

# ------------------------------------------------------------------ volumes
vol_exists() { gl volume info "$1" >/dev/null 2>&1; }
vol_started() { gl volume info "$1" 2>/dev/null | grep -q '^Status: Started'; }
vol_all_online() { # every brick and daemon of the volume online?
  { gl --xml volume status "$1" 2>/dev/null || true; } | python3 -c '
import sys, xml.etree.ElementTree as E
try: r = E.parse(sys.stdin).getroot()
except Exception: sys.exit(1)
nodes = list(r.iter("node"))
sys.exit(0 if nodes and all(n.findtext("status") == "1" for n in nodes) else 1)'
}
ensure_volume() { # name create-args...
  local v=$1; shift
  if ! vol_exists "$v"; then
    log "creating volume $v"
    gl volume create "$v" "$@" force >&2
  fi
  if ! vol_started "$v"; then
    log "starting volume $v"
    gl volume start "$v" >&2
  elif ! vol_all_online "$v"; then
    log "volume $v has offline bricks or daemons: volume start force"
    gl volume start "$v" force >&2
  fi
  wait_for 30 vol_all_online "$v" || die "volume $v: not all bricks online after 30 s"
}

mkdir -p "$GL_BASE/b1" "$GL_BASE/b2" "$GL_BASE/b3"
ensure_volume "$GL_VOL" replica 3 arbiter 1 \
  "$GL_HOST:$GL_BASE/b1/$GL_VOL" "$GL_HOST:$GL_BASE/b2/$GL_VOL" "$GL_HOST:$GL_BASE/b3/$GL_VOL"

# ------------------------------------------------------------------ FUSE mount
mounted() { awk -v m="$GL_MNT" '$2 == m && $3 == "fuse.glusterfs" {f=1} END {exit !f}' /proc/mounts; }
mount_works() { mounted && timeout 10 stat -f "$GL_MNT" >/dev/null 2>&1; }
# A FUSE mount whose client died (a killed run, a restarted glusterd) is
# still listed but answers ENOTCONN, even to mkdir: unmount it before touching
# the path. Any leftover mount on the path is a candidate, whatever its type.
if awk -v m="$GL_MNT" '$2 == m {f=1} END {exit !f}' /proc/mounts && ! mount_works; then
  log "stale mount on $GL_MNT: unmounting"
  umount -l "$GL_MNT" || umount -f "$GL_MNT" || true
fi
mkdir -p "$GL_MNT"
if ! mounted; then
  rm -f "$PIDS/fuse.pid"
  "${CLEAN_ENV[@]}" glusterfs --volfile-server="$GL_HOST" --volfile-id="$GL_VOL" \
    --pid-file="$PIDS/fuse.pid" --log-file=/var/log/glusterfs/canopy-testbed-mnt.log "$GL_MNT"
  wait_for 20 mount_works || die "FUSE mount of $GL_VOL on $GL_MNT did not come up"
  log "mounted $GL_VOL on $GL_MNT (pid $(pid_of "$PIDS/fuse.pid"))"
fi

# ------------------------------------------------------------------ geo-rep
if [ "$GL_GEOREP" = 1 ]; then
  mkdir -p "$GL_BASE/s1"
  ensure_volume "$GL_SEC_VOL" "$GL_HOST:$GL_BASE/s1/$GL_SEC_VOL"

  if ! alive "$(pid_of "$PIDS/sshd.pid")"; then
    ls /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_rsa_key >/dev/null 2>&1 || ssh-keygen -A >&2
    cat >"$GL_STATE/sshd_config" <<EOF
# generated by deploy/testbed/gluster/up.sh: sshd for geo-replication, loopback only
Port $GL_SSH_PORT
ListenAddress 127.0.0.1
PidFile $PIDS/sshd.pid
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_rsa_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
    mkdir -p /run/sshd
    rm -f "$PIDS/sshd.pid"
    "${CLEAN_ENV[@]}" /usr/sbin/sshd -f "$GL_STATE/sshd_config"
    wait_for 10 test -s "$PIDS/sshd.pid" || die "sshd did not start"
    log "sshd up on 127.0.0.1:$GL_SSH_PORT (pid $(pid_of "$PIDS/sshd.pid"))"
  fi
  # root -> root@$GL_HOST key login, used by "create push-pem".
  mkdir -p /root/.ssh && chmod 700 /root/.ssh
  [ -f /root/.ssh/id_rsa ] || ssh-keygen -q -t rsa -b 3072 -N '' -f /root/.ssh/id_rsa
  touch /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys
  grep -qF "$(cut -d' ' -f2 /root/.ssh/id_rsa.pub)" /root/.ssh/authorized_keys ||
    cat /root/.ssh/id_rsa.pub >>/root/.ssh/authorized_keys
  for h in "$GL_HOST" 127.0.0.1; do
    ssh-keygen -F "[$h]:$GL_SSH_PORT" >/dev/null 2>&1 ||
      ssh-keyscan -p "$GL_SSH_PORT" -t ed25519,rsa "$h" 2>/dev/null >>/root/.ssh/known_hosts
  done
  ssh -p "$GL_SSH_PORT" -o BatchMode=yes "root@$GL_HOST" true || die "ssh root@$GL_HOST -p $GL_SSH_PORT fails"

  SEC="$GL_HOST::$GL_SEC_VOL"
  SESSION_DIR=/var/lib/glusterd/geo-replication/${GL_VOL}_${GL_HOST}_${GL_SEC_VOL}
  [ -s /var/lib/glusterd/geo-replication/common_secret.pem.pub ] || gl system:: execute gsec_create >&2
  georep_states() { # one worker status per line
    { gl --xml volume geo-replication "$GL_VOL" "$SEC" status 2>/dev/null || true; } | python3 -c '
import sys, xml.etree.ElementTree as E
try: r = E.parse(sys.stdin).getroot()
except Exception: sys.exit(0)
for p in r.iter("pair"): print(p.findtext("status"))'
  }
  if [ -z "$(georep_states)" ]; then
    log "creating geo-rep session $GL_VOL -> $SEC (takes ~30 s)"
    gl volume geo-replication "$GL_VOL" "$SEC" create ssh-port "$GL_SSH_PORT" push-pem >&2
  fi
  # gluster 10.3 does not persist "create ssh-port N" into the session
  # config: without this the monitor connects to port 22.
  grep -qx "ssh-port = $GL_SSH_PORT" "$SESSION_DIR/gsyncd.conf" 2>/dev/null ||
    gl volume geo-replication "$GL_VOL" "$SEC" config ssh-port "$GL_SSH_PORT" >/dev/null
  # push-pem installs the session's key for root through a glusterd hook
  # that runs after "create" returns; a "start" before that leaves the
  # workers Created for good.
  key_installed() {
    local k; k=$(awk '{print $2}' /var/lib/glusterd/geo-replication/secret.pem.pub 2>/dev/null)
    [ -n "$k" ] && grep -qF "$k" /root/.ssh/authorized_keys
  }
  wait_for 30 key_installed || log "WARNING: geo-rep key not in /root/.ssh/authorized_keys after 30 s"
  case "$(georep_states | sort -u | tr '\n' ' ')" in
    *Faulty* | *Initializing*)
      log "geo-rep session faulty: stop force + start"
      gl volume geo-replication "$GL_VOL" "$SEC" stop force >&2 || true ;;
  esac
  georep_ready() { # every worker Active or Passive
    local s; s=$(georep_states)
    [ -n "$s" ] && ! grep -qvE '^(Active|Passive)$' <<<"$s"
  }
  end=$((SECONDS + GL_WAIT_GEOREP)); last_start=-100
  until georep_ready; do
    case "$(georep_states | sort -u | tr '\n' ' ')" in
      *Paused*) gl volume geo-replication "$GL_VOL" "$SEC" resume >&2 || true ;;
      *Created* | *Stopped*)
        # A start can fail to take (see above): retry every 10 s.
        if [ $((SECONDS - last_start)) -ge 10 ]; then
          gl volume geo-replication "$GL_VOL" "$SEC" start >&2 || true
          last_start=$SECONDS
        fi ;;
    esac
    if [ $SECONDS -ge $end ]; then
      log "WARNING: geo-rep workers not all Active/Passive after ${GL_WAIT_GEOREP}s: $(georep_states | sort | uniq -c | tr -s ' \n' ' ')"
      break
    fi
    sleep 1
  done
  log "geo-rep $GL_VOL -> $SEC: $(georep_states | sort | uniq -c | tr -s ' \n' ' ')"
fi

# ------------------------------------------------------------------ report
echo "GL_HOST=$GL_HOST"
echo "GL_VOL=$GL_VOL"
echo "GL_MNT=$GL_MNT"
echo "GL_STATE=$GL_STATE"
echo "STARTED_GLUSTERD=$STARTED_GLUSTERD"
echo "GLUSTERD_PID=$(pid_of "$PIDS/glusterd.pid")"
echo "FUSE_PID=$(pid_of "$PIDS/fuse.pid")"
if [ "$GL_GEOREP" = 1 ]; then
  echo "GL_SEC_VOL=$GL_SEC_VOL"
  echo "GEOREP_SECONDARY=$GL_HOST::$GL_SEC_VOL"
  echo "SSHD_PID=$(pid_of "$PIDS/sshd.pid")"
fi
log "done"
