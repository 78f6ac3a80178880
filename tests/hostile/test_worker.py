#!/usr/bin/env python3
"""Hostile-tenant tests, the worker's side: a job or a task that
misbehaves must stay inside its room, and a worker that dies on this host
must take its task with it and be reported at once.

  tree_dies          SIGKILL the worker process (not its supervisor) while its
                     exec task runs a tree of processes (background children,
                     a setsid'd one, a setsid'd grandchild whose parent is the
                     task itself): within 2 s none of them is left.
  lost_requeue       SIGKILL a worker mid-task with heartbeats of 1000 ms x 3:
                     the supervisor reports the death (LOST) and the task runs
                     again on the other worker well before 3 heartbeats.
  neighbour_spared   ... while a neighbour's task, whose `( cmd & )` orphan is
                     also the supervisor's child now, runs on undisturbed.
  grandchild_stdout  a task that leaves a background child holding its stdout
                     succeeds when its main process exits (not "timeout").
  big_result         a 121 kB result (3,000 zone cells) arrives whole; a result
                     line just over 16 MiB is refused saying so, fault "task".
  fake_interpreter   a program named python3 / sh that is not the host's
                     interpreter does not run an allowed script: refused with
                     fault "task", and it never ran.
  faults             a program that is not allowed and output that is not a
                     result are the task's faults; a non-zero exit is not
                     attributed.
  supervisor_refused every worker refused at start: the supervisor exits non-zero
                     with a one-line reason.
  comm               a supervised worker shows as `beamfleet` in ps, not `exe`.

Run one with `test_worker.py NAME` (BEAMFLEET_BIN names the binary).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from fleet import Fleet, check_reports, main, read_jsonl  # noqa: E402

# The hostile task: what it does comes from the scene's name.
TASK = r'''
import json, os, subprocess, sys, time
scene_dir, marker = sys.argv[1], sys.argv[2]
scene = os.path.basename(scene_dir.rstrip("/"))
with open(os.path.join(scene_dir, "starts.log"), "a") as f:
    f.write("%d %.6f\n" % (os.getpid(), time.time()))
sleeper = [sys.executable, "-c", "import time; time.sleep(60)", marker]
if scene.startswith("tree"):
    subprocess.Popen(sleeper)                                   # same group
    subprocess.Popen(sleeper, start_new_session=True)           # setsid
    # a child that starts a setsid'd grandchild and then waits
    subprocess.Popen([sys.executable, "-c",
                      "import subprocess, sys, time; "
                      "subprocess.Popen(sys.argv[2:], start_new_session=True); time.sleep(60)",
                      marker] + sleeper)
    with open(os.path.join(scene_dir, "tree.ready"), "w") as f:
        f.write("ok")
    time.sleep(60)
elif scene.startswith("slow"):
    time.sleep(4)
elif scene.startswith("double"):
    # a shell's `( cmd & )`: cmd is orphaned but stays in the task's group
    subprocess.Popen(["/bin/sh", "-c", "(\"$0\" -c 'import time; time.sleep(60)' \"$1\" &)",
                      sys.executable, marker]).wait()
    time.sleep(3)
elif scene.startswith("big"):
    cells = [-90.0 - i / 1000.0 for i in range(3000)]
    print(json.dumps({"status": "success", "zone_power_initial": cells,
                      "zone_power_optimized": cells,
                      "stats": {"zone_cells": 3000, "improvement_mean": 0.0}}))
    sys.exit(0)
elif scene.startswith("huge"):
    pad = "x" * (16 * 1024 * 1024 + 10)
    sys.stdout.write('{"status":"success","pad":"' + pad + '"}\n')
    sys.exit(0)
elif scene.startswith("garbage"):
    print("this is not json")
    sys.exit(0)
elif scene.startswith("exit"):
    print("boom", file=sys.stderr)
    sys.exit(5)
print(json.dumps({"status": "success"}))
'''


def write_task(fleet):
    path = os.path.join(fleet.tmp, "hostile_task.py")
    with open(path, "w") as f:
        f.write(TASK)
    return path


def make_job(fleet, scenes, command, name="job", timeout_s=60, max_attempts=1):
    """An exec job with its own command (a list of strings); also its scenes folder."""
    path, out = fleet.make_job(scenes, name=name, timeout_s=timeout_s,
                               max_attempts=max_attempts, command=command)
    return path, out, os.path.join(fleet.tmp, f"{name}-scenes")


def start_worker(fleet, allow, cpu=1, extra=()):
    args = ["worker", "--broker", fleet.endpoint, "--gpus", "none", "--cpu", str(cpu)]
    for a in allow:
        args += ["--allow-exec", a]
    return fleet._start("worker", args + fleet.hb + list(extra))


def marked(marker):
    """Live (not zombie) processes whose argv holds marker."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in argv and state != "Z":
            found.append(int(d))
    return found


