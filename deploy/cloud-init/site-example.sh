#!/bin/sh
# Example extra script part for a site's worker VMs (cloud-init runs it
# once per instance, as root, late in the first boot). List it in the
# agent's config (vm.user_data_parts). Keep it idempotent and quick: the
# vmagent contextualizes the VM in parallel and does not wait for it.
set -eu
mkdir -p /scratch
chmod 1777 /scratch
logger -t canopy-site "site script ran on $(hostname)"
