#!/bin/sh
# tests/gpu/carry-libs.sh [BUILD_DIR] - copies the shared libraries that the
# build's binaries need (as ldd lists them, less the C library and the CUDA
# driver, which the GPU machine has) into BUILD_DIR/carry-libs, so the build
# folder runs on a bare CUDA machine without Debian packages.
set -eu
BUILD=${1:-build}
mkdir -p "$BUILD/carry-libs"
for bin in "$BUILD/beamfleet" "$BUILD/kernels/kern_cuda_test" "$BUILD"/bench/bench_*; do
    [ -x "$bin" ] || continue
    ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
        case "$(basename "$lib")" in
            libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libresolv.so*|libutil.so*|\
            libnss_*|ld-linux*|libcuda.so*) ;; # glibc's own, and the driver
            *) cp -L "$lib" "$BUILD/carry-libs/" ;;
        esac
    done
done
ls "$BUILD/carry-libs"
