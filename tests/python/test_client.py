#!/usr/bin/env python3
"""The beamfleet Python package (python/) against a real fleet: the real
broker, collector and workers of tests/e2e/fleet.py, plaintext and CURVE,
every call of the API, and its failures.

Run one: tests/python/test_client.py api   (BEAMFLEET_BIN=build/beamfleet)
The package is imported from python/ (PYTHONPATH); `install` also installs it
with pip into a virtual environment and uses it from there.
"""
import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
PYDIR = os.path.join(REPO, "python")
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
sys.path.insert(0, PYDIR)
from fleet import Fleet, Skip, check_reports, free_port, main, read_jsonl  # noqa: E402
from test_security import IDENTITIES, fleet_file, keys  # noqa: E402

import beamfleet  # noqa: E402
from beamfleet import wire  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=PYDIR + os.pathsep + os.environ.get("PYTHONPATH", ""))


def start(fleet, workers=1, conf=None):
    fleet.broker(["-c", conf["broker"]] if conf else [])
    fleet.collector(["-c", conf["collector"]] if conf else [])
    for _ in range(workers):
        fleet.worker(["-c", conf["gpu0"]] if conf else [])


def raises(cls, fn, *words):
    """Calls fn; it must raise cls with every word in its one-line message."""
    try:
        fn()
    except cls as e:
        text = str(e)
        assert "\n" not in text, f"a message of more than one line: {text!r}"
        for w in words:
            assert w in text, f"expected {w!r} in {text!r}"
        return e
    raise AssertionError(f"expected {cls.__name__}, nothing was raised")


def subscribe(fleet, client, **kw):
    """client.watch(**kw), once the collector has registered both of its
    topics ("result", "job-done"): from then on nothing published is missed."""
    before = fleet.log_of("collector").count("stream: subscribed to")
    stream = client.watch(**kw)
    fleet.wait_subscribed(before + 2)
    return stream


def event_job(event):
    """The job an event of watch() belongs to."""
    return event["result"]["job_id"] if event["event"] == "result" else event["job"]["id"]


def run_job_with_stream(fleet, client, names, name="job"):
    """Watches, submits a job file, collects the stream until its job-done."""
    job, out = fleet.make_job(names, name=name)
    stream = subscribe(fleet, client)
    job_id = client.submit(job)
    assert len(job_id) == 12 and int(job_id, 16) >= 0, job_id
    assert client.last_total == len(names)
    events = []
    for ev in stream:
        events.append(ev)
        if ev["event"] == "job-done" and ev["job"]["id"] == job_id:
            break
    return job_id, out, events