def worker_pids(fleet):
    """{worker name: pid} of the registered workers (name is PREFIX:pid:dev)."""
    return {w["name"]: int(w["name"].split(":")[-2]) for w in fleet.status()["workers"]}


def busy_pid(fleet, scene):
    for w in fleet.status()["workers"]:
        if w["state"] == "busy" and w["task_scene"] == scene:
            return int(w["name"].split(":")[-2])
    return None


def starts(root, scene):
    try:
        with open(os.path.join(root, scene, "starts.log")) as f:
            return [float(line.split()[1]) for line in f if line.strip()]
    except OSError:
        return []


# ---- the tests ------------------------------------------------------------------------

def test_tree_dies(fleet: Fleet):
    task = write_task(fleet)
    marker = f"bf-hostile-{os.getpid()}-{time.time_ns()}"
    job, out, root = make_job(fleet, ["tree_a"], [sys.executable, task, "{scene_dir}", marker])
    fleet.broker()
    fleet.collector()
    start_worker(fleet, [task])
    fleet.wait(lambda: len(fleet.status()["workers"]) == 1, 10, "the worker")
    fleet.submit(job)
    fleet.wait(lambda: os.path.exists(os.path.join(root, "tree_a", "tree.ready")), 20, "the task tree")
    fleet.wait(lambda: len(marked(marker)) >= 5, 5, "five marked processes")
    before = marked(marker)
    pid = busy_pid(fleet, "tree_a")
    assert pid, "no busy worker"
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    left = before
    while time.time() - killed < 2.0 and left:
        time.sleep(0.05)
        left = marked(marker)
    took = time.time() - killed
    if left:
        for p in left:  # do not leave them behind for the next test
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert not left, f"{len(left)} of {len(before)} task processes survived their worker: {left}"
    print(f"task tree of {len(before)} processes gone {took * 1000:.0f} ms after the kill")


def test_lost_requeue(fleet: Fleet):
    fleet.hb = ["--heartbeat-ms", "1000", "--liveness", "3"]  # before anything starts
    fleet.heartbeat_ms, fleet.liveness = 1000, 3
    task = write_task(fleet)
    job, out, root = make_job(fleet, ["slow_a"], [sys.executable, task, "{scene_dir}", "m"],
                              max_attempts=3)
    fleet.broker()
    fleet.collector()
    start_worker(fleet, [task], cpu=2)
    fleet.wait(lambda: len(fleet.status()["workers"]) == 2, 15, "two workers")
    job_id = fleet.submit(job)
    fleet.wait(lambda: starts(root, "slow_a"), 20, "the first attempt")
    pid = fleet.wait(lambda: busy_pid(fleet, "slow_a"), 5, "the busy worker")
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    fleet.wait(lambda: len(starts(root, "slow_a")) >= 2, 10, "the second attempt")
    took = starts(root, "slow_a")[1] - killed
    print(f"local death -> task running again: {took * 1000:.0f} ms")
    assert took < 1.0, f"requeued {took:.2f} s after the kill (3 heartbeats are 3 s)"
    fleet.wait_done(job_id, 30)
    rows = check_reports(out, ["slow_a"])
    assert rows["slow_a"]["attempt"] == 2, rows["slow_a"]


