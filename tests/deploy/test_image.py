#!/usr/bin/env python3
"""tests/deploy/test_image.py - deploy/Dockerfile, built and run for real with podman.

  1. the Debian base: deploy/debian-base.sh debootstraps the host's suite from
     the host's apt mirror (no registry is reachable here) and caches it under
     BUILD/deploy-image (a day's base is made once; podman keeps its image);
  2. the image: `podman build` of deploy/Dockerfile, both stages on that base,
     CPU-only (BF_CUDA=OFF: no GPU and no CUDA base image here), -j2;
  3. the image itself: it runs `version` (a cpu backend, no cuda), ldd finds
     every library, no compiler or -dev package came along, it runs as the
     beamfleet user (uid 10001), and it is small (under MAX_IMAGE_MB);
  4. a fleet from the image: broker, collector and a CPU worker, each its own
     container on the host network, a boresight job over procedural scenes
     (`beamfleet scenegen`, run from the image too) submitted from a fourth
     container; every scene exactly once, with status success, in the reports
     the collector wrote (tests/e2e/fleet.py check_reports), each result
     solved by the CPU engine, the files written by the image's user; the
     broker's /metrics (libmicrohttpd, which the binary loads with dlopen, so
     ldd does not vouch for it) answers with the job's final tasks;
  5. SIGTERM (podman stop) ends each container cleanly through tini (exit 0).
Base, build and job times and the image's size are printed.

The podman of Debian 12 on a machine that forbids raising rlimits (no
CAP_SYS_RESOURCE) or whose cgroups crun will not use needs runc and ulimits
within the caller's: the first of a few option sets that starts a container
is used for every podman command. It skips (77) only where no container can
start at all: not root (debootstrap and the rootful podman used here need
it), podman not installable, or every option set refused.
"""
import fcntl
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
import fleet  # noqa: E402  (check_reports, free_port)

BUILD = os.path.abspath(os.environ.get("BF_BUILD_DIR") or os.path.join(REPO, "build"))
CACHE = os.path.join(BUILD, "deploy-image")
IMAGE = "localhost/beamfleet:test"
JOBS = os.environ.get("BF_IMAGE_JOBS", "2")
MAX_IMAGE_MB = 150   # a minbase Debian is ~80 MB; a compiler would add hundreds
IMAGE_UID = 10001
SCENES = 4
DEBS = ["podman", "runc", "debootstrap"]


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(77)


def fail(why):
    print(f"FAIL: {why}", file=sys.stderr)
    sys.exit(1)


