#!/usr/bin/env python3
"""End-to-end tests of the fleet: real broker, collector and worker
processes over real ZeroMQ sockets on loopback, driven through the CLI.

Run one: tests/e2e/test_fleet.py exec_job   (BEAMFLEET_BIN=build/beamfleet)
"""
import csv
import glob
import json
import os
import shutil
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleet import Fleet, check_reports, main, read_jsonl  # noqa: E402


# a boresight job's validation that passes every zone: the tests check the
# search, not the notebook's thresholds
ANY_ZONE = ("validation: {p10_min_dbm: -400, p10_max_dbm: 0, p90_min_dbm: -400, "
            "min_percentile_range_db: 0}\n")


def scenes(n, prefix="s"):
    return [f"{prefix}{i:02d}" for i in range(n)]


def busy_worker_pids(fleet, job_id):
    """Names of workers that are running a task right now."""
    return [w for w in fleet.status()["workers"] if w["state"] == "busy"]


def test_exec_job(fleet: Fleet):
    """20 scenes over 3 workers: every report complete, each scene once."""
    names = scenes(20)
    job, out = fleet.make_job(names)
    fleet.broker()
    fleet.collector()
    for _ in range(3):
        fleet.worker()
    fleet.wait(lambda: len(fleet.status()["workers"]) == 3, 10, "3 workers")
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    by_scene = check_reports(out, names)
    workers = {r["worker"] for r in by_scene.values()}
    assert len(workers) == 3, f"tasks ran on {workers}, expected all 3 workers"
    for r in by_scene.values():
        assert r["attempt"] == 1 and r["host"] and "elapsed_time" in r, r
    summary = json.load(open(os.path.join(out, "summary.json")))
    imps = [r["stats"]["improvement_mean"] for r in by_scene.values()]
    assert abs(summary["improvement"]["mean"] - sum(imps) / len(imps)) < 1e-6, summary["improvement"]
    assert abs(summary["improvement"]["max"] - max(imps)) < 1e-9


def test_worker_sigkill(fleet: Fleet):
    """SIGKILL a busy worker: its task is requeued within 3 heartbeats and
    finishes elsewhere with attempt 2."""
    names = ["slow_a", "slow_b", "slow_c", "slow_d"]
    job, out = fleet.make_job(names)
    fleet.broker()
    fleet.collector()
    victim = fleet.worker()
    fleet.wait(lambda: len(fleet.status()["workers"]) == 1, 10, "the first worker")
    job_id = fleet.submit(job)
    fleet.wait(lambda: any(w["state"] == "busy" for w in fleet.status()["workers"]), 10, "a busy worker")
    fleet.kill(victim)
    killed_at = time.time()
    fleet.worker()
    fleet.wait_done(job_id, 60)
    by_scene = check_reports(out, names)
    retried = [r for r in by_scene.values() if r["attempt"] == 2]
    assert len(retried) == 1, f"expected exactly one task with attempt 2, got {[(r['scene'], r['attempt']) for r in by_scene.values()]}"
    assert time.time() - killed_at < 30


def test_late_worker(fleet: Fleet):
    """A worker that joins while a job runs gets tasks within a second."""
    names = scenes(12, "slow_")
    job, out = fleet.make_job(names)
    fleet.broker()
    fleet.collector()
    fleet.worker()
    job_id = fleet.submit(job)
    fleet.wait(lambda: fleet.job(job_id)["final"] >= 1, 20, "the first result")
    fleet.worker(extra=["--name", "latecomer"])
    joined = time.time()
    fleet.wait(lambda: any("latecomer" in w["name"] and w["state"] == "busy"
                           for w in fleet.status()["workers"]), 5, "the late worker to be busy")
    assert time.time() - joined < 3.0
    fleet.wait_done(job_id, 60)
    by_scene = check_reports(out, names)
    assert any("latecomer" in r["worker"] for r in by_scene.values())


