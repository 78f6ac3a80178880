#!/usr/bin/env python3
"""Hostile-tenant tests, the collector's side: one job's results or
output must never stop another job's reports, and a job cannot make the
collector write where it should not.

  huge_powers     a result whose zone powers are -1e300 and [1e16, 1e16 + 2]
                  (the axis-tick loop of report.html spun forever on them): the
                  job completes with a report.html, and the next job too, also
                  after a collector restart.
  blocked_output  job A's output cannot be made (its parent is a regular file)
                  while job B's can; with a delivery window (--credit 2) smaller
                  than A's results, B still completes with every report (A's
                  results go to the spool, acknowledged). Then A's output is
                  made writable and A completes too, every scene exactly once.
  output_root     with --output-root ROOT (and collector.output_root in a fleet
                  file) an output outside ROOT, one through a symlink out of
                  ROOT and one with `..` get ROOT/<job name>; an output inside
                  ROOT is used as given.
  publish_bind    a PUB endpoint that is not loopback, without keys and without
                  --insecure: exit 2 with one line; with --insecure it runs.
  same_output     two unfinished jobs given one output directory (raw SUBMITs,
                  one through a symlink, as the broker refuses the same string):
                  the second writes to OUTPUT/<its job id>/, the first's reports
                  stay whole; a re-run of the first's name after it completed
                  takes the directory over as before (earlier reports set aside).

Run one with `test_collector.py NAME` (BEAMFLEET_BIN names the binary).
"""
import glob
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from fleet import TASK, Fleet, check_reports, free_port, main, read_jsonl  # noqa: E402

# An exec task whose result carries absurd numbers.
ODD_TASK = r'''
import json, sys
print(json.dumps({"status": "success", "reason": "",
                  "zone_power_initial": [-1e300] * 50,
                  "zone_power_optimized": [1e16, 1e16 + 2, 1e16],
                  "stats": {"improvement_mean": 1e300, "zone_cells": 50},
                  "elapsed_time": 1e308}))
'''


def scenes(n, prefix="s"):
    return [f"{prefix}{i:02d}" for i in range(n)]


def collector_log(fleet):
    text = ""
    for path in sorted(glob.glob(os.path.join(fleet.logs, "*-collector.log"))):
        with open(path, errors="replace") as f:
            text += f.read()
    return text


def wait_written(fleet, job_id, out, timeout=60):
    """The job is over, the outbox empty, and out/summary.json written."""
    def done():
        st = fleet.status()
        jobs = [j for j in st["jobs"] if j["id"] == job_id]
        return (jobs and jobs[0]["state"] != "running" and st["collector"]["outbox"] == 0
                and os.path.exists(os.path.join(out, "summary.json")))
    return fleet.wait(done, timeout, f"job {job_id} written to {out}")


def raw_submit(fleet, spec):
    """SUBMIT a job document as it is, over pyzmq; returns the job id."""
    import msgpack
    import zmq
    ctx = zmq.Context()
    try:
        c = ctx.socket(zmq.DEALER)
        c.setsockopt(zmq.LINGER, 0)
        c.connect(fleet.endpoint)
        c.send(msgpack.packb([1, 7, spec]))
        assert c.poll(5000), "no answer to SUBMIT"
        reply = msgpack.unpackb(c.recv())
        ids = [v for v in reply[2:] if isinstance(v, str) and len(v) == 12]
        assert ids, f"SUBMIT refused: {reply}"
        return ids[0]
    finally:
        ctx.destroy(linger=0)


def exec_spec(fleet, name, names, output, timeout_s=60, max_attempts=3):
    root = os.path.join(fleet.tmp, f"{name}-scenes")
    for s in names:
        os.makedirs(os.path.join(root, s), exist_ok=True)
    return {"name": name, "scenes_root": root, "scenes": names, "output": output,
            "task": "exec", "timeout_s": timeout_s, "max_attempts": max_attempts,
            "exec": {"command": [sys.executable, TASK, "{scene_dir}"]}}


