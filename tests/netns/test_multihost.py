#!/usr/bin/env python3
"""Real multi-host test: every fleet host is a Linux network
namespace with its own address on 192.0.2.0/24, joined by veth links to a
bridge that lives in a namespace of its own (the "switch"):

    broker     192.0.2.1   (ns <prefix>-broker)  tcp://192.0.2.1:5555 --insecure
    collector  192.0.2.2   (ns <prefix>-coll)
    worker     192.0.2.11  (ns <prefix>-w11)     --name host11
    worker     192.0.2.12  (ns <prefix>-w12)     --name host12
    switch     br0         (ns <prefix>-sw)      one port per host: p1 p2 p11 p12

Processes run as `ip netns exec NS beamfleet ...` (plus `unshare --uts` so each
host has its own hostname: host11, host12 in status and results); the CLI
(submit, status --json) runs inside the broker's namespace. A cut is the switch port of a host going
down (`ip -n SW link set p11 down`): the cable is pulled, the host's sockets
stay open and see nothing. Everything is created with the prefix
bfn<pid> and removed at the end, also on failure (finally + atexit + SIGTERM).

Exit 77 (skipped) where namespaces cannot be made: not root, no iproute2,
`ip netns add` refused (a container without CAP_SYS_ADMIN).

Tests: cut_rejoin, short_cut, late_result, partition, refuse_insecure (all
without an argument); each gets a fresh network. See README.md.
Run:  sudo BEAMFLEET_BIN=build/beamfleet tests/netns/test_multihost.py [TEST...]
"""
import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from fleet import TASK, Fleet, binary, check_reports, read_jsonl  # noqa: E402

SKIP = 77
PORT = 5555
SUBNET = "192.0.2"
# host key -> last octet of its address
HOSTS = {"broker": 1, "coll": 2, "w11": 11, "w12": 12}
HOSTNAMES = {"broker": "bf-broker", "coll": "bf-collector", "w11": "host11", "w12": "host12"}


def log(msg):
    print(f"[netns {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*args, check=True, timeout=30):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
    return r


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(SKIP)


def ensure_iproute2():
    """`ip` is needed; installed with apt-get only when it is missing."""
    if shutil.which("ip"):
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        log("iproute2 missing: apt-get install -y iproute2")
        subprocess.run(["apt-get", "install", "-y", "-q", "iproute2"], capture_output=True,
                       timeout=300)
    if not shutil.which("ip"):
        skip("no iproute2 (`ip`) and it could not be installed")


class Net:
    """The namespaces, the switch and the links; teardown() is idempotent."""

    def __init__(self):
        self.prefix = f"bfn{os.getpid()}"
        self.sw = f"{self.prefix}-sw"
        self.made = []  # namespaces created, in order
        self.uts = bool(shutil.which("unshare") and shutil.which("hostname"))
        self.up = False

    def ns(self, host):
        return f"{self.prefix}-{host}"

    def addr(self, host):
        return f"{SUBNET}.{HOSTS[host]}"

    def port(self, host):
        """The switch-side end of the host's link (in the switch namespace)."""
        return f"p{HOSTS[host]}"

    def _add_ns(self, name):
        r = sh("ip", "netns", "add", name, check=False)
        if r.returncode != 0:
            return r.stderr.strip()
        self.made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return ""

    def setup(self):
        atexit.register(self.teardown)
        self.reap_stale()
        why = self._add_ns(self.sw)
        if why:
            skip(f"`ip netns add` refused: {why}")
        r = sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge", "forward_delay", "0",
               check=False)
        if r.returncode != 0:
            skip(f"no bridge in a namespace: {r.stderr.strip()}")
        sh("ip", "-n", self.sw, "link", "set", "br0", "up")
        for host in HOSTS:
            ns = self.ns(host)
            why = self._add_ns(ns)
            if why:
                raise RuntimeError(f"ip netns add {ns}: {why}")
            # both ends are created inside their namespaces: nothing touches the
            # root namespace, so names cannot clash with the machine's own
            sh("ip", "link", "add", "name", "eth0", "netns", ns, "type", "veth", "peer", "name",
               self.port(host), "netns", self.sw)
            sh("ip", "-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", self.sw, "link", "set", self.port(host), "master", "br0")
            sh("ip", "-n", self.sw, "link", "set", self.port(host), "up")
        self.up = True
        log(f"namespaces {', '.join(self.made)}: switch br0, hosts {SUBNET}.1/.2/.11/.12")

    def exec_prefix(self, host):
        """Runs a command in host's namespace, with the host's own hostname
        (a UTS namespace) where unshare and hostname exist, so results and
        status name host11, host12 as on real machines."""
        cmd = ["ip", "netns", "exec", self.ns(host)]
        if self.uts:
            cmd += ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', HOSTNAMES[host]]
        return cmd

    def cut(self, host):
        sh("ip", "-n", self.sw, "link", "set", self.port(host), "down")

    def restore(self, host):
        sh("ip", "-n", self.sw, "link", "set", self.port(host), "up")

    @staticmethod
    def kill_inside(name):
        """SIGKILL what still runs in namespace name (only this test's own
        namespaces are ever passed here)."""
        r = sh("ip", "netns", "pids", name, check=False)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    @staticmethod
    def reap_stale():
        """Namespaces of an earlier run of this test that was SIGKILLed
        (bfn<pid>-*, that pid gone): their processes and the names go."""
        r = sh("ip", "netns", "list", check=False)
        for line in r.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            m = re.fullmatch(r"bfn(\d+)-(sw|broker|coll|w11|w12)", name)
            if not m or os.path.exists(f"/proc/{m.group(1)}"):
                continue
            log(f"removing {name}, left by a run that was killed")
            Net.kill_inside(name)
            sh("ip", "netns", "del", name, check=False)

    def teardown(self):
        while self.made:
            name = self.made.pop()
            self.kill_inside(name)
            r = sh("ip", "netns", "del", name, check=False)
            if r.returncode != 0:
                print(f"warning: ip netns del {name}: {r.stderr.strip()}", file=sys.stderr)
        self.up = False


