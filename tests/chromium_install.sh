#!/bin/sh
# Installs the browser the web app's tests drive (tests/integration/test_webapp.py): Debian's
# Chromium and its chromium-driver, and CJK fonts so the Chinese interface's screenshots show
# its text. Idempotent: does nothing when all three are there. CI runs it before `make test`.
set -eu
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && [ -d /usr/share/fonts/opentype/noto ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium chromium-driver fonts-noto-cjk
