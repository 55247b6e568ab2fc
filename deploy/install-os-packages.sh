#!/usr/bin/env bash
# The OS packages echofl needs beyond Python: nginx (the coordinator's fleet-only proxy, which
# `fl-server start` runs and the deployment tests start for real). Installs only what is
# missing, with apt-get (Debian/Ubuntu; sudo when not root). Elsewhere install nginx yourself.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-os-packages: nginx is missing and apt-get is not available; install nginx" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nginx-light