def test_timeout(fleet: Fleet):
    """A task over its timeout is killed and fails with 'timeout after N s'
    on every attempt; the rest of the job is unaffected."""
    names = ["hang_x", "ok_1", "ok_2"]
    job, out = fleet.make_job(names, timeout_s=1, max_attempts=2)
    fleet.broker()
    fleet.collector()
    fleet.worker()
    fleet.worker()
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    by_scene = check_reports(out, names, {"hang_x": "error"})
    reason = by_scene["hang_x"]["reason"]
    assert "timeout after 1 s" in reason, reason
    assert by_scene["hang_x"]["attempt"] == 2, by_scene["hang_x"]
    # the hung program's process group is gone
    r = subprocess.run(["pgrep", "-f", "hang_x"], capture_output=True, text=True)
    assert r.stdout.strip() == "", f"hung task still running: {r.stdout}"


def test_fail_every_attempt(fleet: Fleet):
    """A task that fails on every attempt is final with status error after
    max_attempts, naming where it failed; a flaky one succeeds on attempt 2."""
    names = ["fail_x", "flaky_y", "ok_z"]
    job, out = fleet.make_job(names, max_attempts=3)
    fleet.broker()
    fleet.collector()
    fleet.worker()
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    by_scene = check_reports(out, names, {"fail_x": "error"})
    fail = by_scene["fail_x"]
    assert fail["attempt"] == 3, fail
    assert "zone has no cells" in fail["reason"], fail["reason"]
    assert len(fail.get("failures", [])) == 3, fail
    assert by_scene["flaky_y"]["attempt"] == 2, by_scene["flaky_y"]


def test_broker_restart(fleet: Fleet):
    """SIGKILL the broker mid-job, start it again on the same state: the job
    completes with no task lost and no scene twice."""
    names = scenes(30)
    job, out = fleet.make_job(names)
    broker = fleet.broker()
    fleet.collector()
    for _ in range(2):
        fleet.worker(env={"TASK_SLEEP": "0.2"})
    job_id = fleet.submit(job)
    fleet.wait(lambda: 5 <= fleet.job(job_id)["final"] < 25, 30, "a job in the middle")
    fleet.kill(broker)
    time.sleep(0.5)
    fleet.broker()
    fleet.wait_done(job_id, 90)
    check_reports(out, names)


def test_collector_restart(fleet: Fleet):
    """SIGKILL the collector mid-job and restart it: every result is written
    exactly once."""
    names = scenes(30)
    job, out = fleet.make_job(names)
    fleet.broker()
    collector = fleet.collector()
    for _ in range(2):
        fleet.worker(env={"TASK_SLEEP": "0.1"})
    job_id = fleet.submit(job)
    fleet.wait(lambda: os.path.exists(os.path.join(out, "results.jsonl"))
               and len(read_jsonl(os.path.join(out, "results.jsonl"))) >= 5, 30, "some results written")
    fleet.kill(collector)
    time.sleep(1.0)
    fleet.collector()
    fleet.wait_done(job_id, 90)
    check_reports(out, names)


def outbox_rows(state):
    """Rows in the broker's outbox table, read from its database (WAL)."""
    import sqlite3
    db = sqlite3.connect(os.path.join(state, "broker.db"), timeout=10)
    try:
        return db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        db.close()


def test_ack_redelivery(fleet: Fleet):
    """The broker deletes the outbox rows the collector acknowledged with the
    next transaction it makes anyway, not in one of their own. SIGKILLed
    while some wait (BEAMFLEET_FAULT_ACK_HOLD: only another transaction
    takes them), its restart delivers them again, and the collector
    acknowledges them without writing anything twice."""
    names = scenes(12)
    job, out = fleet.make_job(names)
    broker = fleet.broker(env={"BEAMFLEET_FAULT_ACK_HOLD": "1"})
    fleet.collector()
    fleet.worker()
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)  # done, and the outbox empty as the broker counts it
    check_reports(out, names)
    log = open(os.path.join(out, "results.jsonl"), "rb").read()
    fleet.kill(broker)
    left = outbox_rows(fleet.state)
    assert left > 0, "no acknowledged row was waiting for its DELETE: nothing tested"
    fleet.broker()
    fleet.wait(lambda: outbox_rows(fleet.state) == 0, 30,
               f"the {left} rows delivered again to be acknowledged")
    assert open(os.path.join(out, "results.jsonl"), "rb").read() == log, \
        "results.jsonl changed: a row delivered again was written again"
    check_reports(out, names)
    assert fleet.job(job_id)["state"] == "done"


