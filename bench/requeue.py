#!/usr/bin/env python3
"""bench/requeue.py - how long a dead worker's task waits before it runs
again (docs/reliability.md, "Requeue after a death").

A real fleet on loopback (tests/e2e/fleet.py: broker, collector, two CPU
workers, each under its own supervisor) runs one-task jobs whose program
records when it starts. Each round SIGKILLs the worker running the task and
measures from the kill to the start of the next attempt on the other worker:

  local   the worker process alone is killed; its supervisor lives, sees the
          death at once and reports it to the broker (LOST);
  remote  the worker and its supervisor are killed together, as when a host
          vanishes: only the missed heartbeats tell (interval x liveness).

Prints one line per mode: kills, median, p90 and worst case in ms.

  usage: bench/requeue.py [--kills 20] [--mode local|remote|both]
                          [--heartbeat-ms 1000] [--liveness 3]
  BEAMFLEET_BIN=build/beamfleet (default: build/beamfleet next to this file)
"""
import argparse
import os
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from fleet import Fleet  # noqa: E402

TASK = """import os, sys, time
with open(os.path.join(sys.argv[1], "starts"), "a") as f:
    f.write(f"{time.time()} {os.getpid()} {os.getppid()}\\n")
time.sleep(120)
"""


def starts(path):
    try:
        with open(path) as f:
            return [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(0.001)
    raise RuntimeError(f"timed out waiting for {what}")


def run_mode(mode, kills, heartbeat_ms, liveness):
    fleet = Fleet(f"requeue-{mode}", heartbeat_ms=heartbeat_ms, liveness=liveness)
    ok = False
    figures = []
    try:
        script = os.path.join(fleet.tmp, "record_start.py")
        with open(script, "w") as f:
            f.write(TASK)
        fleet.broker()
        fleet.collector()
        workers = [fleet.worker(["--allow-exec", script]) for _ in range(2)]
        fleet.wait(lambda: len(fleet.status()["workers"]) == 2, 20, "two workers")
        for k in range(kills):
            scenes = os.path.join(fleet.tmp, f"scenes-{k}")
            os.makedirs(os.path.join(scenes, "s"))
            log = os.path.join(scenes, "s")
            job = os.path.join(fleet.tmp, f"job-{k}.yaml")
            with open(job, "w") as f:
                f.write(f"name: requeue-{k}\nscenes: {scenes}\noutput: {fleet.tmp}/out-{k}\n"
                        f"task: exec\ntimeout_s: 300\nmax_attempts: 5\n"
                        f"exec: {{command: [{sys.executable}, {script}, \"{{scene_dir}}\"]}}\n")
            job_id = fleet.submit(job)
            first = wait_for(lambda: starts(os.path.join(log, "starts")), 30, "the first attempt")
            worker_pid = int(first[0][2])
            victim = next(p for p in workers if os.getpgid(worker_pid) == p.pid)
            t0 = time.time()
            if mode == "local":
                os.kill(worker_pid, signal.SIGKILL)
            else:
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait()
            second = wait_for(lambda: len(starts(os.path.join(log, "starts"))) >= 2 and
                              starts(os.path.join(log, "starts")), 30, "the next attempt")
            figures.append((float(second[1][0]) - t0) * 1000.0)
            fleet.cli("cancel", job_id, "--broker", fleet.endpoint)
            # a fresh worker in its place (a supervisor would wait longer
            # and longer to restart a worker killed again and again)
            if victim.poll() is None:
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait()
            workers = [p for p in workers if p is not victim]
            workers.append(fleet.worker(["--allow-exec", script]))
            fleet.wait(lambda: sum(1 for w in fleet.status()["workers"]
                                   if w["state"] == "idle") == 2, 60, "two idle workers")
        ok = True
    finally:
        fleet.cleanup(ok)
    figures.sort()
    p90 = figures[min(len(figures) - 1, int(round(0.9 * (len(figures) - 1))))]
    print(f"requeue {mode}: kills {len(figures)} heartbeat {heartbeat_ms} ms x {liveness} "
          f"median {statistics.median(figures):.0f} ms p90 {p90:.0f} ms "
          f"worst {figures[-1]:.0f} ms best {figures[0]:.0f} ms")
    return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--mode", choices=("local", "remote", "both"), default="both")
    ap.add_argument("--heartbeat-ms", type=int, default=1000)
    ap.add_argument("--liveness", type=int, default=3)
    a = ap.parse_args()
    for mode in (("local", "remote") if a.mode == "both" else (a.mode,)):
        run_mode(mode, a.kills, a.heartbeat_ms, a.liveness)


if __name__ == "__main__":
    main()
