#!/bin/bash
# tests/deploy/test_slurm.sh - deploy/slurm/beamfleet.sbatch on a real Slurm:
# a one-node cluster on this machine (Debian's slurm-wlm and munge, installed
# when missing; munged, slurmctld and slurmd started here in a temp dir and
# stopped at the end), then
#  A. `sbatch beamfleet.sbatch JOB.yaml`: the broker and collector step, one
#     CPU worker per allocated CPU, every scene exactly once in the reports,
#     every worker took part, the job COMPLETED with exit 0, nothing left running;
#  B. `sbatch beamfleet.sbatch` (no job: a fleet for the allocation): the
#     workers join the broker at the endpoint the script writes, a job submitted
#     from outside finishes, and `scancel -b -s TERM` drains and ends the fleet;
#  C. `sbatch --gpus-per-node=2 beamfleet.sbatch JOB.yaml`: the GPU path. The
#     node declares two GPUs (gres, device files that are links to /dev/null):
#     one worker task per GPU, each with its own CUDA_VISIBLE_DEVICES from
#     Slurm (with no real GPU each then runs the CPU engine); every process
#     reads a fleet file (BEAMFLEET_FLEET) instead of flags;
#  D. `sbatch -N 2`: on two nodes (a second slurmd on this machine) the script
#     refuses a plaintext broker beyond loopback unless BEAMFLEET_INSECURE=1;
#     with it, the broker binds 0.0.0.0, the workers of both nodes reach it at
#     the first node's NodeAddr, and the job completes.
# Exits 77 when Slurm cannot be installed or started here.
set -u
. "$(dirname "$0")/lib.sh"
BF=$(bf_bin) || exit 1
SBATCH_SCRIPT="$REPO/deploy/slurm/beamfleet.sbatch"

# One private cluster on this machine at a time (its node is this host's name),
# whichever build tree or session runs the test.
exec 8>"${TMPDIR:-/tmp}/beamfleet-deploy-slurm.lock"
flock -w 900 8 || skip "another Slurm test kept the lock for 15 minutes"
need_debs slurm-wlm munge || skip "cannot install slurm-wlm and munge"
for t in munged slurmctld slurmd sbatch srun squeue scontrol scancel sinfo; do
    command -v $t >/dev/null || [ -x /usr/sbin/$t ] || skip "$t missing after installing slurm-wlm"
done
export PATH="$PATH:/usr/sbin"
[ "$(id -u)" -eq 0 ] || skip "a private Slurm cluster needs root here (SlurmUser, munged)"

S=$(mktemp -d /tmp/bf-slurm.XXXXXX)
chmod 755 "$S"
mkdir -p "$S/munge" "$S/spool/$(hostname -s)" "$S/spool/$(hostname -s)-b" "$S/state" "$S/log" \
    "$S/work" "$S/dev"