def test_sigterm_drain(fleet: Fleet):
    """SIGTERM: the worker finishes its task, says goodbye and exits 0."""
    names = ["slow_a", "slow_b", "slow_c"]
    job, out = fleet.make_job(names)
    fleet.broker()
    fleet.collector()
    w = fleet.worker()
    job_id = fleet.submit(job)
    fleet.wait(lambda: any(x["state"] == "busy" for x in fleet.status()["workers"]), 10, "a busy worker")
    os.killpg(w.pid, signal.SIGTERM)
    rc = w.wait(timeout=20)
    assert rc == 0, f"worker exited {rc} after SIGTERM"
    st = fleet.status()
    assert st["workers"] == [], f"worker still registered: {st['workers']}"
    assert fleet.job(job_id)["final"] >= 1, "the running task was not finished"
    fleet.worker()
    fleet.wait_done(job_id, 60)
    by_scene = check_reports(out, names)
    assert all(r["attempt"] == 1 for r in by_scene.values()), "drain must not cost an attempt"


def test_cancel(fleet: Fleet):
    """Cancel a job with running and queued tasks: all become final as
    cancelled (the finished ones keep their result), reports complete."""
    names = scenes(10, "slow_")
    job, out = fleet.make_job(names)
    fleet.broker()
    fleet.collector()
    fleet.worker()
    job_id = fleet.submit(job)
    fleet.wait(lambda: fleet.job(job_id)["final"] >= 1, 20, "one result")
    r = fleet.cli("cancel", job_id, "--broker", fleet.endpoint)
    assert "cancelled" in r.stdout
    j = fleet.wait_done(job_id, 30)
    assert j["state"] == "cancelled", j
    lines = read_jsonl(os.path.join(out, "results.jsonl"))
    statuses = {r["scene"]: r["status"] for r in lines}
    assert set(statuses.values()) <= {"success", "cancelled"}, statuses
    assert sum(1 for s in statuses.values() if s == "cancelled") >= 8, statuses
    check_reports(out, names, statuses)
    bad = fleet.cli("cancel", "nosuchjob", "--broker", fleet.endpoint, check=False)
    assert bad.returncode != 0 and "nosuchjob" in (bad.stderr + bad.stdout) or "not found" in bad.stderr


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_garbage(fleet: Fleet):
    """Thousands of random and malformed frames, from many connections that
    come and go, at a live broker: it keeps serving, with bounded memory, and
    a SUBMIT whose scene would escape the scene root is refused."""
    import zmq  # pyzmq, installed by make deps
    import msgpack
    names = scenes(5)
    job, out = fleet.make_job(names)
    broker = fleet.broker()
    fleet.collector()
    fleet.worker()
    fleet.wait(lambda: len(fleet.status()["workers"]) == 1, 10, "the worker")
    ctx = zmq.Context()
    rng = random.Random(7)

    def barrage(count, nsocks):
        socks = []
        for i in range(nsocks):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(fleet.endpoint)
            socks.append(s)
        for i in range(count):
            s = rng.choice(socks)
            kind = rng.randrange(6)
            if kind == 0:
                frames = [bytes(rng.randrange(256) for _ in range(rng.randrange(64)))]
            elif kind == 1:
                frames = [b"x"] * rng.randrange(2, 5)
            elif kind == 2:  # well-formed msgpack, wrong shapes
                frames = [msgpack.packb([1, rng.randrange(30), "a", rng.random(), None, {"k": [1, 2]}])]
            elif kind == 3:  # right version and type, wrong fields
                frames = [msgpack.packb([1, rng.randrange(1, 20)] + [rng.choice([1, "x", 2.5, [], {}]) for _ in range(rng.randrange(8))])]
            elif kind == 4:  # deep nesting and long strings
                doc = "x" * rng.randrange(5000)
                for _ in range(rng.randrange(40)):
                    doc = [doc]
                frames = [msgpack.packb([1, 7, {"name": doc}])]
            else:  # huge (over the maximum message size) or empty
                frames = [b"\x91" + b"\x00" * (33 << 20)] if i % 500 == 0 else [b""]
            s.send_multipart(frames)
        time.sleep(0.5)  # let the broker drain its socket before the sockets go
        for s in socks:
            s.close()

    barrage(2000, 20)  # warm up: the allocator's and SQLite's caches reach steady state
    time.sleep(0.5)
    before = rss_kib(broker.pid)
    for _ in range(4):
        barrage(2500, 50)
    time.sleep(0.5)
    after = rss_kib(broker.pid)
    assert broker.poll() is None, "the broker died"
    print(f"broker RSS {before} KiB -> {after} KiB after 10,000 hostile frames from 200 connections")
    # Under AddressSanitizer freed blocks wait in its quarantine (256 MiB by
    # default), so RSS measures ASan, not the broker: bound it loosely there.
    bound = 16 * 1024 if os.environ.get("BF_SANITIZE", "OFF") != "ON" else 300 * 1024
    assert after - before < bound, f"broker memory grew by {after - before} KiB"

    # A job document whose scene escapes the scene root: refused, named.
    c = ctx.socket(zmq.DEALER)
    c.setsockopt(zmq.LINGER, 0)
    c.connect(fleet.endpoint)
    spec = {"name": "escape", "scenes_root": fleet.tmp, "scenes": ["ok", "../../etc"],
            "output": fleet.tmp, "task": "exec", "exec": {"command": ["/bin/true"]}}
    c.send(msgpack.packb([1, 7, spec]))
    assert c.poll(5000), "no answer to a hostile SUBMIT"
    reply = msgpack.unpackb(c.recv())
    assert reply[1] == 17 and reply[3] == 2, reply  # ERROR [reason, code], BF_EINVAL
    assert "scenes[1]" in reply[2] and "../../etc" in reply[2], reply
    # The same with a long multi-byte name: the error quotes a cut of it, and
    # the cut must not split a character (or the ERROR could not be sent).
    spec["scenes"] = ["ok", "\u00e9" * 31 + "x/../../etc"]
    c.send(msgpack.packb([1, 7, spec]))
    assert c.poll(5000), "no answer to a SUBMIT whose error quotes multi-byte text"
    reply = msgpack.unpackb(c.recv())  # strict UTF-8 decoding of the reason
    assert reply[1] == 17 and reply[3] == 2 and "\n" not in reply[2], reply
    c.close()
    ctx.term()
    assert fleet.status()["jobs"] == [], "the hostile job was created"
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    check_reports(out, names)


