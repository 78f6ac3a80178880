#!/bin/bash
# tests/deploy/test_systemd.sh - the systemd units of deploy/systemd:
#  1. `systemd-analyze verify` accepts them (any message about them fails),
#  2. `systemd-analyze security --offline` keeps their exposure under a bound,
#  3. the contract the brief asks of them (Restart, KillSignal, drain timeout),
#  4. their ExecStart lines, run as written (specifiers expanded, paths moved
#     into a temp dir), make a working fleet: a job finishes with every scene
#     once, and a worker stopped the way systemd stops it (SIGTERM to the main
#     process only, KillMode=mixed) drains its running task and exits 0.
# Exits 77 when systemd-analyze cannot run here.
set -u
. "$(dirname "$0")/lib.sh"
BF=$(bf_bin) || exit 1
UNITS="$REPO/deploy/systemd"

command -v systemd-analyze >/dev/null || need_debs systemd || skip "no systemd-analyze"
T=$(mktemp -d /tmp/bf-systemd.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
    if [ "${OK:-0}" = 1 ]; then rm -rf "$T"; else echo "(files kept in $T)"; fi
}
trap cleanup EXIT
systemd-analyze --version >/dev/null 2>&1 || skip "systemd-analyze cannot run"

# -- 1. verify ----------------------------------------------------------------
# The units name /usr/local/bin/beamfleet, which verify requires to exist: point
# copies at the binary under test. A template is verified through an instance.
# Their Documentation= is docs/beamfleet.1, installed with the binary, not here.
mkdir -p "$T/units"
for u in "$UNITS"/*.service; do
    sed "s#/usr/local/bin/beamfleet#$BF#g" "$u" >"$T/units/$(basename "$u")"
done
ln -s 'beamfleet-worker@.service' "$T/units/beamfleet-worker@0.service"
instances=("beamfleet-broker.service" "beamfleet-collector.service" "beamfleet-worker@0.service")
(cd "$T/units" && systemd-analyze verify --man=no "${instances[@]/#/./}") >"$T/verify.log" 2>&1
rc=$?
if grep -q beamfleet "$T/verify.log" || [ $rc -ne 0 ]; then
    cat "$T/verify.log" >&2
    fail "systemd-analyze verify: exit $rc"
fi
echo "verify: ${instances[*]}: clean"

# -- 2. exposure ----------------------------------------------------------------
check_exposure() { # UNIT MAX
    local line
    line=$(cd "$T/units" && systemd-analyze security --offline=yes --no-pager "./$1" 2>&1 | tail -1)
    local score
    score=$(printf '%s' "$line" | sed -n 's/.*: \([0-9.]*\) .*/\1/p')
    [ -n "$score" ] || fail "systemd-analyze security $1: no score in '$line'"
    awk -v s="$score" -v m="$2" 'BEGIN { exit !(s <= m) }' ||
        fail "$1: exposure $score above $2 (hardening was weakened)"
    echo "security: $1: exposure $score (bound $2)"
}
if (cd "$T/units" && systemd-analyze security --offline=yes --no-pager ./beamfleet-broker.service) \
    >/dev/null 2>&1; then
    check_exposure beamfleet-broker.service 2.0
    check_exposure beamfleet-collector.service 2.0
    check_exposure beamfleet-worker@0.service 4.5
else
    echo "security: this systemd-analyze has no --offline (older than 252), not checked"
fi

# -- 3. the brief's contract ----------------------------------------------------
key() { sed -n "s/^$2=//p" "$UNITS/$1" | tail -1; }
seconds() { # systemd time span (3660s, 1h, 30min, 90) -> seconds
    "$PY" -c '
import re, sys
units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hr": 3600}
total = 0
for n, u in re.findall(r"(\d+)\s*([a-z]*)", sys.argv[1]):
    total += int(n) * units[u]
print(total)' "$1"
}
for u in beamfleet-broker.service beamfleet-collector.service 'beamfleet-worker@.service'; do
    [ "$(key "$u" Restart)" = on-failure ] || fail "$u: Restart= is not on-failure"
    [ "$(key "$u" KillSignal)" = SIGTERM ] || fail "$u: KillSignal= is not SIGTERM"
    grep -q '^ExecStart=/usr/local/bin/beamfleet .*-c /etc/beamfleet/fleet.yaml' "$UNITS/$u" ||
        fail "$u: ExecStart does not run beamfleet with /etc/beamfleet/fleet.yaml"
    [ -n "$(key "$u" User)$(key "$u" DynamicUser)" ] || fail "$u: runs as root"
    [ -n "$(key "$u" StateDirectory)" ] || fail "$u: no StateDirectory="
done
grep -q -- '--gpus %i' "$UNITS/beamfleet-worker@.service" || fail "worker: ExecStart lacks --gpus %i"
[ "$(key 'beamfleet-worker@.service' KillMode)" = mixed ] ||
    fail "worker: KillMode= must be mixed (SIGTERM to the worker only, so tasks drain)"