chmod 700 "$S/munge"
OK=0
stop_pidfile() { # stops the daemon this test started, by its pid file
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
}
cleanup() {
    # Jobs first, while the daemons that end them still run.
    if [ -n "${SLURM_CONF:-}" ] && [ -n "${JOBS_STARTED:-}" ]; then
        for j in $JOBS_STARTED; do scancel "$j" 2>/dev/null; done
        for _ in $(seq 60); do
            [ -z "$(squeue -h -j "$(echo $JOBS_STARTED | tr ' ' ,)" 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    stop_pidfile "$S/slurmd-$NODE2.pid"
    stop_pidfile "$S/slurmd-$NODE.pid"
    stop_pidfile "$S/slurmctld.pid"
    stop_pidfile "$S/munge/munged.pid"
    # Anything of this test still alive: batch scripts and sruns (their paths
    # are under $S) and the fleets' processes (their endpoints).
    local p pat
    for pat in "$S/" "${FLEET_PATS[@]}"; do
        for p in $(pgrep -f -- "$pat" 2>/dev/null); do
            [ "$p" != $$ ] && kill -KILL "$p" 2>/dev/null
        done
    done
    if [ $OK = 1 ]; then
        rm -rf "$S"
    else
        for f in "$S"/log/*.log "$S"/work/*/run/logs/*.log "$S"/work/*.out; do
            [ -f "$f" ] && { echo "----- $f (last 30 lines)"; tail -n 30 "$f"; }
        done
        echo "(files kept in $S)"
    fi
}
JOBS_STARTED=""
FLEET_PATS=()
NODE=$(hostname -s)
NODE2=$NODE-b
trap cleanup EXIT

# -- the cluster --------------------------------------------------------------------
mungekey --create --keyfile="$S/munge/munge.key" >/dev/null 2>&1 ||
    dd if=/dev/urandom of="$S/munge/munge.key" bs=1024 count=1 2>/dev/null
chmod 600 "$S/munge/munge.key"
munged --force --key-file="$S/munge/munge.key" --socket="$S/munge/munge.sock" \
    --pid-file="$S/munge/munged.pid" --log-file="$S/log/munged.log" --seed-file="$S/munge/seed" ||
    skip "munged cannot start here"
munge -S "$S/munge/munge.sock" -n | unmunge -S "$S/munge/munge.sock" >/dev/null ||
    skip "munge does not work here"

CPUS=$(nproc)
MEM=$(awk '/MemTotal/ { print int($2 / 1024 / 2) }' /proc/meminfo)
CTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
SLURMD2_PORT=$(free_port)
cat >"$S/slurm.conf" <<EOF
# A one-node cluster for tests/deploy/test_slurm.sh: no cgroups, no GPUs, no accounting.
ClusterName=bftest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$S/munge/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool/%n
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd-%n.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MailProg=/bin/true
KillWait=10
GresTypes=gpu
NodeName=$NODE NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$SLURMD_PORT CPUs=$CPUS RealMemory=$MEM Gres=gpu:2 State=UNKNOWN
# A second slurmd on this machine, for the multi-node phase only.
NodeName=$NODE2 NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$SLURMD2_PORT CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=bftest Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=bftwo Nodes=$NODE,$NODE2 MaxTime=INFINITE State=UP
EOF
# Two "GPUs" for Slurm's bookkeeping: it wants device files, and hands each
# task the index of its own (CUDA_VISIBLE_DEVICES).
ln -s /dev/null "$S/dev/nvidia0" && ln -s /dev/null "$S/dev/nvidia1"
echo "NodeName=$NODE Name=gpu File=$S/dev/nvidia[0-1]" >"$S/gres.conf"
export SLURM_CONF="$S/slurm.conf"
slurmctld -f "$SLURM_CONF" || skip "slurmctld cannot start here"
slurmd -f "$SLURM_CONF" -N "$NODE" || skip "slurmd cannot start here"
slurmd -f "$SLURM_CONF" -N "$NODE2" || skip "a second slurmd cannot start here"
up=0
for _ in $(seq 60); do
    state=$(sinfo -h -N -n "$NODE,$NODE2" -o '%t' 2>/dev/null | sort -u | tr '\n' ' ')
    [ "$state" = "idle " ] && { up=1; break; }
    sleep 0.5
done
[ $up = 1 ] || { tail -n 20 "$S"/log/slurm*.log; skip "nodes $NODE, $NODE2 never became idle (states '${state:-}')"; }
echo "slurm: partition bftest = node $NODE ($CPUS CPUs, 2 GPUs of gres), bftwo = $NODE + $NODE2 (a second slurmd)"

job_state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }
job_exit() { scontrol show job "$1" 2>/dev/null | sed -n 's/.* ExitCode=\([0-9:]*\).*/\1/p'; }
# nothing_left EP: no process of this fleet (all carry its endpoint in their argv) survives.
nothing_left() {
    local left
    for _ in $(seq 30); do
        left=$(pgrep -f -- "$1" || true)
        [ -z "$left" ] && return 0
        sleep 0.5
    done
    ps -o pid,args -p "$(echo "$left" | tr '\n' ',' | sed 's/,$//')" >&2
    return 1
}

# -- A: a job file ------------------------------------------------------------------
W="$S/work/a"
mkdir -p "$W"
SCENES_A=(a01 a02 a03 slow_a04 slow_a05 slow_a06 slow_a07 a08)
JOB=$(make_exec_job "$W" slurm-a "${SCENES_A[@]}")
PORT_A=$(free_port)
FLEET_PATS+=("tcp://127.0.0.1:$PORT_A( |\$)")
ID=$(cd "$W" && BEAMFLEET_BIN="$BF" BEAMFLEET_ALLOW_EXEC="$TASK" BEAMFLEET_INTERPRETERS="$PY_ABS" BEAMFLEET_RUN_DIR="$W/run" \
    BEAMFLEET_PORT=$PORT_A BEAMFLEET_PUBLISH_PORT=$(free_port) sbatch --parsable -c "$CPUS" -t 15 --output="$W/sbatch.out" \
    "$SBATCH_SCRIPT" "$JOB") || fail "sbatch refused the script"
ID=${ID%%;*}
JOBS_STARTED="$JOBS_STARTED $ID"
echo "A: submitted Slurm job $ID"
for _ in $(seq 240); do
    case $(job_state "$ID") in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) break ;; esac
    sleep 0.5
done
[ "$(job_state "$ID")" = COMPLETED ] || fail "A: Slurm job $ID is $(job_state "$ID"), exit $(job_exit "$ID")"
[ "$(job_exit "$ID")" = 0:0 ] || fail "A: Slurm job $ID exit code $(job_exit "$ID")"
check_reports "$W/slurm-a-out" "${SCENES_A[@]}" || fail "A: reports"
# Every worker the script started joined the broker and ran tasks.
joined=$(grep -c 'worker .* ready' "$W/run/logs/services-0.log")
[ "$joined" -eq "$CPUS" ] || fail "A: $joined workers joined the broker, expected $CPUS (one per CPU)"
"$PY" - "$W/slurm-a-out/results.jsonl" "$CPUS" "$(hostname)" <<'EOF' || fail "A: results"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
workers = {r["worker"] for r in rows}
hosts = {r["host"] for r in rows}
assert len(workers) == int(sys.argv[2]), f"tasks ran on {sorted(workers)}, expected {sys.argv[2]} workers"
assert hosts == {sys.argv[3]}, f"hosts {hosts}"
print(f"A: {len(rows)} results from workers {sorted(workers)}")
EOF
grep -q "submit --wait exited 0" "$W/sbatch.out" || fail "A: the script did not wait for the job"
grep -q "goodbye" "$W/run/logs/worker-$NODE-0.log" || fail "A: the workers were not drained (no goodbye)"
grep -q "killing the workers" "$W"/run/logs/worker-*.log && fail "A: a worker got a second SIGTERM (killed, not drained)"
nothing_left "tcp://127.0.0.1:$PORT_A( |$)" || fail "A: processes of the fleet survive the Slurm job"
[ ! -e "$W/run/endpoint" ] || fail "A: the endpoint file was not removed"
echo "A: job $ID COMPLETED 0:0, $joined workers, ${#SCENES_A[@]} scenes each once, all stopped"

# -- B: a fleet for the allocation, jobs from outside, scancel -b drains ------------
W="$S/work/b"
mkdir -p "$W"
PORT_B=$(free_port)
FLEET_PATS+=("tcp://127.0.0.1:$PORT_B( |\$)")
ID=$(cd "$W" && BEAMFLEET_BIN="$BF" BEAMFLEET_ALLOW_EXEC="$TASK" BEAMFLEET_INTERPRETERS="$PY_ABS" BEAMFLEET_RUN_DIR="$W/run" \
    BEAMFLEET_PORT=$PORT_B BEAMFLEET_PUBLISH_PORT=$(free_port) BEAMFLEET_CPU_WORKERS=2 sbatch --parsable -t 15 --output="$W/sbatch.out" \
    "$SBATCH_SCRIPT") || fail "sbatch refused the script (no job)"
ID=${ID%%;*}
JOBS_STARTED="$JOBS_STARTED $ID"
# up to 3 min: Slurm may still be releasing job A's node, and under ASan on 2
# busy cores the fleet starts slowly
for _ in $(seq 360); do [ -s "$W/run/endpoint" ] && break; sleep 0.5; done
[ -s "$W/run/endpoint" ] || fail "B: no endpoint file from the fleet after 180 s (job $ID: \
$(squeue -h -j "$ID" -o '%T %r' 2>&1); sbatch.out: $(tail -n 5 "$W/sbatch.out" 2>&1))"
EP=$(cat "$W/run/endpoint")
[ "$EP" = "tcp://127.0.0.1:$PORT_B" ] || fail "B: endpoint $EP, expected tcp://127.0.0.1:$PORT_B"
wait_status "$EP" 'len(s["workers"]) == 2 and s["collector"]["connected"]' 60 \
    "2 CPU workers and the collector to join $EP" || fail "B: the fleet did not form"
SCENES_B=(b1 b2 slow_b3 b4)
JOB=$(make_exec_job "$W" slurm-b "${SCENES_B[@]}")
timeout 120 "$BF" submit "$JOB" --broker "$EP" --wait >"$W/submit.log" 2>&1 ||
    { cat "$W/submit.log"; fail "B: submit --wait from outside the allocation"; }
for _ in $(seq 50); do [ -f "$W/slurm-b-out/summary.json" ] && break; sleep 0.2; done
check_reports "$W/slurm-b-out" "${SCENES_B[@]}" || fail "B: reports"
# A slow task is running when the batch script is told to stop: it must finish.
JOB2=$(make_exec_job "$W" slurm-c slow_c1)
"$BF" submit "$JOB2" --broker "$EP" >/dev/null || fail "B: submit"
wait_status "$EP" 'any(w["running"] for w in s["workers"])' 20 "the slow task to start" ||
    fail "B: the slow task never started"
scancel --batch --signal=TERM "$ID" || fail "B: scancel -b -s TERM $ID"
for _ in $(seq 120); do
    case $(job_state "$ID") in RUNNING | PENDING | COMPLETING | CONFIGURING | "") sleep 0.5 ;; *) break ;; esac