def test_run(fleet: Fleet):
    """`beamfleet run` on an exec job: live lines, summary, reports."""
    names = scenes(6)
    job, out = fleet.make_job(names)
    r = fleet.cli("run", job, "--workers", "2", timeout=120)
    assert "SUMMARY" in r.stdout, r.stdout
    assert r.stdout.count("✓ [") == 6, r.stdout
    assert "Successful:     6/6" in r.stdout, r.stdout
    assert "Rate:" in r.stdout and "ETA:" in r.stdout
    check_reports(out, names)


# A task that reports its scheduling policy (sched(7): 0 SCHED_OTHER, 3
# SCHED_BATCH) and that of its worker's grandparent (under `run`: run itself).
POLICY_TASK = ["/bin/sh", "-c",
               "s=$(cut -d' ' -f4 /proc/$PPID/stat); r=$(cut -d' ' -f4 /proc/$s/stat); "
               "echo \"{\\\"status\\\":\\\"success\\\",\\\"policy\\\":$(cut -d' ' -f41 /proc/self/stat),"
               "\\\"run_policy\\\":$(cut -d' ' -f41 /proc/$r/stat)}\""]


def policies(out, key="policy"):
    return {r[key] for r in read_jsonl(os.path.join(out, "results.jsonl"))}


def test_sched(fleet: Fleet):
    """Tasks run as SCHED_BATCH (3) under `run` and a supervisor's workers,
    and so does `run` itself; with --sched inherit (`run`'s, or a
    worker's), under the policy they were started with (this test's); a
    bad --sched value is one line naming the flag."""
    mine = os.sched_getscheduler(0)
    job, out = fleet.make_job(scenes(2), name="batch", command=POLICY_TASK)
    fleet.cli("run", job, "--workers", "1", timeout=120)
    assert policies(out) == {3} and policies(out, "run_policy") == {3}, \
        (policies(out), policies(out, "run_policy"))
    job, out = fleet.make_job(scenes(2), name="run-inherit", command=POLICY_TASK)
    fleet.cli("run", job, "--workers", "1", "--sched", "inherit", timeout=120)
    assert policies(out) == {mine} and policies(out, "run_policy") == {mine}, \
        (policies(out), policies(out, "run_policy"))
    for cmd in (["worker", "--broker", fleet.endpoint], ["run", job]):
        r = fleet.cli(*cmd, "--sched", "fast", check=False)
        assert r.returncode == 2 and r.stderr.strip() == \
            f"beamfleet {cmd[0]}: --sched: expected batch or inherit, got 'fast'", r.stderr
    fleet.broker()
    fleet.collector()
    fleet.worker(["--sched", "inherit", "--allow-exec", "/bin/sh", "--allow-exec", "-c"])
    job, out = fleet.make_job(scenes(2), name="inherit", command=POLICY_TASK)
    fleet.wait_done(fleet.submit(job), 60)
    assert policies(out) == {mine}, policies(out)


