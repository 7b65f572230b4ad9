#!/bin/bash
# up.sh — make cloud-init's tools available for Canopy's user-data tests,
# idempotently. Nothing is started: the tests only run `cloud-init schema`,
# `cloud-init devel make-mime` and cloud-init's own user-data parser, none of
# which touch the machine's configuration.
#
# If cloud-init is missing, it is installed with apt-get, and
# /etc/cloud/cloud-init.disabled is created first so that a machine with
# systemd does not run cloud-init at its next boot.
#
# stdout: KEY=VALUE lines (CLOUD_INIT=path, CLOUD_INIT_PYTHON=interpreter,
# INSTALLED=1 when this run installed the package). Progress goes to stderr.
set -euo pipefail

log() { echo "[cloud-init testbed up] $*" >&2; }

installed=0
if ! command -v cloud-init >/dev/null 2>&1; then
  log "installing cloud-init"
  mkdir -p /etc/cloud
  touch /etc/cloud/cloud-init.disabled
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends cloud-init >&2; then
    apt-get update >&2
    apt-get install -y --no-install-recommends cloud-init >&2
  fi
  installed=1
fi
ci=$(command -v cloud-init)
# cloud-init's modules live with the interpreter its script names, which
# may not be the first python3 on PATH.
py=$(head -n1 "$ci" | sed -n 's/^#! *\([^ ]*\).*/\1/p')
[ -x "$py" ] || { echo "cannot find cloud-init's python from $ci" >&2; exit 1; }
"$py" -c 'import cloudinit.user_data' || { echo "$py cannot import cloudinit" >&2; exit 1; }
echo "CLOUD_INIT=$ci"
echo "CLOUD_INIT_PYTHON=$py"
echo "INSTALLED=$installed"