done
st=$(job_state "$ID")
case $st in COMPLETED | FAILED) ;; *) fail "B: Slurm job $ID is '$st' after scancel -b -s TERM" ;; esac
grep -q "signal: draining the fleet" "$W/sbatch.out" || fail "B: the script did not see the SIGTERM"
grep -q "stopped; logs in" "$W/sbatch.out" || fail "B: the script did not finish its cleanup"
for _ in $(seq 50); do [ -f "$W/slurm-c-out/summary.json" ] && break; sleep 0.2; done
check_reports "$W/slurm-c-out" slow_c1 || fail "B: the task running at the stop was not drained"
nothing_left "tcp://127.0.0.1:$PORT_B( |$)" || fail "B: processes of the fleet survive the Slurm job"
echo "B: job $ID: 2 workers joined $EP, outside job done, drained on scancel -b -s TERM ($st)"

# -- C: GPUs allocated: one worker task per GPU -----------------------------------------
W="$S/work/c"
mkdir -p "$W"
SCENES_C=(slow_c1 slow_c2 slow_c3 slow_c4 c5)
JOB=$(make_exec_job "$W" slurm-gpu "${SCENES_C[@]}")
PORT_C=$(free_port)
FLEET_PATS+=("tcp://127.0.0.1:$PORT_C( |\$)")
# This time the settings come from a fleet file (-c for every process).
cat >"$W/fleet.yaml" <<EOF
heartbeat: {interval_ms: 500, liveness: 3}
worker: {allow_exec: [$TASK], interpreters: [$PY_ABS], prefetch: 1}
# security: {keys: /etc/beamfleet/keys, identity: $NODE}
# metrics: {listen: 127.0.0.1:9464}
EOF
ID=$(cd "$W" && BEAMFLEET_BIN="$BF" BEAMFLEET_FLEET="$W/fleet.yaml" BEAMFLEET_RUN_DIR="$W/run" \
    BEAMFLEET_PORT=$PORT_C BEAMFLEET_PUBLISH_PORT=$(free_port) sbatch --parsable --gpus-per-node=2 \
    -c "$CPUS" -t 15 --output="$W/sbatch.out" "$SBATCH_SCRIPT" "$JOB") || fail "C: sbatch --gpus-per-node=2"
