#!/usr/bin/env bash
# Stops what deploy/testbed/up.sh started, by recorded PID.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for svc in htcondor openstack gluster squid cloud-init; do
  if [ -x "$here/$svc/down.sh" ]; then
    echo "testbed: $svc down"
    "$here/$svc/down.sh" || echo "testbed: $svc down failed" >&2
  fi
done
