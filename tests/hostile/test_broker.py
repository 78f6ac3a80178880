#!/usr/bin/env python3
"""Hostile-tenant tests of the broker and the protocol: what a bad
job, a greedy or dying peer, a second broker, an empty state file, a slow
HTTP client or a duplicate output directory must not do to everyone else.

Each test starts a real fleet (tests/e2e/fleet.py) on ephemeral loopback ports;
fake peers speak the wire protocol with pyzmq + msgpack, as the sample peer of
docs/protocol.md does. Run one: `test_broker.py state_lock` (BEAMFLEET_BIN names
the binary). Exits 77 (skipped) when pyzmq or msgpack is missing.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from fleet import Fleet, Skip, TASK, check_reports, free_port, main  # noqa: E402

try:
    import msgpack
    import zmq
except ImportError:  # pragma: no cover - the harness skips
    msgpack = zmq = None

# ---- a peer in Python: the wire format of the client package (python/beamfleet/wire.py,
# its tables checked against proto/proto.h by tests/python `tables`) -------------------

sys.path.insert(0, os.path.join(ROOT, "python"))
try:
    from beamfleet.wire import MESSAGES, VERSION, decode, encode  # noqa: E402
except ImportError:  # pragma: no cover - msgpack missing: the harness skips
    MESSAGES, VERSION, decode, encode = {}, 1, None, None


class Peer:
    """One DEALER speaking the protocol; heartbeats while it waits."""

    def __init__(self, endpoint, ctx):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, os.urandom(8))
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.beat = False
        self.last = 0.0

    def send(self, name, **values):
        self.sock.send(encode(name, **values))
        self.last = time.time()

    def recv(self, want=None, timeout=3.0):
        """The next message other than a heartbeat, or None at the timeout."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.beat and time.time() - self.last > 0.05:
                self.send("heartbeat")
            if self.sock.poll(20):
                name, m = decode(self.sock.recv())
                if name == "heartbeat":
                    continue
                if want and name != want:
                    raise AssertionError(f"expected {want}, got {name}: {m}")
                return m
        return None

    def ready(self, name, credit, **caps):
        obj = {"host": name.split(":")[0], "pid": os.getpid(), "device_index": -1,
               "name": "cpu", "backend": "cpu", "tasks": ["exec"], "running": []}
        obj.update(caps)
        self.send("ready", worker=name, credit=credit, obj=obj)
        self.beat = True

    def close(self):
        self.sock.close(0)


def request(fleet, ctx, name, want, **values):
    p = Peer(fleet.endpoint, ctx)
    try:
        p.send(name, **values)
        return p.recv(want, 10)
    finally:
        p.close()


def job_doc(fleet, scenes, name="job", output=None, command=None, max_attempts=3):
    """A SUBMIT document (bf_job_to_json's keys) for a raw submission."""
    return {"name": name, "output": output or os.path.join(fleet.tmp, f"{name}-out"),
            "task": "exec", "timeout_s": 60, "max_attempts": max_attempts,
            "scenes_root": os.path.join(fleet.tmp, f"{name}-scenes"), "scenes": scenes,
            "exec": {"command": command or [sys.executable, TASK, "{scene_dir}"]}}


def need_zmq():
    if zmq is None or msgpack is None:
        raise Skip("pyzmq and msgpack are needed (python3 -m pip install pyzmq msgpack)")


def log_of(fleet, what):
    text = ""
    for name in sorted(os.listdir(fleet.logs)):
        if what in name:
            with open(os.path.join(fleet.logs, name), errors="replace") as f:
                text += f.read()
    return text


def workers(fleet):
    return fleet.status()["workers"]


# ---- a bad job must not take the fleet down --------------------------------------------

