#!/usr/bin/env python3
"""The collector's live stream: `beamfleet watch` prints it as JSON
lines, and examples/subscriber.py consumes it as a Python service would.

Run one: tests/e2e/test_stream.py watch   (BEAMFLEET_BIN=build/beamfleet)
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fleet import Fleet, check_reports, main  # noqa: E402

SUBSCRIBER = os.path.join(HERE, "..", "..", "examples", "subscriber.py")


def start_fleet(fleet, n):
    names = [f"s{i:02d}" for i in range(n)]
    job, out = fleet.make_job(names)
    fleet.broker()
    fleet.collector()
    fleet.worker()
    fleet.wait(lambda: len(fleet.status()["workers"]) == 1, 10, "the worker")
    return names, job, out


def test_watch(fleet: Fleet):
    names, job, out = start_fleet(fleet, 6)
    watch = subprocess.Popen([fleet.bin, "watch", "--publish", fleet.publish,
                              "--count", str(len(names) + 1)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fleet.wait_subscribed()  # PUB/SUB: the subscription must be in place first
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    stdout, stderr = watch.communicate(timeout=30)
    assert watch.returncode == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]  # every line is JSON
    results = [e["result"] for e in events if e["event"] == "result"]
    assert sorted(r["scene"] for r in results) == names, stdout
    assert all(r["job_id"] == job_id and r["status"] == "success" for r in results), results
    assert events[-1] == {"event": "job-done", "job": events[-1]["job"]}
    assert events[-1]["job"]["id"] == job_id and events[-1]["job"]["state"] == "done"
    by_scene = check_reports(out, names)
    for r in results:  # the stream carries what the reports hold
        assert r["task_id"] == by_scene[r["scene"]]["task_id"]
    # Bad flags are usage errors naming the flag.
    r = fleet.cli("watch", "--count", "zero", check=False)
    assert r.returncode == 2 and "--count" in r.stderr, r.stderr


def test_subscriber(fleet: Fleet):
    names, job, out = start_fleet(fleet, 5)
    sub = subprocess.Popen([sys.executable, SUBSCRIBER, "--endpoint", fleet.publish,
                            "--until-job-done", "--timeout", "60"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fleet.wait_subscribed()
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    stdout, stderr = sub.communicate(timeout=60)
    assert sub.returncode == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert sorted(x["scene"] for x in lines[:-1]) == names, stdout
    assert lines[-1]["done"] and lines[-1]["job"] == job_id and lines[-1]["seen"] == len(names)
    by_scene = check_reports(out, names)
    imps = [by_scene[s]["stats"]["improvement_mean"] for s in names]
    assert abs(lines[-2]["mean_improvement_db"] - sum(imps) / len(imps)) < 1e-3, lines[-2]


def run_job(fleet, names, tty):
    """`beamfleet run` on an exec job, its stdout a pseudo-terminal or a pipe."""
    import pty
    job, out = fleet.make_job(names, name="tty" if tty else "pipe")
    env = dict(os.environ, TASK_SLEEP="0.4")
    if not tty:
        r = subprocess.run([fleet.bin, "run", job, "--workers", "1"], capture_output=True,
                           text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout, out
    master, slave = pty.openpty()
    p = subprocess.Popen([fleet.bin, "run", job, "--workers", "1"], stdout=slave,
                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=120) == 0
    return b"".join(chunks).decode(), out


def test_progress_line(fleet: Fleet):
    """On a terminal `run` keeps one live progress line (done/total, rate,
    ETA, last result) under the result lines; into a pipe it prints plain
    lines, with no terminal control codes."""
    names = [f"s{i:02d}" for i in range(4)]
    text, out = run_job(fleet, names, tty=True)
    assert "\r\x1b[K" in text, repr(text[:500])
    assert "[4/4] 100% | running 0" in text and "| last: s03 " in text, repr(text)
    assert "ETA 0:00:0" in text, repr(text)
    assert "Progress:" not in text and "Successful:     4/4" in text, repr(text)
    check_reports(out, names)
    text, out = run_job(fleet, names, tty=False)
    assert "\x1b" not in text and "\r" not in text, repr(text[:500])
    assert text.count("Progress: ") == 4 and "✓ [4/4]" in text, text
    check_reports(out, names)


TESTS = {"watch": test_watch, "subscriber": test_subscriber, "progress_line": test_progress_line}

if __name__ == "__main__":
    main(TESTS)