class NetFleet(Fleet):
    """fleet.Fleet with each process in its host's namespace and the CLI in
    the broker's."""

    def __init__(self, name, net, heartbeat_ms=200, liveness=3):
        super().__init__(name, heartbeat_ms, liveness)
        self.net = net
        self.endpoint = f"tcp://{net.addr('broker')}:{PORT}"
        self.publish = f"tcp://{net.addr('coll')}:5557"
        self.names = {}

    def _start_in(self, host, what, args, env=None):
        self.counter += 1
        log_path = os.path.join(self.logs, f"{self.counter:02d}-{what}.log")
        logf = open(log_path, "ab")
        full_env = dict(os.environ, BEAMFLEET_LOG="debug" if os.environ.get("BF_E2E_DEBUG") else "info")
        if env:
            full_env.update(env)
        p = subprocess.Popen(self.net.exec_prefix(host) + [self.bin] + args,
                             stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=full_env, start_new_session=True)
        logf.close()
        p.what = what
        p.log_path = log_path
        self.procs.append(p)
        return p

    def broker(self, extra=()):
        return self._start_in("broker", "broker", ["broker", "--bind", self.endpoint, "--insecure",
                                                   "--state", self.state] + self.hb + list(extra))

    def collector(self, extra=()):
        # its stream is on the bridge, not loopback, and plaintext: --insecure
        return self._start_in("coll", "collector", ["collector", "--broker", self.endpoint,
                                                    "--publish", self.publish, "--insecure"]
                              + self.hb + list(extra))

    def worker_on(self, host, env=None):
        name = f"host{HOSTS[host]}"
        self.names[host] = name
        return self._start_in(host, f"worker-{name}",
                              ["worker", "--broker", self.endpoint, "--gpus", "none", "--cpu", "1",
                               "--name", name, "--allow-exec", TASK] + self.hb, env=env)

    def cli(self, *args, timeout=60, check=True):
        r = subprocess.run(["ip", "netns", "exec", self.net.ns("broker"), self.bin] + list(args),
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"beamfleet {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def workers_named(self, name, st=None):
        st = st or self.status()
        return [w for w in st["workers"] if w["name"].split(":")[0] == name]


def broker_conns(net, host):
    """TCP connections the broker's host has to host's address, by state."""
    r = sh("ip", "netns", "exec", net.ns("broker"), "ss", "-tanH", check=False)
    peer = f"{net.addr(host)}:"
    states = {}
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) >= 5 and f[4].startswith(peer) and f[3].endswith(f":{PORT}"):
            states[f[0]] = states.get(f[0], 0) + 1
    return states


