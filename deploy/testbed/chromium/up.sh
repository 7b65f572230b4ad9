#!/bin/bash
# up.sh — make sure Debian's chromium is installed for the status page's
# browser tests (deploy/demo/browser_test.go drives it headless with
# chromedp). Idempotent: does nothing when chromium is already there. It
# starts no service and leaves nothing enabled at boot.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "chromium: not installed and not root: run 'apt-get install -y chromium' as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
echo "chromium: installed $(chromium --version 2>/dev/null || true)" >&2
