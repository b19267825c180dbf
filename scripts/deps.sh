#!/usr/bin/env bash
# Installs every Debian package Switchyard needs to build, test and run. Idempotent: does nothing when all
# are present. Needs root (or sudo).
set -euo pipefail
# protobuf-compiler, python3 and python3-venv: the Python consumer example (examples/python-consumer), which a
# test runs; chromium: the dashboard's headless-browser test; prometheus: promtool for the metrics-exposition test.
packages=(nats-server libnats-dev libprotobuf-c-dev protobuf-c-compiler libpq-dev libssl-dev openssl postgresql
          postgresql-client pkg-config curl protobuf-compiler python3 python3-venv chromium prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
