#!/usr/bin/env python3
"""Chaos test (DESIGN section 4): an exec job runs on a real fleet on loopback
(one broker, one collector, 4 workers) while a driver SIGKILLs the broker, the
collector and workers at random moments and starts them again after a short
random pause. When every task is final and the kills have stopped, every
report must hold every task exactly once:

  results.csv, results_progress.json, results.jsonl, results_final_*.json
  each name every scene once (no loss, no duplicate, no repeated JSON key),
  the status of a scene agrees across them, summary.json counts add up to the
  task count and agree with the broker's, and every report parses.

It prints one line of figures,
  chaos: seed S kills K (broker b, collector c, worker w) tasks T final T lost 0 duplicated 0 wall Ws
and exits 1 on any loss or duplicate (or any other broken promise).

  --short   200 tasks (about a minute; the ctest test `chaos_short`)
  --long    2000 tasks (bench/chaos.sh; several minutes)
  --rounds N  N runs, each with a fresh fleet, seeds S, S+1, ... (ctest: 3)
  --seed S  replay a run: the kill schedule, the victims, the pauses and the
            task lengths all come from S ($CHAOS_SEED works too)

The tasks are tests/e2e/task.py run through chaos_task.py, which sleeps 50-300
ms per task (seeded by S and the scene name). BEAMFLEET_BIN names the binary
(default build/beamfleet). On failure the fleet's directory (logs, state,
reports) is kept and its path printed, with chaos.log listing every kill.
"""
import argparse
import collections
import csv
import glob
import json
import os
import random
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from fleet import Fleet  # noqa: E402

CHAOS_TASK = os.path.join(HERE, "chaos_task.py")
WEIGHTS = {"worker": 50, "broker": 25, "collector": 25}


class Driver:
    """Owns the fleet's processes by role and kills/restarts them on a seeded
    schedule. At most one broker and one collector exist at any time."""

    def __init__(self, fleet, rng, nworkers, log, prefetch=1):
        self.fleet = fleet
        self.prefetch = prefetch
        self.rng = rng
        self.log = log
        self.t0 = time.time()
        self.procs = {"broker": [None], "collector": [None], "worker": [None] * nworkers}
        self.restart_at = {}  # (role, slot) -> time
        self.kills = collections.Counter()
        for role, slots in self.procs.items():
            for i in range(len(slots)):
                self.start(role, i)

    def note(self, text):
        self.log.write(f"{time.time() - self.t0:8.3f} {text}\n")
        self.log.flush()

    def start(self, role, slot):
        f = self.fleet
        if role == "broker":
            p = f.broker()
        elif role == "collector":
            p = f.collector()
        else:
            p = f.worker(extra=["--allow-exec", CHAOS_TASK, "--name", f"chaos{slot}",
                                "--prefetch", str(self.prefetch)])
        self.procs[role][slot] = p
        self.note(f"start {role}[{slot}] pid {p.pid}")

    def kill_random(self):
        alive = [(role, i) for role, slots in self.procs.items() for i, p in enumerate(slots)
                 if p is not None]
        if not alive:
            return
        weights = [WEIGHTS[role] / len(self.procs[role]) for role, _ in alive]
        role, slot = self.rng.choices(alive, weights)[0]
        p = self.procs[role][slot]
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)
        self.procs[role][slot] = None
        self.kills[role] += 1
        pause = self.rng.uniform(0.1, 1.5)
        self.restart_at[(role, slot)] = time.time() + pause
        self.note(f"kill {role}[{slot}] pid {p.pid} (exit {p.returncode}), restart in {pause:.2f} s")

    def restart_due(self, everything=False):
        now = time.time()
        for key, when in list(self.restart_at.items()):
            if everything or when <= now:
                del self.restart_at[key]
                self.start(*key)

    def check_alive(self):
        """A process that died on its own (not killed by us) is a failure."""
        for role, slots in self.procs.items():
            for i, p in enumerate(slots):
                if p is not None and p.poll() is not None:
                    raise AssertionError(f"{role}[{i}] pid {p.pid} exited by itself with {p.returncode}")