def read_log(p):
    with open(p.log_path, errors="replace") as f:
        return f.read()


def stop_and_check(fleet):
    """SIGTERM everything: each worker drains and exits 0 with no result
    left unacknowledged (a re-sent result the broker never ACKed shows here)."""
    fleet.stop()
    for p in fleet.procs:
        if not p.what.startswith("worker"):
            continue
        text = read_log(p)
        assert p.returncode == 0, f"{p.what} exited {p.returncode} after SIGTERM"
        assert "has not acknowledged" not in text, f"{p.what} left with unacknowledged results"


# ---- the tests -------------------------------------------------------------------------------


def test_cut_rejoin(net):
    """A job over two worker hosts; mid-task the link of host11 is cut: its
    task is requeued (worker lost) and finishes on host12 with attempt 2;
    the link comes back, host11 re-registers and runs tasks of a second job.
    Every scene exactly once in every report."""
    fleet = NetFleet("netns", net)
    ok = False
    try:
        _cut_rejoin(fleet, net)
        ok = True
    finally:
        fleet.cleanup(ok)


def _cut_rejoin(fleet, net):
    task_s = float(os.environ.get("BF_NETNS_TASK_S", "1.5"))
    env = {"TASK_SLEEP": str(task_s)}
    names1 = [f"a{i:02d}" for i in range(10)]
    names2 = [f"b{i:02d}" for i in range(6)]
    job1, out1 = fleet.make_job(names1, name="job1", max_attempts=3)
    job2, out2 = fleet.make_job(names2, name="job2", max_attempts=3)

    broker = fleet.broker()
    fleet.collector()
    w11 = fleet.worker_on("w11", env=env)
    w12 = fleet.worker_on("w12", env=env)
    fleet.wait(lambda: len(fleet.status()["workers"]) == 2 and fleet.status()["collector"]["connected"],
               20, "2 workers and the collector over the bridge")
    hosts = {w["host"] for w in fleet.status()["workers"]}
    if net.uts:
        assert hosts == {"host11", "host12"}, f"worker hosts {hosts}"
    log(f"registered: {[w['name'] for w in fleet.status()['workers']]}")

    job_id = fleet.submit(job1)

    # mid-task on host11: busy, and the task is well under way but not done
    def busy11():
        ws = fleet.workers_named("host11")
        return ws and ws[0]["state"] == "busy" and ws[0]["task_scene"]
    scene = fleet.wait(busy11, 20, "host11 busy")
    time.sleep(task_s / 3)
    ws = fleet.workers_named("host11")
    assert ws and ws[0]["task_scene"] == scene, f"host11 moved on from {scene} before the cut: {ws}"
    net.cut("w11")
    t_cut = time.time()
    log(f"cut host11 (port {net.port('w11')} down) while it runs {scene}")

    # requeue: the broker declares host11 lost and puts its task back
    fleet.wait(lambda: not fleet.workers_named("host11"), 10, "the broker to drop host11")
    t_lost = time.time()
    log(f"host11 lost after {t_lost - t_cut:.2f} s")

    def final_scene():
        path = os.path.join(out1, "results.jsonl")
        if not os.path.exists(path):
            return None
        rows = [r for r in read_jsonl(path) if r["scene"] == scene]
        return rows[0] if rows else None
    row = fleet.wait(final_scene, 30, f"{scene} to be final while host11 is cut off")
    t_final = time.time()
    log(f"{scene} final after {t_final - t_cut:.2f} s: attempt {row['attempt']} on {row['worker']}")
    assert row["attempt"] == 2, f"{scene}: attempt {row['attempt']}, expected 2 ({row})"
    assert row["worker"].startswith("host12:"), f"{scene} finished on {row['worker']}, expected host12"
    fails = row.get("failures", [])
    assert any("worker lost" in json.dumps(f) for f in fails), f"{scene}: no 'worker lost' failure: {fails}"
    assert "host11" in json.dumps(fails), f"{scene}: the failure does not name host11: {fails}"
    if net.uts:
        assert row["host"] == "host12", row
        assert any(f.get("host") == "host11" and f.get("reason") == "worker lost" for f in fails), fails
    assert w11.poll() is None, f"the cut worker exited {w11.returncode}"

    # hold the cut a little longer: host11's own attempt 1 finishes offline
    # and its result waits for an ACK that cannot come
    hold_s = max(task_s + 1.0, float(os.environ.get("BF_NETNS_CUT_S", "0")))
    time.sleep(max(0.0, t_cut + hold_s - time.time()))
    net.restore("w11")
    t_restore = time.time()
    log("link of host11 restored")
    fleet.wait(lambda: [w for w in fleet.workers_named("host11") if w["state"] in ("idle", "busy")],
               30, "host11 to rejoin")
    t_rejoin = time.time()
    log(f"host11 rejoined after {t_rejoin - t_restore:.2f} s")

    log(f"connections at the broker from host11: {broker_conns(net, 'w11')}")
    fleet.wait_done(job_id, 120)
    by1 = check_reports(out1, names1)
    assert by1[scene]["attempt"] == 2, by1[scene]
    retried = sorted(s for s, r in by1.items() if r["attempt"] != 1)
    assert retried == [scene], f"only {scene} should have needed a second attempt: {retried}"

    # the rejoined host works again: a second job over both hosts
    job2_id = fleet.submit(job2)
    fleet.wait_done(job2_id, 120)
    by2 = check_reports(out2, names2)
    on11 = sorted(s for s, r in by2.items() if r["worker"].startswith("host11:"))
    on12 = sorted(s for s, r in by2.items() if r["worker"].startswith("host12:"))
    log(f"job2: host11 ran {on11}, host12 ran {on12}")
    assert on11, f"host11 ran no task of the second job: {[(s, r['worker']) for s, r in by2.items()]}"
    assert on12, "host12 ran no task of the second job"
    assert all(r["attempt"] == 1 for r in by2.values()), "job2 needed retries"

    # the logs tell the same story
    blog = read_log(broker)
    assert "host11" in blog and "lost" in blog, "the broker log does not say host11 was lost"
    wlog = read_log(w11)
    assert "broker silent" in wlog, "host11's log shows no reconnect"
    assert broker.poll() is None and w11.poll() is None and w12.poll() is None, "a process died"
    # every scene of job1 once more, after job2 (late re-sent results of
    # host11 must not have added a row)
    check_reports(out1, names1)
    stop_and_check(fleet)
    print(f"FIGURES cut->lost {t_lost - t_cut:.2f} s, cut->final(attempt 2) {t_final - t_cut:.2f} s, "
          f"restore->rejoin {t_rejoin - t_restore:.2f} s, heartbeat {fleet.heartbeat_ms} ms x "
          f"{fleet.liveness}, task {task_s} s, hosts {sorted(hosts)}")