def test_api(fleet: Fleet):
    """submit (file and dict), status, watch, wait, results, cancel: each
    checked against the CLI and the collector's reports."""
    start(fleet, workers=2)
    c = beamfleet.Client(broker=fleet.endpoint, publish=fleet.publish, timeout=10)
    fleet.wait(lambda: len(c.status()["workers"]) == 2, 15, "the workers")
    # status: the document `beamfleet status --json` prints
    mine, theirs = c.status(), fleet.status()
    assert sorted(mine) == sorted(theirs) and "events" not in mine, (sorted(mine), sorted(theirs))
    assert [w["name"] for w in mine["workers"]] == [w["name"] for w in theirs["workers"]]
    assert mine["broker"]["endpoint"] == theirs["broker"]["endpoint"]

    names = [f"s{i:02d}" for i in range(6)]
    job_id, out, events = run_job_with_stream(fleet, c, names)
    results = [e["result"] for e in events if e["event"] == "result"]
    assert sorted(r["scene"] for r in results) == names, events
    assert events[-1]["event"] == "job-done" and events[-1]["job"]["state"] == "done", events[-1]
    job = c.wait(job_id, timeout=60)
    assert job["id"] == job_id and job["counts"]["success"] == len(names), job
    by_scene = check_reports(out, names)
    for r in results:  # the stream carries what the reports hold
        assert r["task_id"] == by_scene[r["scene"]]["task_id"]
    assert fleet.job(job_id)["state"] == "done"  # the CLI sees the same job

    # results: one row per scene, the CSV's columns, the values of results.jsonl
    rows = beamfleet.results(out, as_dataframe=False)
    logged = read_jsonl(os.path.join(out, "results.jsonl"))
    assert [r["scene"] for r in rows] == [x["scene"] for x in logged]
    for r in rows:
        assert r["status"] == "success" and r["job_id"] == job_id, r
        assert r["improvement_mean"] == by_scene[r["scene"]]["stats"]["improvement_mean"]
        assert r["zone_power_optimized"] == by_scene[r["scene"]]["zone_power_optimized"]
    with open(os.path.join(out, "results.csv"), newline="") as f:
        header = next(csv.reader(f))
    assert beamfleet.COLUMNS[:len(header)] == header, (header, beamfleet.COLUMNS)

    # watch(job_id): events of other jobs are dropped; it ends at that job's
    # job-done. A job that hangs on one worker is watched while a second job
    # runs on the other; then the first is cancelled.
    hung, _ = fleet.make_job(["hang_0"], name="hung")
    id_hung = c.submit(hung)
    fleet.wait(lambda: c.job(id_hung)["running"] == 1, 20, "the hanging task to start")
    only = subscribe(fleet, c, job_id=id_hung)
    every = subscribe(fleet, c)
    job2, _ = fleet.make_job(["x1", "x2"], name="second")
    id2 = c.submit(job2)
    c.wait(id2, 60)
    assert c.cancel(id_hung) == 1
    seen = [next(every) for _ in range(5)]
    want = [("result", id2)] * 2 + [("job-done", id2), ("result", id_hung), ("job-done", id_hung)]
    assert sorted((e["event"], event_job(e)) for e in seen) == sorted(want), seen
    got = list(only)  # ends by itself at the job-done of id_hung
    assert [e["event"] for e in got] == ["result", "job-done"], got
    assert got[0]["result"]["status"] == "cancelled" and got[1]["job"]["id"] == id_hung, got

    # a dict job, paths relative to base_dir, sent as the file would be
    root = os.path.join(fleet.tmp, "dict-scenes")
    for s in ("d1", "d2", "d3"):
        os.makedirs(os.path.join(root, s))
    spec = {"name": "from-dict", "scenes": "dict-scenes", "output": "dict-out", "task": "exec",
            "timeout_s": 60, "max_scenes": 2,
            "exec": {"command": [sys.executable, os.path.join(REPO, "tests", "e2e", "task.py"),
                                 "{scene_dir}"]}}
    doc = beamfleet.job_document(spec, base_dir=fleet.tmp)
    assert doc["scenes"] == ["d1", "d2"] and doc["scenes_root"] == os.path.realpath(root), doc
    id3 = c.submit(spec, base_dir=fleet.tmp)
    j3 = c.wait(id3, 60)
    assert j3["name"] == "from-dict" and j3["output"] == os.path.join(fleet.tmp, "dict-out"), j3
    check_reports(os.path.join(fleet.tmp, "dict-out"), ["d1", "d2"])

    # cancel: a job that would hang; every task ends cancelled
    hang, hang_out = fleet.make_job(["hang_a", "hang_b", "hang_c"], name="hang")
    id4 = c.submit(hang)
    fleet.wait(lambda: c.job(id4)["running"] >= 1, 20, "the hanging task to start")
    assert c.cancel(id4) == 3
    j4 = c.wait(id4, 30)
    assert j4["state"] == "cancelled" and j4["counts"]["cancelled"] == 3, j4
    assert {r["status"] for r in beamfleet.results(hang_out, as_dataframe=False)} == {"cancelled"}

    # what the broker refuses comes back as the error of its code
    raises(beamfleet.UnknownJob, lambda: c.cancel("000000000000"), "broker:", "cancel: ENOENT")
    raises(beamfleet.UnknownJob, lambda: c.job("000000000000"), "000000000000")
    id5 = c.submit(hang)
    raises(beamfleet.OutputInUse, lambda: c.submit(hang), hang_out, id5)
    c.cancel(id5)
    bad = dict(beamfleet.job_document(job2), max_attempts=1000)
    raises(beamfleet.JobRejected, lambda: c.request("submit", obj=bad), "max_attempts",
           "submit: EINVAL")
    c.close()
    every.close()  # a stream still open when its Client closed ends quietly
    raises(beamfleet.BeamfleetError, c.status, "closed")