def shared_dir():
    d = os.environ.get("BF_SHARED_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared")
    return os.path.abspath(d)


def test_solve(fleet: Fleet):
    """`beamfleet solve` on a real Sionna scene (etoile, copied into a scene
    directory with our scene.yaml): every result field, and the maps."""
    src = os.path.join(shared_dir(), "scenes", "etoile")
    scene = os.path.join(fleet.tmp, "etoile")
    # copied: a scene file may not be a link that leads out of its directory
    shutil.copytree(src, scene, ignore=shutil.ignore_patterns("*.py", "*.md"))
    with open(os.path.join(scene, "scene.yaml"), "w") as f:
        f.write("frequency_hz: 3.5e9\n"
                "transmitter: {position: [20, 10, 60], power_dbm: 30,\n"
                "  antenna: {pattern: tr38901, polarization: V},\n"
                "  orientation: {azimuth_deg: 180, tilt_deg: 5}}\n"
                "zone: {rect: [-150, -100, 150, 100]}\n"
                "measurement: {center: [0, 0], size: [400, 300], cell_size: [10, 10]}\n")
    job = os.path.join(fleet.tmp, "job.yaml")
    scenes = os.path.join(fleet.tmp, "scenes")
    os.makedirs(os.path.join(scenes, "x"))
    with open(job, "w") as f:
        f.write(f"scenes: {scenes}\ntask: boresight\nsolver: {{samples_per_tx: 200000}}\n"
                "validation: {p10_max_dbm: 0}\n")
    out = os.path.join(fleet.tmp, "r.json")
    maps = os.path.join(fleet.tmp, "maps")
    r = fleet.cli("solve", scene, "-j", job, "--out", out, "--maps", maps, timeout=300)
    res = json.load(open(out))
    for key in ("zone_power_initial", "zone_power_optimized", "stats", "boresight_initial",
                "boresight_optimized", "timings", "solver", "evaluations", "status", "reason"):
        assert key in res, f"solve result lacks {key}: {sorted(res)}"
    assert res["status"] in ("success", "failed"), res["status"]
    assert len(res["zone_power_initial"]) == res["stats"]["zone_cells"] > 100
    assert res["stats"]["optimized_mean"] >= res["stats"]["initial_mean"] - 1e-9
    assert res["solver"]["rays"] == 200000 and res["evaluations"] > 10
    for name in ("initial.csv", "optimized.csv"):
        with open(os.path.join(maps, name)) as f:
            lines = f.read().splitlines()
        assert lines[0] == "x,y,dbm" and len(lines) == 1 + 40 * 30, (name, lines[:2], len(lines))
    # bad input: a clear one-line error naming the file
    with open(os.path.join(scene, "scene.yaml"), "a") as f:
        f.write("frequncy: 1\n")
    bad = fleet.cli("solve", scene, check=False)
    assert bad.returncode == 2 and "scene.yaml:7:1: unknown key 'frequncy'" in bad.stderr, bad.stderr