def test_short_cut(net):
    """A cut shorter than the task: the link comes back while the cut host
    still runs attempt 1 and the other host runs attempt 2. The cut host
    re-registers naming its running task; the broker tells it to stop
    (ABORT: given to another worker), attempt 2 is the one result."""
    fleet = NetFleet("netns-short", net)
    ok = False
    try:
        _short_cut(fleet, net)
        ok = True
    finally:
        fleet.cleanup(ok)


def _short_cut(fleet, net):
    task_s = 5.0
    names = ["long"]
    job, out = fleet.make_job(names, name="short", max_attempts=3)
    fleet.broker()
    fleet.collector()
    # host11 alone takes the task, then host12 joins: the victim is known
    procs = {"w11": fleet.worker_on("w11", env={"TASK_SLEEP": str(task_s)})}
    fleet.wait(lambda: fleet.status()["collector"]["connected"] and fleet.workers_named("host11"),
               20, "host11 and the collector over the bridge")
    job_id = fleet.submit(job)
    fleet.wait(lambda: [w for w in fleet.workers_named("host11") if w["state"] == "busy"], 20,
               "host11 busy")
    procs["w12"] = fleet.worker_on("w12", env={"TASK_SLEEP": str(task_s)})
    fleet.wait(lambda: fleet.workers_named("host12"), 20, "host12")
    victim, vname, oname = "w11", "host11", "host12"
    time.sleep(0.3)
    net.cut(victim)
    t_cut = time.time()
    log(f"cut {vname} while it runs 'long' (attempt 1, {task_s} s)")
    fleet.wait(lambda: [w for w in fleet.workers_named(oname) if w["state"] == "busy"], 10,
               f"attempt 2 to start on {oname}")
    t_requeued = time.time()
    log(f"attempt 2 running on {oname} {t_requeued - t_cut:.2f} s after the cut")
    time.sleep(max(0.0, t_cut + 1.5 - time.time()))
    net.restore(victim)
    t_restore = time.time()
    fleet.wait(lambda: fleet.workers_named(vname), 10, f"{vname} to rejoin")
    t_rejoin = time.time()
    log(f"{vname} rejoined {t_rejoin - t_restore:.2f} s after the restore")
    assert t_rejoin < t_cut + task_s - 1.0, "rejoined too late for this test: attempt 1 was done"
    vlog_path = procs[victim].log_path

    def aborted():
        with open(vlog_path, errors="replace") as f:
            return "abort (the task was given to another worker)" in f.read()
    fleet.wait(aborted, 10, f"{vname} to be told to stop its attempt 1")
    t_abort = time.time()
    fleet.wait_done(job_id, 60)
    by = check_reports(out, names)
    r = by["long"]
    assert r["attempt"] == 2 and r["worker"].startswith(oname + ":"), r
    assert any("worker lost" in json.dumps(f) for f in r.get("failures", [])), r.get("failures")
    # the aborted attempt 1 ended: its exec program is gone, no result sent
    vlog = read_log(procs[victim])
    assert "aborted after" in vlog, "the victim's log does not show attempt 1 ending"
    assert "long success" not in vlog, "the victim finished attempt 1 after the abort"
    # the victim runs tasks again
    names2 = [f"slow_c{i}" for i in range(4)]  # task.py: slow_* take 1.5 s
    job2, out2 = fleet.make_job(names2, name="short2")
    j2 = fleet.submit(job2)
    fleet.wait_done(j2, 60)
    by2 = check_reports(out2, names2)
    assert any(x["worker"].startswith(vname + ":") for x in by2.values()), \
        f"{vname} ran nothing after rejoining: {[(s, x['worker']) for s, x in by2.items()]}"
    stop_and_check(fleet)
    print(f"FIGURES short cut: cut->attempt 2 running {t_requeued - t_cut:.2f} s, "
          f"restore->rejoin {t_rejoin - t_restore:.2f} s, restore->abort seen {t_abort - t_restore:.2f} s")