def test_curve(fleet: Fleet):
    """A CURVE fleet: the client's key from the fleet file, roles enforced,
    the stream encrypted, and a client without keys refused at once."""
    d = keys(fleet)
    conf = {name: fleet_file(fleet, d, name) for name in IDENTITIES}
    start(fleet, conf=conf)
    alice = beamfleet.Client(fleet=conf["alice"], timeout=10)
    assert alice.identity and alice.broker == fleet.endpoint and alice.publish == fleet.publish
    fleet.wait(lambda: len(alice.status()["workers"]) == 1, 15, "the CURVE worker")
    names = [f"c{i}" for i in range(4)]
    job_id, out, events = run_job_with_stream(fleet, alice, names)
    assert sorted(e["result"]["scene"] for e in events if e["event"] == "result") == names
    alice.wait(job_id, 60)
    check_reports(out, names)
    assert [r["scene"] for r in beamfleet.results(out, as_dataframe=False)] == \
        [r["scene"] for r in read_jsonl(os.path.join(out, "results.jsonl"))]

    # roles: a worker key may not submit or cancel; a client submits, an admin cancels
    hang, _ = fleet.make_job(["hang_1", "hang_2"], name="hang")
    worker = beamfleet.Client(fleet=conf["gpu0"], timeout=10)
    raises(beamfleet.PermissionDenied, lambda: worker.submit(hang), "key 'gpu0'",
           "may not send submit")
    id2 = alice.submit(hang)
    raises(beamfleet.PermissionDenied, lambda: worker.cancel(id2), "may not send cancel")
    ops = beamfleet.Client(fleet=conf["ops"], timeout=10)
    assert ops.cancel(id2) == 2

    # no keys against a CURVE broker: refused within the timeout, saying why
    plain = beamfleet.Client(broker=fleet.endpoint, timeout=8)
    t0 = time.monotonic()
    raises(beamfleet.HandshakeError, plain.status, fleet.endpoint, "CURVE")
    assert time.monotonic() - t0 < 8, "the handshake failure waited for the timeout"
    # a key the broker does not list
    other = keys(fleet, {"broker": "broker", "mallory": "client"}, where="other-keys")
    shutil.copy(os.path.join(d, "broker.public"), os.path.join(other, "broker.public"))
    stranger = beamfleet.Client(fleet=fleet_file(fleet, other, "mallory"), timeout=8)
    raises(beamfleet.HandshakeError, stranger.status, "refused this CURVE key")
    # watch without the collector's key file
    raises(beamfleet.ConfigError, lambda: alice.__class__(fleet=conf["alice"],
                                                          collector_key="nobody").watch(),
           "nobody.public")
    # a fleet file whose identity has no key
    lost = fleet_file(fleet, d, "nobody")
    raises(beamfleet.ConfigError, lambda: beamfleet.Client(fleet=lost), lost, "nobody.secret")
    for cl in (alice, worker, ops, plain, stranger):
        cl.close()


def c_table(source, name):
    """The rows of one field table of common/bf_config.c: (path, type, flags, lo, hi)."""
    body = source[source.index(f"static const field_t {name}[] = {{"):]
    body = body[:body.index("};")]
    consts = {"SCENES_MAX": 10000000, "ARGV_MAX": 256, "ALLOW_MAX": 1024,
              "INT64_MAX": (1 << 63) - 1, "10000000000ull": 10000000000}
    rows = []
    for m in re.finditer(r"^\s*(SEC|VAL|INT|REAL)\(", body, re.M):
        kind, depth, j = m[1], 1, m.end()
        while depth:  # to the parenthesis that closes the row
            depth += {"(": 1, ")": -1}.get(body[j], 0)
            j += 1
        args, parts, depth = body[m.end():j - 1], [""], 0
        for ch in args:  # split on the commas outside J(...), JM(...)
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if ch == "," and depth == 0:
                parts.append("")
            else:
                parts[-1] += ch
        a = [re.sub(r"\s+", " ", x).strip() for x in parts]
        path, typ = a[0].strip('"'), a[1] if kind != "SEC" else "F_SECTION"
        flags = a[1] if kind == "SEC" else a[2]
        lo = hi = 0
        has = kind == "REAL" and a[-1] != "NO_AUX"  # written only when given (has_*)
        if kind in ("INT", "REAL"):
            def num(x):
                x = x.strip()
                if x in consts:
                    return consts[x]
                x = re.sub(r"u$", "", x)
                m = re.fullmatch(r"(\d+)u? \* (\d+)", x)
                return int(m[1]) * int(m[2]) if m else float(x) if "." in x or "e" in x else int(x)
            lo, hi = num(a[3]), num(a[4])
        rows.append((path, typ, flags + (" HAS" if has else ""), lo, hi))
    return rows


