# tests/deploy/lib.sh - what the deployment tests share (sourced, bash): the
# binary, free loopback ports, polling the broker's status document, the exec
# job of tests/e2e (task.py) and the exact report accounting of tests/e2e/fleet.py.
# Each helper prints a one-line reason and returns non-zero on failure.

DEPLOY_TESTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$DEPLOY_TESTS/../.." && pwd)
E2E="$REPO/tests/e2e"
TASK="$E2E/task.py"
PY=${PYTHON:-python3}

# The binary under test: $BEAMFLEET_BIN (ctest passes it), else build/beamfleet.
bf_bin() {
    local b=${BEAMFLEET_BIN:-$REPO/build/beamfleet}
    [ -x "$b" ] || { echo "no beamfleet binary at $b (set BEAMFLEET_BIN)" >&2; return 1; }
    (cd "$(dirname "$b")" && echo "$(pwd)/$(basename "$b")")
}

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Installs the Debian packages that are missing (only those); returns non-zero
# when that is impossible (no apt, no root, no network). One test at a time
# (ctest -j): they share the policy-rc.d that deploy/install-deps.sh puts in place.
need_debs() {
    (
        flock -w 900 9 || exit 1
        install_missing_debs "$@"
    ) 9>"${TMPDIR:-/tmp}/beamfleet-deploy-apt.lock"
}
install_missing_debs() {
    command -v apt-get >/dev/null || return 1
    [ "$(id -u)" -eq 0 ] || return 1
    # the project's one installer (it keeps services from starting, too)
    "$REPO/deploy/install-deps.sh" "$@" >&2
}

# status_check EP PYTHON_EXPR: true when the expression holds for the status
# document `s` (the broker's `status --json`), e.g.
#   status_check tcp://127.0.0.1:5555 'len(s["workers"]) >= 2'
status_check() {
    local doc
    doc=$("$BF" status --broker "$1" --json 2>/dev/null) || return 1
    printf '%s' "$doc" | "$PY" -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if ('"$2"') else 1)'
}

# wait_status EP EXPR SECONDS WHAT
wait_status() {
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt $deadline ]; do
        status_check "$1" "$2" && return 0
        sleep 0.5
    done
    echo "timed out after $3 s waiting for $4" >&2
    "$BF" status --broker "$1" >&2 2>&1 || true
    return 1
}

# make_exec_job DIR NAME SCENE... : writes DIR/NAME.yaml, an exec job running
# tests/e2e/task.py on one empty directory per scene; prints the job path.
make_exec_job() {
    local dir=$1 name=$2
    shift 2
    mkdir -p "$dir/$name-scenes"
    local s
    for s in "$@"; do mkdir -p "$dir/$name-scenes/$s"; done
    cat >"$dir/$name.yaml" <<EOF
name: $name
scenes: $dir/$name-scenes
output: $dir/$name-out
task: exec
timeout_s: 120
max_attempts: 3
exec: {command: [$PY_ABS, $TASK, "{scene_dir}"]}
EOF
    echo "$dir/$name.yaml"
}

# check_reports OUT SCENE... : each scene exactly once, with status success, in
# every report the collector writes (tests/e2e/fleet.py check_reports).
check_reports() {
    local out=$1
    shift
    "$PY" - "$E2E" "$out" "$@" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import fleet
try:
    fleet.check_reports(sys.argv[2], sys.argv[3:])
except (AssertionError, OSError, ValueError) as e:
    print(f"reports in {sys.argv[2]}: {e}", file=sys.stderr)
    sys.exit(1)
print(f"reports in {sys.argv[2]}: {len(sys.argv) - 3} scenes, each exactly once")
EOF
}

PY_ABS=$(command -v "$PY")
PY_ABS=$("$PY_ABS" -c 'import sys; print(sys.executable)')