def test_late_result(net):
    """The cut host finishes attempt 1 offline while attempt 2 still runs on
    the other host; when the link returns it re-sends its result. The first
    result wins (broker on_result): attempt 1 is recorded once, attempt 2 is
    told to stop and sends nothing; every report holds the scene once."""
    fleet = NetFleet("netns-late", net)
    ok = False
    try:
        _late_result(fleet, net)
        ok = True
    finally:
        fleet.cleanup(ok)


def _late_result(fleet, net):
    names = ["late"]
    job, out = fleet.make_job(names, name="late", max_attempts=3)
    fleet.broker()
    fleet.collector()
    w11 = fleet.worker_on("w11", env={"TASK_SLEEP": "2.5"})
    fleet.wait(lambda: fleet.status()["collector"]["connected"] and fleet.workers_named("host11"),
               20, "host11 and the collector over the bridge")
    job_id = fleet.submit(job)
    fleet.wait(lambda: [w for w in fleet.workers_named("host11") if w["state"] == "busy"], 20,
               "host11 busy")
    w12 = fleet.worker_on("w12", env={"TASK_SLEEP": "20"})
    fleet.wait(lambda: fleet.workers_named("host12"), 20, "host12")
    time.sleep(0.3)
    net.cut("w11")
    t_cut = time.time()
    fleet.wait(lambda: [w for w in fleet.workers_named("host12") if w["state"] == "busy"], 10,
               "attempt 2 to start on host12")

    def done_offline():
        with open(w11.log_path, errors="replace") as f:
            return "late success" in f.read()
    fleet.wait(done_offline, 10, "host11 to finish attempt 1 while cut off")
    assert not os.path.exists(os.path.join(out, "results.jsonl")), "a result got through the cut"
    net.restore("w11")
    t_restore = time.time()
    j = fleet.wait_done(job_id, 30)
    t_final = time.time()
    assert t_final - t_restore < 15, "the job waited for attempt 2 instead of the re-sent result"
    by = check_reports(out, names)
    r = by["late"]
    # host11's result (its program sleeps 2.5 s, host12's 20 s). `attempt` is
    # the broker's count of dispatches (protocol.md section 9), 2 here, not
    # the attempt that produced the result; `failures` still lists host11's
    # attempt 1 as "worker lost" (see README.md, "Findings").
    assert r["worker"].startswith("host11:") and r["elapsed_time"] < 10, r
    assert r["attempt"] == 2, r
    assert j["state"] == "done", j

    def aborted():
        with open(w12.log_path, errors="replace") as f:
            text = f.read()
        return "abort (another attempt finished first)" in text and "aborted after" in text
    fleet.wait(aborted, 10, "host12 to stop attempt 2")
    assert "late success" not in read_log(w12), "host12 sent a result for attempt 2"
    # nothing more arrives later: one line, still
    time.sleep(1.0)
    check_reports(out, names)
    stop_and_check(fleet)
    print(f"FIGURES late result: restore->final {t_final - t_restore:.2f} s "
          f"(cut {t_restore - t_cut:.2f} s long)")


