#!/usr/bin/env bash
# deploy/testbed/openstack/up.sh -- a small but real OpenStack (Debian 12 "Zed"
# packages) on 127.0.0.1 only, for Canopy's integration tests: Keystone,
# Glance, Placement, Nova (api, conductor, scheduler, nova-compute with the
# fake virt driver), Neutron (ML2, no agents), PostgreSQL 15 and RabbitMQ.
# It bootstraps two projects that stand for two clouds (canopy-a, canopy-b
# with small quotas), their users, flavors, a shared network and an image,
# and writes $OSTB_DIR/clouds.yaml (clouds canopy-admin, canopy-a, canopy-b).
#
# Usage (as root):
#   ./up.sh                      install packages if missing, configure, start, bootstrap
#   OSTB_DIR=/tmp/ostb ./up.sh   state elsewhere (default /var/lib/canopy-testbed/openstack)
#   OSTB_SKIP_INSTALL=1 ./up.sh  never run apt-get (fail if packages are missing)
#   OSTB_FORCE=1 ./up.sh         redo migrations and bootstrap even if the state looks done
# Other knobs: OSTB_PG_PORT (5433), OSTB_RABBIT_PORT (5672), OSTB_COMPUTE_HOST,
#   OSTB_{ADMIN,A,B,SERVICE,DB,RABBIT}_PASSWORD, OSTB_{A,B}_QUOTA_{INSTANCES,CORES,RAM_MB}
#   (passwords and quotas are pinned on the first run in $OSTB_DIR/testbed.env).
# Timing on 2 shared cores: 3 to 6 min apt-get the first time, then ~2 min to
# "ready"; 1 to 2 min after down.sh (state kept); ~0.3 s when already up.
# Stop: ./down.sh (signals exactly the PIDs recorded in $OSTB_DIR/run/*.pid).
#
# The service packages (nova-api, keystone, ...) are not installed: their
# postinst scripts want debconf/dbconfig and start daemons. Only the python3-*
# libraries are, and the services run through small launchers in $OSTB_DIR/bin.
# There is no systemd here: every daemon runs in its own session (setsid).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH   # Debian's python3, not a pyenv one
PY=/usr/bin/python3
BASE=${OSTB_DIR:-/var/lib/canopy-testbed/openstack}
IP=127.0.0.1
PG_PORT=${OSTB_PG_PORT:-5433}
RABBIT_PORT=${OSTB_RABBIT_PORT:-5672}
KS_PORT=5000 GLANCE_PORT=9292 PLACEMENT_PORT=8778 NOVA_PORT=8774 NEUTRON_PORT=9696
COMPUTE_HOST=${OSTB_COMPUTE_HOST:-canopy-compute}
ETC=$BASE/etc LOG=$BASE/log RUN=$BASE/run BIN=$BASE/bin LIB=$BASE/lib
export OSTB_DIR=$BASE