def test_huge_powers(fleet: Fleet):
    script = os.path.join(fleet.tmp, "odd_task.py")
    with open(script, "w") as f:
        f.write(ODD_TASK)
    fleet.broker()
    collector = fleet.collector()
    fleet.worker(["--allow-exec", script])
    root = os.path.join(fleet.tmp, "odd-scenes")
    names = scenes(3)
    for s in names:
        os.makedirs(os.path.join(root, s))
    out = os.path.join(fleet.tmp, "odd-out")
    job = os.path.join(fleet.tmp, "odd.yaml")
    with open(job, "w") as f:
        f.write(f"name: odd\nscenes: {root}\noutput: {out}\ntask: exec\nmax_attempts: 1\n"
                f"exec: {{command: [{sys.executable}, {script}, \"{{scene_dir}}\"]}}\n")
    t0 = time.time()
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    rows = read_jsonl(os.path.join(out, "results.jsonl"))
    assert sorted(r["scene"] for r in rows) == names
    # The worker may refuse such a result (status error, with a reason); if it
    # passes, the collector plots it clipped. Either way the page is written.
    html = open(os.path.join(out, "report.html")).read()
    assert html.endswith("</html>\n")
    if any(r["status"] == "success" for r in rows):
        assert "drawn at the edge" in html, "the clipped values are not marked"
    print(f"odd job written in {time.time() - t0:.1f} s")
    # The collector is not wedged: another job, then a restart and another.
    for round_ in range(2):
        job2, out2 = fleet.make_job(scenes(4), name=f"after{round_}")
        j2 = fleet.submit(job2)
        fleet.wait_done(j2, 60)
        check_reports(out2, scenes(4))
        if round_ == 0:
            fleet.kill(collector)
            collector = fleet.collector()
    assert collector.poll() is None, "the collector died"


def test_blocked_output(fleet: Fleet):
    spool = os.path.join(fleet.tmp, "spool")
    fleet.broker()
    collector = fleet.collector(["--credit", "2", "--spool", spool])
    fleet.worker()
    fleet.worker()
    # A: 8 results, its output's parent a regular file (mkdir fails: ENOTDIR)
    blocker = os.path.join(fleet.tmp, "blocker")
    with open(blocker, "w") as f:
        f.write("not a directory\n")
    a_names = scenes(8, "a")
    a_out = os.path.join(blocker, "out")
    a_id = raw_submit(fleet, exec_spec(fleet, "jobA", a_names, a_out))
    fleet.wait(lambda: fleet.job(a_id)["state"] != "running", 60, "job A's tasks to end")
    # B after A: its results queue behind A's in the broker's outbox
    b_names = scenes(5, "b")
    job_b, b_out = fleet.make_job(b_names, name="jobB")
    b_id = fleet.submit(job_b)
    t0 = time.time()
    wait_written(fleet, b_id, b_out, 30)
    print(f"B written {time.time() - t0:.1f} s after its submission while A is blocked")
    check_reports(b_out, b_names)
    log = collector_log(fleet)
    assert f"job {a_id}: cannot write reports" in log and "kept in" in log, log[-2000:]
    # A's results wait in the spool (acknowledged), none lost; now make A writable
    assert os.path.exists(os.path.join(spool, f"{a_id}.jsonl"))
    os.unlink(blocker)
    os.makedirs(blocker)
    wait_written(fleet, a_id, a_out, 60)
    check_reports(a_out, a_names)
    fleet.wait(lambda: not os.path.exists(os.path.join(spool, f"{a_id}.jsonl")), 10,
               "A's spool file to go")
    # the spool file goes just before the collector says so
    fleet.wait(lambda: "held results are written" in collector_log(fleet), 10,
               "the collector to say A's held results are written")
    assert collector.poll() is None, "the collector died"