def test_partition(net):
    """The broker's own link goes down for 3 s mid-job: it loses both
    workers and the collector at once (their tasks requeued); they finish
    their tasks offline. When the link returns all three re-register, the
    offline results are re-sent, and every scene is in every report once."""
    fleet = NetFleet("netns-part", net)
    ok = False
    try:
        _partition(fleet, net)
        ok = True
    finally:
        fleet.cleanup(ok)


def _partition(fleet, net):
    names = [f"p{i:02d}" for i in range(10)]
    job, out = fleet.make_job(names, name="part", max_attempts=3)
    broker = fleet.broker()
    collector = fleet.collector()
    env = {"TASK_SLEEP": "1.5"}
    fleet.worker_on("w11", env=env)
    fleet.worker_on("w12", env=env)
    fleet.wait(lambda: len(fleet.status()["workers"]) == 2 and fleet.status()["collector"]["connected"],
               20, "2 workers and the collector over the bridge")
    job_id = fleet.submit(job)
    fleet.wait(lambda: fleet.job(job_id)["final"] >= 2 and
               all(w["state"] == "busy" for w in fleet.status()["workers"]), 30,
               "two results and both workers busy")
    net.cut("broker")
    t_cut = time.time()
    time.sleep(3.0)
    net.restore("broker")
    t_restore = time.time()
    st = fleet.wait(lambda: (lambda s: len(s["workers"]) == 2 and s["collector"]["connected"] and s)(
        fleet.status()), 20, "both workers and the collector to come back")
    t_back = time.time()
    log(f"broker cut for {t_restore - t_cut:.1f} s; all back {t_back - t_restore:.2f} s after the restore")
    fleet.wait_done(job_id, 120)
    by = check_reports(out, names)
    blog = read_log(broker)
    assert blog.count(" lost (silent") >= 3, "the broker did not lose the 2 workers and the collector"
    assert "reconnecting" in read_log(collector) or "silent" in read_log(collector), \
        "the collector's log shows no reconnect"
    retried = sorted((s, r["attempt"], r["worker"].split(":")[0]) for s, r in by.items() if r["attempt"] > 1)
    log(f"scenes dispatched twice: {retried}")
    assert len(retried) <= 2, f"more than the 2 running tasks were retried: {retried}"
    stop_and_check(fleet)
    print(f"FIGURES partition: broker link down {t_restore - t_cut:.1f} s, "
          f"restore->all registered {t_back - t_restore:.2f} s")