def test_bad_job(fleet: Fleet):
    """An exec job whose command is not allowed fails every task (the job's
    fault) but quarantines nobody: a correct job then completes on the same
    workers."""
    fleet.broker()
    fleet.collector()
    fleet.worker(["--name", "w1"])
    fleet.worker(["--name", "w2"])
    fleet.wait(lambda: len(workers(fleet)) == 2, 15, "2 workers")
    bad = [f"b{i:02d}" for i in range(6)]
    path, out = fleet.make_job(bad, name="typo", max_attempts=2)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:  # a command no worker allows
        f.write(text.replace(f"{sys.executable}, {TASK}", f"{sys.executable}, {TASK}x"))
    job = fleet.submit(path)
    fleet.wait_done(job, 60)
    rows = check_reports(out, bad, {s: "error" for s in bad})
    for r in rows.values():
        assert "not allowed" in r["reason"] or "task fault" in r["reason"], r["reason"]
    for w in workers(fleet):
        assert w["state"] != "quarantined", w
    good = [f"g{i:02d}" for i in range(6)]
    path, out = fleet.make_job(good, name="fixed")
    job = fleet.submit(path)
    fleet.wait_done(job, 60)
    rows = check_reports(out, good)
    used = {r["worker"].split(":")[0] for r in rows.values()}
    assert used <= {"w1", "w2"}, used
    for w in workers(fleet):
        assert w["state"] != "quarantined", w


def test_fake_faults(fleet: Fleet):
    """Over the wire: six tasks that fail with fault "task" leave the worker
    in service; three device faults quarantine it."""
    need_zmq()
    ctx = zmq.Context()
    fleet.broker()
    fleet.wait(lambda: fleet.status() is not None, 10, "the broker")
    r = request(fleet, ctx, "submit", "submitted",
                obj=job_doc(fleet, [f"s{i}" for i in range(10)], max_attempts=1))
    w = Peer(fleet.endpoint, ctx)
    try:
        w.ready("fake:1:cpu", 1)
        for i in range(10):
            t = w.recv("task", 5)
            assert t, f"task {i} never came (quarantined?): {workers(fleet)}"
            fault = "task" if i < 6 else "device"
            w.send("result", task_id=t["task_id"], attempt=t["attempt"],
                   obj={"status": "error", "reason": "exec program not allowed" if i < 6 else
                        "CUDA error 700", "fault": fault, "host": "fake", "worker": "fake:1:cpu",
                        "gpu_id": -1, "device": "cpu"})
            assert w.recv("ack", 5)
            if i == 8:
                break
        assert w.recv("task", 0.5) is None, "quarantined after 3 device faults"
        st = [x for x in workers(fleet) if x["name"] == "fake:1:cpu"][0]
        assert st["state"] == "quarantined" and "device fault" in st["quarantine_reason"], st
        ev = request(fleet, ctx, "status", "status-reply", job_id=r["job_id"])["obj"]["events"]
        reasons = [e["reason"] for e in ev]
        assert sum("(task fault: exec program not allowed)" in x for x in reasons) == 6, reasons
    finally:
        w.close()
        ctx.term()


# ---- greedy and dying peers ------------------------------------------------------------

def test_prefetch_lost(fleet: Fleet):
    """A READY with credit 2^63 gets 16 tasks, not the queue; a worker that
    held 4, started one and vanished costs an attempt for that one only."""
    need_zmq()
    ctx = zmq.Context()
    fleet.broker()
    fleet.wait(lambda: fleet.status() is not None, 10, "the broker")
    request(fleet, ctx, "submit", "submitted", obj=job_doc(fleet, [f"s{i:02d}" for i in range(40)]))
    greedy = Peer(fleet.endpoint, ctx)
    a = b = None
    try:
        greedy.ready("greedy:1:cpu", 2 ** 63)
        got = []
        while True:
            t = greedy.recv("task", 0.5)
            if not t:
                break
            got.append(t)
        assert len(got) == 16, f"credit 2^63 leased {len(got)} tasks"
        greedy.send("goodbye")
        greedy.beat = False
        a = Peer(fleet.endpoint, ctx)
        a.ready("prefetch:1:cpu", 4)
        held = [a.recv("task", 5) for _ in range(4)]
        assert all(held), held
        a.send("progress", task_id=held[0]["task_id"], stage="exec", attempt=held[0]["attempt"],
               fraction=0.0)
        time.sleep(0.1)
        a.close()  # silent: no GOODBYE, no more heartbeats
        a = None
        b = Peer(fleet.endpoint, ctx)
        b.ready("heir:1:cpu", 16)
        mine = {t["task_id"] for t in held}
        attempts = {}
        deadline = time.time() + 10
        while len(attempts) < 4 and time.time() < deadline:
            t = b.recv(None, 1)
            if t and "timeout_ms" not in t:  # an ACK
                continue
            if t and t["task_id"] in mine:
                attempts[t["task_id"]] = t["attempt"]
            elif t:  # other work: done at once, so credit comes back
                b.send("result", task_id=t["task_id"], attempt=t["attempt"],
                       obj={"status": "success", "reason": "", "host": "heir", "gpu_id": -1})
        assert len(attempts) == 4, attempts
        assert attempts[held[0]["task_id"]] == 2, attempts
        assert sorted(attempts.values()) == [1, 1, 1, 2], attempts
    finally:
        for p in (greedy, a, b):
            if p:
                p.close()
        ctx.term()