def test_neighbour_spared(fleet: Fleet):
    """A worker dies while its neighbour's task has an orphan of its own (a
    shell's `( cmd & )`, still in that task's process group): the hunt for
    the dead worker's tree leaves the neighbour's task alone; its orphan goes
    when that task ends."""
    task = write_task(fleet)
    marker = f"bf-hostile-{os.getpid()}-{time.time_ns()}"
    job, out, root = make_job(fleet, ["double_a", "slow_b"],
                              [sys.executable, task, "{scene_dir}", marker], max_attempts=2)
    fleet.broker()
    fleet.collector()
    start_worker(fleet, [task], cpu=2)
    fleet.wait(lambda: len(fleet.status()["workers"]) == 2, 15, "two workers")
    job_id = fleet.submit(job)
    fleet.wait(lambda: starts(root, "double_a") and starts(root, "slow_b"), 20, "both tasks")
    fleet.wait(lambda: len(marked(marker)) == 3, 5, "the two tasks and the orphan")
    pid = fleet.wait(lambda: busy_pid(fleet, "slow_b"), 5, "slow_b's worker")
    os.kill(pid, signal.SIGKILL)
    fleet.wait_done(job_id, 30)
    rows = check_reports(out, ["double_a", "slow_b"])
    assert rows["double_a"]["attempt"] == 1, rows["double_a"]
    assert rows["slow_b"]["attempt"] == 2, rows["slow_b"]
    fleet.wait(lambda: not marked(marker), 3, "the orphan to go with its task")


def test_grandchild_stdout(fleet: Fleet):
    job, out, root = make_job(fleet, ["a"],
                              ["/bin/sh", "-c", "sleep 60 & echo '{\"status\":\"success\"}'"],
                              timeout_s=10)
    fleet.broker()
    fleet.collector()
    start_worker(fleet, ["/bin/sh"])
    t0 = time.time()
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 30)
    took = time.time() - t0
    check_reports(out, ["a"])
    assert took < 8, f"took {took:.1f} s"


def test_big_result(fleet: Fleet):
    task = write_task(fleet)
    job, out, root = make_job(fleet, ["big_a", "huge_b"], [sys.executable, task, "{scene_dir}", "m"])
    fleet.broker()
    fleet.collector()
    start_worker(fleet, [task])
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    rows = check_reports(out, ["big_a", "huge_b"], {"huge_b": "error"})
    assert len(rows["big_a"]["zone_power_initial"]) == 3000
    reason = rows["huge_b"]["reason"]
    assert re.search(r"result line of \d+ bytes exceeds the 16 MiB limit", reason), reason
    assert rows["huge_b"].get("fault") == "task", rows["huge_b"]
    # the refused line (16 MiB of "x" padding) is described, never echoed
    assert "x" * 64 not in reason, f"the refused line is quoted in the reason: {reason[:200]}"


def test_fake_interpreter(fleet: Fleet):
    task = write_task(fleet)
    bindir = os.path.join(fleet.tmp, "bin")
    os.makedirs(bindir)
    pwned = os.path.join(fleet.tmp, "pwned")
    fake = os.path.join(bindir, "python3")
    with open(fake, "w") as f:
        f.write(f"#!/bin/sh\ntouch {pwned}\necho '{{\"status\":\"success\"}}'\n")
    os.chmod(fake, 0o755)
    dash = os.path.join(bindir, "sh")  # a copy of a real shell, elsewhere
    subprocess.run(["cp", os.path.realpath("/bin/sh"), dash], check=True)
    fleet.broker()
    fleet.collector()
    start_worker(fleet, [task])
    jobs = []
    for name, prog in (("fake", fake), ("copy", dash)):
        job, out, root = make_job(fleet, ["a"], [prog, task, "{scene_dir}", "m"], name=name)
        jobs.append((fleet.submit(job), out, prog))
    # the real interpreter still runs the allowed script
    job, real_out, root = make_job(fleet, ["ok"], ["python3", task, "{scene_dir}", "m"], name="real")
    real_id = fleet.submit(job)
    for job_id, out, prog in jobs:
        fleet.wait_done(job_id, 60)
        rows = check_reports(out, ["a"], {"a": "error"})
        assert "exec not allowed" in rows["a"]["reason"], rows["a"]
        assert prog in rows["a"]["reason"], rows["a"]["reason"]
        assert rows["a"].get("fault") == "task", rows["a"]
    fleet.wait_done(real_id, 60)
    check_reports(real_out, ["ok"])
    assert not os.path.exists(pwned), "the fake interpreter ran"


