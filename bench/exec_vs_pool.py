#!/usr/bin/env python3
"""bench/exec_vs_pool.py - exec tasks end to end and the first result of a
1-task job, `beamfleet run` against a Python ProcessPoolExecutor (spawn)
doing the same work (bench/pool_anchor.py), in the same run, interleaved.

  exec_vs_pool.py BEAMFLEET_BIN [--tasks 2000] [--workers 2,8] [--repeat 5]
                  [--first-only]

Each task runs `/bin/sh -c "echo '{"status":"success"}'" SCENE_DIR`. The
fleet's time is the whole `beamfleet run` (broker, collector and workers
started, every report written and durable, children stopped); the pool's is
the whole script (interpreter and pool started, results appended every 10
results). First result: from starting the command until its line for the
one result is printed (`beamfleet run`: the "[1/1]" line). One warm-up run
of each first; the median and the spread (min-max) of the repeats are
printed. Standard library only.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
POOL = os.path.join(HERE, "pool_anchor.py")
JOB = """name: bench-exec
scenes: {scenes}
output: {out}
task: exec
exec: {{command: [/bin/sh, -c, "echo '{{\\"status\\":\\"success\\"}}'", "{{scene_dir}}"]}}
"""


def make_job(root, n):
    scenes = os.path.join(root, "scenes-%d" % n)
    if not os.path.isdir(scenes):
        os.makedirs(scenes)
        for i in range(n):
            os.mkdir(os.path.join(scenes, "s%07d" % i))
    path = os.path.join(root, "job-%d.yaml" % n)
    with open(path, "w") as f:
        f.write(JOB.format(scenes=scenes, out=os.path.join(root, "out")))
    return path


def fleet_exec(bin_, root, job, workers):
    shutil.rmtree(os.path.join(root, "out"), ignore_errors=True)
    t0 = time.monotonic()
    r = subprocess.run([bin_, "run", job, "--workers", str(workers)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    dt = time.monotonic() - t0
    if r.returncode != 0 or b"Errors:         0" not in r.stdout:
        sys.exit("beamfleet run failed (%d):\n%s" % (r.returncode, r.stdout.decode()[-2000:]))
    return dt


def pool_exec(root, tasks, workers):
    t0 = time.monotonic()
    subprocess.run([sys.executable, POOL, "exec", "--tasks", str(tasks), "--workers",
                    str(workers), "--out", root], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def first_line(argv, marker):
    """Seconds from starting argv until a line containing marker is printed."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    dt = None
    for line in p.stdout:
        if dt is None and marker in line:
            dt = time.monotonic() - t0
    p.wait()
    if dt is None or p.returncode != 0:
        sys.exit("%s: no %r line (exit %d)" % (" ".join(argv), marker, p.returncode))
    return dt


def fmt(xs, unit="s"):
    return "%.3f %s (%.3f-%.3f)" % (statistics.median(xs), unit, min(xs), max(xs))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("bin")
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--workers", default="2,8")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--first-only", action="store_true", help="only the first-result figure")
    a = p.parse_args()
    if not (os.path.isfile(a.bin) and os.access(a.bin, os.X_OK)):
        sys.exit("exec_vs_pool: %s is not an executable beamfleet binary" % a.bin)
    root = tempfile.mkdtemp(prefix="bf-exec-bench-")
    try:
        job = make_job(root, a.tasks)
        job1 = make_job(root, 1)
        print("# exec_vs_pool: %d exec tasks, %d repeats (median, min-max), %d cores" %
              (a.tasks, a.repeat, os.cpu_count()))
        print("| workers | beamfleet run (s) | pool (s) | speed-up (pool s / fleet s) |")
        print("|---:|---:|---:|---:|")
        for w in [] if a.first_only else [int(x) for x in a.workers.split(",")]:
            fleet_exec(a.bin, root, job, w)  # warm-up
            pool_exec(root, a.tasks, w)
            fs, ps = [], []
            for _ in range(a.repeat):
                fs.append(fleet_exec(a.bin, root, job, w))
                ps.append(pool_exec(root, a.tasks, w))
            print("| %d | %s | %s | %.2fx |" % (w, fmt(fs), fmt(ps),
                                               statistics.median(ps) / statistics.median(fs)))
            sys.stdout.flush()
        fleet1 = [a.bin, "run", job1, "--workers", "1"]
        pool1 = [sys.executable, POOL, "first", "--out", root]
        first_line(fleet1, b"[1/1]")  # warm-up
        first_line(pool1, b"first result")
        ff, pf = [], []
        for _ in range(a.repeat):
            shutil.rmtree(os.path.join(root, "out"), ignore_errors=True)
            ff.append(first_line(fleet1, b"[1/1]"))
            pf.append(first_line(pool1, b"first result"))
        print("\nfirst result of a 1-task job: beamfleet run %s, pool %s" % (fmt(ff), fmt(pf)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
