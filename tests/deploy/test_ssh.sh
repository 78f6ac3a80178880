#!/bin/bash
# tests/deploy/test_ssh.sh - deploy/ssh/beamfleet-ssh against a real sshd on a
# loopback port (openssh-server, installed when missing; host and client keys
# made here; two host aliases in an ssh config stand for two machines). When
# sshd cannot run here it falls back to a fake `ssh` on PATH that runs the
# command locally (BF_SSH_FAKE=1 forces that). Checks:
#  - a bad hosts file is refused with a one-line file:line error (exit 2);
#  - `start` starts one worker supervisor per host; the workers join the broker
#    with each host's own arguments; a second `start` refuses (already running);
#  - a host that cannot be reached is reported by name and fails the command;
#  - `stop` drains: a task running at the stop finishes, and `status` then says
#    no worker runs; every scene is in the reports exactly once.
set -u
. "$(dirname "$0")/lib.sh"
BF=$(bf_bin) || exit 1
LAUNCHER="$REPO/deploy/ssh/beamfleet-ssh"

T=$(mktemp -d /tmp/bf-ssh.XXXXXX)
chmod 755 "$T"
PIDS=()
OK=0
cleanup() {
    [ -f "$T/sshd.pid" ] && kill -TERM "$(cat "$T/sshd.pid")" 2>/dev/null
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    # Workers the launcher started and a failed test left behind: by pid file.
    for f in "$T"/run/worker-*.pid; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null; done
    if [ $OK = 1 ]; then
        rm -rf "$T"
    else
        for f in "$T"/*.log "$T"/run/*.log; do [ -f "$f" ] && { echo "----- $f"; tail -n 20 "$f"; }; done
        echo "(files kept in $T)"
    fi
}
trap cleanup EXIT

# -- ssh: a real sshd on loopback, or the fake -----------------------------------------
MODE=fake
SSHD_PORT=$(free_port)
if [ "${BF_SSH_FAKE:-0}" != 1 ] && need_debs openssh-server openssh-client && [ -x /usr/sbin/sshd ]; then
    ssh-keygen -q -t ed25519 -N '' -f "$T/host_key" && ssh-keygen -q -t ed25519 -N '' -f "$T/id" &&
        cp "$T/id.pub" "$T/authorized_keys"
    cat >"$T/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $SSHD_PORT
HostKey $T/host_key
PidFile $T/sshd.pid
AuthorizedKeysFile $T/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
LogLevel VERBOSE
EOF
    mkdir -p /run/sshd 2>/dev/null
    if /usr/sbin/sshd -f "$T/sshd_config" -E "$T/sshd.log"; then
        for _ in $(seq 50); do [ -s "$T/sshd.pid" ] && break; sleep 0.1; done
        MODE=sshd
    fi
fi
if [ $MODE = sshd ]; then
    cat >"$T/ssh_config" <<EOF
Host node1 node2 node3
    HostName 127.0.0.1
    Port $SSHD_PORT
    User $(id -un)
    IdentityFile $T/id
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile $T/known_hosts
    LogLevel ERROR
Host unreachable
    HostName 127.0.0.1
    Port $(free_port)
    IdentityFile $T/id
    StrictHostKeyChecking no
    UserKnownHostsFile $T/known_hosts
    LogLevel ERROR
EOF
    ssh -F "$T/ssh_config" -o BatchMode=yes node1 true </dev/null >"$T/ssh-probe.log" 2>&1 || MODE=fake
fi
if [ $MODE = fake ]; then
    # ssh [options] HOST COMMAND: runs COMMAND here with sh -c; the host named
    # `unreachable` fails the way ssh does (exit 255).
    mkdir -p "$T/fakebin"
    cat >"$T/fakebin/ssh" <<'EOF'
#!/bin/sh
while [ $# -gt 0 ]; do
    case $1 in
    -F | -o | -p | -i | -l) shift 2 ;;
    -*) shift ;;
    *) break ;;
    esac
done
host=$1
shift
[ "$host" = unreachable ] && { echo "ssh: connect to host $host port 22: Connection refused" >&2; exit 255; }
exec sh -c "$*"
EOF
    chmod +x "$T/fakebin/ssh"
    export PATH="$T/fakebin:$PATH"
    echo "ssh: fake ssh on PATH (no sshd here)"
    echo "# fake" >"$T/ssh_config"
else
    echo "ssh: real sshd on 127.0.0.1:$SSHD_PORT, hosts node1 node2 are aliases of it"
fi
launch() { "$LAUNCHER" "$1" "$2" --ssh-config "$T/ssh_config" --run-dir "$T/run" --bin "$BF" "${@:3}"; }

# -- the fleet's broker and collector (on this "head" host) --------------------------
EP=tcp://127.0.0.1:$(free_port)
"$BF" broker --bind "$EP" --state "$T/state" --heartbeat-ms 200 >"$T/broker.log" 2>&1 &
PIDS+=($!)
"$BF" collector --broker "$EP" --publish "tcp://127.0.0.1:$(free_port)" --heartbeat-ms 200 \
    >"$T/collector.log" 2>&1 &
PIDS+=($!)
wait_status "$EP" 's["collector"]["connected"]' 20 "the collector" || fail "no broker/collector"

# -- a bad hosts file --------------------------------------------------------------------
printf 'node1\n\nnode2 --gpus none;rm\n' >"$T/bad-hosts"
out=$(launch start "$T/bad-hosts" --broker "$EP" 2>&1)
rc=$?
[ $rc -eq 2 ] || fail "bad hosts file: exit $rc, expected 2 ($out)"
case $out in *"bad-hosts:3: worker argument '--gpus none;rm'"* | *"bad-hosts:3: worker argument 'none;rm'"*) ;;
*) fail "bad hosts file: message '$out' does not name line 3 and the argument" ;; esac
[ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || fail "bad hosts file: not a one-line error: $out"
echo "hosts file: $out"

# -- start ------------------------------------------------------------------------------
cat >"$T/hosts" <<EOF
# two machines (aliases of this one): one CPU worker on node1, two on node2
node1   --gpus none --cpu 1 --allow-exec $TASK
node2   --gpus none --cpu 2   # a comment; exec allowed by the fleet file
EOF
# The fleet file the hosts read (-c): node2's only permission to run task.py.
cat >"$T/fleet.yaml" <<EOF
heartbeat: {interval_ms: 200, liveness: 3}
worker: {allow_exec: [$TASK], interpreters: [$PY_ABS]}
# security: {keys: /etc/beamfleet/keys, identity: node1}
# metrics: {listen: 127.0.0.1:9464}
EOF
launch start "$T/hosts" --broker "$EP" -c "$T/fleet.yaml" -- --prefetch 1 >"$T/start.out" 2>&1 ||
    { cat "$T/start.out"; fail "start"; }
cat "$T/start.out"
[ "$(grep -c 'started (pid' "$T/start.out")" -eq 2 ] || fail "start: expected two 'started' lines"
wait_status "$EP" 'len(s["workers"]) == 3' 30 "3 workers (1 on node1, 2 on node2)" || fail "workers did not join"
launch status "$T/hosts" >"$T/status.out" 2>&1 || { cat "$T/status.out"; fail "status while running"; }
[ "$(grep -c ': running (pid' "$T/status.out")" -eq 2 ] || { cat "$T/status.out"; fail "status: not 2 running"; }
if launch start "$T/hosts" --broker "$EP" >"$T/again.out" 2>&1; then fail "a second start succeeded"; fi
grep -q "already running" "$T/again.out" || { cat "$T/again.out"; fail "second start: no 'already running'"; }
printf 'node1\nunreachable\n' >"$T/hosts-bad-host"
if launch status "$T/hosts-bad-host" >"$T/unreach.out" 2>&1; then fail "status with an unreachable host succeeded"; fi
grep -q "^unreachable: ssh failed" "$T/unreach.out" || { cat "$T/unreach.out"; fail "the unreachable host is not named"; }
grep -q "^node1: running" "$T/unreach.out" || { cat "$T/unreach.out"; fail "node1 not reported beside the failure"; }
echo "start: 3 workers on 2 hosts joined $EP; second start refused; unreachable host named"

# -- a job, then stop while a slow task runs -------------------------------------------------
JOB=$(make_exec_job "$T" sshjob s1 s2 s3 s4 s5 s6)
timeout 120 "$BF" submit "$JOB" --broker "$EP" --wait >"$T/submit.log" 2>&1 || { cat "$T/submit.log"; fail "submit"; }
for _ in $(seq 50); do [ -f "$T/sshjob-out/summary.json" ] && break; sleep 0.2; done
check_reports "$T/sshjob-out" s1 s2 s3 s4 s5 s6 || fail "reports of the job"
JOB2=$(make_exec_job "$T" drain slow_d1)
"$BF" submit "$JOB2" --broker "$EP" >/dev/null || fail "submit drain job"
wait_status "$EP" 'any(w["running"] for w in s["workers"])' 20 "the slow task to start" || fail "no slow task"
launch stop "$T/hosts" --timeout 60 >"$T/stop.out" 2>&1 || { cat "$T/stop.out"; fail "stop"; }
cat "$T/stop.out"
[ "$(grep -c 'stopped (pid' "$T/stop.out")" -eq 2 ] || fail "stop: expected two 'stopped' lines"
for _ in $(seq 50); do [ -f "$T/drain-out/summary.json" ] && break; sleep 0.2; done
check_reports "$T/drain-out" slow_d1 || fail "the task running at the stop was not drained"
wait_status "$EP" 'len(s["workers"]) == 0' 10 "every worker to leave" || fail "workers still registered"
if launch status "$T/hosts" >"$T/status2.out" 2>&1; then fail "status after stop says running"; fi
[ "$(grep -c ': not running' "$T/status2.out")" -eq 2 ] || { cat "$T/status2.out"; fail "status after stop"; }
ls "$T"/run/worker-*.pid >/dev/null 2>&1 && fail "pid files left after stop"
echo "stop: drained (the running task finished), no worker left"

OK=1
echo "PASS test_ssh ($MODE)"