def test_tables(fleet: Fleet):
    """The package's copies of the protocol's tables (proto/proto.h) and of
    the job and fleet tables (common/bf_config.c) are the C side's: what is
    in one and not the other, a field moved, a bound changed, fails here."""
    from beamfleet import config
    header = open(os.path.join(REPO, "proto", "proto.h")).read()
    fields = re.findall(r"^\s*X\((\w+), (?:STR|UINT|REAL|OBJ)\)", header, re.M)
    assert wire.FIELDS == fields, (wire.FIELDS, fields)
    rows = re.findall(r'X\((\w+), (\d+), "([\w-]+)", "[\w>]+",[\s\\]*((?:PF\(\w+\)[\s|\\]*)+|0)\)',
                      header, re.S)
    theirs = {int(code): (name, sorted(re.findall(r"PF\((\w+)\)", mask), key=fields.index))
              for _, code, name, mask in rows}
    assert len(theirs) >= 20 and wire.MESSAGES == theirs, \
        {k: (wire.MESSAGES.get(k), theirs.get(k)) for k in theirs if wire.MESSAGES.get(k) != theirs[k]}
    assert f"#define PROTO_VERSION   {wire.VERSION}\n" in header
    assert f"#define PROTO_MAX_FRAME ({wire.MAX_FRAME >> 20}u << 20)" in header

    source = open(os.path.join(REPO, "common", "bf_config.c")).read()
    types = {"F_SECTION": "section", "F_STR": "str", "F_NAME": "name", "F_PATH": "path",
             "F_SCENEDIR": "scenedir", "F_UINT": "uint", "F_U64": "u64", "F_DOUBLE": "double",
             "F_BOOL": "bool", "F_TASK": "task", "F_OBJECTIVE": "objective",
             "F_OFFSET": "offset", "F_DMODEL": "dmodel", "F_PAIR": "pair", "F_STRV": "strv"}
    for cname, mine in (("job_fields", config._JOB), ("fleet_fields", config._FLEET)):
        want = []
        for path, typ, flags, lo, hi in c_table(source, cname):
            if "IN_YAML" not in flags and "IN_BOTH" not in flags:
                continue  # scenes_root and the list of scenes: computed, not read
            want.append((path, types[typ], lo, hi, "GT_MIN" in flags, "ORDERED" in flags,
                         "HAS" in flags, "REQ_YAML" in flags,
                         cname == "job_fields" and "IN_BOTH" not in flags))
        got = [(p, t, lo, hi, "G" in fl, "O" in fl, "H" in fl, "R" in fl, "Y" in fl)
               for p, t, fl, lo, hi in mine]
        assert got == want, "\n".join(f"{a}\n{b}\n" for a, b in zip(got, want) if a != b) or \
            (len(got), len(want))
    assert len(c_table(source, "job_fields")) == 45 and len(c_table(source, "fleet_fields")) == 21


class Listener:
    """A TCP port that greets like some other server (an SSH daemon) and
    keeps the connection open: not a ZeroMQ peer."""

    def __init__(self, greeting=b"SSH-2.0-OpenSSH_9.2\r\n"):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.endpoint = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.greeting = greeting
        self.conns = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            try:
                conn.sendall(self.greeting)
            except OSError:
                pass


def cli_stderr(fleet, *args):
    r = fleet.cli(*args, check=False, timeout=60)
    assert r.returncode != 0, r.stdout
    return r.stderr.strip()


