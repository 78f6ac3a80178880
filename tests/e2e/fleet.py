"""End-to-end test harness: starts the real `beamfleet` binaries (broker,
collector, workers) on ephemeral loopback ports, submits jobs through the real
CLI, and checks the reports the collector writes.

Every test ends with `check_reports`, the exact accounting the fleet promises:
each scene exactly once in results.csv, results_progress.json and
results.jsonl, and every file parseable.
"""
import csv
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TASK = os.path.join(HERE, "task.py")


def binary():
    path = os.environ.get("BEAMFLEET_BIN")
    if not path:
        build = os.environ.get("BF_BUILD_DIR", os.path.join(HERE, "..", "..", "build"))
        path = os.path.join(build, "beamfleet")
    return os.path.abspath(path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dump_stacks(pgid):
    """Prints the threads' stacks of every process in group pgid (gdb), so a
    process that will not stop says where it is before it is killed."""
    pids = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        print(f"--- pid {pid}: {cmd}")
        if not shutil.which("gdb"):
            print("(no gdb here: no stacks)")
            continue
        r = subprocess.run(["gdb", "-p", pid, "-batch", "-ex", "thread apply all bt"],
                           capture_output=True, text=True, timeout=60)
        print("\n".join(line for line in r.stdout.splitlines() if line.startswith(("#", "Thread"))))


class Fleet:
    """A fleet on this host: one broker, one collector, any number of workers."""

    def __init__(self, name, heartbeat_ms=200, liveness=3):
        self.bin = binary()
        self.tmp = tempfile.mkdtemp(prefix=f"bf-e2e-{name}-")
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.publish = f"tcp://127.0.0.1:{free_port()}"
        self.state = os.path.join(self.tmp, "state")
        self.logs = os.path.join(self.tmp, "logs")
        os.makedirs(self.logs)
        self.hb = ["--heartbeat-ms", str(heartbeat_ms), "--liveness", str(liveness)]
        self.heartbeat_ms = heartbeat_ms
        self.liveness = liveness
        self.procs = []
        self.counter = 0

    # -- processes -----------------------------------------------------------
    def _start(self, what, args, env=None):
        self.counter += 1
        log = open(os.path.join(self.logs, f"{self.counter:02d}-{what}.log"), "ab")
        full_env = dict(os.environ, BEAMFLEET_LOG="debug" if os.environ.get("BF_E2E_DEBUG") else "info")
        if env:
            full_env.update(env)
        p = subprocess.Popen([self.bin] + args, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=full_env, start_new_session=True)
        p.what = what
        self.procs.append(p)
        return p

    def broker(self, extra=(), env=None):
        return self._start("broker", ["broker", "--bind", self.endpoint, "--state", self.state]
                           + self.hb + list(extra), env=env)

    def collector(self, extra=()):
        return self._start("collector", ["collector", "--broker", self.endpoint,
                                         "--publish", self.publish] + self.hb + list(extra))

    def worker(self, extra=(), env=None):
        return self._start("worker", ["worker", "--broker", self.endpoint, "--gpus", "none",
                                      "--cpu", "1", "--allow-exec", TASK] + self.hb + list(extra),
                           env=env)

    def kill(self, p, sig=signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        if sig in (signal.SIGKILL,):
            p.wait(timeout=10)

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 15
        for p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                print(f"{p.what} (pid {p.pid}) did not exit within 15 s of SIGTERM:")
                dump_stacks(p.pid)
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def dump_logs(self):
        for path in sorted(glob.glob(os.path.join(self.logs, "*.log"))):
            with open(path, errors="replace") as f:
                text = f.read()
            print(f"----- {os.path.basename(path)} (last 60 lines) -----")
            print("\n".join(text.splitlines()[-60:]))

    def cleanup(self, ok):
        self.stop()
        if getattr(self, "on_cleanup", None):  # e.g. a test's own mount
            self.on_cleanup()
        if not ok:
            self.dump_logs()
            print(f"(test files kept in {self.tmp})")
        elif not os.environ.get("BF_E2E_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- jobs ----------------------------------------------------------------
    def make_job(self, scenes, name="job", timeout_s=60, max_attempts=3, extra="", command=None):
        """An exec job over empty scene folders NAME-scenes/<scene>; command
        (a list of strings) defaults to task.py on {scene_dir}."""
        root = os.path.join(self.tmp, f"{name}-scenes")
        for s in scenes:
            os.makedirs(os.path.join(root, s))
        out = os.path.join(self.tmp, f"{name}-out")
        path = os.path.join(self.tmp, f"{name}.yaml")
        cmd = json.dumps(command) if command else f"[{sys.executable}, {TASK}, \"{{scene_dir}}\"]"
        with open(path, "w") as f:
            f.write(f"name: {name}\nscenes: {root}\noutput: {out}\ntask: exec\n"
                    f"timeout_s: {timeout_s}\nmax_attempts: {max_attempts}\n"
                    f"exec: {{command: {cmd}}}\n{extra}")
        return path, out

    def cli(self, *args, timeout=60, check=True):
        r = subprocess.run([self.bin] + list(args), capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"beamfleet {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def submit(self, job_path):
        r = self.cli("submit", job_path, "--broker", self.endpoint)
        job_id = r.stdout.strip().splitlines()[-1]
        assert job_id, r.stdout
        return job_id

    def status(self, timeout=20):
        r = self.cli("status", "--broker", self.endpoint, "--json", timeout=timeout)
        return json.loads(r.stdout)

    def job(self, job_id):
        for j in self.status()["jobs"]:
            if j["id"] == job_id:
                return j
        raise AssertionError(f"job {job_id} unknown to the broker")

    def wait(self, predicate, timeout, what):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except (subprocess.TimeoutExpired, AssertionError, json.JSONDecodeError) as e:
                last = e
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last})")

    def log_of(self, what):
        """Everything the processes started as `what` have logged so far."""
        text = ""
        for path in sorted(glob.glob(os.path.join(self.logs, f"*-{what}.log"))):
            with open(path, errors="replace") as f:
                text += f.read()
        return text

    def wait_subscribed(self, count=1, timeout=15):
        """Waits until the collector has registered `count` stream
        subscriptions in all (it logs each once libzmq has it): from then on
        what it publishes reaches them. The readiness signal that replaces
        a PUB/SUB slow-joiner sleep."""
        self.wait(lambda: self.log_of("collector").count("stream: subscribed to") >= count,
                  timeout, f"{count} stream subscription(s) at the collector")

    def wait_done(self, job_id, timeout=120):
        def done():
            st = self.status()
            jobs = [j for j in st["jobs"] if j["id"] == job_id]
            return (jobs and jobs[0]["state"] != "running" and st["collector"]["outbox"] == 0
                    and glob.glob(os.path.join(self.job_output(job_id), "summary.json")) and jobs[0])
        return self.wait(done, timeout, f"job {job_id} to finish and be written")

    def job_output(self, job_id):
        for j in self.status()["jobs"]:
            if j["id"] == job_id:
                return j["output"]
        return ""


def read_jsonl(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def check_reports(out, scenes, statuses=None):
    """Each scene exactly once in every report, every report parseable.
    statuses: {scene: expected status}, default success for all."""
    statuses = statuses or {}
    expect = {s: statuses.get(s, "success") for s in scenes}

    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    csv_scenes = [r["scene"] for r in rows]
    assert sorted(csv_scenes) == sorted(scenes), f"results.csv scenes {sorted(csv_scenes)} != {sorted(scenes)}"
    for r in rows:
        assert r["status"] == expect[r["scene"]], f"results.csv {r['scene']}: {r['status']} != {expect[r['scene']]} ({r['reason']})"

    progress = json.load(open(os.path.join(out, "results_progress.json")))
    assert sorted(progress) == sorted(scenes), f"results_progress.json scenes {sorted(progress)}"
    for s, r in progress.items():
        assert r["status"] == expect[s], f"results_progress.json {s}: {r['status']}"

    lines = read_jsonl(os.path.join(out, "results.jsonl"))
    jl_scenes = [r["scene"] for r in lines]
    assert sorted(jl_scenes) == sorted(scenes), f"results.jsonl scenes {sorted(jl_scenes)}"
    assert len({r["task_id"] for r in lines}) == len(lines), "results.jsonl repeats a task"

    finals = glob.glob(os.path.join(out, "results_final_*.json"))
    assert len(finals) == 1, f"expected one results_final_*.json, found {finals}"
    final = json.load(open(finals[0]))
    assert sorted(final) == sorted(scenes), "results_final scenes differ"

    summary = json.load(open(os.path.join(out, "summary.json")))
    counts = summary["counts"]
    for st in ("success", "failed", "error", "cancelled"):
        n = sum(1 for v in expect.values() if v == st)
        assert counts.get(st, 0) == n, f"summary.json counts[{st}] = {counts.get(st)} != {n}"
    return {r["scene"]: r for r in lines}


class Skip(Exception):
    """Raised by a test that cannot run here (a missing browser, no root)."""


def main(tests, prefix=""):
    """Runs the test named by argv[1] (or all), each in a fresh Fleet named
    prefix + test. Exits 1 on a failure, 77 when every test was skipped."""
    names = sys.argv[1:] or list(tests)
    failed = skipped = 0
    for name in names:
        fleet = Fleet(prefix + name)
        ok = False
        t0 = time.time()
        try:
            tests[name](fleet)
            ok = True
            print(f"PASS {name} ({time.time() - t0:.1f} s)")
        except Skip as e:
            ok = True
            skipped += 1
            print(f"SKIP {name}: {e}")
        except Exception as e:  # the harness reports every failure the same way
            import traceback
            traceback.print_exc()
            print(f"FAIL {name}: {e}")
            failed += 1
        finally:
            fleet.cleanup(ok)
    print(f"{len(names) - failed - skipped} passed, {skipped} skipped, {failed} failed")
    sys.exit(1 if failed else 77 if skipped == len(names) else 0)