def test_faults(fleet: Fleet):
    task = write_task(fleet)
    fleet.broker()
    fleet.collector()
    start_worker(fleet, [task])
    job, out, root = make_job(fleet, ["garbage_a", "exit_b"], [sys.executable, task, "{scene_dir}", "m"])
    job_id = fleet.submit(job)
    job2, out2, root2 = make_job(fleet, ["c"], ["/bin/cat", "{scene_dir}"], name="denied")
    job2_id = fleet.submit(job2)
    fleet.wait_done(job_id, 60)
    fleet.wait_done(job2_id, 60)
    rows = check_reports(out, ["garbage_a", "exit_b"], {"garbage_a": "error", "exit_b": "error"})
    assert rows["garbage_a"].get("fault") == "task", rows["garbage_a"]
    assert "not JSON" in rows["garbage_a"]["reason"], rows["garbage_a"]["reason"]
    assert "fault" not in rows["exit_b"], rows["exit_b"]
    assert "exit status 5" in rows["exit_b"]["reason"], rows["exit_b"]["reason"]
    rows = check_reports(out2, ["c"], {"c": "error"})
    assert rows["c"].get("fault") == "task" and "exec not allowed" in rows["c"]["reason"], rows["c"]
    # a boresight scene that does not load is the task's fault too
    root = os.path.join(fleet.tmp, "bs-scenes")
    os.makedirs(os.path.join(root, "broken"))
    with open(os.path.join(root, "broken", "scene.xml"), "w") as f:
        f.write("<scene version='2.1.0'><shape type='ply'>")
    out3 = os.path.join(fleet.tmp, "bs-out")
    path = os.path.join(fleet.tmp, "bs.yaml")
    with open(path, "w") as f:
        f.write(f"name: bs\nscenes: {root}\noutput: {out3}\ntask: boresight\nmax_attempts: 1\n")
    job3_id = fleet.submit(path)
    fleet.wait_done(job3_id, 60)
    rows = check_reports(out3, ["broken"], {"broken": "error"})
    assert rows["broken"].get("fault") == "task", rows["broken"]