def test_boresight_job(fleet: Fleet):
    """A boresight job over procedural scenes on the fleet: each result has
    the notebook's fields and the reports hold every scene once."""
    scenes = os.path.join(fleet.tmp, "cities")
    fleet.cli("scenegen", "--out", scenes, "--count", "3", "--seed", "5")
    out = os.path.join(fleet.tmp, "out")
    job = os.path.join(fleet.tmp, "job.yaml")
    with open(job, "w") as f:
        f.write(f"name: cities\nscenes: {scenes}\noutput: {out}\ntask: boresight\n"
                "solver: {samples_per_tx: 100000}\n"
                + ANY_ZONE)
    fleet.broker()
    fleet.collector()
    fleet.worker()
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 240)
    names = sorted(os.listdir(scenes))
    by_scene = check_reports(out, names)
    for r in by_scene.values():
        assert r["stats"]["improvement_mean"] >= 0, r["stats"]
        assert r["boresight_optimized"]["tilt_deg"] <= 30 and r["solver"]["backend"] == "cpu"
        assert r["gpu_id"] == -1 and r["timings"]["trace"] > 0


def test_bound_run(fleet: Fleet):
    """An optimum on the search bound is said, not passed off as an
    optimum: with a tilt range that stops short of the best tilt (scenegen
    puts each zone 4-10 degrees down from its site) every optimum sits on
    tilt_max, and the result, `run`'s progress line, results.csv and
    report.html say so; with the default range none does."""
    scenes_dir = os.path.join(fleet.tmp, "cities")
    fleet.cli("scenegen", "--out", scenes_dir, "--count", "2", "--seed", "5")
    names = sorted(os.listdir(scenes_dir))
    for tilt, want in (("[-10, 0]", ["tilt_max"]), (None, [])):
        out = os.path.join(fleet.tmp, f"out-{len(want)}")
        job = os.path.join(fleet.tmp, f"job-{len(want)}.yaml")
        with open(job, "w") as f:
            f.write(f"name: bounds\nscenes: {scenes_dir}\noutput: {out}\ntask: boresight\n"
                    "solver: {samples_per_tx: 100000}\n"
                    + ANY_ZONE +
                    (f"optimizer: {{tilt_deg: {tilt}}}\n" if tilt else ""))
        r = fleet.cli("run", job, "--workers", "1", timeout=300)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("✓ [")]
        assert len(lines) == 2, r.stdout
        by_scene = check_reports(out, names)
        with open(os.path.join(out, "results.csv")) as f:
            rows = {row["scene"]: row for row in csv.DictReader(f)}
        html = open(os.path.join(out, "report.html")).read()
        for name, res in by_scene.items():
            assert res["optimum_on_bound"] == want, (name, res["optimum_on_bound"],
                                                     res["boresight_optimized"])
            assert rows[name]["optimum_on_bound"] == ";".join(want), rows[name]
            tilt_opt = res["boresight_optimized"]["tilt_deg"]
            if want:
                assert tilt_opt == 0, res["boresight_optimized"]
            else:
                assert -10 < tilt_opt < 30, res["boresight_optimized"]
        if want:
            assert all("optimum on the search bound: tilt_max" in ln for ln in lines), lines
            assert html.count('">on bound</span>') == 2, "report.html does not mark the bound"
        else:
            assert not any("search bound" in ln for ln in lines), lines
            assert '">on bound</span>' not in html


