#!/bin/bash
# up.sh — bring up a personal HTCondor pool on 127.0.0.1 for Canopy's
# integration tests, idempotently: one condor_master running COLLECTOR,
# NEGOTIATOR and SCHEDD as an unprivileged user, with IDTOKENS + FS security
# as in production (SEC_DEFAULT_AUTHENTICATION = REQUIRED). Worker startds
# are started by the tests themselves (internal/condortest.StartWorker).
#
# Where HTCondor comes from:
#   * CANOPY_HTCONDOR_TARBALL=/path/htcondor-*.tar.xz: a relocatable build.
#     It is checked against the SHA256SUMS file next to it and extracted
#     under $HTC_PREFIX (default /opt/canopy-testbed/htcondor), unless the
#     tree there was extracted from a tarball with the same hash.
#   * unset: an HTCondor already installed (condor_master on PATH).
# Runtime Debian packages the relocatable build needs are installed with
# apt-get, only those missing.
#
# Accounts: the `condor` system account (HTCondor wants one as soon as any
# of its programs runs as root, and the worker masters the tests start run
# as root) and $HTC_USER (default canopy-cm), an unprivileged user that
# runs the central manager's daemons, owns the pool signing key and
# submits the tests' jobs.
#
# State lives in $HTC_STATE (default /var/lib/canopy-testbed/htcondor, on
# local disk: the schedd's spool is there): condor_config, log/, spool/,
# passwords.d/POOL (the signing key), run/master.pid and `env`, the file
# the tests read (shell KEY=value lines, also printed on stdout).
#
# No system service is installed or enabled: the master is a child of
# nothing but this script, and down.sh stops it by its recorded PID.
#
# Environment: CANOPY_HTCONDOR_TARBALL, HTC_PREFIX, HTC_STATE, HTC_USER,
# HTC_PORT (collector port, default 29618, outside the ephemeral range),
# HTC_WAIT (seconds to wait for the schedd, default 60).
set -euo pipefail
HTC_PREFIX=${HTC_PREFIX:-/opt/canopy-testbed/htcondor}
HTC_STATE=${HTC_STATE:-/var/lib/canopy-testbed/htcondor}
HTC_USER=${HTC_USER:-canopy-cm}
HTC_PORT=${HTC_PORT:-29618}
HTC_WAIT=${HTC_WAIT:-60}
TRUST_DOMAIN=canopy.testbed
PIDFILE=$HTC_STATE/run/master.pid
CONF=$HTC_STATE/condor_config

