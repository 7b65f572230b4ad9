#!/usr/bin/env bash
# Installs (Debian packages, only if missing) and starts the real services the
# integration tests need, on 127.0.0.1 only. Each service has its own folder
# with up.sh/down.sh that record and stop only their own PIDs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for svc in cloud-init squid gluster openstack htcondor prometheus; do
  if [ -x "$here/$svc/up.sh" ]; then
    echo "testbed: $svc up"
    "$here/$svc/up.sh"
  fi
done
