#!/bin/sh
# tests/gpu/run.sh [BUILD_DIR] - everything that needs a GPU, in one command:
# GPU-versus-CPU parity on the analytic scenes and on munich, etoile and
# florence, then the GPU benchmarks. Runs on a bare CUDA machine without
# Debian packages: the build folder carries the shared libraries it needs
# (tests/gpu/carry-libs.sh BUILD_DIR puts them in BUILD_DIR/carry-libs).
# Exits 77 (skipped) when there is no GPU. tests/gpu/pack.sh makes a folder
# with all of it for a machine that has only a driver.
set -u
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export LD_LIBRARY_PATH="$BUILD/carry-libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export BF_SHARED_DIR=${BF_SHARED_DIR:-$ROOT/shared}
[ -d "$BF_SHARED_DIR/scenes" ] || export BF_SHARED_DIR="$ROOT/../shared"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "tests/gpu: no GPU here: skipped"
    exit 77
fi
nvidia-smi -L
"$BUILD/beamfleet" version
status=0
echo "== the GPU targets embedded in the binary are the ones the build asked for"
BF_BUILD_DIR="$BUILD" "$BUILD/kernels/kern_fatbin_test" || status=1
echo "== parity: CUDA backend vs CPU backend"
"$BUILD/kernels/kern_cuda_test" || status=1
echo "== benchmark: radio map on munich (GPU vs CPU)"
for rays in 1000000 10000000 100000000; do
    "$BUILD/bench/bench_radiomap" --rays "$rays" --backend cuda || status=1
done
"$BUILD/bench/bench_radiomap" --rays 1000000 --backend cpu || status=1
echo "== benchmark: orientation search on the GPU"
"$BUILD/bench/bench_boresight" --backend cuda || status=1
echo "== end to end: the 16-scene demo job, one GPU worker vs CPU workers"
mkdir -p /tmp/bf-gpu-demo
"$BUILD/beamfleet" scenegen --out /tmp/bf-gpu-demo/demo-scenes --count 16 --seed 1 >/dev/null
cp "$ROOT/examples/demo.yaml" /tmp/bf-gpu-demo/demo.yaml
start=$(date +%s.%N)
"$BUILD/beamfleet" run /tmp/bf-gpu-demo/demo.yaml --out /tmp/bf-gpu-out-gpu | tail -n 12 || status=1
mid=$(date +%s.%N)
"$BUILD/beamfleet" run /tmp/bf-gpu-demo/demo.yaml --cpu --workers 1 --out /tmp/bf-gpu-out-cpu | tail -n 12 || status=1
end=$(date +%s.%N)
echo "demo job: GPU worker $(echo "$mid - $start" | bc) s, CPU worker ($(nproc) cores) $(echo "$end - $mid" | bc) s"
exit $status
