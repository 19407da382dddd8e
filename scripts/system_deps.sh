#!/usr/bin/env bash
# System packages the tests need beyond Python wheels: Debian's Chromium for tests/browser
# (driven by playwright at /usr/bin/chromium; playwright's own browser download is never used).
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "tests/browser needs Chromium at /usr/bin/chromium (Debian: apt-get install chromium)" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
/usr/bin/chromium --version