T0=$(date +%s.%N)
ts() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%6.1f", b-a}'; }
say() { echo "[ostb $(ts)s] $*"; }
die() { echo "[ostb] ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"

mkdir -p "$BASE" "$ETC" "$LOG" "$RUN" "$BIN" "$LIB"
chmod 755 "$BASE"

# ---------------------------------------------------------------- secrets
# Fixed, documented defaults (loopback-only test box); the first run pins them.
if [ ! -f "$BASE/testbed.env" ]; then
  cat > "$BASE/testbed.env.tmp" <<EOF
ADMIN_PASS=${OSTB_ADMIN_PASSWORD:-ostb-admin}
A_PASS=${OSTB_A_PASSWORD:-canopy-a-secret}
B_PASS=${OSTB_B_PASSWORD:-canopy-b-secret}
SERVICE_PASS=${OSTB_SERVICE_PASSWORD:-ostb-service}
DB_PASS=${OSTB_DB_PASSWORD:-ostb-db}
RABBIT_PASS=${OSTB_RABBIT_PASSWORD:-ostb-rabbit}
A_QUOTA_INSTANCES=${OSTB_A_QUOTA_INSTANCES:-100}
A_QUOTA_CORES=${OSTB_A_QUOTA_CORES:-800}
A_QUOTA_RAM_MB=${OSTB_A_QUOTA_RAM_MB:-1638400}
B_QUOTA_INSTANCES=${OSTB_B_QUOTA_INSTANCES:-3}
B_QUOTA_CORES=${OSTB_B_QUOTA_CORES:-4}
B_QUOTA_RAM_MB=${OSTB_B_QUOTA_RAM_MB:-8192}
EOF
  chmod 600 "$BASE/testbed.env.tmp"
  mv "$BASE/testbed.env.tmp" "$BASE/testbed.env"
fi
# shellcheck disable=SC1091
. "$BASE/testbed.env"
TRANSPORT="rabbit://openstack:$RABBIT_PASS@$IP:$RABBIT_PORT/"
db_url() { echo "postgresql+psycopg2://$1:$DB_PASS@$IP:$PG_PORT/$2"; }

# ---------------------------------------------------------------- process helpers
# $RUN/NAME.pid holds "PID STARTTIME" (field 22 of /proc/PID/stat), so a recycled
# PID is never mistaken for ours (environment tags get clobbered by setproctitle).
starttime() { awk '{sub(/.*\) /,""); print $20}' "/proc/$1/stat" 2>/dev/null; }
alive() {
  local f=$RUN/$1.pid pid st
  [ -f "$f" ] || return 1
  read -r pid st < "$f" || return 1
  [ -n "$pid" ] && [ "$(starttime "$pid")" = "$st" ]
}
start() {  # name cmd...   (own session, stdout/err to $LOG/name.out, PID to $RUN/name.pid)
  local name=$1 pid; shift
  if alive "$name"; then say "$name already running (pid $(cut -d' ' -f1 "$RUN/$name.pid"))"; return; fi
  setsid "$@" >>"$LOG/$name.out" 2>&1 </dev/null &
  pid=$!
  echo "$pid $(starttime "$pid")" > "$RUN/$name.pid"
}
port_open() { (exec 3<>"/dev/tcp/$IP/$1") 2>/dev/null; }
wait_port() { local i; for i in $(seq 1 "${3:-120}"); do port_open "$2" && return 0; alive "$1" || die "$1 died, see $LOG/$1.*"; sleep 0.5; done; die "$1 not listening on $2"; }
wait_http() {  # name url [tries]
  local i c
  for i in $(seq 1 "${3:-240}"); do
    c=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$2" || true)
    case $c in 2*|300|401) return 0;; esac
    alive "$1" || die "$1 died, see $LOG/$1.*"
    sleep 0.5
  done
  die "$1 not answering at $2"
}
summary() {
  echo
  echo "# Canopy OpenStack testbed is up (state: $BASE)."
  echo "# export OS_CLIENT_CONFIG_FILE=$BASE/clouds.yaml OS_CLOUD=canopy-a"
  echo "# endpoints: keystone http://$IP:$KS_PORT/v3  nova http://$IP:$NOVA_PORT/v2.1  glance http://$IP:$GLANCE_PORT"
  echo "#            placement http://$IP:$PLACEMENT_PORT  neutron http://$IP:$NEUTRON_PORT"
  cat "$BASE/bootstrap-summary.txt" 2>/dev/null || true
}