def test_supervisor_refused(fleet: Fleet):
    """Every worker refused (a client key posing as a worker): the supervisor
    stops with a non-zero exit and a one-line reason, not 0."""
    from test_security import fleet_file, keys
    d = keys(fleet, {"broker": "broker", "alice": "client"})
    fleet.broker(["-c", fleet_file(fleet, d, "broker")])
    r = subprocess.run([fleet.bin, "worker", "-c", fleet_file(fleet, d, "alice"), "--gpus", "none",
                        "--cpu", "2"], capture_output=True, text=True, timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0, f"supervisor exited 0:\n{r.stderr[-2000:]}"
    assert lines and "refused" in lines[-1], lines[-3:]


def test_unusable_gpu(fleet: Fleet):
    """A GPU whose probe launch fails (an image for other GPUs, an old driver;
    injected here with BEAMFLEET_FAULT_GPU): with --gpus all the supervisor
    says so in one line and serves with a CPU worker instead of restarting a
    failing GPU worker forever; named with --gpus 0 it stops with exit 2 and
    one line naming the GPU and the reason."""
    fleet.broker()
    env = dict(os.environ, BEAMFLEET_FAULT_GPU="cudaErrorNoKernelImageForDevice (injected)")
    r = subprocess.run([fleet.bin, "worker", "--broker", fleet.endpoint, "--gpus", "0"],
                       capture_output=True, text=True, timeout=60, env=env)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, f"exit {r.returncode}:\n{r.stderr[-2000:]}"
    assert len(lines) == 1 and "--gpus 0: GPU 0" in lines[0] and "is unusable" in lines[0] and \
        "cudaErrorNoKernelImageForDevice (injected)" in lines[0], lines
    fleet._start("worker", ["worker", "--broker", fleet.endpoint, "--allow-exec", "/bin/true"]
                 + fleet.hb, env={"BEAMFLEET_FAULT_GPU": "cudaErrorNoKernelImageForDevice"})
    workers = fleet.wait(lambda: fleet.status()["workers"], 15, "a worker in place of the GPU")
    assert len(workers) == 1 and workers[0]["name"].endswith(":cpu"), workers
    log = fleet.log_of("worker")
    assert log.count("is unusable, no worker for it: a probe launch failed: "
                     "cudaErrorNoKernelImageForDevice") == 1, log[-2000:]
    assert "no usable GPU: running 1 CPU worker" in log, log[-2000:]


def test_comm(fleet: Fleet):
    fleet.broker()
    start_worker(fleet, ["/bin/true"])
    fleet.wait(lambda: len(fleet.status()["workers"]) == 1, 10, "the worker")
    pid = list(worker_pids(fleet).values())[0]
    with open(f"/proc/{pid}/comm") as f:
        comm = f.read().strip()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    assert comm == "beamfleet", f"comm is {comm!r}"
    assert argv[0] == b"beamfleet" and argv[1] == b"worker", argv[:2]
    ps = subprocess.run(["ps", "-o", "comm=,args=", "-p", str(pid)], capture_output=True, text=True)
    assert ps.stdout.startswith("beamfleet") and "beamfleet worker" in ps.stdout, ps.stdout


def test_stuck_teardown(fleet: Fleet):
    """A worker whose teardown blocks after GOODBYE (injected: the step named
    by BEAMFLEET_FAULT_TEARDOWN never returns) still exits, within its
    5 s bound, with status 0 and a line naming the step; the supervisor
    sees the exit and leaves in turn."""
    fleet.broker()
    p = fleet._start("worker", ["worker", "--broker", fleet.endpoint, "--gpus", "none",
                                "--allow-exec", "/bin/true"] + fleet.hb,
                     env={"BEAMFLEET_FAULT_TEARDOWN": "zmq_ctx_term"})
    fleet.wait(lambda: fleet.status()["workers"], 15, "the worker")
    t0 = time.time()
    os.killpg(p.pid, signal.SIGTERM)
    rc = p.wait(timeout=30)
    took = time.time() - t0
    log = fleet.log_of("worker")
    assert rc == 0, f"exit {rc}:\n{log[-2000:]}"
    assert "teardown stuck in zmq_ctx_term; exiting" in log, log[-2000:]
    assert "every worker has exited" in log, log[-2000:]
    assert took < 10, f"the worker took {took:.1f} s to leave"


TESTS = {
    "tree_dies": test_tree_dies,
    "lost_requeue": test_lost_requeue,
    "neighbour_spared": test_neighbour_spared,
    "grandchild_stdout": test_grandchild_stdout,
    "big_result": test_big_result,
    "fake_interpreter": test_fake_interpreter,
    "faults": test_faults,
    "supervisor_refused": test_supervisor_refused,
    "unusable_gpu": test_unusable_gpu,
    "comm": test_comm,
    "stuck_teardown": test_stuck_teardown,
}

if __name__ == "__main__":
    main(TESTS, prefix="hostile-")
