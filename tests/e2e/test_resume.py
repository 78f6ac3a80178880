#!/usr/bin/env python3
"""Resuming a campaign (docs/operations.md, "Resuming a campaign"): a job over
the same scenes, run again after a change to a few of them, runs only those;
every other task takes its earlier result (reused, with the job it came
from), and every report still lists every scene exactly once.

  resume_run     `beamfleet run` three times over 50 scenes: all run; after
                 3 scenes change, exactly those 3 run; --recompute runs all 50
  resume_submit  `beamfleet submit` to a fleet: a changed exec command runs
                 everything again; a job cancelled half-way, submitted again,
                 runs only what had not finished
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleet import TASK, Fleet, check_reports, main, read_jsonl  # noqa: E402


def make_scenes(root, names):
    for s in names:
        os.makedirs(os.path.join(root, s), exist_ok=True)
        with open(os.path.join(root, s, "scene.txt"), "w") as f:
            f.write(f"scene {s}\n")


def write_job(path, scenes, out, command):
    with open(path, "w") as f:
        f.write(f"name: resume\nscenes: {scenes}\noutput: {out}\ntask: exec\n"
                f"exec: {{command: {command}}}\n")


def run(fleet, job, *extra):
    r = subprocess.run([fleet.bin, "run", job, "--workers", "2"] + list(extra),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"run exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def campaign(fleet, names):
    """Scene folders for names and an exec job over them: (scenes, out, job)."""
    scenes = os.path.join(fleet.tmp, "scenes")
    out = os.path.join(fleet.tmp, "out")
    job = os.path.join(fleet.tmp, "job.yaml")
    make_scenes(scenes, names)
    write_job(job, scenes, out, f'[{sys.executable}, {TASK}, "{{scene_dir}}"]')
    return scenes, out, job


def results(out):
    return {r["scene"]: r for r in read_jsonl(os.path.join(out, "results.jsonl"))}


def test_resume_run(fleet: Fleet):
    names = [f"s{i:02d}" for i in range(50)]
    scenes, out, job = campaign(fleet, names)

    first = run(fleet, job)
    assert "finished result" not in first.stderr, first.stderr[-2000:]
    check_reports(out, names)
    r1 = results(out)
    assert all(len(r.get("key", "")) == 32 and not r.get("reused") for r in r1.values()), \
        list(r1.values())[0]
    job1 = r1["s00"]["job_id"]

    changed = ["s07", "s21", "s42"]
    for s in changed:
        with open(os.path.join(scenes, s, "scene.txt"), "a") as f:
            f.write("moved the transmitter\n")
    second = run(fleet, job)
    assert "47 of 50 scenes have a finished result" in second.stderr, second.stderr[-2000:]
    check_reports(out, names)
    r2 = results(out)
    ran = sorted(s for s, r in r2.items() if not r.get("reused"))
    assert ran == changed, f"ran {ran}, expected {changed}"
    for s, r in r2.items():
        if s in changed:
            assert r["key"] != r1[s]["key"] and r["attempt"] == 1, r
        else:
            assert r["reused"] is True and r["origin_job"] == job1 and r["key"] == r1[s]["key"], r
            assert r["attempt"] == 0 and r["job_id"] != job1, r
            assert r["elapsed_time"] == r1[s]["elapsed_time"], (r, r1[s])
    # the earlier job's reports were set aside, not lost
    assert any(d.startswith("previous-") for d in os.listdir(out)), os.listdir(out)

    third = run(fleet, job, "--recompute")
    assert "finished result" not in third.stderr, third.stderr[-2000:]
    check_reports(out, names)
    assert not any(r.get("reused") for r in results(out).values())


def test_resume_submit(fleet: Fleet):
    fleet.broker()
    fleet.collector()
    fleet.worker(env={"TASK_SLEEP": "0.3"})
    names = [f"t{i:02d}" for i in range(12)]
    scenes, out, job = campaign(fleet, names)

    # cancelled after a few results: the finished ones are reused, the
    # cancelled ones run
    j1 = fleet.submit(job)
    fleet.wait(lambda: fleet.job(j1)["final"] >= 3, 60, "three results")
    fleet.cli("cancel", j1, "--broker", fleet.endpoint)
    fleet.wait_done(j1, 60)
    done1 = {s for s, r in results(out).items() if r["status"] == "success"}
    assert 3 <= len(done1) < len(names), done1
    r = fleet.cli("submit", job, "--broker", fleet.endpoint)
    j2 = r.stdout.strip().splitlines()[-1]
    assert f"{len(done1)} of {len(names)} scenes have a finished result" in r.stderr, r.stderr
    fleet.wait_done(j2, 120)
    check_reports(out, names)
    r2 = results(out)
    assert {s for s, x in r2.items() if x.get("reused")} == done1
    assert all(x["origin_job"] == j1 for x in r2.values() if x.get("reused"))

    # another command: a different key for every scene, so nothing is reused
    write_job(job, scenes, out, f'[{sys.executable}, {TASK}, "{{scene_dir}}", "--again"]')
    r = fleet.cli("submit", job, "--broker", fleet.endpoint)
    j3 = r.stdout.strip().splitlines()[-1]
    assert "finished result" not in r.stderr, r.stderr
    fleet.wait_done(j3, 120)
    check_reports(out, names)
    assert not any(x.get("reused") for x in results(out).values())
    # a job that reuses everything is done at once, and written
    r = fleet.cli("submit", job, "--broker", fleet.endpoint)
    j4 = r.stdout.strip().splitlines()[-1]
    t0 = time.time()
    fleet.wait_done(j4, 30)
    check_reports(out, names)
    assert all(x.get("reused") for x in results(out).values())
    print(f"an all-reused job of {len(names)} scenes written in {time.time() - t0:.2f} s")


TESTS = {"resume_run": test_resume_run, "resume_submit": test_resume_submit}

if __name__ == "__main__":
    main(TESTS, prefix="e2e-")
