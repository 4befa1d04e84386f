#!/bin/sh
# Installs the PostgreSQL server binaries the store tests start (tests/support/pg.py).
# Idempotent: does nothing when initdb is already there. CI runs it before `make test`.
set -eu
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y postgresql
