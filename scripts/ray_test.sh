#!/usr/bin/env bash
# Run the Ray tests (default: tests/test_distributed.py) or any command given, inside a
# network namespace that has only the loopback interface, so no Ray process can listen on or
# connect to anything but 127.0.0.1. Needs root (or user namespaces) and unshare(1); where
# namespaces are unavailable it says so and exits 0 without running Ray at all.
#   bash scripts/ray_test.sh                       # the distributed tests
#   bash scripts/ray_test.sh python benches/bench_distributed.py
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
if [ "$#" -eq 0 ]; then
    set -- "$python" -m pytest -q -p no:cacheprovider tests/test_distributed.py
fi
if ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
    echo "ray_test.sh: SKIPPED: unshare or ip (iproute2) missing; Ray runs only in a loopback-only namespace"
    exit 0
fi
# -n: a new network namespace; -m: a mount namespace to remount /sys, so that
# /sys/class/net lists this namespace's interfaces (the tests check that only lo exists).
# -r maps to root in a user namespace when not root already.
userns=()
[ "$(id -u)" -eq 0 ] || userns=(-r)
if ! unshare "${userns[@]}" -n -m true 2>/dev/null; then
    echo "ray_test.sh: SKIPPED: cannot create a network namespace here (unshare -n failed); Ray tests are never run outside one"
    exit 0
fi
exec unshare "${userns[@]}" -n -m bash -c '
    set -e
    ip link set lo up
    mount -t sysfs sysfs /sys
    export IQK_RAY_NETNS=1 RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    exec "$@"
' ray_test "$@"