def test_lost(fleet: Fleet):
    """LOST from the worker's own host requeues its task at once (no wait for
    heartbeats), with the reason "worker lost: ..."; measured."""
    need_zmq()
    ctx = zmq.Context()
    fleet = fleet
    fleet.broker()
    fleet.wait(lambda: fleet.status() is not None, 10, "the broker")
    r = request(fleet, ctx, "submit", "submitted", obj=job_doc(fleet, ["only"], max_attempts=1))
    w = Peer(fleet.endpoint, ctx)
    sup = Peer(fleet.endpoint, ctx)
    try:
        w.ready("victim:7:cpu", 1)
        t = w.recv("task", 5)
        w.send("progress", task_id=t["task_id"], stage="exec", attempt=1, fraction=0.0)
        time.sleep(0.05)
        t0 = time.time()
        sup.send("lost", worker="victim:7:cpu", reason="killed by signal 9")
        took = None
        while time.time() - t0 < 5:
            st = request(fleet, ctx, "status", "status-reply", job_id=r["job_id"])["obj"]
            if st["events"]:
                took = time.time() - t0
                break
        assert took is not None and took < 3 * fleet.heartbeat_ms / 1000.0, took
        reason = st["events"][0]["reason"]
        assert "worker lost: killed by signal 9" in reason, reason
        print(f"  LOST -> task final (max_attempts 1) in {took * 1000:.1f} ms "
              f"(heartbeat expiry {fleet.heartbeat_ms * fleet.liveness} ms)")
    finally:
        w.close()
        sup.close()
        ctx.term()


def curve_peer(fleet, ctx, keys_dir, name):
    """A Peer whose DEALER is a CURVE client with key NAME of keys_dir."""
    def z85(path, what):
        text = open(path).read()
        return re.search(rf"^{what}:\s*\"?([^\"\s]+)", text, re.M).group(1).encode()
    p = Peer.__new__(Peer)
    p.sock = ctx.socket(zmq.DEALER)
    p.sock.setsockopt(zmq.ROUTING_ID, os.urandom(8))
    p.sock.setsockopt(zmq.LINGER, 0)
    p.sock.curve_secretkey = z85(os.path.join(keys_dir, f"{name}.secret"), "secret")
    p.sock.curve_publickey = z85(os.path.join(keys_dir, f"{name}.public"), "public")
    p.sock.curve_serverkey = z85(os.path.join(keys_dir, "broker.public"), "public")
    p.sock.connect(fleet.endpoint)
    p.beat = False
    p.last = 0.0
    return p