def test_failures(fleet: Fleet):
    """Wrong endpoints, bad jobs and bad fleet files: a clear one-line error
    within the timeout, naming what is wrong, with the CLI's own words."""
    port = free_port()
    nothing = f"tcp://127.0.0.1:{port}"
    c = beamfleet.Client(broker=nothing, publish=nothing, timeout=2)
    t0 = time.monotonic()
    e = raises(beamfleet.FleetTimeout, c.status, f"nothing listens at {nothing}")
    assert e.endpoint == nothing and time.monotonic() - t0 < 2 + 3, time.monotonic() - t0
    raises(beamfleet.ConnectionFailed, lambda: c.cancel("abc"), nothing)
    t0 = time.monotonic()
    raises(beamfleet.FleetTimeout, lambda: next(c.watch(idle_timeout=1)), nothing, "within 1 s")
    assert time.monotonic() - t0 < 1 + 2
    ssh = Listener()
    t0 = time.monotonic()
    raises(beamfleet.ConnectionFailed, beamfleet.Client(broker=ssh.endpoint, timeout=5).status,
           ssh.endpoint, "does not speak ZeroMQ", "SSH-2.0")
    assert time.monotonic() - t0 < 5 + 3
    raises(beamfleet.ConfigError, lambda: beamfleet.Client(broker="tcp://no-port", timeout=1).status(),
           "broker tcp://no-port")
    raises(beamfleet.ConfigError, lambda: beamfleet.Client(timeout=0), "timeout")
    raises(beamfleet.ConfigError, lambda: c.watch(count=0), "count")

    # bad jobs: refused before anything is sent, in the words of `beamfleet submit`
    root = os.path.join(fleet.tmp, "scenes")
    os.makedirs(os.path.join(root, "a"))
    cases = {
        "missing.yaml": None,
        "unknown.yaml": "scenes: scenes\nsolver: {seed: 1, bogus: 2}\n",
        "range.yaml": "scenes: scenes\n\ntimeout_s: 0\n",
        "quoted.yaml": "scenes: scenes\nmax_attempts: '3'\n",
        "pair.yaml": "scenes: scenes\noptimizer:\n  azimuth_deg: [350, 10]\n",
        "nodir.yaml": "scenes: elsewhere\n",
        "noscenes.yaml": "scenes: scenes/a\n",
        "exec.yaml": "scenes: scenes\ntask: exec\n",
        "required.yaml": "# nothing\nname: x\n",
        "anchor.yaml": "scenes: &s scenes\n",
        "dup.yaml": "scenes: scenes\nname: a\nname: b\n",
        "control.yaml": "scenes: scenes\nname: \"a\\tb\\nc\"\n",  # quoted back as one line
    }
    try:
        import yaml  # noqa: F401  (make deps-test installs it)
        cases["block.yaml"] = "scenes: scenes\nname: |\n  literal\n"  # read through PyYAML
    except ImportError:
        pass
    for name, text in cases.items():
        path = os.path.join(fleet.tmp, name)
        if text is not None:
            with open(path, "w") as f:
                f.write(text)
        want = cli_stderr(fleet, "submit", path, "--broker", nothing)
        want = want.removeprefix("beamfleet submit: ")
        e = raises(beamfleet.JobError, lambda: c.submit(path), path)
        assert str(e) == want, f"{name}: Python says\n  {e}\nthe CLI says\n  {want}"
    raises(beamfleet.JobError, lambda: c.submit({"scenes": root, "timeout_s": "soon"}),
           "field 'timeout_s'", "'soon'")
    raises(beamfleet.JobError, lambda: c.submit({"output": "x"}), "missing required key 'scenes'")
    raises(beamfleet.JobError, lambda: c.submit(fleet.tmp), fleet.tmp, "Is a directory")

    # fleet files: the CLI's words too
    bad = os.path.join(fleet.tmp, "fleet.yaml")
    with open(bad, "w") as f:
        f.write("broker: {endpoint: tcp://127.0.0.1:1}\ncollector:\n  publish: x\n  port: 5\n")
    want = cli_stderr(fleet, "status", "-c", bad).removeprefix("beamfleet: ")
    e = raises(beamfleet.ConfigError, lambda: beamfleet.Client(fleet=bad), bad, "unknown key 'port'")
    assert str(e) in want, f"Python says\n  {e}\nthe CLI says\n  {want}"
    with open(bad, "w") as f:
        f.write("security: {keys: /nonexistent}\n")
    raises(beamfleet.ConfigError, lambda: beamfleet.Client(fleet=bad), "needs both 'keys' and 'identity'")
    raises(beamfleet.ConfigError, lambda: beamfleet.Client(fleet=bad + ".nope"), "No such file")
    # and the results of a directory that is not a job's output
    raises(beamfleet.ResultsError, lambda: beamfleet.results(fleet.tmp), "results.jsonl")
    c.close()