def test_refuse_insecure(net):
    """A broker bound to a non-loopback address without --insecure (and no
    CURVE keys) refuses to start: exit 2, one line naming the flag."""
    import tempfile
    tmp = tempfile.mkdtemp(prefix="bf-netns-refuse-")
    bin_ = binary()
    try:
        for ep in (f"tcp://{SUBNET}.1:{PORT}", f"tcp://0.0.0.0:{PORT}", f"tcp://*:{PORT}"):
            if net and net.up:
                cmd = ["ip", "netns", "exec", net.ns("broker"), bin_]
            elif ep != f"tcp://{SUBNET}.1:{PORT}":
                continue  # on the real host, only an address it does not have
            else:
                cmd = [bin_]
            p = subprocess.Popen(cmd + ["broker", "--bind", ep, "--state", os.path.join(tmp, "state")],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
            try:
                out, err = p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                raise AssertionError(f"broker --bind {ep} without --insecure kept running")
            lines = err.strip().splitlines()
            assert p.returncode == 2, f"--bind {ep}: exit {p.returncode}, expected 2: {err}"
            assert len(lines) == 1, f"--bind {ep}: expected one line of error, got {lines}"
            assert ep in lines[0] and "--insecure" in lines[0] and "loopback" in lines[0], lines[0]
            assert not out.strip(), out
            log(f"refused {ep}: {lines[0]}")
        if net and net.up:
            # the control: the same bind with --insecure serves
            fleet = NetFleet("refuse", net)
            ok = False
            try:
                fleet.broker()
                st = fleet.wait(fleet.status, 10, "the --insecure broker to answer")
                assert st["broker"]["endpoint"] == fleet.endpoint, st["broker"]
                ok = True
            finally:
                fleet.cleanup(ok)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


TESTS = {"cut_rejoin": test_cut_rejoin, "short_cut": test_short_cut,
         "late_result": test_late_result, "partition": test_partition,
         "refuse_insecure": test_refuse_insecure}
NEEDS_NET = {"cut_rejoin", "short_cut", "late_result", "partition"}


def main():
    names = sys.argv[1:] or list(TESTS)
    for n in names:
        if n not in TESTS:
            print(f"test_multihost.py: unknown test '{n}' (known: {', '.join(TESTS)})", file=sys.stderr)
            sys.exit(2)
    bin_ = binary()
    if not os.access(bin_, os.X_OK):
        print(f"test_multihost.py: no beamfleet binary at {bin_} (set BEAMFLEET_BIN)", file=sys.stderr)
        sys.exit(2)
    can_net = os.geteuid() == 0
    if can_net:
        ensure_iproute2()
    elif NEEDS_NET & set(names):
        skip("network namespaces need root")
    # a SIGTERM (ctest timeout, ^C) still removes the namespaces
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(1))
    failed = 0
    for n in names:
        net = None
        t0 = time.time()
        try:
            if can_net:  # a fresh network for each test: a failed one leaves no cut link
                net = Net()
                net.setup()
            TESTS[n](net)
            print(f"PASS {n} ({time.time() - t0:.1f} s)")
        except Exception as e:  # every failure reported the same way
            import traceback
            traceback.print_exc()
            print(f"FAIL {n}: {e}")
            failed += 1
        finally:
            if net:
                net.teardown()
    print(f"{len(names) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
