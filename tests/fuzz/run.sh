#!/usr/bin/env bash
# tests/fuzz/run.sh BUILD_DIR [SECONDS] [HARNESS...] - runs each libFuzzer
# harness of BUILD_DIR/tests/fuzz (built with -DBF_FUZZ=ON, see `make fuzz`) for
# SECONDS (default $FUZZ_SECONDS or 30) on a fresh copy of its committed seed
# corpus. Exits 1 on any crash, leak, timeout, out-of-memory or sanitizer
# report, naming the reproducer; prints execs/s and total execs per harness.
# Output, artifacts and the grown corpora: BUILD_DIR/fuzz-out/<harness>/.
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: tests/fuzz/run.sh BUILD_DIR [SECONDS] [HARNESS...]}
seconds=${2:-${FUZZ_SECONDS:-30}}
shift $(($# >= 2 ? 2 : 1))
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(proto yaml xml ply report)
case $seconds in '' | *[!0-9]*) echo "run.sh: SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;; esac

# -max_len per input kind: frames and files of real examples are a few KiB.
max_len() {
    case $1 in
    proto) echo 16384 ;;
    yaml) echo 8192 ;;
    xml) echo 16384 ;;
    ply) echo 8192 ;;
    report) echo 65536 ;;
    *) echo 4096 ;;
    esac
}

out=$(mkdir -p "$build/fuzz-out" && cd "$build/fuzz-out" && pwd) || exit 2
scratch=$(mktemp -d /dev/shm/bf-fuzz-run.XXXXXX 2>/dev/null || mktemp -d) || exit 2
trap 'rm -rf "$scratch"' EXIT
export BF_FUZZ_TMP=$scratch
# Leaks and UB are findings; report with symbols when llvm-symbolizer exists.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

status=0
printf '%-8s %8s %12s %10s %7s %s\n' harness seconds execs execs/s corpus result
for h in "${harnesses[@]}"; do
    bin=$build/tests/fuzz/fuzz_$h
    seeds=$here/corpus/$h
    if [ ! -x "$bin" ] || [ ! -d "$seeds" ]; then
        echo "run.sh: no harness $bin or corpus $seeds (configure with CC=clang -DBF_FUZZ=ON)" >&2
        status=1
        continue
    fi
    dir=$out/$h
    rm -rf "$dir" && mkdir -p "$dir/corpus" "$dir/artifacts" || exit 2
    cp "$seeds"/* "$dir/corpus/"
    log=$dir/log.txt
    dict=()
    [ -f "$here/$h.dict" ] && dict=(-dict="$here/$h.dict")
    "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
        -max_len="$(max_len "$h")" -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
        ${dict[@]+"${dict[@]}"} "$dir/corpus" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    units=$(find "$dir/corpus" -type f | wc -l)
    repro=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    result=ok
    if [ $rc -ne 0 ] || [ -n "$repro" ] ||
        grep -aqE '^==[0-9]+==ERROR|runtime error:|LeakSanitizer|ERROR: libFuzzer' "$log"; then
        result=FAILED
        status=1
    fi
    printf '%-8s %8s %12s %10s %7s %s\n' "$h" "$seconds" "${execs:-?}" "${rate:-?}" "$units" "$result"
    if [ $result = FAILED ]; then
        echo "--- fuzz_$h failed (exit $rc); log: $log" >&2
        grep -aE 'ERROR|runtime error|invariant failed|SUMMARY|Test unit written|#[0-9]+ 0x' "$log" \
            | head -30 >&2
        [ -n "$repro" ] && echo "reproducer: $repro (replay: $bin $repro)" >&2
    fi
done
exit $status
