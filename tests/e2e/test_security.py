#!/usr/bin/env python3
"""End-to-end tests of CURVE security with roles (DESIGN section 5): real
keys from `beamfleet keygen`, a real broker with its ZAP handler, real
workers, collector and clients over loopback TCP.

Run one: tests/e2e/test_security.py secure_job   (BEAMFLEET_BIN=build/beamfleet)
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleet import Fleet, check_reports, free_port, main  # noqa: E402

IDENTITIES = {"broker": "broker", "gpu0": "worker", "collector": "collector",
              "alice": "client", "ops": "admin"}


def keys(fleet, names=IDENTITIES, where="keys"):
    d = os.path.join(fleet.tmp, where)
    for name, role in names.items():
        fleet.cli("keygen", "--out", d, name, "--role", role)
    return d


def fleet_file(fleet, keys_dir, identity, bind=None):
    path = os.path.join(fleet.tmp, f"fleet-{identity}.yaml")
    with open(path, "w") as f:
        f.write(f"broker: {{endpoint: \"{fleet.endpoint}\", bind: \"{bind or fleet.endpoint}\", "
                f"state: {fleet.state}}}\n"
                f"heartbeat: {{interval_ms: {fleet.heartbeat_ms}, liveness: {fleet.liveness}}}\n"
                f"collector: {{publish: \"{fleet.publish}\"}}\n"
                f"security: {{keys: {keys_dir}, identity: {identity}}}\n")
    return path


def secure_fleet(fleet, workers=1):
    d = keys(fleet)
    conf = {name: fleet_file(fleet, d, name) for name in IDENTITIES}
    fleet.broker(["-c", conf["broker"]])
    fleet.collector(["-c", conf["collector"]])
    for _ in range(workers):
        fleet.worker(["-c", conf["gpu0"]])
    return d, conf


def status_as(fleet, conf, timeout=20):
    r = fleet.cli("status", "-c", conf, "--json", timeout=timeout)
    return json.loads(r.stdout)


def refused(r, *words):
    text = r.stdout + r.stderr
    assert r.returncode != 0, f"expected a refusal, got exit 0:\n{text}"
    for w in words:
        assert w in text, f"expected '{w}' in:\n{text}"


def test_secure_job(fleet: Fleet):
    """A whole job over CURVE: worker, collector and client each with their
    own key; the result stream is encrypted too and `watch` reads it."""
    d, conf = secure_fleet(fleet, workers=2)
    names = [f"s{i:02d}" for i in range(8)]
    job, out = fleet.make_job(names)
    fleet.wait(lambda: len(status_as(fleet, conf["alice"])["workers"]) == 2, 15, "2 CURVE workers")
    watch = subprocess.Popen([fleet.bin, "watch", "-c", conf["alice"], "--count", str(len(names) + 1)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fleet.wait_subscribed()  # the subscription must be in place before the first result
    r = fleet.cli("submit", "-c", conf["alice"], job)
    job_id = r.stdout.strip().splitlines()[-1]

    def done():
        st = status_as(fleet, conf["ops"])
        j = [j for j in st["jobs"] if j["id"] == job_id]
        return j and j[0]["state"] == "done" and st["collector"]["outbox"] == 0 and \
            os.path.exists(os.path.join(out, "summary.json"))
    fleet.wait(done, 60, "the CURVE job")
    check_reports(out, names)
    stdout, stderr = watch.communicate(timeout=30)
    events = [json.loads(line) for line in stdout.splitlines()]
    assert [e["event"] for e in events].count("result") == len(names), stdout + stderr
    assert events[-1]["event"] == "job-done" and events[-1]["job"]["id"] == job_id, events[-1]
    assert sorted(e["result"]["scene"] for e in events if e["event"] == "result") == names
    # Nothing on the wire in clear: the broker port speaks only CURVE.
    r = fleet.cli("status", "--broker", fleet.endpoint, timeout=20, check=False)
    refused(r, "handshake failed")


def test_roles(fleet: Fleet):
    """A worker key cannot submit or cancel; a collector key cannot submit;
    a client can; an admin can cancel."""
    d, conf = secure_fleet(fleet, workers=0)
    job, out = fleet.make_job(["a", "b", "c"])
    for who in ("gpu0", "collector"):
        r = fleet.cli("submit", "-c", conf[who], job, check=False)
        refused(r, f"key '{who}'", "may not send submit")
    assert status_as(fleet, conf["ops"])["jobs"] == [], "a refused submit created a job"
    r = fleet.cli("submit", "-c", conf["alice"], job)
    job_id = r.stdout.strip().splitlines()[-1]
    r = fleet.cli("cancel", "-c", conf["gpu0"], job_id, check=False)
    refused(r, "key 'gpu0' (role worker) may not send cancel")
    st = status_as(fleet, conf["gpu0"])  # status is open to every role
    assert st["jobs"][0]["state"] == "running", st["jobs"]
    fleet.cli("cancel", "-c", conf["ops"], job_id)
    fleet.wait(lambda: status_as(fleet, conf["alice"])["jobs"][0]["state"] == "cancelled", 10,
               "the admin's cancel")
    # A client key cannot pose as a worker: it is refused, stops, and the
    # supervisor does not restart it.
    fleet.worker(["-c", conf["alice"], "--name", "impostor"])

    log_of = fleet.log_of
    fleet.wait(lambda: "not restarting" in log_of("worker"), 20, "the impostor to be refused")
    assert "may not send ready; stopping" in log_of("worker"), log_of("worker")
    assert "refused ready from key 'alice'" in log_of("broker"), "the broker logged no refusal"
    assert status_as(fleet, conf["ops"])["workers"] == [], "a client key registered as a worker"


def test_unlisted_key(fleet: Fleet):
    """A key that is not in the broker's directory is refused at the
    handshake, and so is a plaintext peer; a key added later is admitted
    without a restart."""
    d, conf = secure_fleet(fleet, workers=0)
    rogue_dir = keys(fleet, {"mallory": "admin"}, where="rogue")
    os.link(os.path.join(d, "broker.public"), os.path.join(rogue_dir, "broker.public"))
    rogue = fleet_file(fleet, rogue_dir, "mallory")
    r = fleet.cli("status", "-c", rogue, timeout=20, check=False)
    refused(r, "refused this CURVE key")
    r = fleet.cli("submit", "-c", rogue, fleet.make_job(["a"])[0], timeout=20, check=False)
    refused(r, "refused this CURVE key")
    r = fleet.cli("status", "--broker", fleet.endpoint, timeout=20, check=False)
    refused(r, "handshake failed")
    # A plaintext worker gets nowhere: it never shows up.
    fleet.worker()
    fleet.wait(lambda: "handshake failed" in fleet.log_of("worker"), 15,
               "the plaintext worker's handshake to fail")
    assert status_as(fleet, conf["ops"])["workers"] == []
    # The same rogue key copied into the trusted directory is admitted.
    fleet.cli("keygen", "--out", d, "late", "--role", "client")
    late = fleet_file(fleet, d, "late")
    assert status_as(fleet, late)["jobs"] == []
    logs = "".join(open(os.path.join(fleet.logs, f)).read() for f in os.listdir(fleet.logs)
                   if f.endswith("broker.log"))
    assert "refused a connection" in logs, logs[-2000:]


def test_bind(fleet: Fleet):
    """A non-loopback bind needs CURVE or an explicit insecure."""
    port = free_port()
    r = fleet.cli("broker", "--bind", f"tcp://0.0.0.0:{port}", "--state", fleet.state, check=False,
                  timeout=20)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "not a loopback address" in r.stderr and "--insecure" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    d = keys(fleet)
    conf = fleet_file(fleet, d, "broker", bind=f"tcp://0.0.0.0:{port}")
    fleet.broker(["-c", conf, "--bind", f"tcp://0.0.0.0:{port}"])
    fleet.endpoint = f"tcp://127.0.0.1:{port}"
    client = fleet_file(fleet, d, "alice")
    fleet.wait(lambda: status_as(fleet, client)["jobs"] == [], 10, "the CURVE broker on 0.0.0.0")
    # A secret key readable by others is refused with a clear message.
    os.chmod(os.path.join(d, "alice.secret"), 0o644)
    r = fleet.cli("status", "-c", client, check=False)
    assert r.returncode == 2 and "alice.secret" in r.stderr and "chmod 600" in r.stderr, r.stderr


def test_exec_not_allowed(fleet: Fleet):
    """A worker runs an exec task only for a program it was allowed."""
    fleet.broker()
    fleet.collector()
    fleet._start("worker", ["worker", "--broker", fleet.endpoint, "--gpus", "none", "--cpu", "1",
                            "--allow-exec", "/bin/true"] + fleet.hb)
    job, out = fleet.make_job(["a", "b"], max_attempts=1)
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 60)
    rows = check_reports(out, ["a", "b"], {"a": "error", "b": "error"})
    for r in rows.values():
        assert "exec not allowed" in r["reason"] and "task.py" in r["reason"], r["reason"]


def test_run_local(fleet: Fleet):
    """`run` keeps its own fleet on this host plaintext over ipc://, even with
    a fleet file that turns security on for the real fleet."""
    d = keys(fleet)
    conf = fleet_file(fleet, d, "alice")
    names = ["a", "b", "c"]
    job, out = fleet.make_job(names)
    r = fleet.cli("run", job, "-c", conf, "--workers", "1", timeout=120)
    assert "Successful:     3/3" in r.stdout, r.stdout
    check_reports(out, names)


TESTS = {
    "secure_job": test_secure_job,
    "roles": test_roles,
    "unlisted_key": test_unlisted_key,
    "bind": test_bind,
    "exec_not_allowed": test_exec_not_allowed,
    "run_local": test_run_local,
}

if __name__ == "__main__":
    main(TESTS)