ID=${ID%%;*}
JOBS_STARTED="$JOBS_STARTED $ID"
# While it runs: the worker tasks (their pids are recorded) and the GPU each got.
declare -A CVD=()
for _ in $(seq 240); do
    for f in "$W"/run/pids/*/worker-*.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        env=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | sed -n 's/^CUDA_VISIBLE_DEVICES=//p')
        [ -n "$env" ] && CVD[$(basename "$f")]=$env
    done
    [ ${#CVD[@]} -ge 2 ] && break
    case $(job_state "$ID") in RUNNING | PENDING | CONFIGURING | "") sleep 0.25 ;; *) break ;; esac
done
for _ in $(seq 240); do
    case $(job_state "$ID") in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) break ;; esac
    sleep 0.5
done
[ "$(job_state "$ID")" = COMPLETED ] || fail "C: Slurm job $ID is $(job_state "$ID"), exit $(job_exit "$ID")"
[ "$(job_exit "$ID")" = 0:0 ] || fail "C: Slurm job $ID exit code $(job_exit "$ID")"
[ ${#CVD[@]} -eq 2 ] || fail "C: saw ${#CVD[@]} worker tasks with CUDA_VISIBLE_DEVICES, expected 2 (${!CVD[*]})"
gpus=$(printf '%s\n' "${CVD[@]}" | sort -u | tr '\n' ' ')
[ "$gpus" = "0 1 " ] || fail "C: the worker tasks got CUDA_VISIBLE_DEVICES '$gpus', expected one each of 0 and 1"
grep -q "one per GPU" "$W/sbatch.out" || fail "C: the script did not take the GPU path"
grep -q -- "'-c' '$W/fleet.yaml'" "$W/run/services.conf" || fail "C: the broker and collector did not get -c"
check_reports "$W/slurm-gpu-out" "${SCENES_C[@]}" || fail "C: reports"
joined=$(grep -c 'worker .* ready' "$W/run/logs/services-0.log")
[ "$joined" -eq 2 ] || fail "C: $joined workers joined, expected 2 (one per GPU)"
nothing_left "tcp://127.0.0.1:$PORT_C( |$)" || fail "C: processes of the fleet survive the Slurm job"
echo "C: job $ID: 2 GPUs allocated, one worker task each (CUDA_VISIBLE_DEVICES $gpus), COMPLETED 0:0"

# -- D: two nodes --------------------------------------------------------------------------
W="$S/work/d"
mkdir -p "$W"
SCENES_D=(slow_d1 slow_d2 slow_d3 slow_d4)
JOB=$(make_exec_job "$W" slurm-two "${SCENES_D[@]}")
PORT_D=$(free_port)
FLEET_PATS+=("tcp://[0-9.]*:$PORT_D( |\$)")
submit_d() { # OUTPUT [VAR=VALUE...]: sbatch on both nodes, prints the job id
    local out=$1
    shift
    (cd "$W" && env BEAMFLEET_BIN="$BF" BEAMFLEET_ALLOW_EXEC="$TASK" BEAMFLEET_INTERPRETERS="$PY_ABS" BEAMFLEET_PORT=$PORT_D \
        BEAMFLEET_PUBLISH_PORT="$(free_port)" BEAMFLEET_CPU_WORKERS=1 "$@" \
        sbatch --parsable -p bftwo -N 2 -t 15 --output="$W/$out" "$SBATCH_SCRIPT" "$JOB")
}
wait_final() {
    for _ in $(seq 240); do
        case $(job_state "$1") in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) return 0 ;; esac
        sleep 0.5
    done
    return 1
}
ID=$(submit_d refused.out BEAMFLEET_RUN_DIR="$W/run-refused") || fail "D: sbatch -N 2"
ID=${ID%%;*}
JOBS_STARTED="$JOBS_STARTED $ID"
wait_final "$ID" || fail "D: job $ID did not end"
[ "$(job_exit "$ID")" = 2:0 ] || fail "D: plaintext on 2 nodes: exit $(job_exit "$ID"), expected 2:0"
grep -q "must listen beyond loopback.*BEAMFLEET_INSECURE=1" "$W/refused.out" ||
    fail "D: no one-line refusal in $(cat "$W/refused.out")"
[ ! -e "$W/run-refused/services.conf" ] || fail "D: the refused fleet started its services"
ID=$(submit_d sbatch.out BEAMFLEET_RUN_DIR="$W/run" BEAMFLEET_INSECURE=1) || fail "D: sbatch -N 2 (insecure)"
ID=${ID%%;*}
JOBS_STARTED="$JOBS_STARTED $ID"
wait_final "$ID" || fail "D: job $ID did not end"
[ "$(job_state "$ID")" = COMPLETED ] && [ "$(job_exit "$ID")" = 0:0 ] ||
    fail "D: Slurm job $ID is $(job_state "$ID"), exit $(job_exit "$ID")"
grep -q "'--bind' 'tcp://0.0.0.0:$PORT_D' '--state' '$W/run/state' '--insecure'" "$W/run/services.conf" ||
    fail "D: the broker did not bind 0.0.0.0 with --insecure: $(cat "$W/run/services.conf")"
grep -q "broker tcp://127.0.0.1:$PORT_D " "$W/sbatch.out" || fail "D: endpoint is not the head's NodeAddr"
# One worker task per node (srun -N 2 --ntasks-per-node=1), each drained by
# exactly one SIGTERM (node vm's pid directory is not vm-b's).
for t in 0 1; do
    log=$(ls "$W"/run/logs/worker-*-$t.log 2>/dev/null | head -n 1)
    [ -n "$log" ] && grep -q goodbye "$log" || fail "D: worker task $t did not drain (log '${log:-none}')"
done
grep -q "killing the workers" "$W"/run/logs/worker-*.log && fail "D: a worker got a second SIGTERM (killed, not drained)"
check_reports "$W/slurm-two-out" "${SCENES_D[@]}" || fail "D: reports"
joined=$(grep -c 'worker .* ready' "$W/run/logs/services-0.log")
[ "$joined" -eq 2 ] || fail "D: $joined workers joined, expected 2 (one per node)"
nothing_left "tcp://[0-9.]*:$PORT_D( |\$)" || fail "D: processes of the fleet survive the Slurm job"
echo "D: 2 nodes: plaintext refused (exit 2); with BEAMFLEET_INSECURE=1 a worker per node joined, COMPLETED 0:0"

OK=1
echo "PASS test_slurm"
