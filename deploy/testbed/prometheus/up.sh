#!/bin/bash
# up.sh — make promtool available for the alert-rule tests
# (deploy/prometheus, `promtool check rules` and `promtool test rules`),
# idempotently. Nothing is started: the tests only run promtool.
#
# promtool ships in Debian's `prometheus` package, whose maintainer scripts
# would enable and start a Prometheus server on :9090. A policy-rc.d that
# denies service starts is put in place for the install (removed after it
# if this script created it), and the service is then disabled and stopped,
# so no Prometheus server runs now or at the next boot.
#
# stdout: PROMTOOL=path and INSTALLED=1 when this run installed the package.
# Progress goes to stderr.
set -euo pipefail
log() { echo "[prometheus testbed up] $*" >&2; }
die() { echo "[prometheus testbed up] ERROR: $*" >&2; exit 1; }

installed=0
if ! command -v promtool >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "promtool is missing and installing it needs root"
  mkdir -p /run/lock
  exec 9>/run/lock/canopy-prometheus-testbed-install.lock
  flock -w 900 9 || die "waited 15 min for another up.sh's prometheus install"
  if ! command -v promtool >/dev/null 2>&1; then
    POLICY=/usr/sbin/policy-rc.d
    made_policy=0
    if ! [ -e "$POLICY" ]; then
      printf '#!/bin/sh\n# canopy prometheus test bed: no service starts during the install\nexit 101\n' >"$POLICY"
      chmod 755 "$POLICY"
      made_policy=1
    fi
    cleanup_policy() { if [ "$made_policy" = 1 ]; then rm -f "$POLICY"; fi; }
    trap cleanup_policy EXIT
    log "installing prometheus for promtool (service start denied by $POLICY)"
    apt_install() {
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q install -y --no-install-recommends prometheus >&2
    }
    apt_install || { apt-get -o DPkg::Lock::Timeout=600 -q update >&2 && apt_install; } || die "apt-get install prometheus failed"
    cleanup_policy
    trap - EXIT
    installed=1
  fi
  flock -u 9
  exec 9>&-
fi
# Whatever installed it, the server must not run nor start at boot: the
# tests need only promtool.
# (systemctl disable works without a running systemd: it removes the
# boot symlinks.)
if command -v systemctl >/dev/null 2>&1 && [ -e /lib/systemd/system/prometheus.service ]; then
  if systemctl is-enabled --quiet prometheus.service 2>/dev/null; then
    systemctl disable prometheus.service >&2 || die "systemctl disable prometheus failed"
  fi
  if systemctl is-active --quiet prometheus.service 2>/dev/null; then
    systemctl stop prometheus.service || log "systemctl stop prometheus failed"
  fi
fi
pt=$(command -v promtool) || die "promtool missing after install"
"$pt" --version >/dev/null 2>&1 || die "$pt --version failed"
echo "PROMTOOL=$pt"
echo "INSTALLED=$installed"