log() { echo "[htcondor-testbed up] $*" >&2; }
die() { echo "[htcondor-testbed up] ERROR: $*" >&2; exit 1; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { if [ -s "$1" ]; then cat "$1"; fi; }
# ours PID: PID is a condor_master whose environment names our config.
ours() {
  alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'condor_master' &&
    tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF "CONDOR_CONFIG=$CONF"
}
# wait_for SECONDS CMD...: run CMD every 0.2 s until it succeeds or time is up.
wait_for() {
  local end=$((SECONDS + $1)); shift
  while :; do
    "$@" && return 0
    [ $SECONDS -ge $end ] && return 1
    sleep 0.2
  done
}

[ "$(id -u)" = 0 ] || die "must run as root (creates accounts, runs the pool as $HTC_USER)"
[[ "$HTC_PORT" =~ ^[0-9]+$ ]] && [ "$HTC_PORT" -ge 1024 ] && [ "$HTC_PORT" -le 65535 ] ||
  die "bad HTC_PORT '$HTC_PORT' (1024-65535)"
read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range || { EPH_LO=32768; EPH_HI=60999; }
if [ "$HTC_PORT" -ge "$EPH_LO" ] && [ "$HTC_PORT" -le "$EPH_HI" ]; then
  die "HTC_PORT $HTC_PORT is in the ephemeral range $EPH_LO-$EPH_HI: pick one outside it"
fi

# ------------------------------------------------------------------ packages
# What the relocatable build links against (see its NOTES); an installed
# HTCondor brought its own dependencies.
mkdir -p /run/lock
exec 9>/run/lock/canopy-htcondor-testbed.lock
flock -w 900 9 || die "waited 15 min for another htcondor up.sh"
if [ -n "${CANOPY_HTCONDOR_TARBALL:-}" ]; then
  pkgs=(libcurl4 libexpat1 libgomp1 libkrb5-3 libgssapi-krb5-2 libldap-2.5-0 libpcre2-8-0
    libsqlite3-0 libssl3 libuuid1 libx11-6 libxext6 libxss1 libzstd1 zlib1g xz-utils)
  # One dpkg-query for all: the installed ones.
  have=$(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null | awk '/ install ok installed$/ {print $1}')
  need=()
  for p in "${pkgs[@]}"; do
    grep -qxF "$p" <<<"$have" || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_install() {
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q install -y \
        --no-install-recommends "${need[@]}" >&2
    }
    apt_install || { apt-get -o DPkg::Lock::Timeout=600 -q update >&2 && apt_install; } ||
      die "apt-get install ${need[*]} failed"
  fi
fi

# ------------------------------------------------------------------ HTCondor
if [ -n "${CANOPY_HTCONDOR_TARBALL:-}" ]; then
  TB=$CANOPY_HTCONDOR_TARBALL
  [ -f "$TB" ] || die "CANOPY_HTCONDOR_TARBALL=$TB: no such file"
  SUMS=$(dirname "$TB")/SHA256SUMS
  [ -f "$SUMS" ] || die "no SHA256SUMS next to $TB"
  want=$(awk -v f="$(basename "$TB")" '{n=$2; sub(/^\*/, "", n)} n == f {print $1}' "$SUMS")
  [ -n "$want" ] || die "$SUMS has no line for $(basename "$TB")"
  got=$(sha256sum "$TB" | awk '{print $1}')
  [ "$got" = "$want" ] || die "$TB: sha256 $got, SHA256SUMS says $want"
  RELEASE=$HTC_PREFIX/htcondor-local
  if [ "$(cat "$HTC_PREFIX/.sha256" 2>/dev/null)" = "$got" ] && [ -x "$RELEASE/sbin/condor_master" ]; then
    log "HTCondor from $(basename "$TB") already extracted in $RELEASE"
  else
    ours "$(pid_of "$PIDFILE")" && die "the pool runs from $RELEASE and the tarball changed: run down.sh first"
    log "extracting $(basename "$TB") into $HTC_PREFIX"
    mkdir -p "$HTC_PREFIX"
    tmp=$(mktemp -d "$HTC_PREFIX/.extract.XXXXXX")
    tar -xJf "$TB" -C "$tmp" || { rm -rf "$tmp"; die "cannot extract $TB"; }
    [ -x "$tmp/htcondor-local/sbin/condor_master" ] || { rm -rf "$tmp"; die "$TB holds no htcondor-local/sbin/condor_master"; }
    rm -f "$HTC_PREFIX/.sha256"
    rm -rf "$RELEASE"
    mv "$tmp/htcondor-local" "$RELEASE"
    rmdir "$tmp"
    echo "$got" >"$HTC_PREFIX/.sha256"
  fi
  BIN=$RELEASE/bin SBIN=$RELEASE/sbin LIB=$RELEASE/lib LIBEXEC=$RELEASE/libexec
else
  master=$(command -v condor_master 2>/dev/null) ||
    die "CANOPY_HTCONDOR_TARBALL is unset and condor_master is not on PATH: set it to a relocatable HTCondor tarball (with SHA256SUMS next to it) or install HTCondor"
  SBIN=$(dirname "$(readlink -f "$master")")
  if q=$(command -v condor_q 2>/dev/null); then BIN=$(dirname "$(readlink -f "$q")"); else BIN=$(dirname "$SBIN")/bin; fi
  [ -x "$BIN/condor_q" ] || die "condor_master is $master but condor_q is not in $BIN"
  # The installation's own idea of its directories (its default config).
  cv() { env -u CONDOR_CONFIG "$BIN/condor_config_val" "$1" 2>/dev/null || true; }
  RELEASE=$(cv RELEASE_DIR); LIB=$(cv LIB); LIBEXEC=$(cv LIBEXEC)
  [ -n "$RELEASE" ] || RELEASE=$(dirname "$SBIN")
  [ -n "$LIB" ] || LIB=$RELEASE/lib
  [ -n "$LIBEXEC" ] || LIBEXEC=$RELEASE/libexec
  log "using the installed HTCondor: $SBIN/condor_master"
fi
VERSION=$("$BIN/condor_version" 2>/dev/null | sed -n 's/^\$CondorVersion: \([^ ]*\).*/\1/p')
[ -n "$VERSION" ] || die "$BIN/condor_version does not run (missing libraries? try: ldd $SBIN/condor_master)"

# ------------------------------------------------------------------ accounts
if ! id condor >/dev/null 2>&1; then
  log "creating the condor system account"
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin condor
fi
if ! id "$HTC_USER" >/dev/null 2>&1; then
  log "creating user $HTC_USER (runs the central manager, submits test jobs)"
  useradd --system --user-group --create-home --home-dir "/var/lib/$HTC_USER" --shell /bin/sh "$HTC_USER"
fi
HTC_UID=$(id -u "$HTC_USER")
HTC_GID=$(id -g "$HTC_USER")
HTC_HOME=$(getent passwd "$HTC_USER" | cut -d: -f6)

# ------------------------------------------------------------------ config
mkdir -p "$HTC_STATE"/{log,spool,execute,lock,run,passwords.d,tokens.d,cred}
chown "$HTC_UID:$HTC_GID" "$HTC_STATE" "$HTC_STATE"/{log,spool,execute,lock,run,passwords.d,tokens.d,cred}
chmod 700 "$HTC_STATE/passwords.d" "$HTC_STATE/tokens.d" "$HTC_STATE/cred"
mkdir -p "$HTC_STATE/fs"
chmod 1777 "$HTC_STATE/fs"
chmod 755 "$HTC_STATE"
newconf=$(mktemp)
cat >"$newconf" <<EOF
# Generated by deploy/testbed/htcondor/up.sh: Canopy's test pool on 127.0.0.1.
# Rewritten at every up.sh; edit the script, not this file.
RELEASE_DIR = $RELEASE
BIN = $BIN
SBIN = $SBIN
LIB = $LIB
LIBEXEC = $LIBEXEC
LOCAL_DIR = $HTC_STATE
LOG = \$(LOCAL_DIR)/log
SPOOL = \$(LOCAL_DIR)/spool
EXECUTE = \$(LOCAL_DIR)/execute
LOCK = \$(LOCAL_DIR)/lock
RUN = \$(LOCAL_DIR)/run
CRED_STORE_DIR = \$(LOCAL_DIR)/cred
CONDOR_ADMIN =
MAIL = /bin/false
CONDOR_IDS = $HTC_UID.$HTC_GID

# One master running the central manager and a schedd.
DAEMON_LIST = MASTER, COLLECTOR, NEGOTIATOR, SCHEDD
COLLECTOR_NAME = canopy-testbed

# Loopback only.
CONDOR_HOST = 127.0.0.1
COLLECTOR_HOST = 127.0.0.1:$HTC_PORT
NETWORK_INTERFACE = 127.0.0.1
BIND_ALL_INTERFACES = False
ENABLE_IPV6 = False
USE_SHARED_PORT = False

# Security as in production: authentication required, IDTOKENS for remote
# daemons (workers), FS for local tools.
use security:recommended
SEC_DEFAULT_AUTHENTICATION = REQUIRED
SEC_DEFAULT_AUTHENTICATION_METHODS = FS, IDTOKENS
SEC_CLIENT_AUTHENTICATION_METHODS = FS, IDTOKENS
TRUST_DOMAIN = $TRUST_DOMAIN
UID_DOMAIN = $TRUST_DOMAIN
FILESYSTEM_DOMAIN = $TRUST_DOMAIN
SEC_PASSWORD_DIRECTORY = \$(LOCAL_DIR)/passwords.d
SEC_TOKEN_POOL_SIGNING_KEY_FILE = \$(SEC_PASSWORD_DIRECTORY)/POOL
SEC_TOKEN_SYSTEM_DIRECTORY = \$(LOCAL_DIR)/tokens.d
SEC_TOKEN_DIRECTORY = \$(LOCAL_DIR)/tokens.d
# FS authentication files go here rather than in /tmp: the test workers
# (internal/condortest) hide this directory, so that they, like real VMs,
# cannot use FS with the central manager and must present their tokens.
FS_LOCAL_DIR = \$(LOCAL_DIR)/fs

# The hub invalidates the ads of deleted VMs (deploy/htcondor/README.md).
# The tests run the hub's tools as root on this host: with CONDOR_IDS set,
# HTCondor's tools run by root act as the pool's owner, so FS
# authentication maps them to $HTC_USER@\$(UID_DOMAIN), an identity that
# the recommended security settings do not otherwise let advertise.
CANOPY_HUB = $HTC_USER@\$(UID_DOMAIN)
ALLOW_ADVERTISE_STARTD = \$(ALLOW_DAEMON) \$(CANOPY_HUB)
ALLOW_ADVERTISE_MASTER = \$(ALLOW_DAEMON) \$(CANOPY_HUB)

# Quick cycles for tests.
NEGOTIATOR_INTERVAL = 5
NEGOTIATOR_MIN_INTERVAL = 1
NEGOTIATOR_CYCLE_DELAY = 1
SCHEDD_INTERVAL = 5
UPDATE_INTERVAL = 5
MASTER_UPDATE_INTERVAL = 10
NEGOTIATOR_UPDATE_INTERVAL = 5
SCHEDD_MIN_INTERVAL = 1

# Room for the 300,000-job measurement (hub/htcondor's live benchmark).
MAX_JOBS_PER_SUBMISSION = 300000
MAX_JOBS_PER_OWNER = 1000000
MAX_JOBS_SUBMITTED = 1000000
EOF
if ! cmp -s "$newconf" "$CONF"; then
  install -m 644 "$newconf" "$CONF"
  CONF_CHANGED=1
else
  CONF_CHANGED=0
fi
rm -f "$newconf"
export CONDOR_CONFIG=$CONF

# The pool signing key: made once, kept across runs (tokens minted by an
# earlier run stay valid). HTCondor reads the file "scrambled"; any bytes
# make a key, and every daemon and condor_token_create read it alike.
KEY=$HTC_STATE/passwords.d/POOL
if ! [ -s "$KEY" ]; then
  log "creating the pool signing key"
  head -c 64 /dev/urandom >"$KEY.tmp"
  mv "$KEY.tmp" "$KEY"
fi
chown "$HTC_UID:$HTC_GID" "$KEY"
chmod 600 "$KEY"

# ------------------------------------------------------------------ master
cs() { timeout 20 "$BIN/condor_status" "$@" 2>/dev/null; }
schedd_name() { cs -schedd -af Name | head -n1; }
schedd_up() { [ -n "$(schedd_name)" ]; }
STARTED=0
PID=$(pid_of "$PIDFILE")
if ours "$PID"; then
  log "condor_master already running (pid $PID)"
  if [ "$CONF_CHANGED" = 1 ]; then
    # SIGHUP is the master's reconfig (condor_reconfig would need an
    # administrator identity, which the tools run here do not have).
    log "config changed: reconfig (SIGHUP to the master)"
    kill -HUP "$PID"
  fi
else
  rm -f "$PIDFILE" "$HTC_STATE"/log/.*_address
  # A clean environment; -f keeps the master in the foreground, so $! is
  # the master itself (setsid: its own session and process group).
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME="$HTC_HOME" CONDOR_CONFIG="$CONF" \
    setsid setpriv --reuid="$HTC_UID" --regid="$HTC_GID" --init-groups \
    "$SBIN/condor_master" -f </dev/null >>"$HTC_STATE/log/master.out" 2>&1 9>&- &
  PID=$!
  echo "$PID" >"$PIDFILE"
  STARTED=1
  log "condor_master started (pid $PID)"
fi
if ! wait_for "$HTC_WAIT" schedd_up; then
  log "the schedd did not show in condor_status -schedd within ${HTC_WAIT}s; tail of the logs:"
  tail -n 15 "$HTC_STATE/log/MasterLog" "$HTC_STATE/log/CollectorLog" "$HTC_STATE/log/SchedLog" \
    "$HTC_STATE/log/master.out" >&2 2>/dev/null || true
  die "pool not up (master pid $PID; down.sh stops it)"
fi
SCHEDD=$(schedd_name)
alive "$PID" || die "condor_master (pid $PID) exited"

# ------------------------------------------------------------------ env file
ENVF=$HTC_STATE/env
cat >"$ENVF.tmp" <<EOF
CONDOR_CONFIG=$CONF
HTC_VERSION=$VERSION
HTC_RELEASE_DIR=$RELEASE
HTC_BIN=$BIN
HTC_SBIN=$SBIN
HTC_LIB=$LIB
HTC_LIBEXEC=$LIBEXEC
HTC_STATE=$HTC_STATE
HTC_COLLECTOR=127.0.0.1:$HTC_PORT
HTC_SCHEDD=$SCHEDD
HTC_TRUST_DOMAIN=$TRUST_DOMAIN
HTC_UID_DOMAIN=$TRUST_DOMAIN
HTC_SIGNING_KEY=$KEY
HTC_POOL_USER=$HTC_USER
HTC_SUBMIT_USER=$HTC_USER
HTC_HUB_IDENTITY=$HTC_USER@$TRUST_DOMAIN
HTC_MASTER_PID=$PID
EOF
mv "$ENVF.tmp" "$ENVF"
chmod 644 "$ENVF"
cat "$ENVF"
echo "STARTED=$STARTED"
log "pool up: collector 127.0.0.1:$HTC_PORT, schedd $SCHEDD, HTCondor $VERSION (env: $ENVF)"