# ---------------------------------------------------------------- fast path
SERVICES="postgres epmd rabbitmq keystone placement-api glance-api neutron-server nova-conductor nova-scheduler nova-compute nova-api"
if [ -f "$BASE/.ready" ] && [ -f "$BASE/clouds.yaml" ] && [ "${OSTB_FORCE:-0}" != 1 ]; then
  all=1; for s in $SERVICES; do alive "$s" || { all=0; break; }; done
  if [ $all = 1 ] && [ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://$IP:$NOVA_PORT/")" = 200 ]; then
    say "already up (OSTB_FORCE=1 to redo every step)"; summary; exit 0
  fi
fi
rm -f "$BASE/.ready"

# A port taken by a process that is not ours (another OpenStack box, a
# system postgres on our port) would make half the services talk to strangers.
for sp in postgres:$PG_PORT epmd:4369 rabbitmq:$RABBIT_PORT keystone:$KS_PORT placement-api:$PLACEMENT_PORT \
          glance-api:$GLANCE_PORT neutron-server:$NEUTRON_PORT nova-api:$NOVA_PORT; do
  s=${sp%%:*} p=${sp##*:}
  if ! alive "$s" && port_open "$p"; then
    die "127.0.0.1:$p (for $s) is already in use by a process this testbed did not start; stop it first"
  fi
done

# ---------------------------------------------------------------- packages
PKGS="postgresql-15 rabbitmq-server python3-keystone python3-glance python3-placement
      python3-nova python3-neutron python3-openstackclient uwsgi-core uwsgi-plugin-python3 curl"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  [ "${OSTB_SKIP_INSTALL:-0}" = 1 ] && die "missing packages:$missing"
  say "installing:$missing (about 6 minutes the first time)"
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep postinst scripts from starting daemons
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ] \
    || apt-get update -q >"$LOG/apt-update.log" 2>&1
  echo 'man-db man-db/auto-update boolean false' | debconf-set-selections 2>/dev/null || true
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-unsafe-io -o Dpkg::Options::=--force-confold $missing \
    >"$LOG/apt-install.log" 2>&1 || { [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d; tail -20 "$LOG/apt-install.log"; die "apt-get install failed"; }
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  say "packages installed"
fi

# api-paste files ship in the *-common packages (whose postinst wants
# dbconfig/debconf): take only the files out of the .deb, never install it.
if [ ! -f "$ETC/nova/api-paste.ini" ] || [ ! -f "$ETC/glance/glance-api-paste.ini" ] || [ ! -f "$ETC/neutron/api-paste.ini" ]; then
  d=$BASE/debs; mkdir -p "$d/x"; chmod 777 "$d"
  dl() { (cd "$d" && apt-get download -q nova-common glance-common neutron-common >"$LOG/apt-download.log" 2>&1); }
  dl || { apt-get update -q >"$LOG/apt-update.log" 2>&1; dl; } \
    || die "apt-get download of *-common failed (see $LOG/apt-download.log)"
  for f in "$d"/*.deb; do dpkg-deb -x "$f" "$d/x"; done
  mkdir -p "$ETC/nova" "$ETC/glance" "$ETC/neutron"
  cp "$d/x/usr/share/nova-common/api-paste.ini" "$ETC/nova/api-paste.ini"
  cp "$d/x/usr/share/glance-common/glance-api-paste.ini" "$ETC/glance/glance-api-paste.ini"
  cp "$d/x/usr/share/neutron-common/api-paste.ini" "$ETC/neutron/api-paste.ini"
fi

# ---------------------------------------------------------------- launchers
launcher() {  # name module:function  -> $BIN/name (console script without the *-common package)
  local name=$1 mod=${2%%:*} fn=${2##*:}
  cat > "$BIN/$name" <<EOF
#!$PY
import sys
from $mod import $fn
sys.argv[0] = "$name"
sys.exit($fn())
EOF
  chmod 755 "$BIN/$name"
}
launcher keystone-manage keystone.cmd.manage:main
launcher glance-manage   glance.cmd.manage:main
launcher glance-api      glance.cmd.api:main
launcher placement-manage placement.cmd.manage:main
launcher nova-manage     nova.cmd.manage:main
for s in api conductor scheduler compute; do launcher nova-$s nova.cmd.$s:main; done
launcher neutron-db-manage neutron.db.migration.cli:main
launcher neutron-server  neutron.cmd.eventlet.server:main
cat > "$BIN/keystone-wsgi.py" <<'EOF'
from keystone.server.wsgi import initialize_public_application
application = initialize_public_application()
EOF
cat > "$BIN/placement-wsgi.py" <<'EOF'
from placement.wsgi import init_application
application = init_application()
EOF

# ---------------------------------------------------------------- config files
mkdir -p "$ETC"/{keystone,glance,placement,nova,neutron,rabbitmq} "$BASE"/{keystone,glance/images,glance/staging,glance/tasks,nova/instances,neutron,locks}

authtoken() {  # username
cat <<EOF
[keystone_authtoken]
www_authenticate_uri = http://$IP:$KS_PORT
auth_url = http://$IP:$KS_PORT
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $SERVICE_PASS
region_name = RegionOne
EOF
}
svcauth() {  # section username
cat <<EOF
[$1]
auth_url = http://$IP:$KS_PORT/v3
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $2
password = $SERVICE_PASS
region_name = RegionOne
EOF
}

cat > "$ETC/keystone/keystone.conf" <<EOF
[DEFAULT]
log_file = $LOG/keystone.log
[database]
connection = $(db_url keystone keystone)
[identity]
# bcrypt cost 4 instead of 12: every password login is ~40x cheaper (test box)
password_hash_rounds = 4
[token]
provider = fernet
[fernet_tokens]
key_repository = $BASE/keystone/fernet-keys
[credential]
key_repository = $BASE/keystone/credential-keys
EOF

cat > "$ETC/glance/glance-api.conf" <<EOF
[DEFAULT]
bind_host = $IP
bind_port = $GLANCE_PORT
workers = 0
log_file = $LOG/glance-api.log
enabled_backends = fs:file
transport_url = $TRANSPORT
[database]
connection = $(db_url glance glance)
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $BASE/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $BASE/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $BASE/glance/tasks
[paste_deploy]
flavor = keystone
config_file = $ETC/glance/glance-api-paste.ini
[oslo_concurrency]
lock_path = $BASE/locks
[oslo_messaging_notifications]
driver = noop
$(authtoken glance)
EOF

cat > "$ETC/placement/placement.conf" <<EOF
[DEFAULT]
log_file = $LOG/placement-api.log
[api]
auth_strategy = keystone
[placement_database]
connection = $(db_url placement placement)
$(authtoken placement)
EOF

cat > "$ETC/nova/nova.conf" <<EOF
[DEFAULT]
host = $COMPUTE_HOST
my_ip = $IP
compute_driver = fake.FakeDriver
# FakeDriver reports 1000 vCPU / 800000 MiB / 600000 GiB; x4 RAM so ~190 b8 servers fit
initial_ram_allocation_ratio = 4.0
transport_url = $TRANSPORT
state_path = $BASE/nova
instances_path = $BASE/nova/instances
enabled_apis = osapi_compute
osapi_compute_listen = $IP
osapi_compute_listen_port = $NOVA_PORT
osapi_compute_workers = 1
metadata_listen = $IP
metadata_workers = 1
use_rootwrap_daemon = false
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = $ETC/nova/api-paste.ini
[api_database]
connection = $(db_url nova nova_api)
[database]
connection = $(db_url nova nova)
[conductor]
workers = 1
[scheduler]
workers = 1
[oslo_concurrency]
lock_path = $BASE/locks
[oslo_messaging_notifications]
driver = noop
[vnc]
enabled = false
[spice]
enabled = false
[serial_console]
enabled = false
[glance]
region_name = RegionOne
$(authtoken nova)
$(svcauth placement placement)
$(svcauth neutron neutron)
$(svcauth service_user nova)
send_service_user_token = true
EOF

# nova-compute gets no DB credentials (as in a real deployment; avoids the
# "No DB access allowed in nova-compute" error it logs otherwise)
awk '/^\[/{skip=($0=="[api_database]"||$0=="[database]")} !skip' "$ETC/nova/nova.conf" > "$ETC/nova/nova-compute.conf"

# A tiny ML2 mechanism driver that binds every port (there are no L2 agents),
# so servers can boot on a network and get fixed IPs from Neutron's IPAM.
mkdir -p "$LIB/canopy_bindall-0.1.dist-info"
cp "$HERE/bindall_ml2.py" "$LIB/canopy_bindall_ml2.py"
printf 'Metadata-Version: 2.1\nName: canopy-bindall\nVersion: 0.1\n' > "$LIB/canopy_bindall-0.1.dist-info/METADATA"
printf '[neutron.ml2.mechanism_drivers]\ncanopy_bind_all = canopy_bindall_ml2:BindAllMechanismDriver\n' \
  > "$LIB/canopy_bindall-0.1.dist-info/entry_points.txt"
cat > "$ETC/neutron/neutron.conf" <<EOF
[DEFAULT]
bind_host = $IP
bind_port = $NEUTRON_PORT
core_plugin = ml2
service_plugins =
auth_strategy = keystone
transport_url = $TRANSPORT
api_workers = ${OSTB_NEUTRON_API_WORKERS:-0}
rpc_workers = 0
rpc_state_report_workers = 0
api_paste_config = $ETC/neutron/api-paste.ini
state_path = $BASE/neutron
log_file = $LOG/neutron-server.log
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
dhcp_agent_notification = false
allow_overlapping_ips = true
[database]
connection = $(db_url neutron neutron)
[oslo_concurrency]
lock_path = $BASE/locks
[oslo_messaging_notifications]
driver = noop
$(authtoken neutron)
$(svcauth nova nova)
EOF
cat > "$ETC/neutron/ml2_conf.ini" <<EOF
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers = canopy_bind_all
extension_drivers = port_security
[ml2_type_flat]
flat_networks = *
[ml2_type_vxlan]
vni_ranges = 1:10000
[securitygroup]
enable_security_group = true
EOF

# ---------------------------------------------------------------- PostgreSQL
PGBIN=/usr/lib/postgresql/15/bin
mkdir -p "$BASE/pg" "$RUN/pg"; chown postgres:postgres "$BASE/pg" "$RUN/pg"; chmod 700 "$BASE/pg"
asPG() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ ! -f "$BASE/pg/PG_VERSION" ]; then
  say "initdb"
  asPG "$PGBIN/initdb" -D "$BASE/pg" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >"$LOG/initdb.log" 2>&1 || die "initdb failed (see $LOG/initdb.log)"
fi
# fsync/synchronous_commit off: throw-away test database, migrations ~3x faster
start postgres setpriv --reuid=postgres --regid=postgres --init-groups "$PGBIN/postgres" -D "$BASE/pg" \
  -c listen_addresses=$IP -c port="$PG_PORT" -c unix_socket_directories="$RUN/pg" \
  -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
  -c shared_buffers=128MB -c log_min_messages=warning

# ---------------------------------------------------------------- RabbitMQ
cat > "$ETC/rabbitmq/rabbitmq.conf" <<EOF
listeners.tcp.default = $IP:$RABBIT_PORT
distribution.listener.interface = $IP
distribution.listener.port_range.min = 25672
distribution.listener.port_range.max = 25672
default_user = openstack
default_pass = $RABBIT_PASS
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
log.file.level = warning
EOF
echo '[].' > "$ETC/rabbitmq/enabled_plugins"
: > "$ETC/rabbitmq/rabbitmq-env.conf"
mkdir -p "$BASE/rabbit"
# epmd started by us (loopback only) so that erl does not spawn an untracked one
start epmd env ERL_EPMD_ADDRESS=$IP /usr/bin/epmd -address $IP
for i in $(seq 1 40); do port_open 4369 && break; sleep 0.25; done
start rabbitmq env HOME="$BASE/rabbit" ERL_EPMD_ADDRESS=$IP RUNNING_UNDER_SYSTEMD=true \
  RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_CONF_ENV_FILE="$ETC/rabbitmq/rabbitmq-env.conf" \
  RABBITMQ_CONFIG_FILE="$ETC/rabbitmq/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$ETC/rabbitmq/enabled_plugins" \
  RABBITMQ_MNESIA_BASE="$BASE/rabbit/mnesia" RABBITMQ_LOG_BASE="$LOG/rabbitmq" \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
  /usr/lib/rabbitmq/bin/rabbitmq-server

# ---------------------------------------------------------------- databases
for i in $(seq 1 60); do asPG "$PGBIN/pg_isready" -q -h "$RUN/pg" -p "$PG_PORT" && break; alive postgres || die "postgres died ($LOG/postgres.out)"; sleep 0.25; done
psql_q() { asPG psql -h "$RUN/pg" -p "$PG_PORT" -U postgres -qAtX "$@"; }
mkdb() {  # role db
  [ "$(psql_q -c "select 1 from pg_roles where rolname='$1'")" = 1 ] || psql_q -c "create role $1 login password '$DB_PASS'"
  [ "$(psql_q -c "select 1 from pg_database where datname='$2'")" = 1 ] || psql_q -c "create database $2 owner $1"
}
for rd in keystone:keystone glance:glance placement:placement nova:nova_api nova:nova nova:nova_cell0 neutron:neutron; do
  mkdb "${rd%%:*}" "${rd##*:}"
done
say "postgres up on $IP:$PG_PORT"

# ---------------------------------------------------------------- schema migrations (parallel)
# WARM=1: this state dir was fully bootstrapped by the same package versions and
# layout -> skip schema syncs and bootstraps, just start the daemons.
STAMP="$(dpkg-query -W -f='${Package}=${Version} ' python3-keystone python3-glance python3-placement python3-nova python3-neutron) layout-canopy-v1"
WARM=0
[ -f "$BASE/.bootstrapped" ] && [ "$(cat "$BASE/.bootstrapped")" = "$STAMP" ] && [ "${OSTB_FORCE:-0}" != 1 ] && WARM=1
export OS_KEYSTONE_CONFIG_DIR=$ETC/keystone OS_PLACEMENT_CONFIG_DIR=$ETC/placement
SYNC_PIDS=()
bg_sync() { local name=$1; shift; ( "$@" >"$LOG/$name.log" 2>&1 ) & SYNC_PIDS+=("$!:$name"); }
wait_syncs() { local pn; for pn in "${SYNC_PIDS[@]}"; do wait "${pn%%:*}" || die "${pn##*:} failed, see $LOG/${pn##*:}.log"; done; SYNC_PIDS=(); }
if [ $WARM = 0 ]; then
  bg_sync dbsync-keystone "$BIN/keystone-manage" --config-file "$ETC/keystone/keystone.conf" db_sync
  bg_sync dbsync-placement "$BIN/placement-manage" --config-file "$ETC/placement/placement.conf" db sync
  wait_syncs
  say "keystone + placement schemas synced"
fi

# ---------------------------------------------------------------- Keystone
if [ $WARM = 0 ]; then
  if [ ! -f "$BASE/keystone/fernet-keys/0" ]; then
    "$BIN/keystone-manage" --config-file "$ETC/keystone/keystone.conf" fernet_setup --keystone-user root --keystone-group root \
      >"$LOG/keystone-fernet-setup.log" 2>&1 || die "keystone fernet_setup failed (see $LOG/keystone-fernet-setup.log)"
    "$BIN/keystone-manage" --config-file "$ETC/keystone/keystone.conf" credential_setup --keystone-user root --keystone-group root \
      >"$LOG/keystone-credential-setup.log" 2>&1 || die "keystone credential_setup failed (see $LOG/keystone-credential-setup.log)"
  fi
  "$BIN/keystone-manage" --config-file "$ETC/keystone/keystone.conf" bootstrap --bootstrap-password "$ADMIN_PASS" \
    --bootstrap-admin-url "http://$IP:$KS_PORT/v3/" --bootstrap-internal-url "http://$IP:$KS_PORT/v3/" \
    --bootstrap-public-url "http://$IP:$KS_PORT/v3/" --bootstrap-region-id RegionOne >"$LOG/keystone-bootstrap.log" 2>&1 \
    || die "keystone bootstrap failed (see $LOG/keystone-bootstrap.log)"
fi
# uWSGI's --http-socket does no keep-alive: say so (Connection: close), or
# clients that reuse the socket get "connection reset by peer".
# One thread per process: with uWSGI threads, concurrent requests to Keystone
# mixed up role data (an application credential created while another
# project's admin token was validated got the admin role: HTTP 400 "Could
# not find role assignment").
start keystone uwsgi --plugin python3 --http-socket "$IP:$KS_PORT" --wsgi-file "$BIN/keystone-wsgi.py" \
  --master --processes 4 --threads 1 --lazy-apps --die-on-term --buffer-size 65535 --add-header "Connection: close" \
  --env OS_KEYSTONE_CONFIG_DIR="$ETC/keystone" --disable-logging
start placement-api uwsgi --plugin python3 --http-socket "$IP:$PLACEMENT_PORT" --wsgi-file "$BIN/placement-wsgi.py" \
  --master --processes 2 --threads 1 --lazy-apps --die-on-term --buffer-size 65535 --add-header "Connection: close" \
  --env OS_PLACEMENT_CONFIG_DIR="$ETC/placement" --disable-logging

# glance / neutron / nova schemas while keystone starts
if [ $WARM = 0 ]; then
  nova_sync() {
    set -e
    local NM="$BIN/nova-manage --config-file $ETC/nova/nova.conf"
    $NM api_db sync
    $NM cell_v2 map_cell0 --database_connection "$(db_url nova nova_cell0)"
    local cells; cells=$($NM cell_v2 list_cells 2>/dev/null || true)
    case $cells in *"| cell1 |"*) ;; *) $NM cell_v2 create_cell --name cell1 --verbose;; esac
    $NM db sync
  }
  bg_sync dbsync-nova nova_sync
  bg_sync dbsync-glance "$BIN/glance-manage" --config-file "$ETC/glance/glance-api.conf" db_sync
  bg_sync dbsync-neutron "$BIN/neutron-db-manage" --config-file "$ETC/neutron/neutron.conf" \
    --config-file "$ETC/neutron/ml2_conf.ini" upgrade heads
else
  start glance-api "$BIN/glance-api" --config-file "$ETC/glance/glance-api.conf"
fi

wait_http keystone "http://$IP:$KS_PORT/v3"
say "keystone answering on :$KS_PORT"
if [ $WARM = 0 ]; then
  "$PY" "$HERE/bootstrap.py" identity >"$LOG/bootstrap-identity.log" 2>&1 \
    || { cat "$LOG/bootstrap-identity.log"; die "identity bootstrap failed"; }
  say "keystone domains/projects/users/endpoints ready"
fi

wait_port rabbitmq "$RABBIT_PORT" 240
say "rabbitmq up on $IP:$RABBIT_PORT"
if [ $WARM = 0 ]; then wait_syncs; say "glance/nova/neutron schemas synced"; fi

start glance-api "$BIN/glance-api" --config-file "$ETC/glance/glance-api.conf"
start neutron-server env PYTHONPATH="$LIB" "$BIN/neutron-server" --config-file "$ETC/neutron/neutron.conf" \
  --config-file "$ETC/neutron/ml2_conf.ini"
COMPUTE_WAS_UP=0; alive nova-compute && COMPUTE_WAS_UP=1
T_COMPUTE=$(date +%s)
for s in conductor scheduler compute api; do
  conf=$ETC/nova/nova.conf; [ $s = compute ] && conf=$ETC/nova/nova-compute.conf
  start nova-$s "$BIN/nova-$s" --config-file "$conf" --log-file "$LOG/nova-$s.log"
done

wait_http placement-api "http://$IP:$PLACEMENT_PORT/"
wait_http glance-api "http://$IP:$GLANCE_PORT/versions"
wait_http neutron-server "http://$IP:$NEUTRON_PORT/"
wait_http nova-api "http://$IP:$NOVA_PORT/"
say "all APIs answering"

# nova-compute writes its compute_nodes row (pre_start_hook) just before it
# starts consuming RPC; wait for a row written by THIS nova-compute, then map
# it into cell1.
fresh="and extract(epoch from coalesce(updated_at, created_at)) >= $((T_COMPUTE - 1))"
[ $COMPUTE_WAS_UP = 1 ] && fresh=""
n=0
for i in $(seq 1 240); do
  n=$(psql_q -d nova -c "select count(*) from compute_nodes where deleted=0 $fresh" 2>/dev/null || echo 0)
  [ "${n:-0}" -ge 1 ] && break
  alive nova-compute || die "nova-compute died, see $LOG/nova-compute.*"
  sleep 0.5
done
[ "${n:-0}" -ge 1 ] || die "nova-compute never registered a compute node"
sleep 1   # let it finish starting its RPC server
if [ $WARM = 0 ]; then
  "$BIN/nova-manage" --config-file "$ETC/nova/nova.conf" cell_v2 discover_hosts >"$LOG/discover-hosts.log" 2>&1
  say "compute host '$COMPUTE_HOST' registered and mapped"
  "$PY" "$HERE/bootstrap.py" resources >"$LOG/bootstrap-resources.log" 2>&1 \
    || { cat "$LOG/bootstrap-resources.log"; die "flavor/quota/network/image bootstrap failed"; }
  echo "$STAMP" > "$BASE/.bootstrapped"
else
  say "compute host '$COMPUTE_HOST' reporting"
fi

# ---------------------------------------------------------------- clouds.yaml
cloud() {  # name user password project domain
cat <<EOF
  $1:
    auth:
      auth_url: http://$IP:$KS_PORT/v3
      username: $2
      password: $3
      project_name: $4
      user_domain_name: $5
      project_domain_name: $5
    region_name: RegionOne
    identity_api_version: 3
EOF
}
{
  echo "clouds:"
  cloud canopy-admin admin "$ADMIN_PASS" admin Default
  cloud canopy-a canopy-a "$A_PASS" canopy-a Default
  cloud canopy-b canopy-b "$B_PASS" canopy-b canopy
} > "$BASE/clouds.yaml.tmp"
chmod 600 "$BASE/clouds.yaml.tmp"
mv "$BASE/clouds.yaml.tmp" "$BASE/clouds.yaml"
date +%s > "$BASE/.ready"
say "ready"
summary