def test_sectors_job(fleet: Fleet):
    """Several transmitters on the fleet: a three-sector site over a
    procedural city plus a neighbour that may not move, searched jointly
    for mean SINR; a single-transmitter scene beside it keeps its form.
    The result lists each transmitter, SINR per zone cell, and results.csv
    and report.html carry them (docs/radio.md, "Several transmitters")."""
    scenes = os.path.join(fleet.tmp, "cities")
    fleet.cli("scenegen", "--out", scenes, "--count", "2", "--seed", "5")
    site = os.path.join(scenes, "city_000")
    with open(os.path.join(site, "scene.yaml")) as f:
        single = f.read()
    keep = [line for line in single.splitlines()
            if line.startswith(("frequency_hz", "zone", "measurement"))]
    with open(os.path.join(site, "scene.yaml"), "w") as f:
        f.write("\n".join(l for l in keep if l.startswith("frequency_hz")) + "\n")
        f.write("transmitters:\n")
        for i, az in enumerate((0, 120, 240)):
            f.write(f"  - {{name: s{i + 1}, position: [0, 0, 40], "
                    f"orientation: {{azimuth_deg: {az}, tilt_deg: 5}}}}\n")
        f.write("  - {name: neighbour, movable: false, serves: false, position: [60, 60, 30],\n"
                "     power_dbm: 40,\n"
                "     orientation: {azimuth_deg: 225, tilt_deg: 5}}\n")
        f.write("\n".join(l for l in keep if not l.startswith("frequency_hz")) + "\n")
    out = os.path.join(fleet.tmp, "out")
    job = os.path.join(fleet.tmp, "job.yaml")
    with open(job, "w") as f:
        f.write(f"name: sectors\nscenes: {scenes}\noutput: {out}\ntask: boresight\n"
                "solver: {samples_per_tx: 50000, max_depth: 1, "
                "noise: {bandwidth_hz: 20e6, figure_db: 7}}\n"
                "optimizer: {objective: mean_sinr_db}\n"
                + ANY_ZONE)
    fleet.broker()
    fleet.collector()
    fleet.worker()
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 600)
    by_scene = check_reports(out, ["city_000", "city_001"])
    multi, one = by_scene["city_000"], by_scene["city_001"]
    txs = multi["transmitters"]
    assert [t["name"] for t in txs] == ["s1", "s2", "s3", "neighbour"], txs
    assert not txs[3]["movable"] and txs[3]["optimized"] == txs[3]["initial"], txs[3]
    assert not txs[3]["serves"] and all(t["serves"] for t in txs[:3]), txs
    assert multi["boresight_optimized"] == txs[0]["optimized"], multi["boresight_optimized"]
    cells = multi["stats"]["zone_cells"]
    assert len(multi["sinr_initial"]) == len(multi["sinr_optimized"]) == cells > 10
    st = multi["stats"]
    assert st["optimized_sinr_mean"] >= st["initial_sinr_mean"] - 1e-9, st
    assert abs(multi["objective"] - st["optimized_sinr_mean"]) < 1e-6, (multi["objective"], st)
    assert abs(multi["noise_dbm"] - (-174 + 7 + 73.01)) < 0.1, multi["noise_dbm"]
    # one transmitter with a SINR objective: SINR, but no list
    assert "transmitters" not in one and len(one["sinr_optimized"]) == one["stats"]["zone_cells"]
    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = {r["scene"]: r for r in csv.DictReader(f)}
    cell = rows["city_000"]["transmitters_optimized"].split(" ")
    assert len(cell) == 4 and cell[3].startswith("neighbour:225/5"), cell
    assert float(rows["city_000"]["optimized_sinr_mean_db"]) == \
        csv12(st["optimized_sinr_mean"]), rows["city_000"]
    assert rows["city_001"]["transmitters_optimized"] == ""
    html = open(os.path.join(out, "report.html")).read()
    assert '<svg id="plot-sinr-cdf"' in html and '<svg id="plot-cdf"' in html


def csv12(x):
    """x as results.csv writes it (12 significant digits)."""
    return float(f"{x:.12g}")


def test_poison_scene(fleet: Fleet):
    """A scene that fails everywhere fails on three DIFFERENT workers (a
    retry goes to another GPU when there is one) and its reason names them."""
    names = ["fail_poison", "s00", "s01", "s02"]
    job, out = fleet.make_job(names, max_attempts=3)
    fleet.broker()
    fleet.collector()
    for _ in range(3):
        fleet.worker()
    fleet.wait(lambda: len(fleet.status()["workers"]) == 3, 10, "3 workers")
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    rows = check_reports(out, names, {"fail_poison": "error"})
    reason = rows["fail_poison"]["reason"]
    assert reason.startswith("failed 3 times: "), reason
    workers = [w["name"] for w in fleet.status()["workers"]]
    named = [w for w in workers if f"[{w}]" in reason]
    assert len(named) == 3, f"expected the 3 workers {workers} in: {reason}"


