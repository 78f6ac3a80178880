#!/bin/sh
# tests/gpu/pack.sh [BUILD_DIR] [PACK_DIR] - everything the GPU check needs, in
# one folder that runs on a bare CUDA machine (no Debian packages, no network,
# no ../shared): the binaries run.sh uses, the shared libraries they need
# (carry-libs.sh), the shared scenes the parity test reads and the demo job.
# Then, there: PACK_DIR/run.sh  (tests/gpu/run.sh against the pack).
set -eu
BUILD=${1:-build}
PACK=${2:-gpu-pack}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${BF_SHARED_DIR:-$ROOT/../shared}
"$BUILD/beamfleet" version | grep -q 'gpu targets: sm_' || {
    echo "tests/gpu/pack.sh: $BUILD/beamfleet carries no GPU code (configure with nvcc)" >&2
    exit 2
}
rm -rf "$PACK"
mkdir -p "$PACK/build/kernels" "$PACK/build/bench" "$PACK/shared" "$PACK/tests/gpu" "$PACK/examples"
cp "$BUILD/beamfleet" "$BUILD/dlopen-libs.txt" "$PACK/build/"
cp "$BUILD/kernels/kern_cuda_test" "$BUILD/kernels/kern_fatbin_test" "$PACK/build/kernels/"
cp "$BUILD"/bench/bench_radiomap "$BUILD"/bench/bench_boresight "$PACK/build/bench/"
"$HERE/carry-libs.sh" "$PACK/build" >/dev/null
cp -r "$SHARED/scenes" "$PACK/shared/"
cp "$HERE/run.sh" "$PACK/tests/gpu/"
cp "$ROOT/examples/demo.yaml" "$PACK/examples/"
printf '#!/bin/sh\ncd "$(dirname "$0")" && exec tests/gpu/run.sh build "$@"\n' >"$PACK/run.sh"
chmod +x "$PACK/run.sh"
du -sh "$PACK"
