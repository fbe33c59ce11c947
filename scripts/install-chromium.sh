#!/usr/bin/env bash
# Installs Debian's `chromium` for the browser test of the model pages (tests/test_pages_browser.py).
# Idempotent: does nothing when chromium is already on PATH. Never fails the build when it cannot
# install (not root, no apt-get, no network): it prints a note and the browser test skips with the
# reason (or fails, when CI is set).
set -u

say() { echo "install-chromium: $*"; }

for exe in chromium chromium-browser; do
    if command -v "$exe" >/dev/null 2>&1; then
        say "$exe already installed ($(command -v "$exe")); nothing to do"
        exit 0
    fi
done
if [ "$(id -u)" != "0" ]; then
    say "NOTE: chromium missing and not root: not installing. As root run:"
    say "      apt-get update && apt-get install -y chromium"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "NOTE: chromium missing and no apt-get here: install Chromium by hand (or set NLPMON_CHROMIUM)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
say "apt-get update"
if ! apt-get update -qq; then
    say "NOTE: apt-get update failed; not installing"
    exit 0
fi
say "apt-get install -y --no-install-recommends chromium fonts-dejavu-core"
if ! apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; then
    say "NOTE: apt-get install failed; the browser test will skip (or fail under CI)"
    exit 0
fi
say "installed: $(chromium --version 2>/dev/null | head -1)"
exit 0
