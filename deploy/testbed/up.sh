#!/usr/bin/env bash
# Installs (Debian packages, only if missing) and starts the real services the
# integration tests need, on 127.0.0.1 only. Each service has its own folder
# with up.sh/down.sh that record and stop only their own PIDs. No service the
# testbed installs stays enabled at boot (noboot.sh, run last).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for svc in cloud-init squid gluster openstack htcondor chromium prometheus; do
  if [ -x "$here/$svc/up.sh" ]; then
    echo "testbed: $svc up"
    "$here/$svc/up.sh"
  fi
done
# Debian's packages enable their services at boot; the testbed starts what it
# needs by PID. Disable the boot links of every unit the testbed's installs
# brought, then list any still enabled (non-zero exit if one is).
echo "testbed: services enabled at boot"
"$here/noboot.sh"