def test_output_root(fleet: Fleet):
    root = os.path.join(fleet.tmp, "root")
    elsewhere = os.path.join(fleet.tmp, "elsewhere")
    os.makedirs(root)
    os.makedirs(elsewhere)
    os.symlink(elsewhere, os.path.join(root, "link"))
    fleet_file = os.path.join(fleet.tmp, "fleet.yaml")
    with open(fleet_file, "w") as f:
        f.write(f"collector: {{output_root: {root}}}\n")
    fleet.broker()
    fleet.collector(["-c", fleet_file])
    fleet.worker()
    cases = {  # name: (output as submitted, where the reports must go)
        "outside": (os.path.join(fleet.tmp, "outside"), os.path.join(root, "outside")),
        "vialink": (os.path.join(root, "link", "out"), os.path.join(root, "vialink")),
        "dotdot": (os.path.join(root, "..", "escape"), os.path.join(root, "dotdot")),
        "inside": (os.path.join(root, "in", "side"), os.path.join(root, "in", "side")),
    }
    ids = {}
    for name, (output, _) in cases.items():
        ids[name] = raw_submit(fleet, exec_spec(fleet, name, scenes(3), output))
    for name, (output, expect) in cases.items():
        wait_written(fleet, ids[name], expect, 60)
        check_reports(expect, scenes(3))
    assert not os.path.exists(os.path.join(fleet.tmp, "outside"))
    assert os.listdir(elsewhere) == [], os.listdir(elsewhere)
    assert not os.path.exists(os.path.join(fleet.tmp, "escape"))
    log = collector_log(fleet)
    for name in ("outside", "vialink", "dotdot"):
        assert f"job {ids[name]}: output" in log and "outside the output root" in log, log
    # The flag works the same, and --out must lie inside the root.
    r = subprocess.run([fleet.bin, "collector", "--broker", fleet.endpoint, "--output-root", root,
                        "--out", os.path.join(fleet.tmp, "other"), "--publish", ""],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "not inside the output root" in r.stderr, (r.returncode, r.stderr)


def test_publish_bind(fleet: Fleet):
    port = free_port()
    args = [fleet.bin, "collector", "--broker", fleet.endpoint, "--publish",
            f"tcp://0.0.0.0:{port}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a loopback address" in lines[0] and "--insecure" in lines[0], \
        r.stderr
    # the fleet file's publish endpoint, the same rule
    fleet_file = os.path.join(fleet.tmp, "fleet.yaml")
    with open(fleet_file, "w") as f:
        f.write(f"collector: {{publish: 'tcp://*:{port}'}}\n")
    r = subprocess.run([fleet.bin, "collector", "--broker", fleet.endpoint, "-c", fleet_file],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "not a loopback address" in r.stderr, (r.returncode, r.stderr)
    # explicitly insecure: it runs
    p = fleet._start("collector", args[1:] + ["--insecure"])
    time.sleep(1.5)
    assert p.poll() is None, f"the collector exited {p.returncode} with --insecure"


def test_same_output(fleet: Fleet):
    fleet.broker()
    fleet.collector()
    fleet.worker()
    fleet.worker()
    out = os.path.join(fleet.tmp, "shared-out")
    # A: two quick scenes and one that hangs until its timeout
    a_names = ["a0", "a1", "hang_a2"]
    a_id = raw_submit(fleet, exec_spec(fleet, "jobA", a_names, out, timeout_s=5, max_attempts=1))
    fleet.wait(lambda: os.path.exists(os.path.join(out, "results.jsonl")) and
               len(read_jsonl(os.path.join(out, "results.jsonl"))) == 2, 30, "A's quick scenes")
    # B, the same directory through a symlink (the broker refuses the same
    # output string while A runs), while A is unfinished
    link = os.path.join(fleet.tmp, "link-to-shared-out")
    os.symlink(out, link)
    b_names = scenes(3, "b")
    b_id = raw_submit(fleet, exec_spec(fleet, "jobB", b_names, link))
    b_out = os.path.join(out, b_id)
    wait_written(fleet, b_id, b_out, 30)
    assert fleet.job(a_id)["state"] == "running", "A finished before B: the test proves nothing"
    check_reports(b_out, b_names)
    assert f"in use by the unfinished job {a_id}" in collector_log(fleet)
    wait_written(fleet, a_id, out, 60)
    check_reports(out, a_names, {"hang_a2": "error"})
    assert json.load(open(os.path.join(out, ".beamfleet-job"))) == {"job_id": a_id, "done": True}
    # A re-run of A's name after A completed: as before, A's reports are set aside
    c_id = raw_submit(fleet, exec_spec(fleet, "jobA", ["c0", "c1"], out))
    fleet.wait(lambda: fleet.job(c_id)["state"] != "running" and
               json.load(open(os.path.join(out, ".beamfleet-job")))["job_id"] == c_id and
               os.path.exists(os.path.join(out, "summary.json")) and
               json.load(open(os.path.join(out, "summary.json")))["job"]["id"] == c_id,
               60, "the re-run to be written")
    check_reports(out, ["c0", "c1"])
    check_reports(os.path.join(out, f"previous-{a_id}"), a_names, {"hang_a2": "error"})
    check_reports(b_out, b_names)  # untouched


if __name__ == "__main__":
    main({"huge_powers": test_huge_powers, "blocked_output": test_blocked_output,
          "output_root": test_output_root, "publish_bind": test_publish_bind,
          "same_output": test_same_output}, prefix="hostile-collector-")
