#!/usr/bin/env bash
# Installs the Debian packages guanaco builds against, only when missing.
# Extra package names given as arguments are installed too (the test command
# adds what its tests need).
set -euo pipefail
pkgs="build-essential pkg-config libopenblas-dev libcjson-dev libpcre2-dev libcairo2-dev libcurl4-openssl-dev libmicrohttpd-dev zlib1g-dev python3 python3-venv"
missing=""
for p in $pkgs "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
[ -z "$missing" ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages:$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >&2
