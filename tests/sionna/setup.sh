#!/bin/sh
# tests/sionna/setup.sh VENV - the ctest fixture of tests/sionna: a virtual
# environment at VENV with Sionna RT (PyPI sionna-rt, pinned below) for
# Mitsuba's llvm_ad_mono_polarized variant, and the LLVM that Dr.Jit's CPU
# backend loads. Debian's libllvm19 (make deps-test installs it): with LLVM 15
# Dr.Jit aborts. Writes VENV/llvm-path with the library's path once Sionna
# imports; run again, it only checks. Exits 77 (skipped, one line saying why)
# when PyPI cannot be reached or no LLVM 19 is installed, 1 on a real failure.
set -u
venv=${1:?usage: setup.sh VENV}
SIONNA_RT_VERSION=${SIONNA_RT_VERSION:-2.2.0}

llvm=""
for f in /usr/lib/x86_64-linux-gnu/libLLVM.so.19.1 /usr/lib/x86_64-linux-gnu/libLLVM-19.so \
         /usr/lib/aarch64-linux-gnu/libLLVM.so.19.1 /usr/lib/aarch64-linux-gnu/libLLVM-19.so \
         /usr/lib/llvm-19/lib/libLLVM.so.19.1 /usr/lib/llvm-19/lib/libLLVM-19.so; do
    if [ -e "$f" ]; then llvm=$f; break; fi
done
if [ -z "$llvm" ]; then
    echo "sionna setup: skipped: no LLVM 19 (apt-get install -y libllvm19, or make deps-test)"
    exit 77
fi

check() {
    DRJIT_LIBLLVM_PATH=$llvm "$venv/bin/python" -c '
import mitsuba as mi
mi.set_variant("llvm_ad_mono_polarized")
import sionna.rt, sys
sys.exit(0 if sionna.rt.__version__ == sys.argv[1] else 3)' "$SIONNA_RT_VERSION" >/dev/null 2>&1
}

if [ -x "$venv/bin/python" ] && check; then
    printf '%s\n' "$llvm" > "$venv/llvm-path"
    echo "sionna setup: sionna-rt $SIONNA_RT_VERSION in $venv, LLVM $llvm"
    exit 0
fi
rm -f "$venv/llvm-path"
if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    echo "sionna setup: python3 -m venv $venv failed (python3-venv missing?)" >&2
    exit 1
fi
log="$venv/pip.log"
# One quick question to the index first, so that an offline machine skips
# in seconds instead of waiting out pip's retries.
if ! "$venv/bin/pip" download --no-deps --retries 0 --timeout 15 -d "$venv/probe" \
        "sionna-rt==$SIONNA_RT_VERSION" >"$log" 2>&1; then
    echo "sionna setup: skipped: PyPI unreachable (pip download sionna-rt==$SIONNA_RT_VERSION failed; see $log)"
    exit 77
fi
rm -rf "$venv/probe"
if ! "$venv/bin/pip" install -q --timeout 60 "sionna-rt==$SIONNA_RT_VERSION" >>"$log" 2>&1; then
    echo "sionna setup: pip install sionna-rt==$SIONNA_RT_VERSION failed; see $log" >&2
    tail -5 "$log" >&2
    exit 1
fi
if ! check; then
    echo "sionna setup: sionna-rt installed but does not import with llvm_ad_mono_polarized and $llvm" >&2
    exit 1
fi
printf '%s\n' "$llvm" > "$venv/llvm-path"
echo "sionna setup: installed sionna-rt $SIONNA_RT_VERSION in $venv, LLVM $llvm"
