#!/bin/sh
# bench/run-all.sh [BUILD_DIR] - every CPU benchmark of docs/benchmarks.md, in
# the order of that page, printing its tables (make bench).
set -u
BUILD=${1:-build}
status=0
echo "## dispatch";  "$BUILD/bench/bench_dispatch" "$BUILD/beamfleet" --tasks 20000 || status=1
echo "## exec tasks and the first result"
python3 "$(dirname "$0")/exec_vs_pool.py" "$BUILD/beamfleet" || status=1
echo "## raycast";   "$BUILD/bench/bench_raycast" || status=1
echo "## radio map"; "$BUILD/bench/bench_radiomap" || status=1
echo "## radio map against Sionna RT"
python3 "$(dirname "$0")/radiomap_vs_sionna.py" "$BUILD" || status=1
echo "## boresight"; "$BUILD/bench/bench_boresight" || status=1
exit $status
