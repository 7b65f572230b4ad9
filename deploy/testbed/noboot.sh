#!/bin/bash
# noboot.sh [--check] — the testbed leaves no system service enabled at boot.
#
# Debian's packages enable (and policy-rc.d aside, start) their services:
# squid, ssh (openssh-server, for gluster's geo-replication), epmd and
# rabbitmq-server (openstack), cloud-init's units, iscsid, prometheus...
# The testbed starts what it needs itself, by PID, on 127.0.0.1; none of it
# may come up at the machine's next boot.
#
# Which units are the testbed's: those shipped by a package that one of the
# testbed's own apt-get installs put on the machine (read from apt's history,
# /var/log/apt/history.log*: the transactions whose command line installs
# one of the packages the up.sh scripts install, with every package that
# transaction installed). A unit of a package that was on the machine before
# (an admin's ssh, say) is never touched.
#
# Without --check, such units that are enabled are disabled (systemctl
# disable: only the boot symlinks; a running service goes on running).
# Either way it then prints every testbed unit still enabled and exits 1 if
# there is one. deploy/testbed/up.sh runs it last.
#
# stdout: "ENABLED unit (package)" per unit still enabled, then
# "NOBOOT OK" or "NOBOOT FAILED". Progress goes to stderr.
set -euo pipefail
log() { echo "[testbed noboot] $*" >&2; }
check_only=0
[ "${1:-}" = --check ] && check_only=1

# The packages the up.sh scripts install by name.
TESTBED_PKGS='cloud-init|squid|glusterfs-server|openssh-server|rabbitmq-server|python3-nova|python3-keystone|prometheus|chromium'

if ! command -v systemctl >/dev/null 2>&1; then
  log "no systemctl: nothing can be enabled at boot"
  echo "NOBOOT OK"
  exit 0
fi

# Packages installed by the testbed's transactions.
pkgs=$(zcat -f /var/log/apt/history.log* 2>/dev/null | awk -v re=" install .*[ =](${TESTBED_PKGS})( |$)" '
  /^Start-Date:/ { ours = 0 }
  /^Commandline:/ { ours = ($0 ~ re) }
  /^Install:/ && ours {
    sub(/^Install: /, "")
    n = split($0, parts, /\), /)
    for (i = 1; i <= n; i++) { split(parts[i], f, ":"); print f[1] }
  }' | sort -u)
if [ -z "$pkgs" ]; then
  log "apt's history shows no package installed by the testbed"
fi

# Enabled services and sockets (what starts a daemon; a package's timers,
# such as logrotate's, are housekeeping and stay), and the package of each.
units=$(systemctl list-unit-files --state=enabled --no-legend --no-pager 2>/dev/null |
  awk '$1 ~ /\.(service|socket)$/ {print $1}')
files=()
for u in $units; do
  for d in /lib/systemd/system /usr/lib/systemd/system; do
    [ -e "$d/$u" ] && { files+=("$d/$u"); break; }
  done
done
# One dpkg -S for all: "package: /path" per file a package ships.
owners=""
[ ${#files[@]} -gt 0 ] && owners=$(dpkg -S "${files[@]}" 2>/dev/null || true)
remaining=0
while IFS= read -r line; do
  [ -n "$line" ] || continue
  pkg=${line%%:*}
  u=$(basename "${line##*: }")
  grep -qxF "$pkg" <<<"$pkgs" || continue
  if [ "$check_only" = 0 ]; then
    log "disabling $u (from $pkg, installed by the testbed)"
    systemctl disable "$u" >&2 2>/dev/null || log "systemctl disable $u failed"
  fi
  if systemctl is-enabled --quiet "$u" 2>/dev/null; then
    echo "ENABLED $u ($pkg)"
    remaining=$((remaining + 1))
  fi
done <<<"$owners"
if [ "$remaining" -gt 0 ]; then
  echo "NOBOOT FAILED"
  exit 1
fi
echo "NOBOOT OK"