def test_wire(fleet: Fleet):
    """The SUBMIT frame the package sends is, byte for byte, the one
    `beamfleet submit` sends for the same job file, less the content keys
    the CLI adds: a ROUTER on a free port stands in for the broker, takes
    each frame and answers SUBMITTED."""
    import zmq
    base = os.path.join(fleet.tmp, "jobs")
    for s in ("b", "a", "c", ".hidden"):
        os.makedirs(os.path.join(base, "scenes", s))
    open(os.path.join(base, "scenes", "not-a-dir"), "w").close()
    path = os.path.join(base, "campaign.yaml")
    with open(path, "w") as f:
        f.write("# relative paths, every section, YAML's spellings\n"
                "scenes: ./scenes/../scenes\noutput: out//x/./y/..\ntask: boresight\n"
                "timeout_s: 60\nmax_scenes: 2\nmax_attempts: 2\n"
                "validation: {p10_min_dbm: -200, min_percentile_range_db: 10.5}\n"
                "measurement: {cell_size: [5, 5], height: 2, center: [-1.5, 3]}\n"
                "optimizer: {azimuth_deg: [10, 350.5], objective: coverage, coverage_dbm: -95}\n"
                "solver:\n  seed: 1e3\n  los: off\n  samples_per_tx: 2000\n"
                "  surface_offset: \"tight\"\n")
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    ep = f"tcp://127.0.0.1:{port}"

    def capture(argv, cwd=None):
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=cwd, env=ENV)
        if not router.poll(30000):
            p.kill()
            raise AssertionError(f"{argv}: sent nothing: {p.communicate()}")
        rid, frame = router.recv_multipart()
        router.send_multipart([rid, wire.encode("submitted", job_id="0123456789ab", total=2)])
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0 and out.strip().endswith("0123456789ab"), (out, err)
        return frame

    py = [sys.executable, "-c", "import sys, beamfleet; print(beamfleet.Client(broker=sys.argv[2])"
          ".submit(sys.argv[1]))"]
    for cwd, arg in ((None, path), (base, "campaign.yaml")):  # relative to the file, not the cwd
        theirs = capture([fleet.bin, "submit", arg, "--broker", ep], cwd)
        mine = capture(py + [arg, ep], cwd)
        doc = wire.decode(theirs)[1]["obj"]
        assert doc["scenes"] == ["a", "b"] and doc["output"] == os.path.join(base, "out", "x"), doc
        # the CLI adds the tasks' content keys and what it reuses (resuming
        # a campaign, docs/operations.md); the package sends the job alone
        keys, reuse = doc.pop("keys"), doc.pop("reuse")
        assert len(keys) == 2 and all(len(k) == 32 for k in keys) and reuse == [], (keys, reuse)
        theirs = wire.encode("submit", obj=doc)
        assert mine == theirs, f"\nCLI:    {wire.decode(theirs)}\nPython: {wire.decode(mine)}"
    router.close(0)
    ctx.term()


def block(module):
    """Python code that makes `import module` fail, as on a machine without it."""
    return f"import sys; sys.modules[{module!r}] = None\n"


def run_py(code, timeout=120):
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV,
                       timeout=timeout)
    return r


def finished_job(fleet, names):
    start(fleet)
    job, out = fleet.make_job(names)
    fleet.wait(lambda: len(fleet.status()["workers"]) == 1, 15, "the worker")
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    return out