stop=$(seconds "$(key 'beamfleet-worker@.service' TimeoutStopSec)")
[ "$stop" -ge 3600 ] || fail "worker: TimeoutStopSec=${stop}s is shorter than a default task (3600 s)"
echo "contract: Restart=on-failure, KillSignal=SIGTERM, worker KillMode=mixed, TimeoutStopSec=${stop}s"

# -- 4. the ExecStart lines, run --------------------------------------------------
BROKER_PORT=$(free_port)
PUB_PORT=$(free_port)
cat >"$T/fleet.yaml" <<EOF
broker: {endpoint: tcp://127.0.0.1:$BROKER_PORT, bind: tcp://127.0.0.1:$BROKER_PORT}
heartbeat: {interval_ms: 200, liveness: 3}
collector: {publish: tcp://127.0.0.1:$PUB_PORT}
worker: {allow_exec: [$TASK], interpreters: [$PY_ABS]}
# security: {keys: /etc/beamfleet/keys, identity: $(hostname -s)}
# metrics: {listen: 127.0.0.1:9464}
EOF
EP=tcp://127.0.0.1:$BROKER_PORT
ROOT="$T/root" # stands for / : $ROOT/var/lib is %S
mkdir -p "$ROOT/var/lib"

# start_unit UNIT INSTANCE: runs the unit's ExecStart with its Environment=,
# StateDirectory= and WorkingDirectory= the way systemd would; sets UNIT_PID.
start_unit() {
    local file="$UNITS/$1" inst=$2 name=${1%.service}
    expand() {
        printf '%s' "$1" | sed -e "s#/var/lib/#$ROOT/var/lib/#g" -e "s#%i#$inst#g" \
            -e "s#%H#$(hostname)#g" -e "s#%S#$ROOT/var/lib#g" -e "s#%%#%#g" \
            -e "s#/usr/local/bin/beamfleet#$BF#g" -e "s#/etc/beamfleet/fleet.yaml#$T/fleet.yaml#g"
    }
    local envs=() line d
    while IFS= read -r line; do envs+=("$(expand "$line")"); done < <(sed -n 's/^Environment=//p' "$file")
    for d in $(sed -n 's/^StateDirectory=//p' "$file"); do mkdir -p "$ROOT/var/lib/$(expand "$d")"; done
    local wd
    wd=$(expand "$(sed -n 's/^WorkingDirectory=//p' "$file")")
    local cmd
    cmd=$(expand "$(sed -n 's/^ExecStart=//p' "$file")")
    echo "$name@$inst: $cmd" >>"$T/commands.log"
    # shellcheck disable=SC2086 # ExecStart is split on spaces, as systemd does here
    (cd "${wd:-/}" && exec setsid env "${envs[@]}" $cmd >"$T/$name-$inst.log" 2>&1 </dev/null) &
    UNIT_PID=$!
    PIDS+=("$UNIT_PID")
}

start_unit beamfleet-broker.service -
BROKER=$UNIT_PID
start_unit beamfleet-collector.service -
COLLECTOR=$UNIT_PID
start_unit 'beamfleet-worker@.service' none
WORKER=$UNIT_PID
cat "$T/commands.log"
wait_status "$EP" 'len(s["workers"]) == 1 and s["collector"]["connected"]' 30 \
    "the worker@none and the collector to join the broker" || fail "the fleet did not form"
[ -d "$ROOT/var/lib/beamfleet/worker-none" ] || fail "worker: no state directory"

JOB=$(make_exec_job "$T" sysd a1 a2 a3 slow_a4 a5)
timeout 120 "$BF" submit "$JOB" --broker "$EP" --wait >"$T/submit.log" 2>&1 ||
    { cat "$T/submit.log"; fail "submit --wait failed"; }
OUT="$ROOT/var/lib/beamfleet/reports/sysd"
for _ in $(seq 50); do [ -f "$OUT/summary.json" ] && break; sleep 0.2; done
check_reports "$OUT" a1 a2 a3 slow_a4 a5 || fail "the collector's reports (--out from the unit)"

# Drain: a slow task is running when the worker's main process gets SIGTERM.
JOB2=$(make_exec_job "$T" drain slow_b1)
"$BF" submit "$JOB2" --broker "$EP" >/dev/null || fail "submit drain job"
wait_status "$EP" 'any(w["running"] for w in s["workers"])' 20 "the slow task to start" ||
    fail "the drain task never started"
kill -TERM "$WORKER"
wait "$WORKER"
rc=$?
[ $rc -eq 0 ] || { tail "$T/beamfleet-worker@-none.log"; fail "worker exited $rc after SIGTERM (Restart=on-failure would restart it)"; }
OUT2="$ROOT/var/lib/beamfleet/reports/drain"
for _ in $(seq 50); do [ -f "$OUT2/summary.json" ] && break; sleep 0.2; done
check_reports "$OUT2" slow_b1 || fail "the task running at SIGTERM was not drained"
echo "drain: SIGTERM to the worker's main process finished the running task, exit 0"

for p in "$COLLECTOR" "$BROKER"; do
    kill -TERM "$p"
    wait "$p"
    rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 143 ] || fail "daemon $p exited $rc after SIGTERM"
done
PIDS=()
OK=1
echo "PASS test_systemd"
