#!/usr/bin/env python3
"""Hostile-tenant and unlucky-operator tests of the command line (DESIGN
section 4, "Isolation"): `beamfleet run` killed with SIGKILL takes its whole
fleet with it, task trees and temporary folder included; a client pointed at
something that is not a broker, or at a CURVE fleet without keys, says so in
one line instead of hanging or blaming the keys; a job too large for one
message says what is too big.

Run one: tests/hostile/test_cli.py run_sigkill   (BEAMFLEET_BIN=build/beamfleet)
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from fleet import Fleet, main  # noqa: E402
import test_security  # noqa: E402


def live_pids_with(marker):
    """Pids of the live (not zombie) processes whose command line holds marker."""
    found = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(os.path.join(d, "cmdline"), "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
            with open(os.path.join(d, "stat")) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmd and state not in ("Z", "X"):
            found.append(int(os.path.basename(d)))
    return found


def test_run_sigkill(fleet: Fleet):
    """SIGKILL `run` mid-job: its broker, collector, workers and every task
    process (a background child included) are gone within seconds, and so is
    its temporary folder; a second `run` of the same job then writes one
    final report."""
    marker = f"bf-hostile-{os.getpid()}-{time.time_ns()}"
    root = os.path.join(fleet.tmp, "scenes")
    for i in range(3):
        os.makedirs(os.path.join(root, f"s{i}"))
    out = os.path.join(fleet.tmp, "out")
    job = os.path.join(fleet.tmp, "job.yaml")
    with open(job, "w") as f:
        f.write(f"name: sleepy\nscenes: {root}\noutput: {out}\ntask: exec\ntimeout_s: 120\n"
                f"exec: {{command: [/bin/sh, -c, \"sleep 60 & sleep 61; : {marker}\"]}}\n")
    runs = os.path.join(fleet.tmp, "tmp")  # its own TMPDIR: other tests run beside it
    os.makedirs(runs)
    run = subprocess.Popen([fleet.bin, "run", job, "--workers", "2"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True,
                           env=dict(os.environ, TMPDIR=runs))
    try:
        fleet.wait(lambda: len(live_pids_with(marker)) >= 2, 30, "two running tasks")
        tmps = set(glob.glob(os.path.join(runs, "beamfleet-run-*")))
        assert len(tmps) == 1, f"expected one new run folder, got {tmps}"
        tmp = tmps.pop()
        run.send_signal(signal.SIGKILL)
        run.wait()
        t0 = time.time()
        fleet.wait(lambda: not live_pids_with(tmp) and not live_pids_with(marker), 10,
                   "the fleet of the killed `run` to go")
        print(f"run_sigkill: fleet and tasks gone {time.time() - t0:.2f} s after SIGKILL")
        fleet.wait(lambda: not os.path.exists(tmp), 10, f"{tmp} to be removed")
    finally:
        if run.poll() is None:
            run.kill()
    # Again, to the end: exactly one final report (nothing of the first run
    # finishes behind our back).
    with open(job, "w") as f:
        f.write(f"name: sleepy\nscenes: {root}\noutput: {out}\ntask: exec\ntimeout_s: 120\n"
                f"exec: {{command: [/bin/sh, -c, \"echo '{{\\\"status\\\":\\\"success\\\"}}'\"]}}\n")
    r = subprocess.run([fleet.bin, "run", job, "--workers", "2"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    time.sleep(1)
    finals = glob.glob(os.path.join(out, "results_final_*.json"))
    assert len(finals) == 1, f"expected one final report, found {finals}"


def banner_server(port, stop):
    """A TCP server that is not a broker: greets like an SSH server."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(8)
    s.settimeout(0.2)
    while not stop.is_set():
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        try:
            c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            time.sleep(0.5)
        finally:
            c.close()
    s.close()


def test_not_a_broker(fleet: Fleet):
    """`submit` to a port where something else listens says that nothing
    answered as a broker, not that the keys are wrong."""
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    stop = threading.Event()
    t = threading.Thread(target=banner_server, args=(number, stop), daemon=True)
    t.start()
    try:
        job, _ = fleet.make_job(["a"])
        t0 = time.time()
        r = fleet.cli("submit", job, "--broker", f"tcp://127.0.0.1:{number}", check=False,
                      timeout=60)
        text = r.stdout + r.stderr
        assert r.returncode == 1, text
        assert "answered as a Beamfleet peer: it does not speak ZeroMQ" in text, text
        assert "CURVE and the other does not" not in text, text
        assert len(text.strip().splitlines()) == 1, f"expected one line:\n{text}"
        assert time.time() - t0 < 20, "the client waited for its timeout"
    finally:
        stop.set()
        t.join()


def test_submit_too_big(fleet: Fleet):
    """A job whose document is over the message limit (32 MiB) is refused by
    the client with what is too big and the limit, not 'Resource temporarily
    unavailable'."""
    fleet.broker()
    # 140,000 scenes with 250-byte names: about 34 MiB of names. Empty
    # folders, in memory where there is a tmpfs for them.
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else fleet.tmp
    root = tempfile.mkdtemp(prefix="bf-big-scenes-", dir=base)
    try:
        for i in range(140000):
            os.mkdir(os.path.join(root, f"{i:06d}-" + "x" * 243))
        job = os.path.join(fleet.tmp, "big.yaml")
        with open(job, "w") as f:
            f.write(f"name: big\nscenes: {root}\noutput: {fleet.tmp}/big-out\ntask: exec\n"
                    f"exec: {{command: [/bin/true]}}\n")
        r = fleet.cli("submit", job, "--broker", fleet.endpoint, check=False, timeout=300)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = r.stdout + r.stderr
    assert r.returncode != 0, text
    assert "does not fit in one message (32 MiB at most)" in text and "140000 scenes" in text, text
    assert "Resource temporarily unavailable" not in text, text


def test_watch_without_keys(fleet: Fleet):
    """`watch` without keys against a CURVE collector fails at once with the
    same words as `submit`, instead of waiting silently for ever."""
    test_security.secure_fleet(fleet, workers=0)
    t0 = time.time()
    r = subprocess.run([fleet.bin, "watch", "--publish", fleet.publish], capture_output=True,
                       text=True, timeout=30)
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert "uses CURVE and this process has no keys" in text, text
    assert len(text.strip().splitlines()) == 1, f"expected one line:\n{text}"
    print(f"watch_without_keys: refused after {time.time() - t0:.2f} s")


if __name__ == "__main__":
    main({"run_sigkill": test_run_sigkill, "not_a_broker": test_not_a_broker,
          "submit_too_big": test_submit_too_big, "watch_without_keys": test_watch_without_keys},
         prefix="hostile-cli-")