def test_results(fleet: Fleet):
    """results() without pandas is a list of dicts; the plots without
    matplotlib are a clear MissingDependency; the YAML reader without PyYAML
    reads the fleet and job files and names what it cannot read."""
    names = [f"r{i}" for i in range(5)]
    out = finished_job(fleet, names)
    r = run_py(block("pandas") + "import beamfleet, json\n"
               f"rows = beamfleet.results({out!r})\n"
               "assert isinstance(rows, list), type(rows)\n"
               "print(json.dumps(rows))\n"
               "try:\n"
               f"    beamfleet.results({out!r}, as_dataframe=True)\n"
               "except beamfleet.MissingDependency as e:\n"
               "    print(e)\n")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout.splitlines()[0])
    assert sorted(x["scene"] for x in rows) == names and all(x["status"] == "success" for x in rows)
    assert "needs pandas: pip install pandas" in r.stdout.splitlines()[1], r.stdout
    # the log read as the collector replays it: a task id seen before is
    # skipped, a line that does not parse is skipped, a line not yet ended is
    # not read, and a scene's newest result wins
    log = os.path.join(out, "results.jsonl")
    lines = open(log).read().splitlines()
    first = json.loads(lines[0])
    again = dict(first, status="error", task_id="f" * 32, reason="a later attempt")
    copy = os.path.join(fleet.tmp, "copy")
    os.makedirs(copy)
    with open(os.path.join(copy, "results.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n" + json.dumps(again) + "\n{not json\n"
                + json.dumps(dict(first, status="failed")) + "\n"  # a task id seen before
                + json.dumps(dict(first, scene="zz", task_id="e" * 32)))  # no newline yet
    rows = {x["scene"]: x for x in beamfleet.results(copy, as_dataframe=False)}
    assert sorted(rows) == names, sorted(rows)
    assert rows[first["scene"]]["status"] == "error" and rows[first["scene"]]["task_id"] == "f" * 32
    assert all(rows[n]["status"] == "success" for n in names if n != first["scene"])
    r = run_py(block("matplotlib") + block("matplotlib.figure") + "import beamfleet\n"
               f"beamfleet.plot_cdf({out!r})\n")
    assert r.returncode != 0 and "beamfleet.errors.MissingDependency: plotting needs matplotlib: "\
        "pip install matplotlib" in r.stderr, r.stderr
    # time per worker, the notebook's third plot, without matplotlib
    r = run_py("import beamfleet, json\n"
               f"print(json.dumps(beamfleet.time_per_worker({out!r}, by='gpu_id')))")
    assert r.returncode == 0 and list(json.loads(r.stdout)) == ["-1"], r.stdout + r.stderr
    # YAML without PyYAML: the subset of the fleet and job files, and a clear refusal
    path = os.path.join(fleet.tmp, "block.yaml")
    with open(path, "w") as f:
        f.write("scenes: x\nname: |\n  literal\n")
    r = run_py(block("yaml") + "import beamfleet\n"
               f"print(beamfleet.load_fleet({os.path.join(REPO, 'examples', 'fleet.yaml')!r})"
               ".security_identity)\n"
               f"beamfleet.job_document({path!r})\n")
    assert r.stdout.strip() == "node3-gpu0", r.stdout + r.stderr
    assert f"{path}:2:7: block scalars ('|', '>'): reading this YAML needs PyYAML: pip install "\
        "pyyaml" in r.stderr, r.stderr


def test_pandas_plots(fleet: Fleet):
    """With pandas and matplotlib (make deps-test installs both): results()
    is a DataFrame and each plot is a Figure, written as a PNG."""
    try:
        import matplotlib  # noqa: F401
        import pandas
    except ImportError as e:
        raise Skip(f"{e.name} is not installed (make deps-test installs it)")
    names = [f"p{i}" for i in range(6)]
    out = finished_job(fleet, names)
    df = beamfleet.results(out)
    assert isinstance(df, pandas.DataFrame) and list(df.columns) == beamfleet.COLUMNS
    assert sorted(df["scene"]) == names and (df["status"] == "success").all()
    jl = {x["scene"]: x for x in read_jsonl(os.path.join(out, "results.jsonl"))}
    for _, row in df.iterrows():
        assert row["improvement_mean"] == jl[row["scene"]]["stats"]["improvement_mean"]
    for plot in (beamfleet.plot_cdf, beamfleet.plot_improvement, beamfleet.plot_time_per_worker):
        png = os.path.join(fleet.tmp, plot.__name__ + ".png")
        for data in (df, out, df.to_dict("records")):
            fig = plot(data, save=png)
            assert fig.axes and fig.axes[0].get_title(), plot.__name__
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", png
    fig = beamfleet.plot_cdf(df)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines][:2] == ["Initial", "Optimized"]
    assert len(lines[0].get_xdata()) == 2 * len(names)  # every zone cell of every scene
    fig = beamfleet.plot_improvement(df)
    assert "Mean: +" in fig.axes[0].get_legend().get_texts()[0].get_text()
    raises(beamfleet.ResultsError, lambda: beamfleet.plot_cdf([]), "zone_power_initial")