def test_quarantine(fleet: Fleet):
    """A worker that fails three different tasks in a row is quarantined
    (shown so in status) and gets no more tasks; its tasks succeed elsewhere."""
    names = [f"slow_{i:02d}" for i in range(8)]
    job, out = fleet.make_job(names, max_attempts=3)
    fleet.broker()
    fleet.collector()
    fleet.worker(["--name", "sick"], env={"TASK_SICK": "1"})
    fleet.worker(["--name", "healthy"])
    fleet.wait(lambda: len(fleet.status()["workers"]) == 2, 10, "2 workers")
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    rows = check_reports(out, names)
    assert all(r["worker"].startswith("healthy:") for r in rows.values()), \
        {s: r["worker"] for s, r in rows.items()}
    retried = [s for s, r in rows.items() if r["attempt"] == 2]
    assert len(retried) == 3, f"expected the 3 tasks the sick worker failed to be retried: {retried}"
    assert all(r["attempt"] <= 2 for r in rows.values()), "a task failed twice: not re-routed"
    sick = [w for w in fleet.status()["workers"] if w["name"].startswith("sick:")][0]
    assert sick["state"] == "quarantined" and sick["done"] == 3, sick
    assert "illegal memory access" in sick["quarantine_reason"], sick
    assert sick["quarantined_for_s"] > 500, sick
    st = fleet.cli("status", "--broker", fleet.endpoint).stdout
    assert "quarantined" in st, st


def test_retention(fleet: Fleet):
    """A finished job whose results are delivered is forgotten retain_s after
    it ended (memory and database), also while another job runs; the running
    job and later ones are unaffected, and a restart does not bring it back."""
    broker = fleet.broker(["--retain-s", "1"])
    fleet.collector()
    fleet.worker()
    fleet.wait(lambda: len(fleet.status()["workers"]) == 1, 10, "the worker")
    quick = scenes(6, "q")
    job_a, out_a = fleet.make_job(quick, name="a")
    a = fleet.submit(job_a)
    fleet.wait_done(a, 60)
    check_reports(out_a, quick)
    slow = [f"slow_{i}" for i in range(4)]  # 1.5 s each on one worker: ~6 s
    job_b, out_b = fleet.make_job(slow, name="b")
    b = fleet.submit(job_b)
    fleet.wait(lambda: [j["id"] for j in fleet.status()["jobs"]] == [b], 20,
               "job a to be retired while b runs")
    fleet.wait_done(b, 60)
    check_reports(out_b, slow)
    fleet.wait(lambda: fleet.status()["jobs"] == [], 20, "job b to be retired")
    r = fleet.cli("cancel", a, "--broker", fleet.endpoint, check=False)
    assert r.returncode != 0 and "no such job" in r.stderr, r.stderr
    log = open(os.path.join(fleet.logs, sorted(f for f in os.listdir(fleet.logs)
                                               if f.endswith("broker.log"))[0])).read()
    assert "retired 1 finished job" in log, log[-2000:]
    # Retired for good: a restart on the same state has nothing to load.
    fleet.kill(broker)
    fleet.broker(["--retain-s", "1"])
    fleet.wait(lambda: len(fleet.status()["workers"]) == 1, 15, "the worker to come back")
    assert fleet.status()["jobs"] == []
    # And the store goes on: a new job runs and reports as usual.
    more = scenes(5, "m")
    job_c, out_c = fleet.make_job(more, name="c")
    c = fleet.submit(job_c)
    fleet.wait_done(c, 60)
    check_reports(out_c, more)


TESTS = {
    "exec_job": test_exec_job,
    "worker_sigkill": test_worker_sigkill,
    "late_worker": test_late_worker,
    "timeout": test_timeout,
    "fail_every_attempt": test_fail_every_attempt,
    "broker_restart": test_broker_restart,
    "collector_restart": test_collector_restart,
    "ack_redelivery": test_ack_redelivery,
    "sigterm_drain": test_sigterm_drain,
    "cancel": test_cancel,
    "garbage": test_garbage,
    "run": test_run,
    "sched": test_sched,
    "solve": test_solve,
    "boresight_job": test_boresight_job,
    "sectors_job": test_sectors_job,
    "bound_run": test_bound_run,
    "poison_scene": test_poison_scene,
    "quarantine": test_quarantine,
    "retention": test_retention,
}

if __name__ == "__main__":
    main(TESTS)
