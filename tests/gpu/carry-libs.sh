#!/bin/sh
# tests/gpu/carry-libs.sh [BUILD_DIR] - copies the shared libraries that the
# build's binaries need (as ldd lists them, less the C library and the CUDA
# driver, which the GPU machine has) into BUILD_DIR/carry-libs, so the build
# folder runs on a bare CUDA machine without Debian packages. ldd does not
# see what the binary loads with dlopen (libmicrohttpd, for the broker's
# metrics endpoint): BUILD_DIR/dlopen-libs.txt, which CMake writes, lists
# those, and each is copied with what it needs in turn.
set -eu
BUILD=${1:-build}
mkdir -p "$BUILD/carry-libs"
carry() { # copies each library path read on stdin, less glibc's own and the driver
    while read -r lib; do
        case "$(basename "$lib")" in
            libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libresolv.so*|libutil.so*|\
            libnss_*|ld-linux*|libcuda.so*) ;; # glibc's own, and the driver
            *) cp -L "$lib" "$BUILD/carry-libs/" ;;
        esac
    done
}
for bin in "$BUILD/beamfleet" "$BUILD/kernels/kern_cuda_test" "$BUILD"/bench/bench_*; do
    [ -x "$bin" ] || continue
    ldd "$bin" | awk '/=> \// {print $3}' | carry
done
if [ -f "$BUILD/dlopen-libs.txt" ]; then
    while read -r lib; do
        echo "$lib" | carry
        ldd "$lib" </dev/null | awk '/=> \// {print $3}' | carry
    done <"$BUILD/dlopen-libs.txt"
fi
ls "$BUILD/carry-libs"