def test_campaign(fleet: Fleet):
    """examples/campaign.py, the notebook as a client script, on a real fleet."""
    start(fleet, workers=2)
    fleet.wait(lambda: len(fleet.status()["workers"]) == 2, 15, "2 workers")
    names = [f"k{i}" for i in range(5)]
    job, out = fleet.make_job(names, name="campaign")
    plots = os.path.join(fleet.tmp, "plots")
    r = subprocess.run([sys.executable, os.path.join(REPO, "examples", "campaign.py"), job,
                        "--broker", fleet.endpoint, "--publish", fleet.publish, "--plots", plots],
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 workers" in r.stdout and f"{len(names)} scenes" in r.stdout, r.stdout
    assert r.stdout.count("✓ [") == len(names) and "Successful: 5 / 5" in r.stdout, r.stdout
    assert "Improvement: mean +" in r.stdout, r.stdout
    check_reports(out, names)
    try:
        import matplotlib  # noqa: F401
        assert sorted(os.listdir(plots)) == ["cdf.png", "improvement.png", "time_per_worker.png"]
    except ImportError:
        assert "(no plots: plotting needs matplotlib" in r.stdout, r.stdout


def test_install(fleet: Fleet):
    """`pip install ./python` into a fresh virtual environment (offline: its
    dependencies come from the system's site-packages), then a real status
    request from that environment."""
    venv = os.path.join(fleet.tmp, "venv")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise Skip(f"no venv here (python3-venv): {r.stderr.strip()[-200:]}")
    print(f"venv: {time.monotonic() - t0:.1f} s")
    py = os.path.join(venv, "bin", "python")
    # Offline when setuptools and wheel are here (make deps-test: Debian's
    # python3-pip brings both); else as a user would, building in pip's
    # isolated environment from the package index.
    offline = subprocess.run([py, "-c", "import setuptools, wheel"], capture_output=True).returncode == 0
    flags = ["--no-build-isolation", "--no-index"] if offline else []
    src = os.path.join(fleet.tmp, "python")  # a copy: the build writes beside the sources
    shutil.copytree(PYDIR, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    t0 = time.monotonic()
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps"] + flags + [src],
                       capture_output=True, text=True, timeout=300)
    print(f"pip install: {time.monotonic() - t0:.1f} s")
    assert r.returncode == 0, r.stdout + r.stderr
    start(fleet)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import beamfleet, json, sys\n"
            "c = beamfleet.Client(broker=sys.argv[1], timeout=10)\n"
            "print(beamfleet.__file__)\n"
            "print(json.dumps(c.status()))\n")
    r = subprocess.run([py, "-c", code, fleet.endpoint], capture_output=True, text=True,
                       cwd=fleet.tmp, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    where, doc = r.stdout.splitlines()[:2]
    assert where.startswith(venv) and "site-packages" in where, where
    assert json.loads(doc)["broker"]["endpoint"] == fleet.endpoint


TESTS = {"api": test_api, "curve": test_curve, "failures": test_failures, "wire": test_wire,
         "tables": test_tables,
         "results": test_results, "pandas_plots": test_pandas_plots, "campaign": test_campaign,
         "install": test_install}

if __name__ == "__main__":
    main(TESTS, prefix="py-")