def test_lost_curve(fleet: Fleet):
    """Under CURVE only the dead worker's own key may report it LOST: another
    worker key and a client key are refused (EPERM) and change nothing."""
    need_zmq()
    import test_security
    d = test_security.keys(fleet, {"broker": "broker", "w1": "worker", "w2": "worker",
                                   "alice": "client"})
    fleet.broker(["-c", test_security.fleet_file(fleet, d, "broker")])
    ctx = zmq.Context()
    peers = []
    try:
        alice = curve_peer(fleet, ctx, d, "alice")
        peers.append(alice)
        alice.send("submit", obj=job_doc(fleet, ["only"], max_attempts=1))
        job = alice.recv("submitted", 10)
        assert job, "no SUBMITTED over CURVE"
        w = curve_peer(fleet, ctx, d, "w1")
        peers.append(w)
        w.ready("victim:1:cpu", 1)
        t = w.recv("task", 5)
        w.send("progress", task_id=t["task_id"], stage="exec", attempt=1, fraction=0.0)
        for name, why in (("w2", "only its own supervisor"), ("alice", "may not send lost")):
            p = curve_peer(fleet, ctx, d, name)
            peers.append(p)
            p.send("lost", worker="victim:1:cpu", reason="forged")
            err = p.recv("error", 5)
            assert err and err["code"] == 10 and why in err["reason"], (name, err)

        def status():
            q = curve_peer(fleet, ctx, d, "alice")
            try:
                q.send("status", job_id=job["job_id"])
                return q.recv("status-reply", 5)["obj"]
            finally:
                q.close()
        assert not status()["events"], "a forged LOST ended the task"
        sup = curve_peer(fleet, ctx, d, "w1")
        peers.append(sup)
        sup.send("lost", worker="victim:1:cpu", reason="killed by signal 9")
        fleet.wait(lambda: status()["events"], 5, "the task to end after its supervisor's LOST")
        assert "worker lost: killed by signal 9" in status()["events"][0]["reason"]
    finally:
        for p in peers:
            p.close()
        ctx.term()


# ---- daemons ---------------------------------------------------------------------------