def sh(cmd, timeout=600, check=True, log=None):
    """Runs cmd (a list); returns its CompletedProcess (text). With log, the
    output goes to that file and the last lines are shown on failure."""
    if log:
        with open(log, "w") as f:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               timeout=timeout, text=True)
        if check and r.returncode != 0:
            with open(log, errors="replace") as f:
                tail = "\n".join(f.read().splitlines()[-40:])
            fail(f"{' '.join(cmd)} exited {r.returncode} (log {log}):\n{tail}")
        return r
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if check and r.returncode != 0:
        fail(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def install():
    """podman, runc and debootstrap, through the project's one installer, one
    deployment test at a time (they share its policy-rc.d; tests/deploy/lib.sh)."""
    if all(shutil.which(p) for p in ("podman", "runc", "debootstrap")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        skip("podman, runc or debootstrap is missing and cannot be installed (needs root and apt)")
    with open(os.path.join(tempfile.gettempdir(), "beamfleet-deploy-apt.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run([os.path.join(REPO, "deploy", "install-deps.sh")] + DEBS,
                           stdin=subprocess.DEVNULL, timeout=1200)
    if r.returncode != 0 or not all(shutil.which(p) for p in ("podman", "runc", "debootstrap")):
        fail(f"deploy/install-deps.sh {' '.join(DEBS)} did not install them (exit {r.returncode})")


def option_sets():
    """(global options, per-container options) to try, plainest first. The
    ulimits are the caller's hard limits (podman's default of 1048576 open
    files needs CAP_SYS_RESOURCE); nproc is capped at 32768, what podman
    lowers its own to."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    ulimits = ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]
    return [([], []), ([], ulimits), (["--runtime", "runc"], []), (["--runtime", "runc"], ulimits)]


def probe(base):
    """The first option set with which `podman run` starts the base image."""
    errors = []
    for glob_opts, ctr_opts in option_sets():
        r = sh(["podman"] + glob_opts + ["run", "--rm", "--network", "host"] + ctr_opts
               + [base, "true"], timeout=120, check=False)
        if r.returncode == 0:
            return glob_opts, ctr_opts
        errors.append(f"  podman {' '.join(glob_opts + ctr_opts)}: "
                      f"{(r.stderr.strip().splitlines() or ['exit %d' % r.returncode])[-1]}")
    print("podman cannot start a container here:\n" + "\n".join(errors))
    skip("podman cannot start a container on this machine (every option set refused, above)")


class Pod:
    """The containers of one fleet, on the host network, sharing WORK at the
    same path, removed at the end."""

    def __init__(self, podman, ctr_opts, work):
        self.podman, self.ctr_opts, self.work = podman, ctr_opts, work
        self.prefix = f"bf-image-{os.getpid()}"
        self.names = []

    def run_args(self):
        return ["--network", "host", "-v", f"{self.work}:{self.work}"] + self.ctr_opts

    def start(self, role, args):
        name = f"{self.prefix}-{role}"
        sh(self.podman + ["run", "-d", "--name", name] + self.run_args() + [IMAGE] + args)
        self.names.append(name)
        return name

    def once(self, args, timeout=120):
        """beamfleet ARGS in a container of its own; the CompletedProcess."""
        return sh(self.podman + ["run", "--rm"] + self.run_args() + [IMAGE] + args,
                  timeout=timeout, check=False)

    def running(self, name):
        r = sh(self.podman + ["inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", name],
               check=False)
        return r.stdout.strip()

    def logs(self):
        for n in self.names:
            r = sh(self.podman + ["logs", n], check=False)
            text = (r.stdout + r.stderr).splitlines()
            print(f"----- {n} (last 40 lines) -----")
            print("\n".join(text[-40:]))

    def remove(self):
        for n in reversed(self.names):
            sh(self.podman + ["rm", "-f", "-t", "2", n], check=False)


def check_image(podman, ctr_opts):
    """What the image promises: the binary runs, every library is there,
    nothing of the build stage came along, the user, the size."""
    run = podman + ["run", "--rm", "--network", "host"] + ctr_opts
    v = sh(run + [IMAGE, "version"]).stdout
    if "backends: cpu" not in v or "cuda" in v.split("backends:")[1].splitlines()[0]:
        fail(f"image's `beamfleet version` is not a CPU-only build:\n{v}")
    ldd = sh(run + ["--entrypoint", "ldd", IMAGE, "/usr/local/bin/beamfleet"]).stdout
    if "not found" in ldd:
        fail(f"the image lacks libraries of the binary:\n{ldd}")
    tools = sh(run + ["--entrypoint", "/bin/sh", IMAGE, "-c",
                      "for t in cc gcc g++ cmake make pkg-config; do command -v $t; done; "
                      "dpkg-query -W -f '${Package}\\n' | grep -E -- '-dev$|^build-essential$' || true"],
               ).stdout.split()
    if tools:
        fail(f"the image has build tools or -dev packages: {tools}")
    uid = sh(run + ["--entrypoint", "id", IMAGE, "-u"]).stdout.strip()
    if uid != str(IMAGE_UID):
        fail(f"the image runs as uid {uid}, not {IMAGE_UID}")
    info = json.loads(sh(podman + ["image", "inspect", IMAGE]).stdout)[0]
    entry = info["Config"].get("Entrypoint") or []
    if entry[:2] != ["/usr/bin/tini", "--"]:
        fail(f"the entrypoint is {entry}, not tini")
    size_mb = info["Size"] / 1e6
    if size_mb > MAX_IMAGE_MB:
        fail(f"the image is {size_mb:.0f} MB, over {MAX_IMAGE_MB} MB: the runtime stage took too much")
    return size_mb


def run_fleet(podman, ctr_opts):
    """Broker, collector and a CPU worker from the image run a boresight job;
    returns the job's seconds from submission to its reports."""
    work = tempfile.mkdtemp(prefix="bf-image-")
    os.chmod(work, 0o777)  # the containers run as uid 10001
    pod = Pod(podman, ctr_opts, work)
    ok = False
    try:
        ep = f"tcp://127.0.0.1:{fleet.free_port()}"
        pub = f"tcp://127.0.0.1:{fleet.free_port()}"
        hb = ["--heartbeat-ms", "200", "--liveness", "5"]
        scenes = os.path.join(work, "scenes")
        r = pod.once(["scenegen", "--out", scenes, "--count", str(SCENES), "--seed", "7"])
        if r.returncode != 0:
            fail(f"scenegen in the image exited {r.returncode}: {r.stderr}")
        names = sorted(os.listdir(scenes))
        if len(names) != SCENES:
            fail(f"scenegen wrote {names}, not {SCENES} scenes")
        out = os.path.join(work, "out")
        job = os.path.join(work, "job.yaml")
        with open(job, "w") as f:
            f.write(f"name: image\nscenes: {scenes}\noutput: {out}\ntask: boresight\n"
                    "solver: {samples_per_tx: 100000}\n"
                    "validation: {p10_min_dbm: -400, p10_max_dbm: 0, p90_min_dbm: -400, "
                    "min_percentile_range_db: 0}\n")
        os.chmod(job, 0o644)

        metrics = f"127.0.0.1:{fleet.free_port()}"
        broker = pod.start("broker", ["broker", "--bind", ep, "--state", os.path.join(work, "state"),
                                      "--metrics", metrics] + hb)
        pod.start("collector", ["collector", "--broker", ep, "--publish", pub] + hb)
        pod.start("worker", ["worker", "--broker", ep, "--gpus", "none", "--cpu", "1"] + hb)

        def status():
            r = sh(podman + ["exec", broker, "beamfleet", "status", "--broker", ep, "--json"],
                   timeout=30, check=False)
            return json.loads(r.stdout) if r.returncode == 0 else None

        def wait(pred, secs, what):
            deadline = time.time() + secs
            while time.time() < deadline:
                for n in pod.names:
                    if not pod.running(n).startswith("true"):
                        fail(f"container {n} stopped ({pod.running(n)}) while waiting for {what}")
                s = status()
                if s and pred(s):
                    return s
                time.sleep(0.5)
            fail(f"timed out after {secs} s waiting for {what} (status: {status()})")

        wait(lambda s: len(s["workers"]) == 1 and s["collector"]["connected"], 60,
             "the worker and the collector to join the broker")
        t0 = time.time()
        r = pod.once(["submit", job, "--broker", ep])
        if r.returncode != 0:
            fail(f"submit from the image exited {r.returncode}: {r.stdout}{r.stderr}")
        job_id = r.stdout.strip().splitlines()[-1]

        def done(s):
            jobs = [j for j in s["jobs"] if j["id"] == job_id]
            return (jobs and jobs[0]["state"] != "running" and s["collector"]["outbox"] == 0
                    and os.path.exists(os.path.join(out, "summary.json")))
        wait(done, 600, f"job {job_id} to finish and be written")
        job_s = time.time() - t0

        rows = fleet.check_reports(out, names)
        for scene, res in rows.items():
            if res["solver"]["backend"] != "cpu" or res["gpu_id"] != -1 or not res["timings"]["trace"] > 0:
                fail(f"{scene}: not solved by the CPU engine: {res['solver']} gpu {res['gpu_id']}")
        owner = os.stat(os.path.join(out, "results.csv")).st_uid
        if owner != IMAGE_UID:
            fail(f"results.csv is owned by uid {owner}, not the image's {IMAGE_UID}")
        print(f"job: {len(names)} scenes, each once in results.csv and results.jsonl, "
              f"solved on the CPU in the worker container")
        want = f'beamfleet_tasks_final_total{{status="success"}} {SCENES}'
        deadline = time.time() + 10
        while True:  # the endpoint publishes at most every 250 ms
            with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as r:
                text = r.read().decode()
            if want in text.splitlines():
                break
            if time.time() > deadline:
                fail(f"the broker's /metrics lacks `{want}`:\n{text}")
            time.sleep(0.3)
        print("metrics: the image's broker serves /metrics (libmicrohttpd loaded with dlopen)")

        # SIGTERM through tini: the worker drains, each process exits 0
        for n in reversed(pod.names):
            sh(podman + ["stop", "-t", "30", n], timeout=60)
            state = pod.running(n)
            if state != "false 0":
                fail(f"container {n} did not end cleanly on SIGTERM (running, exit code: {state})")
        ok = True
        return job_s
    finally:
        if not ok:
            pod.logs()
            print(f"(test files kept in {work})")
        pod.remove()
        if ok:
            shutil.rmtree(work, ignore_errors=True)


def main():
    if os.geteuid() != 0:
        skip("not root: debootstrap and the rootful podman this test uses need root")
    install()
    os.makedirs(CACHE, exist_ok=True)
    # one image build per machine at a time: podman's tags are machine-wide
    lock = open(os.path.join(tempfile.gettempdir(), "beamfleet-image.lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)

    t0 = time.time()
    r = sh([os.path.join(REPO, "deploy", "debian-base.sh"), CACHE], timeout=1200)
    base = r.stdout.strip().splitlines()[-1]
    base_s = time.time() - t0
    print(f"base: {base} in {base_s:.1f} s{' (cached)' if base_s < 60 else ''}")

    glob_opts, ctr_opts = probe(base)
    podman = ["podman"] + glob_opts
    if glob_opts or ctr_opts:
        print(f"podman options: {' '.join(glob_opts + ctr_opts)}")

    t0 = time.time()
    sh(podman + ["build", "-f", os.path.join(REPO, "deploy", "Dockerfile"),
                 "--ignorefile", os.path.join(REPO, "deploy", "Dockerfile.dockerignore"),
                 "--network", "host", "--build-arg", f"BASE={base}", "--build-arg", f"JOBS={JOBS}",
                 "-t", IMAGE] + ctr_opts + [REPO],
       timeout=1800, log=os.path.join(CACHE, "build.log"))
    build_s = time.time() - t0
    size_mb = check_image(podman, ctr_opts)
    print(f"image: {IMAGE} built in {build_s:.1f} s, {size_mb:.1f} MB")

    job_s = run_fleet(podman, ctr_opts)
    print(f"figures: base {base_s:.1f} s, image build {build_s:.1f} s, "
          f"image {size_mb:.1f} MB, job {job_s:.1f} s")
    print("PASS deploy_image")


if __name__ == "__main__":
    main()