def job_state(fleet, job_id):
    """(state, final, total) from the broker, or None while it is down."""
    try:
        for j in fleet.status(timeout=5)["jobs"]:
            if j["id"] == job_id:
                return j
    except Exception:  # broker down or restarting: try again later
        return None
    return None


def load_unique(path, dups):
    """JSON with every repeated object key recorded in dups."""
    def hook(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                dups.append(f"{os.path.basename(path)}: key {k!r} repeated")
            seen.add(k)
        return dict(pairs)
    with open(path) as f:
        return json.load(f, object_pairs_hook=hook)


def audit(out, names, broker_job):
    """Counts every scene in every report. Returns (lost, duplicated, problems,
    statuses, attempts)."""
    problems = []
    expect = set(names)
    per_file = {}
    status_of = collections.defaultdict(dict)

    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    per_file["results.csv"] = collections.Counter(r["scene"] for r in rows)
    for r in rows:
        status_of[r["scene"]]["results.csv"] = r["status"]

    lines = []
    with open(os.path.join(out, "results.jsonl")) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError as e:
                    problems.append(f"results.jsonl:{n}: does not parse: {e}")
    per_file["results.jsonl"] = collections.Counter(r.get("scene") for r in lines)
    for r in lines:
        status_of[r.get("scene")]["results.jsonl"] = r.get("status")
    ids = collections.Counter(r.get("task_id") for r in lines)
    problems += [f"results.jsonl: task {t} appears {n} times" for t, n in ids.items() if n > 1]

    dups = []
    progress = load_unique(os.path.join(out, "results_progress.json"), dups)
    per_file["results_progress.json"] = collections.Counter(progress.keys())
    for s, r in progress.items():
        status_of[s]["results_progress.json"] = r.get("status")

    finals = sorted(glob.glob(os.path.join(out, "results_final_*.json")))
    if len(finals) != 1:
        problems.append(f"expected one results_final_*.json, found {[os.path.basename(x) for x in finals]}")
    final = collections.Counter()
    for path in finals:
        doc = load_unique(path, dups)
        final.update(doc.keys())
        for s, r in doc.items():
            status_of[s]["results_final"] = r.get("status")
    per_file["results_final"] = final
    problems += dups

    lost, duplicated = set(), set()
    for name, counts in per_file.items():
        missing = expect - set(counts)
        extra = set(counts) - expect
        twice = {s for s, n in counts.items() if n > 1}
        if missing:
            problems.append(f"{name}: {len(missing)} scenes missing, e.g. {sorted(missing)[:5]}")
        if extra:
            problems.append(f"{name}: unknown scenes {sorted(map(str, extra))[:5]}")
        if twice:
            problems.append(f"{name}: {len(twice)} scenes more than once, e.g. {sorted(twice)[:5]}")
        lost |= missing
        duplicated |= twice

    for s in names:
        seen = set(status_of[s].values())
        if len(seen) > 1:
            problems.append(f"{s}: status differs between reports: {status_of[s]}")

    statuses = collections.Counter(r.get("status") for r in lines)
    summary = load_unique(os.path.join(out, "summary.json"), problems)
    counts = summary.get("counts", {})
    if sum(counts.get(k, 0) for k in ("success", "failed", "error", "cancelled")) != len(names):
        problems.append(f"summary.json counts {counts} do not add up to {len(names)}")
    if counts.get("total", len(names)) != len(names):
        problems.append(f"summary.json counts.total = {counts['total']}, expected {len(names)}")
    for st in set(statuses) | (set(counts) - {"total"}):
        if counts.get(st, 0) != statuses.get(st, 0):
            problems.append(f"summary.json counts[{st}] = {counts.get(st, 0)}, results.jsonl has {statuses.get(st, 0)}")
        if broker_job["counts"].get(st, 0) != statuses.get(st, 0):
            problems.append(f"broker counts[{st}] = {broker_job['counts'].get(st, 0)}, results.jsonl has {statuses.get(st, 0)}")
    if broker_job["final"] != len(names) or broker_job["total"] != len(names):
        problems.append(f"broker says final {broker_job['final']} of {broker_job['total']}")
    html = os.path.join(out, "report.html")
    if os.path.exists(html) and os.path.getsize(html) == 0:  # written once the collector has it
        problems.append("report.html is empty")
    attempts = collections.Counter(r.get("attempt") for r in lines)
    return lost, duplicated, problems, statuses, attempts


def selftest():
    """The audit must catch what it looks for: it passes on a correct set of
    reports and flags each kind of damage (run before every chaos run)."""
    import shutil
    import tempfile
    names = ["a", "b", "c"]
    job = {"final": 3, "total": 3, "counts": {"success": 3}}

    def write(d, rows):
        with open(os.path.join(d, "results.csv"), "w") as f:
            f.write("scene,status,reason\n" + "".join(f"{r['scene']},success,\n" for r in rows))
        with open(os.path.join(d, "results.jsonl"), "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
        doc = "{" + ", ".join(f'"{r["scene"]}": {json.dumps(r)}' for r in rows) + "}"
        for name in ("results_progress.json", "results_final_20260101_000000.json"):
            with open(os.path.join(d, name), "w") as f:
                f.write(doc)
        with open(os.path.join(d, "summary.json"), "w") as f:
            json.dump({"counts": {"success": len(rows), "total": len(rows)}}, f)

    rows = [{"scene": s, "status": "success", "task_id": f"t{s}", "attempt": 1} for s in names]
    damage = {
        "nothing": lambda d: None,
        "a duplicated jsonl line": lambda d: open(os.path.join(d, "results.jsonl"), "a").write(
            json.dumps(rows[0]) + "\n"),
        "a lost csv row": lambda d: write_csv_without(d, "b"),
        "a second final report": lambda d: shutil.copy(
            os.path.join(d, "results_final_20260101_000000.json"),
            os.path.join(d, "results_final_20260101_000001.json")),
        "a repeated key": lambda d: open(os.path.join(d, "results_progress.json"), "w").write(
            '{"a": {"status": "success"}, "a": {"status": "success"}, "b": {"status": "success"},'
            ' "c": {"status": "success"}}'),
        "a torn jsonl line": lambda d: open(os.path.join(d, "results.jsonl"), "a").write('{"scene": "c"'),
        "a wrong summary": lambda d: json.dump({"counts": {"success": 2, "error": 1, "total": 3}},
                                               open(os.path.join(d, "summary.json"), "w")),
    }

    def write_csv_without(d, scene):
        with open(os.path.join(d, "results.csv"), "w") as f:
            f.write("scene,status,reason\n" + "".join(f"{s},success,\n" for s in names if s != scene))

    for what, hurt in damage.items():
        d = tempfile.mkdtemp(prefix="bf-chaos-selftest-")
        try:
            write(d, rows)
            hurt(d)
            lost, dup, problems, _, _ = audit(d, names, job)
            caught = bool(lost or dup or problems)
            if caught != (what != "nothing"):
                raise AssertionError(f"audit selftest: {what}: caught={caught} {problems}")
        finally:
            shutil.rmtree(d, ignore_errors=True)


def make_job(fleet, names, max_attempts):
    root = os.path.join(fleet.tmp, "scenes")
    for s in names:
        os.makedirs(os.path.join(root, s))
    out = os.path.join(fleet.tmp, "out")
    path = os.path.join(fleet.tmp, "chaos.yaml")
    with open(path, "w") as f:
        f.write(f"name: chaos\nscenes: {root}\noutput: {out}\ntask: exec\ntimeout_s: 60\n"
                f"max_attempts: {max_attempts}\n"
                f"exec: {{command: [{sys.executable}, {CHAOS_TASK}, \"{{scene_dir}}\"]}}\n")
    return path, out


def run(args):
    seed = args.seed
    print(f"chaos: seed {seed} ({args.tasks} tasks, {args.workers} workers, prefetch "
          f"{args.prefetch}, kills every {args.kill_min}-{args.kill_max} s; replay with "
          f"--seed {seed})", flush=True)
    os.environ["CHAOS_SEED"] = str(seed)
    rng = random.Random(seed)
    fleet = Fleet("chaos")
    ok = False
    try:
        names = [f"c{i:05d}" for i in range(args.tasks)]
        job, out = make_job(fleet, names, args.max_attempts)
        log = open(os.path.join(fleet.tmp, "chaos.log"), "w")
        d = Driver(fleet, rng, args.workers, log, args.prefetch)
        fleet.wait(lambda: len(fleet.status()["workers"]) == args.workers, 20, "all workers")
        t0 = time.time()
        job_id = fleet.submit(job)
        d.note(f"submitted {job_id}")
        next_kill = time.time() + rng.uniform(args.kill_min, args.kill_max)
        next_poll = 0
        last = None
        while True:
            now = time.time()
            if now - t0 > args.max_wall:
                raise AssertionError(f"the job did not finish in {args.max_wall} s (last: {last})")
            d.restart_due()
            d.check_alive()
            if now >= next_kill:
                d.kill_random()
                next_kill = now + rng.uniform(args.kill_min, args.kill_max)
            if now >= next_poll and d.procs["broker"][0] is not None:
                next_poll = now + 0.5
                j = job_state(fleet, job_id)
                if j:
                    last = {k: j[k] for k in ("state", "final", "total", "queued", "running")}
                    if j["state"] != "running":
                        break
            time.sleep(0.05)
        d.note(f"every task final ({last}); kills stop")
        d.restart_due(everything=True)
        j = fleet.wait_done(job_id, 180)
        wall = time.time() - t0
        d.check_alive()
        lost, duplicated, problems, statuses, attempts = audit(out, names, j)
        k = d.kills
        final = len(names) - len(lost)
        print(f"chaos: seed {seed} kills {sum(k.values())} (broker {k['broker']}, collector "
              f"{k['collector']}, worker {k['worker']}) tasks {len(names)} final {final} lost "
              f"{len(lost)} duplicated {len(duplicated)} wall {wall:.0f}s")
        print(f"chaos: statuses {dict(statuses)} attempts {dict(sorted(attempts.items(), key=str))}")
        for st in ("error", "failed", "cancelled"):
            if statuses.get(st):
                reasons = collections.Counter()
                with open(os.path.join(out, "results.jsonl")) as f:
                    for line in f:
                        r = json.loads(line)
                        if r.get("status") == st:
                            reasons[r.get("reason", "")[:120]] += 1
                print(f"chaos: {st} reasons {dict(reasons.most_common(5))}")
        for p in problems:
            print(f"chaos: FAIL {p}")
        ok = not problems and not lost and not duplicated
        if args.expect_success and statuses.get("success", 0) != len(names):
            print(f"chaos: FAIL expected every task to succeed (max_attempts {args.max_attempts})")
            ok = False
    except Exception:
        import traceback
        traceback.print_exc()
    finally:
        fleet.cleanup(ok)
        if not ok:
            print(f"chaos: kill log in {os.path.join(fleet.tmp, 'chaos.log')}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--short", action="store_true", help="200 tasks (default)")
    mode.add_argument("--long", action="store_true", help="2000 tasks")
    ap.add_argument("--tasks", type=int, help="number of tasks (overrides the mode)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--prefetch", type=int, default=1, help="tasks each worker may hold")
    ap.add_argument("--seed", type=int,
                    default=int(os.environ.get("CHAOS_SEED") or int(time.time() * 1000) % 1000000))
    ap.add_argument("--rounds", type=int, default=1, help="runs, with seeds S, S+1, ...")
    ap.add_argument("--kill-min", type=float, default=0.5, help="seconds between kills, at least")
    ap.add_argument("--kill-max", type=float, default=2.0, help="seconds between kills, at most")
    ap.add_argument("--max-attempts", type=int, default=10,
                    help="the job's max_attempts (each kill of a busy worker costs one)")
    ap.add_argument("--expect-success", action="store_true",
                    help="also fail unless every task ends with status success")
    ap.add_argument("--max-wall", type=float, help="give up after this many seconds")
    args = ap.parse_args()
    if args.tasks is None:
        args.tasks = 2000 if args.long else 200
    if args.max_wall is None:
        args.max_wall = max(600.0, args.tasks * 1.0)
    if args.tasks < 1 or args.workers < 1 or not 0 < args.kill_min <= args.kill_max:
        ap.error("--tasks and --workers must be >= 1, 0 < --kill-min <= --kill-max")
    selftest()
    ok = True
    first = args.seed
    for r in range(args.rounds):  # each round a fresh fleet and the next seed
        args.seed = first + r
        ok = run(args) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
