#!/usr/bin/env python3
"""End-to-end test of the broker's Prometheus endpoint: a real
broker started with --metrics on a free loopback port, a real collector and
CPU worker (tests/e2e/fleet.py), exec jobs through the CLI, scrapes with
urllib validated by `promtool check metrics`, and the numbers checked
against what the jobs did: final tasks by status, jobs by state, workers by
state, one dispatch-latency and one duration observation per attempt. A
stand-in GPU worker (pyzmq + msgpack, the codec of docs/protocol.md) sends
STATS so the per-worker GPU gauges and `beamfleet status` can be checked
on a machine without a GPU; a STATS with figures out of range is dropped
and counted.

Exits 77 (skipped) when promtool is missing (Debian: apt-get install
prometheus). Run: BEAMFLEET_BIN=build/beamfleet tests/metrics/test_metrics.py
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from fleet import Fleet, check_reports, free_port, main  # noqa: E402

STATS = 19  # the message code (proto/proto.h)


def scrape(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200, r.status
        ctype = r.headers.get("Content-Type", "")
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        return r.read().decode("utf-8")


def promtool(text):
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, f"promtool check metrics: {r.returncode}\n{r.stdout}{r.stderr}"


def parse(text):
    """{(name, ((label, value), ...)): float} from the exposition text."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        labels = ()
        if "{" in head:
            name, rest = head.split("{", 1)
            body = rest[:-1]
            pairs, i = [], 0
            while i < len(body):
                eq = body.index("=", i)
                key = body[i:eq]
                j, val = eq + 2, ""
                while body[j] != '"':
                    if body[j] == "\\":
                        j += 1
                        val += {"n": "\n"}.get(body[j], body[j])
                    else:
                        val += body[j]
                    j += 1
                pairs.append((key, val))
                i = j + 2 if j + 1 < len(body) and body[j + 1] == "," else j + 1
            labels = tuple(sorted(pairs))
        else:
            name = head
        samples[(name, labels)] = float(value)
    return samples