def test_state_lock(fleet: Fleet):
    """A second broker on the same --state exits 2 naming the first's pid;
    after the first is gone a new one starts."""
    first = fleet.broker()
    fleet.wait(lambda: fleet.status() is not None, 10, "the first broker")
    r = subprocess.run([fleet.bin, "broker", "--bind", f"tcp://127.0.0.1:{free_port()}",
                        "--state", fleet.state], capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, (r.returncode, r.stderr)
    want = f"broker: state directory {fleet.state} is in use by pid {first.pid}"
    assert want in r.stderr, r.stderr
    assert first.poll() is None, "the first broker died"
    fleet.kill(first)
    second = fleet.broker()
    fleet.wait(lambda: fleet.status() is not None, 10, "a broker after the first died")
    assert second.poll() is None


def test_empty_state(fleet: Fleet):
    """A 0-byte state database is said to be empty, loudly; a new one is
    said to be new."""
    os.makedirs(fleet.state)
    open(os.path.join(fleet.state, "broker.db"), "w").close()
    fleet.broker()
    fleet.wait(lambda: fleet.status() is not None, 10, "the broker")
    db = os.path.join(fleet.state, "broker.db")
    log = log_of(fleet, "broker")
    assert f"state database {db} was empty" in log and "starting a new, empty state" in log, log
    assert "WARN" in log.split(f"state database {db} was empty")[0].splitlines()[-1], log
    other = os.path.join(fleet.tmp, "state2")
    p = subprocess.Popen([fleet.bin, "broker", "--bind", f"tcp://127.0.0.1:{free_port()}",
                          "--state", other], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    try:
        deadline = time.time() + 10
        while not os.path.exists(os.path.join(other, "broker.lock")) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        p.terminate()
        text = p.communicate(timeout=10)[0]
    assert f"state database {other}/broker.db is new" in text, text
    assert "was empty" not in text, text


def test_metrics_slow_clients(fleet: Fleet):
    """Five idle connections and one half-sent request on the metrics port
    do not delay a real scrape (< 1 s)."""
    port = free_port()
    fleet.broker(["--metrics", f"127.0.0.1:{port}"])
    fleet.wait(lambda: fleet.status() is not None, 10, "the broker")
    url = f"http://127.0.0.1:{port}/metrics"
    fleet.wait(lambda: urllib.request.urlopen(url, timeout=5).status == 200, 10, "metrics")
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    try:
        time.sleep(0.2)
        worst = 0.0
        for _ in range(5):
            t0 = time.time()
            body = urllib.request.urlopen(url, timeout=10).read().decode()
            worst = max(worst, time.time() - t0)
            assert "beamfleet_" in body
        assert worst < 1.0, f"a scrape took {worst:.2f} s beside slow clients"
        print(f"  slowest scrape beside 6 slow clients: {worst * 1000:.0f} ms")
    finally:
        for s in idle + [half]:
            s.close()


def test_metrics_flood(fleet: Fleet):
    """Ten idle connections from one address (over the per-address limit of
    8) hold the metrics port for at most the connection timeout (3 s): a
    scrape is answered again within 5 s."""
    port = free_port()
    fleet.broker(["--metrics", f"127.0.0.1:{port}"])
    fleet.wait(lambda: fleet.status() is not None, 10, "the broker")
    url = f"http://127.0.0.1:{port}/metrics"
    fleet.wait(lambda: urllib.request.urlopen(url, timeout=5).status == 200, 10, "metrics")
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    try:
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except Exception:
                assert time.time() - t0 < 5, "the metrics port stayed blocked for 5 s"
                time.sleep(0.2)
        print(f"  scrape answered {time.time() - t0:.1f} s after 10 idle connections")
    finally:
        for s in idle:
            s.close()


def test_metrics_bind(fleet: Fleet):
    """The metrics listener follows the bind rule: 0.0.0.0 without keys and
    without --insecure is refused (exit 2); with --insecure it serves."""
    r = subprocess.run([fleet.bin, "broker", "--bind", fleet.endpoint, "--state", fleet.state,
                        "--metrics", f"0.0.0.0:{free_port()}"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--metrics" in r.stderr and "loopback" in r.stderr and "--insecure" in r.stderr, r.stderr


def test_metrics_no_library(fleet: Fleet):
    """libmicrohttpd is loaded with dlopen, and only when the metrics endpoint
    starts (broker/broker_metrics.c): where the loader finds an unusable file
    of that name first (on LD_LIBRARY_PATH: an empty one, then another
    library under its name), `version` runs, and a broker with --metrics
    refuses to start (exit 2) with one line naming the library and why."""
    listed = os.path.join(os.path.dirname(fleet.bin), "dlopen-libs.txt")
    if not os.path.exists(listed):
        raise Skip(f"no {listed} beside the binary (CMake writes it)")
    with open(listed) as f:
        soname = os.path.basename(f.read().split()[0])
    ldd = subprocess.run(["ldd", fleet.bin], capture_output=True, text=True, timeout=20).stdout
    other = re.search(r"=> (/\S*libjansson\.so\S*)", ldd).group(1)
    libdir = os.path.join(fleet.tmp, "libs")
    os.makedirs(libdir)
    env = dict(os.environ, LD_LIBRARY_PATH=libdir, BEAMFLEET_LOG="warn")  # no info lines
    with open(other, "rb") as f:
        jansson = f.read()
    for content, why in ((b"", "file too short"), (jansson, "MHD_start_daemon missing")):
        with open(os.path.join(libdir, soname), "wb") as f:
            f.write(content)
        v = subprocess.run([fleet.bin, "version"], env=env, capture_output=True, text=True,
                           timeout=20)
        assert v.returncode == 0, (v.returncode, v.stderr)
        r = subprocess.run([fleet.bin, "broker", "--bind", fleet.endpoint, "--state", fleet.state,
                            "--metrics", f"127.0.0.1:{free_port()}"], env=env, capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 2, (r.returncode, r.stderr)
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith("beamfleet broker: --metrics (metrics.listen) '127.0.0.1:"), err
        assert f"cannot load {soname} for the HTTP endpoint" in err and why in err, err
        print(f"  {err}")


# ---- jobs ------------------------------------------------------------------------------

def test_output_in_use(fleet: Fleet):
    """A second job with the output directory of a running one is refused,
    naming it; once the first is done and delivered, the same output is
    accepted."""
    fleet.broker()
    fleet.collector()
    fleet.worker()
    fleet.wait(lambda: len(workers(fleet)) == 1, 10, "the worker")
    slow = [f"slow_{i}" for i in range(2)]
    path_a, out = fleet.make_job(slow, name="a")
    a = fleet.submit(path_a)
    path_b, _ = fleet.make_job(["x0"], name="b")
    with open(path_b) as f:
        text = f.read()
    with open(path_b, "w") as f:
        f.write(text.replace(f"output: {fleet.tmp}/b-out", f"output: {out}/./"))
    r = fleet.cli("submit", path_b, "--broker", fleet.endpoint, check=False)
    assert r.returncode != 0, r.stdout
    want = f"is in use by job {a} 'a' (still running); choose another output or wait"
    assert want in r.stderr, r.stderr
    fleet.wait_done(a, 60)
    b = fleet.submit(path_b)
    fleet.wait_done(b, 60)


def test_big_submit(fleet: Fleet):
    """A SUBMIT over the old 8 MiB frame limit (a 9.7 MB scene list) is
    taken (PROTO_MAX_FRAME is 32 MiB)."""
    need_zmq()
    ctx = zmq.Context()
    fleet.broker()
    fleet.wait(lambda: fleet.status() is not None, 10, "the broker")
    try:
        scenes = [f"scene-{i:06d}-{'x' * 180}" for i in range(50000)]  # ~9.7 MB
        frame = encode("submit", obj=job_doc(fleet, scenes))
        assert 8 << 20 < len(frame) < 32 << 20, len(frame)
        r = request(fleet, ctx, "submit", "submitted", obj=job_doc(fleet, scenes))
        assert r and r["total"] == len(scenes), r
    finally:
        ctx.term()


# ---- the protocol document -------------------------------------------------------------

def test_protocol_doc(fleet: Fleet):
    """docs/protocol.md's field and message tables and its Python peer agree
    with proto/proto.h (the field order on the wire comes from PROTO_FIELDS)."""
    header = open(os.path.join(ROOT, "proto", "proto.h")).read()
    doc = open(os.path.join(ROOT, "docs", "protocol.md")).read()
    fields = re.findall(r"^\s*X\((\w+), (?:STR|UINT|REAL|OBJ)\)", header, re.M)
    assert len(fields) == 14, fields
    rows = re.findall(r'X\((\w+), (\d+), "([\w-]+)", "[\w>]+",[\s\\]*((?:PF\(\w+\)[\s|\\]*)+|0)\)',
                      header, re.S)
    wire = {int(code): (name, sorted(re.findall(r"PF\((\w+)\)", mask), key=fields.index))
            for _, code, name, mask in rows}
    assert len(wire) >= 20 and wire[17] == ("error", ["reason", "code"]), wire.get(17)
    sample = doc[doc.index("### A peer in Python"):]
    sample = sample[sample.index("```python") + 9:]
    sample = sample[:sample.index("```")]
    ns = {}
    code = sample[:sample.index("def encode")]
    exec(code.replace("import msgpack, os, zmq", ""), ns)  # the tables only
    assert ns["FIELDS"] == fields, ns["FIELDS"]
    assert {k: (v[0], v[1]) for k, v in ns["MESSAGES"].items()} == wire, \
        {k: (ns["MESSAGES"].get(k), wire.get(k)) for k in wire if ns["MESSAGES"].get(k) != wire[k]}
    assert MESSAGES == ns["MESSAGES"], "this test's peer differs from the document's"
    section4 = doc[doc.index("## 4. Messages"):doc.index("## 5. ")]
    table = re.findall(r"^\| (\d+) \| `([\w-]+)` \| [^|]+ \| ([^|]+) \|", section4, re.M)
    for code, name, flist in table:
        want = wire[int(code)]
        got = [f.strip() for f in flist.split(",")] if "(none)" not in flist else []
        assert (name, got) == want, f"section 4 row {code}: {name} {got} != {want}"
    assert len(table) == len(wire), (len(table), len(wire))


TESTS = {
    "bad_job": test_bad_job,
    "fake_faults": test_fake_faults,
    "prefetch_lost": test_prefetch_lost,
    "lost": test_lost,
    "lost_curve": test_lost_curve,
    "state_lock": test_state_lock,
    "empty_state": test_empty_state,
    "metrics_slow_clients": test_metrics_slow_clients,
    "metrics_flood": test_metrics_flood,
    "metrics_bind": test_metrics_bind,
    "metrics_no_library": test_metrics_no_library,
    "output_in_use": test_output_in_use,
    "big_submit": test_big_submit,
    "protocol_doc": test_protocol_doc,
}

if __name__ == "__main__":
    main(TESTS, prefix="hostile-")
