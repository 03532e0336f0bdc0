#!/usr/bin/env bash
# System packages the end-to-end tests use: a PostgreSQL server (Dagster on Postgres) and
# Debian's Chromium (the UI test drives it through Playwright; no browser download).
# Idempotent: installs only what is missing. Needs root (or sudo) and Debian's apt.
set -euo pipefail

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
