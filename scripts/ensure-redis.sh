#!/usr/bin/env bash
# Installs Debian's redis-server when it is not on PATH. The tests start their
# own redis-server processes on free loopback ports; nothing is started here.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
  exit 0
fi
echo "redis-server not found: installing Debian's redis-server" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
# The package starts a system instance on :6379; the tests do not use it.
command -v redis-server >/dev/null
