#!/usr/bin/env bash
# The system packages the test suite needs, installed from Debian's registry where missing:
# PostgreSQL 15 (the store tests run against a real server as well as SQLite) and Chromium (the
# HTML report is opened in a real headless browser). Quick and silent when both are present.
# `make test` (hence .ci/run) calls this; nothing else depends on what a developer installed by hand.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "error: the tests need ${missing[*]} (Debian packages); run as root or install them: apt-get install ${missing[*]}" >&2
  exit 2
fi
echo "installing ${missing[*]} from Debian's registry (once per machine)..." >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null
# --no-install-recommends: the server and the browser alone, not their documentation and fonts;
# postgresql's post-install step may start a cluster on the default port: the tests use their own.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if command -v pg_ctlcluster >/dev/null 2>&1; then
  # the package's default cluster is not ours to keep running
  "${sudo[@]}" pg_ctlcluster --force "$(ls /usr/lib/postgresql | sort -V | tail -1)" main stop >/dev/null 2>&1 || true
fi
