#!/bin/sh
# bench/chaos.sh - the long chaos run (DESIGN section 4, docs/reliability.md):
# 2000 exec tasks over 4 workers while the broker, the collector and workers are
# SIGKILLed at random every 0.5-2 s and restarted. Prints the seed and one line
# of figures; exits 1 on any lost or duplicated task.
#   usage: bench/chaos.sh [BUILD_DIR] [chaos.py options, e.g. --seed 7 --tasks 5000]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
[ $# -gt 0 ] && shift
BEAMFLEET_BIN=$(cd "$build" && pwd)/beamfleet
export BEAMFLEET_BIN
exec python3 "$here/../tests/chaos/chaos.py" --long "$@"