def get(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def total(samples, name, **labels):
    """Sum over every series of name whose labels include these."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


class FakeGpuWorker:
    """A worker that registers with device_index 0 and sends STATS, over the
    documented codec; it takes no tasks (credit 0). Its own thread owns the
    socket: it heartbeats every 50 ms and sends what stats() queues."""

    def __init__(self, endpoint):
        import msgpack
        import zmq
        self.zmq, self.msgpack = zmq, msgpack
        self.endpoint = endpoint
        self.name = f"fakegpu:{os.getpid()}:gpu0"
        self.queue, self.lock = [], threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        ctx = self.zmq.Context()
        sock = ctx.socket(self.zmq.DEALER)
        sock.setsockopt(self.zmq.ROUTING_ID, os.urandom(8))
        sock.setsockopt(self.zmq.LINGER, 0)
        sock.connect(self.endpoint)
        caps = {"host": "fakegpu", "pid": os.getpid(), "device_index": 0, "name": "Fake GPU",
                "uuid": "GPU-00000000-0000-0000-0000-000000000000", "backend": "cuda",
                "memory_bytes": 80 << 30, "compute_capability": "9.0", "tasks": ["exec"],
                "running": []}
        pack = lambda frame: self.msgpack.packb(frame, use_bin_type=True)  # noqa: E731
        sock.send(pack([1, 1, self.name, 0, caps]))  # READY: worker, credit, obj
        while not self.stop.wait(0.05):
            with self.lock:
                frames, self.queue = self.queue, []
            for f in frames:
                sock.send(pack(f))
            sock.send(pack([1, 5]))  # HEARTBEAT
            while sock.poll(0):
                sock.recv()
        sock.send(pack([1, 6]))  # GOODBYE
        sock.close()
        ctx.term()

    def stats(self, obj):
        with self.lock:
            self.queue.append([1, STATS, obj])

    def close(self):
        self.stop.set()
        self.thread.join(5)


def test_metrics_job(fleet: Fleet):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    fleet.broker(["--metrics", f"127.0.0.1:{port}"])
    fleet.collector()
    fleet.worker(extra=["--name", "mworker"])

    def up():
        try:
            s = parse(scrape(url))
            return get(s, "beamfleet_workers", state="idle") == 1 and \
                get(s, "beamfleet_collectors") == 1 and s
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            return False
    s = fleet.wait(up, 20, "the metrics endpoint with 1 idle worker and the collector")
    for status in ("success", "failed", "error", "cancelled"):
        assert get(s, "beamfleet_tasks_final_total", status=status) == 0
    assert get(s, "beamfleet_tasks_queued") == 0 and get(s, "beamfleet_tasks_running") == 0

    # 4 plain scenes, one that succeeds on its 2nd attempt, one that fails
    # both of its 2 attempts: 5 success + 1 error, 8 attempts in all
    names = ["s00", "s01", "s02", "s03", "flaky_a", "fail_b"]
    job, out = fleet.make_job(names, max_attempts=2)
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    check_reports(out, names, {"fail_b": "error"})

    def settled():
        s = parse(scrape(url))
        return get(s, "beamfleet_jobs", state="done") == 1 and \
            get(s, "beamfleet_workers", state="idle") == 1 and s
    text = None
    s = fleet.wait(settled, 10, "the metrics to show the job done")
    text = scrape(url)
    promtool(text)
    s = parse(text)
    assert get(s, "beamfleet_tasks_final_total", status="success") == 5
    assert get(s, "beamfleet_tasks_final_total", status="error") == 1
    assert get(s, "beamfleet_tasks_final_total", status="failed") == 0
    assert get(s, "beamfleet_tasks_final_total", status="cancelled") == 0
    assert get(s, "beamfleet_jobs", state="running") == 0
    assert get(s, "beamfleet_tasks_queued") == 0 and get(s, "beamfleet_tasks_running") == 0
    host = socket.gethostname()
    attempts = 8
    lat = get(s, "beamfleet_dispatch_latency_seconds_count", host=host, device="cpu")
    dur = get(s, "beamfleet_task_duration_seconds_count", host=host, device="cpu")
    assert lat == attempts, f"dispatch latency: {lat} observations, expected {attempts}"
    assert dur == attempts, f"task duration: {dur} observations, expected {attempts}"
    assert get(s, "beamfleet_dispatch_latency_seconds_bucket", host=host, device="cpu",
               le="+Inf") == attempts
    # every attempt sleeps >= 0.05 s in task.py, and python starts in > 0.01 s
    assert get(s, "beamfleet_task_duration_seconds_sum", host=host, device="cpu") > 0.05 * attempts
    assert get(s, "beamfleet_messages_received_total") > attempts
    assert get(s, "beamfleet_store_commits_total") >= attempts
    assert get(s, "beamfleet_messages_dropped_total") == 0
    assert get(s, "beamfleet_broker_uptime_seconds") > 0

    # a cancelled job: two hanging tasks, cancelled while one runs
    job2, _ = fleet.make_job(["hang_a", "hang_b"], name="job2", timeout_s=60)
    job2_id = fleet.submit(job2)
    fleet.wait(lambda: get(parse(scrape(url)), "beamfleet_tasks_running") == 1, 15,
               "a hanging task to run")
    fleet.cli("cancel", job2_id, "--broker", fleet.endpoint)
    s = fleet.wait(lambda: (lambda s: get(s, "beamfleet_jobs", state="cancelled") == 1 and s)(
        parse(scrape(url))), 10, "the cancelled job in the metrics")
    assert get(s, "beamfleet_tasks_final_total", status="cancelled") == 2
    assert get(s, "beamfleet_tasks_final_total", status="success") == 5

    # GPU figures from a stand-in GPU worker: gauges, status, status --json
    fake = FakeGpuWorker(fleet.endpoint)
    try:
        fake.stats({"gpu_util": 87.0, "mem_used": 3 << 30, "mem_total": 80 << 30,
                    "temperature_c": 64.0})
        labels = {"worker": fake.name, "host": "fakegpu", "device": "gpu0"}

        def gauges():
            s = parse(scrape(url))
            return ("beamfleet_worker_gpu_utilization_percent", tuple(sorted(labels.items()))) \
                in s and s
        s = fleet.wait(gauges, 10, "the stand-in worker's GPU gauges")
        assert get(s, "beamfleet_worker_gpu_utilization_percent", **labels) == 87
        assert get(s, "beamfleet_worker_gpu_memory_used_bytes", **labels) == 3 << 30
        assert get(s, "beamfleet_worker_gpu_memory_total_bytes", **labels) == 80 << 30
        assert get(s, "beamfleet_worker_gpu_temperature_celsius", **labels) == 64
        assert total(s, "beamfleet_worker_gpu_utilization_percent") == 87  # not the CPU worker
        promtool(scrape(url))
        st = fleet.status()
        gw = [w for w in st["workers"] if w["name"] == fake.name]
        assert gw and gw[0]["gpu"] == {"gpu_util": 87.0, "mem_used": float(3 << 30),
                                       "mem_total": float(80 << 30), "temperature_c": 64.0}, gw
        assert all("gpu" not in w for w in st["workers"] if w["name"] != fake.name), st["workers"]
        text = fleet.cli("status", "--broker", fleet.endpoint).stdout
        assert "gpu  87% busy, memory 3.0 / 80.0 GiB, 64 C" in text, text
        # out of range: dropped and counted, the last good figures stay
        fake.stats({"gpu_util": 500.0, "mem_used": 1, "mem_total": 2, "temperature_c": 50.0})
        fake.stats({"gpu_util": "hot"})
        s = fleet.wait(lambda: (lambda s: get(s, "beamfleet_messages_dropped_total") == 2 and s)(
            parse(scrape(url))), 10, "2 dropped STATS")
        assert get(s, "beamfleet_worker_gpu_utilization_percent", **labels) == 87
    finally:
        fake.close()

    # a restart on the same state: the counters come back from the store
    broker = [p for p in fleet.procs if p.what == "broker"][0]
    fleet.kill(broker, signal.SIGTERM)
    broker.wait(timeout=15)
    fleet.broker(["--metrics", f"127.0.0.1:{port}"])

    def restarted():
        try:
            s = parse(scrape(url))
            return get(s, "beamfleet_broker_uptime_seconds") < 30 and \
                get(s, "beamfleet_collectors") == 1 and s
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            return False
    s = fleet.wait(restarted, 20, "the restarted broker's metrics")
    promtool(scrape(url))
    assert get(s, "beamfleet_tasks_final_total", status="success") == 5
    assert get(s, "beamfleet_tasks_final_total", status="error") == 1
    assert get(s, "beamfleet_tasks_final_total", status="cancelled") == 2
    assert get(s, "beamfleet_jobs", state="done") == 1
    assert get(s, "beamfleet_jobs", state="cancelled") == 1
    assert get(s, "beamfleet_jobs", state="running") == 0
    assert get(s, "beamfleet_tasks_running") == 0 and get(s, "beamfleet_tasks_queued") == 0

    # only GET /metrics
    for path, code in (("/", 404), ("/metrics/x", 404)):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5)
            raise AssertionError(f"{path} answered 200")
        except urllib.error.HTTPError as e:
            assert e.code == code, (path, e.code)
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=5)
        raise AssertionError("POST answered 200")
    except urllib.error.HTTPError as e:
        assert e.code == 405 and "GET" in e.headers.get("Allow", ""), (e.code, e.headers)


def test_metrics_quarantine(fleet: Fleet):
    """A sick worker fails 3 tasks and is quarantined: the workers gauge says
    so, and every attempt (8 first, 3 requeued) is one dispatch and one
    duration observation, under the device that ran it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    names = [f"slow_{i:02d}" for i in range(8)]
    job, out = fleet.make_job(names, max_attempts=3)
    fleet.broker(["--metrics", f"127.0.0.1:{port}"])
    fleet.collector()
    fleet.worker(["--name", "sick"], env={"TASK_SICK": "1"})
    fleet.worker(["--name", "healthy"])
    fleet.wait(lambda: len(fleet.status()["workers"]) == 2, 10, "2 workers")
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    check_reports(out, names)
    s = fleet.wait(lambda: (lambda s: get(s, "beamfleet_jobs", state="done") == 1 and s)(
        parse(scrape(url))), 10, "the job done in the metrics")
    promtool(scrape(url))
    assert get(s, "beamfleet_workers", state="quarantined") == 1
    assert get(s, "beamfleet_workers", state="idle") == 1
    assert get(s, "beamfleet_workers", state="busy") == 0
    assert get(s, "beamfleet_tasks_final_total", status="success") == 8
    assert get(s, "beamfleet_tasks_final_total", status="error") == 0
    # both workers are on this host's CPU: one label set, 8 + 3 attempts
    host = socket.gethostname()
    assert get(s, "beamfleet_dispatch_latency_seconds_count", host=host, device="cpu") == 11
    assert get(s, "beamfleet_task_duration_seconds_count", host=host, device="cpu") == 11
    # 8 successful attempts sleep 1.5 s each
    assert get(s, "beamfleet_task_duration_seconds_sum", host=host, device="cpu") > 8 * 1.5


def test_metrics_flag(fleet: Fleet):
    """A bad --metrics is a one-line usage error naming the flag; no
    --metrics means no HTTP server."""
    r = subprocess.run([fleet.bin, "broker", "--bind", fleet.endpoint, "--state", fleet.state,
                        "--metrics", "127.0.0.1"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr.strip()
    assert err == "beamfleet broker: --metrics (metrics.listen) '127.0.0.1': expected HOST:PORT", err
    port = free_port()
    fleet.broker()
    fleet.wait(lambda: fleet.status(), 10, "the broker")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
        raise AssertionError("something answered on the metrics port")
    except urllib.error.URLError:
        pass


TESTS = {"metrics_job": test_metrics_job, "metrics_quarantine": test_metrics_quarantine,
         "metrics_flag": test_metrics_flag}

if __name__ == "__main__":
    if not shutil.which("promtool"):
        print("promtool not found (Debian: apt-get install prometheus): skipped")
        sys.exit(77)
    main(TESTS)
