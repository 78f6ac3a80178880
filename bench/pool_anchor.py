#!/usr/bin/env python3
"""bench/pool_anchor.py - the peer the fleet benchmarks measure against: a
Python ProcessPoolExecutor (spawn) doing the same work as the fleet, its
results file written (appended and flushed to the kernel; with --fsync also
fdatasync'ed) every 10 results.
Standard library only.

  pool_anchor.py noop  --tasks T --workers W   in-process no-op functions:
      prints {"mode":"noop","tasks_per_s":R} (timed from the first submit to
      the last result written, the pool already started and warm, as
      bench_dispatch times the fleet from SUBMIT)
  pool_anchor.py exec  --tasks T --workers W [--out DIR]   one subprocess per
      task printing {"status":"success"} (the fleet's exec task); timed over
      the whole script, pool start included, as `beamfleet run` is
  pool_anchor.py first --out DIR   a 1-task job: prints "first result" when
      the one result is written

The result of each task is the parsed last line of its stdout, as the fleet's
exec worker reads it. Used by bench/exec_vs_pool.py and bench/dispatch.c.
"""

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

COMMAND = ["/bin/sh", "-c", "echo '{\"status\":\"success\"}'"]


def noop(i):
    return {"status": "success", "scene": "scene_%07d" % i}


def run_exec(i):
    out = subprocess.run(COMMAND + ["scene_%07d" % i], stdout=subprocess.PIPE, check=False)
    lines = out.stdout.decode().strip().splitlines()
    doc = json.loads(lines[-1]) if lines else {"status": "error"}
    doc["scene"] = "scene_%07d" % i
    return doc


class Results:
    """results.jsonl, appended every `every` results (made durable with --fsync)."""

    def __init__(self, path, every=10, durable=False):
        self.f = open(path, "a")
        self.every = every
        self.durable = durable
        self.pending = 0

    def add(self, doc):
        self.f.write(json.dumps(doc) + "\n")
        self.pending += 1
        if self.pending >= self.every:
            self.sync()

    def sync(self):
        self.f.flush()
        if self.durable:
            os.fdatasync(self.f.fileno())
        self.pending = 0

    def close(self):
        self.sync()
        self.f.close()


def drain(pool, fn, n, results):
    futures = [pool.submit(fn, i) for i in range(n)]
    for fut in cf.as_completed(futures):
        results.add(fut.result())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["noop", "exec", "first"])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="/tmp")
    p.add_argument("--fsync", action="store_true", help="fdatasync every 10 results")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "pool-results-%d.jsonl" % os.getpid())
    ctx = mp.get_context("spawn")
    try:
        if a.mode == "noop":
            with cf.ProcessPoolExecutor(a.workers, mp_context=ctx) as pool:
                # warm: every worker started and importing done
                list(pool.map(noop, range(a.workers * 4)))
                res = Results(path, durable=a.fsync)
                t0 = time.monotonic()
                drain(pool, noop, a.tasks, res)
                res.close()
                dt = time.monotonic() - t0
            print(json.dumps({"mode": "noop", "workers": a.workers, "tasks": a.tasks,
                              "tasks_per_s": a.tasks / dt}))
        elif a.mode == "exec":
            t0 = time.monotonic()
            with cf.ProcessPoolExecutor(a.workers, mp_context=ctx) as pool:
                res = Results(path, durable=a.fsync)
                drain(pool, run_exec, a.tasks, res)
                res.close()
            dt = time.monotonic() - t0
            print(json.dumps({"mode": "exec", "workers": a.workers, "tasks": a.tasks,
                              "seconds": dt}))
        else:
            with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
                res = Results(path, durable=a.fsync)
                res.add(pool.submit(run_exec, 0).result())
                res.sync()
                print("first result", flush=True)
                res.close()
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
