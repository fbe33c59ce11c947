#!/usr/bin/env bash
# Installs Prometheus (prometheus, promtool) and Alertmanager (prometheus-alertmanager, amtool) from the
# distribution's packages, for the alert-rule tests in tests/deploy. Idempotent: does nothing when
# promtool and amtool are already on PATH. Never fails the build when it cannot install (not root, no
# apt-get): it prints a note and the tests skip (or fail, when CI is set, with the reason).
# The Debian packages would start their daemons; we forbid that with a temporary policy-rc.d and stop any
# daemon the install left running anyway.
set -u

say() { echo "install-monitoring-tools: $*"; }

if command -v promtool >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1; then
    say "promtool and amtool already installed ($(command -v promtool), $(command -v amtool)); nothing to do"
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    say "NOTE: promtool/amtool missing and not root: not installing. As root run:"
    say "      apt-get update && apt-get install -y prometheus prometheus-alertmanager"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "NOTE: promtool/amtool missing and no apt-get here: install Prometheus and Alertmanager by hand"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    say "writing a temporary $policy so that the packages do not start their services"
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

# Daemons already running before the install are not ours to stop.
daemons() { pgrep -f '^/usr/bin/prometheus(-alertmanager)?( |$)' 2>/dev/null; }
before="$(daemons | tr '\n' ' ')"

say "apt-get update"
if ! apt-get update -qq; then
    say "NOTE: apt-get update failed; not installing"
    exit 0
fi
say "apt-get install -y --no-install-recommends prometheus prometheus-alertmanager"
if ! apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager; then
    say "NOTE: apt-get install failed; the alert-rule tests will skip (or fail under CI)"
    exit 0
fi

for pid in $(daemons); do
    case " $before " in *" $pid "*) continue ;; esac
    say "stopping daemon $pid ($(ps -o comm= -p "$pid" 2>/dev/null)) started by the package install"
    kill "$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
done

say "installed: $(promtool --version 2>&1 | head -1); $(amtool --version 2>&1 | head -1)"
exit 0
