#!/usr/bin/env python3
"""Disk trouble at the collector: its output directory full, or
read-only. The collector must say so in one clear line, leave no corrupt
file, leave the results queued at the broker (unacknowledged), and resume
on its own when the directory is writable again, with every result exactly
once.

The output directory is a small tmpfs mounted by the test (root needed;
exit 77 where mounting is not permitted).

Run one: tests/e2e/test_disk.py full   (BEAMFLEET_BIN=build/beamfleet)
"""
import glob
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleet import Fleet, Skip, check_reports, main  # noqa: E402


def mount_tmpfs(fleet, size="512k"):
    mnt = os.path.join(fleet.tmp, "disk")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", mnt],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise Skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    fleet.on_cleanup = lambda: subprocess.run(["umount", "-l", mnt], capture_output=True)
    return mnt


def fill(path):
    """Writes a file until the filesystem is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def collector_log(fleet):
    return "".join(open(os.path.join(fleet.logs, f)).read() for f in sorted(os.listdir(fleet.logs))
                   if f.endswith("collector.log"))


def check_not_corrupt(out):
    """Whatever the collector left in out parses (results.jsonl may end in a
    torn line, which readers skip by contract; no other file may be torn)."""
    for path in glob.glob(os.path.join(out, "*.json")):
        json.load(open(path))
    jl = os.path.join(out, "results.jsonl")
    if os.path.exists(jl):
        lines = open(jl).read().split("\n")
        for line in lines[:-1]:
            json.loads(line)
    assert not glob.glob(os.path.join(out, "*.tmp.*")), "a temp file was left behind"


def stuck(fleet, job_id, log_needle):
    """Every task final at the broker, results held in its outbox, the
    collector saying why."""
    def held():
        st = fleet.status()
        j = [j for j in st["jobs"] if j["id"] == job_id][0]
        return j["state"] == "done" and st["collector"]["outbox"] > 0 and \
            log_needle in collector_log(fleet) and st
    return fleet.wait(held, 30, f"the results to be held at the broker ({log_needle})")


def run_case(fleet, break_disk, mend_disk, needle):
    mnt = mount_tmpfs(fleet)
    names = [f"s{i:02d}" for i in range(10)]
    job, _ = fleet.make_job(names)
    out = os.path.join(mnt, "job")
    with open(job) as f:
        text = f.read()
    with open(job, "w") as f:
        f.write("\n".join(f"output: {out}" if line.startswith("output:") else line
                          for line in text.split("\n")))
    fleet.broker()
    fleet.collector()
    fleet.worker()
    break_disk(mnt)
    job_id = fleet.submit(job)
    st = stuck(fleet, job_id, needle)
    lines = [line for line in collector_log(fleet).splitlines() if needle in line]
    assert out in lines[0] or mnt in lines[0], f"the error does not name the directory: {lines[0]}"
    print(f"held at the broker: {st['collector']['outbox']} results; collector said: {lines[0]}")
    check_not_corrupt(out) if os.path.isdir(out) else None
    mend_disk(mnt)
    fleet.wait_done(job_id, 30)
    check_reports(out, names)
    check_not_corrupt(out)


def test_full(fleet: Fleet):
    def break_disk(mnt):
        fill(os.path.join(mnt, "filler"))

    def mend_disk(mnt):
        os.unlink(os.path.join(mnt, "filler"))
    run_case(fleet, break_disk, mend_disk, "No space left on device")


def test_read_only(fleet: Fleet):
    def remount(mnt, mode):
        subprocess.run(["mount", "-o", f"remount,{mode}", mnt], check=True)
    run_case(fleet, lambda m: remount(m, "ro"), lambda m: remount(m, "rw"),
             "Read-only file system")


TESTS = {"full": test_full, "read_only": test_read_only}

if __name__ == "__main__":
    main(TESTS)
