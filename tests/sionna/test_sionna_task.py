#!/usr/bin/env python3
"""examples/sionna_task.py through a real fleet (docs/architecture.md, "Exec
tasks"): a broker, a collector and two CPU workers (tests/e2e/fleet.py) run an
exec job whose command is the Sionna virtual environment's python with
sionna_task.py, on llvm_ad_mono_polarized, over two small shared scenes
(simple_street_canyon with a rect zone, simple_street_canyon_with_cars with a
polygon zone and a cross-polarized antenna), each copied with its own
scene.yaml, and a third scene whose zone lies outside its geometry. Checks:

  * every scene exactly once in every report (check_reports), the bad one
    with status error and the one-line reason sionna_task.py gives;
  * each good result has the native boresight result's fields (those of
    `beamfleet solve` on the same scene: stats, boresight_*, timings,
    solver, thumbnails, ...), zone arrays of zone_cells values whose means
    are the stats, the initial orientation the scene's, the optimized one
    inside the tilt and azimuth limits, optimized >= initial, and an
    improvement of at least 0.5 dB (the gradient steps do move the
    transmitter the right way);
  * the zone mean at the initial orientation agrees with our engine's
    (`beamfleet solve --cpu`, same rays and grid) within 1 dB.

Prints (and with SIONNA_OUT writes to sionna_task.json) the time per scene
and the gain against the native engine's. About a minute on 2 cores with
Dr.Jit's kernel cache warm, two or three without.

Run by ctest with the system python (FIXTURES_REQUIRED sionna): SIONNA_VENV
is the environment tests/sionna/setup.sh made; exits 77 (skipped, one line
why) without it. BEAMFLEET_BIN, BF_SHARED_DIR as for the other tests.
"""
import csv
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from fleet import Fleet, Skip, check_reports, main  # noqa: E402

TASK = os.path.abspath(os.path.join(HERE, "..", "..", "examples", "sionna_task.py"))
RAYS = 200_000
ITERATIONS, LR_DEG = 6, 5.0
TILT_RANGE, AZ_RANGE = (-10.0, 30.0), (0.0, 360.0)
PERMISSIVE = ["--p10-min-dbm", "-500", "--p10-max-dbm", "500", "--p90-min-dbm", "-500",
              "--min-percentile-range-db", "0"]

# scene folder -> (shared scene, scene.yaml, initial (azimuth, tilt))
SCENES = {
    "canyon": ("simple_street_canyon", (90.0, 0.0),
               "frequency_hz: 3.5e9\n"
               "transmitter: {position: [-40, 0, 20], power_dbm: 44,\n"
               "  antenna: {pattern: tr38901, polarization: V},\n"
               "  orientation: {azimuth_deg: 90, tilt_deg: 0}}\n"
               "zone: {rect: [10, -20, 70, 20]}\n"
               "measurement: {center: [0, 0], size: [180, 120], cell_size: [5, 5]}\n"),
    "cars": ("simple_street_canyon_with_cars", (200.0, -5.0),
             "frequency_hz: 3.5e9\n"
             "transmitter:\n"
             "  position: [30, 0, 15]\n"
             "  power_dbm: 40\n"
             "  antenna: {pattern: tr38901, polarization: cross}\n"
             "  orientation: {azimuth_deg: 200, tilt_deg: -5}\n"
             "zone:\n"
             "  polygon: [[-70, -15], [-10, -15], [-10, 15], [-40, 25], [-70, 15]]\n"
             "measurement: {center: [0, 0], size: [180, 120], cell_size: [5, 5]}\n"),
    "zone_outside": ("simple_street_canyon", (0.0, 0.0),
                     "frequency_hz: 3.5e9\n"
                     "transmitter: {position: [-40, 0, 20]}\n"
                     "zone: {rect: [10, -20, 700, 20]}\n"),
}
BAD = {"zone_outside": "zone: point (700, -20) lies outside the scene"}


def shared_dir():
    return os.path.abspath(os.environ.get("BF_SHARED_DIR")
                           or os.path.join(HERE, "..", "..", "..", "shared"))


def venv_python():
    venv = os.environ.get("SIONNA_VENV", "")
    py = os.path.join(venv, "bin", "python")
    if not venv or not os.path.exists(py) or not os.path.exists(os.path.join(venv, "llvm-path")):
        raise Skip(f"no Sionna RT environment at '{venv}' (tests/sionna/setup.sh makes it; "
                   "it skips when PyPI is unreachable)")
    return py


def make_scenes(root):
    for name, (src, _, yaml) in SCENES.items():
        d = os.path.join(root, name)
        # copied: a scene file may not be a link out of its directory
        shutil.copytree(os.path.join(shared_dir(), "scenes", src), d,
                        ignore=shutil.ignore_patterns("*.py", "*.md"))
        with open(os.path.join(d, "scene.yaml"), "w") as f:
            f.write(yaml)


def native(fleet, scene_dir):
    """Our engine on the same scene, rays and grid: its result document."""
    job = os.path.join(fleet.tmp, "native.yaml")
    os.makedirs(os.path.join(fleet.tmp, "native-scenes", "x"), exist_ok=True)
    with open(job, "w") as f:
        f.write(f"scenes: {os.path.join(fleet.tmp, 'native-scenes')}\ntask: boresight\n"
                f"solver: {{samples_per_tx: {RAYS}}}\n"
                "validation: {p10_min_dbm: -500, p10_max_dbm: 500, p90_min_dbm: -500, "
                "min_percentile_range_db: 0}\n")
    out = os.path.join(fleet.tmp, os.path.basename(scene_dir) + "-native.json")
    fleet.cli("solve", scene_dir, "-j", job, "--out", out, "--cpu", "--threads", "2", timeout=300)
    return json.load(open(out))


def slow_heartbeats(fleet):
    """Heartbeats of 1 s, 5 missed before a peer is lost: Dr.Jit compiling
    its kernels in two workers at once can stall a 2-core machine for more
    than the 0.6 s the other tests allow, and a lost worker costs the one
    attempt these jobs have."""
    fleet.hb = ["--heartbeat-ms", "1000", "--liveness", "5"]
    fleet.heartbeat_ms, fleet.liveness = 1000, 5


def test_fleet(fleet: Fleet):
    py = venv_python()
    slow_heartbeats(fleet)
    root = os.path.join(fleet.tmp, "scenes")
    make_scenes(root)
    out = os.path.join(fleet.tmp, "out")
    command = [py, TASK, "{scene_dir}", "--rays", str(RAYS), "--iterations", str(ITERATIONS),
               "--lr-deg", str(LR_DEG), "--tilt-range", *map(str, TILT_RANGE),
               "--azimuth-range", *map(str, AZ_RANGE)] + PERMISSIVE
    job = os.path.join(fleet.tmp, "sionna.yaml")
    with open(job, "w") as f:  # one attempt: a bad scene is final at once
        f.write(f"name: sionna\nscenes: {root}\noutput: {out}\ntask: exec\ntimeout_s: 600\n"
                f"max_attempts: 1\nexec: {{command: {json.dumps(command)}}}\n")
    fleet.broker()
    fleet.collector()
    for _ in range(2):
        fleet.worker(["--allow-exec", TASK, "--interpreter", py])
    fleet.wait(lambda: len(fleet.status()["workers"]) == 2, 15, "2 workers")
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 540)
    names = sorted(SCENES)
    rows = check_reports(out, names, {n: "error" for n in BAD})
    with open(os.path.join(out, "results.csv"), newline="") as f:
        csv_rows = {r["scene"]: r for r in csv.DictReader(f)}

    for name, why in BAD.items():
        r = rows[name]
        assert why in r["reason"] and "\n" not in r["reason"], r["reason"]
        assert r.get("fault", "task") == "task", r

    figures = []
    for name in names:
        if name in BAD:
            continue
        r = rows[name]
        nat = native(fleet, os.path.join(root, name))
        missing = sorted(set(nat) - set(r) - {"scene"})
        assert not missing, f"{name}: result lacks the native fields {missing}"
        for key in ("stats", "boresight_initial", "boresight_optimized", "timings",
                    "thumbnails"):
            assert set(nat[key]) <= set(r[key]), f"{name} {key}: {sorted(r[key])}"
        assert {"rays", "max_depth", "seed", "backend"} <= set(r["solver"]), r["solver"]
        assert r["solver"]["backend"].startswith("sionna-rt ") and \
            r["solver"]["backend"].endswith("llvm_ad_mono_polarized"), r["solver"]
        assert r["solver"]["rays"] == RAYS and r["evaluations"] == ITERATIONS + 1, r["solver"]
        st = r["stats"]
        assert st["zone_cells"] == nat["stats"]["zone_cells"] == len(r["zone_power_initial"]) \
            == len(r["zone_power_optimized"]) > 20, (name, st["zone_cells"])
        for which in ("initial", "optimized"):
            v = r[f"zone_power_{which}"]
            assert abs(sum(v) / len(v) - st[f"{which}_mean"]) < 1e-6, (name, which)
        assert abs(st["improvement_mean"] - (st["optimized_mean"] - st["initial_mean"])) < 1e-9
        assert abs(r["objective"] - st["optimized_mean"]) < 1e-6, r["objective"]
        init, opt = r["boresight_initial"], r["boresight_optimized"]
        assert (init["azimuth_deg"], init["tilt_deg"]) == SCENES[name][1], init
        assert TILT_RANGE[0] <= opt["tilt_deg"] <= TILT_RANGE[1], opt
        assert AZ_RANGE[0] <= opt["azimuth_deg"] < AZ_RANGE[1], opt
        assert st["optimized_mean"] >= st["initial_mean"], st
        assert st["improvement_mean"] >= 0.5, f"{name}: gradient steps gained only " \
            f"{st['improvement_mean']:.3f} dB: {r['optimizer']['steps']}"
        c = csv_rows[name]
        assert abs(float(c["improvement_mean"]) - st["improvement_mean"]) < 1e-6, c
        th = r["thumbnails"]
        assert len(th["initial"]) == len(th["optimized"]) == th["nx"] * th["ny"], th["nx"]
        diff = st["initial_mean"] - nat["stats"]["initial_mean"]
        assert abs(diff) <= 1.0, f"{name}: initial zone mean, Sionna {st['initial_mean']:.2f} " \
            f"vs ours {nat['stats']['initial_mean']:.2f} dBm"
        fig = {"scene": name, "shared_scene": SCENES[name][0], "rays": RAYS,
               "elapsed_time_s": r["elapsed_time"], "timings": r["timings"],
               "sionna_initial_mean": st["initial_mean"],
               "sionna_optimized_mean": st["optimized_mean"],
               "sionna_improvement": st["improvement_mean"], "sionna_optimized": opt,
               "native_initial_mean": nat["stats"]["initial_mean"],
               "native_improvement": nat["stats"]["improvement_mean"],
               "native_optimized": nat["boresight_optimized"],
               "native_elapsed_time_s": nat.get("elapsed_time"), "steps": r["optimizer"]["steps"]}
        figures.append(fig)
        print(f"{name}: Sionna {r['elapsed_time']:.1f} s (load {r['timings']['load']:.1f}, "
              f"first map {r['timings']['trace']:.1f}, steps {r['timings']['optimize']:.1f}), "
              f"initial {st['initial_mean']:.2f} dBm (ours {nat['stats']['initial_mean']:.2f}), "
              f"+{st['improvement_mean']:.2f} dB to az {opt['azimuth_deg']} tilt "
              f"{opt['tilt_deg']}; our engine +{nat['stats']['improvement_mean']:.2f} dB to az "
              f"{nat['boresight_optimized']['azimuth_deg']} tilt "
              f"{nat['boresight_optimized']['tilt_deg']} in {nat.get('elapsed_time', 0):.2f} s",
              flush=True)
    if os.environ.get("SIONNA_OUT"):
        os.makedirs(os.environ["SIONNA_OUT"], exist_ok=True)
        with open(os.path.join(os.environ["SIONNA_OUT"], "sionna_task.json"), "w") as f:
            json.dump(figures, f, indent=2)


def test_bad_input(fleet: Fleet):
    """Bad scene input, the task alone: one line on stderr, a result line with
    status error, fault task and that line as reason, exit 0."""
    py = venv_python()
    root = os.path.join(fleet.tmp, "scenes")
    make_scenes(root)
    d = os.path.join(root, "canyon")
    good = SCENES["canyon"][2]
    cases = [
        (good + "frequncy: 1\n", "scene.yaml: unknown key 'frequncy'"),
        (good.replace("position: [-40, 0, 20]", "position: [-40, 0]"),
         "field 'transmitter.position': expected a list of 3 numbers"),
        (good.replace("zone: {rect: [10, -20, 70, 20]}\n", ""), "missing key 'zone'"),
        (good.replace("[10, -20, 70, 20]", "[10, -20, 11, -19]"),
         "the zone contains no measurement cell centre"),
        (good.replace("polarization: V", "polarization: cross_independent"),
         "cross_independent has no Sionna RT radio map equivalent"),
        ("transmitter: {position: [1, 2, 3]\n", "scene.yaml:1:"),
    ]
    for text, want in cases:
        with open(os.path.join(d, "scene.yaml"), "w") as f:
            f.write(text)
        p = subprocess.run([py, TASK, d, "--rays", "1000", "--iterations", "0"],
                           capture_output=True, text=True, timeout=120)
        res = json.loads(p.stdout.strip().splitlines()[-1])
        assert p.returncode == 0 and res["status"] == "error" and res["fault"] == "task", \
            (p.returncode, p.stdout[-300:], p.stderr[-300:])
        assert want in res["reason"] and "\n" not in res["reason"], (want, res["reason"])
        assert p.stderr.count("\n") == 1 and want in p.stderr, p.stderr
    os.remove(os.path.join(d, "scene.yaml"))
    p = subprocess.run([py, TASK, d], capture_output=True, text=True, timeout=60)
    assert "scene.yaml: No such file or directory" in p.stdout, p.stdout


def test_check(fleet: Fleet):
    """The job option sionna_check: a boresight job whose workers also run
    sionna_task.py --at the engine's optimum on every scene; each result
    says how the two engines' zone maps agree (NMSE) and both gains. A
    comparison program the workers may not run gives sionna_check.error,
    and the task still succeeds."""
    py = venv_python()
    slow_heartbeats(fleet)
    root = os.path.join(fleet.tmp, "scenes")
    make_scenes(root)
    shutil.rmtree(os.path.join(root, "zone_outside"))
    shutil.rmtree(os.path.join(root, "cars"))
    out = os.path.join(fleet.tmp, "out")
    job = os.path.join(fleet.tmp, "check.yaml")
    permissive = ("validation: {p10_min_dbm: -500, p10_max_dbm: 500, p90_min_dbm: -500, "
                  "min_percentile_range_db: 0}\n")

    def write(command, output):
        with open(job, "w") as f:
            f.write(f"name: check\nscenes: {root}\noutput: {output}\ntask: boresight\n"
                    f"timeout_s: 600\nmax_attempts: 1\nsolver: {{samples_per_tx: {RAYS}}}\n"
                    f"{permissive}sionna_check: {{command: {json.dumps(command)}}}\n")

    fleet.broker()
    fleet.collector()
    fleet.worker(["--allow-exec", TASK, "--interpreter", py])
    fleet.wait(lambda: len(fleet.status()["workers"]) == 1, 15, "the worker")
    write([py, TASK], out)
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 540)
    r = check_reports(out, ["canyon"])["canyon"]
    c = r["sionna_check"]
    assert "error" not in c, c
    nat = r["stats"]["improvement_mean"]
    print(f"canyon: NMSE initial {c['nmse_initial_db']:.1f} dB, at the optimum "
          f"{c['nmse_optimized_db']:.1f} dB over {c['cells']} cells; gain native {nat:.2f} dB, "
          f"Sionna at the same orientation {c['sionna_gain_db']:.2f} dB "
          f"(diff {c['gain_diff_db']:+.2f} dB), Sionna {c['elapsed_s']:.1f} s", flush=True)
    assert c["cells"] == r["stats"]["zone_cells"] and c["native_gain_db"] == nat, c
    assert c["backend"].startswith("sionna-rt "), c
    # At the scene's orientation the antenna looks away from the zone: few
    # of the 2e5 rays reach it and both maps are Monte Carlo noise there
    # (-6.7 dB measured); at the optimum they agree to -16.6 dB.
    assert c["nmse_initial_db"] < -3 and c["nmse_optimized_db"] < -10, c
    assert abs(c["gain_diff_db"]) < 2.0, c

    # a comparison program that is not allowed: said so, the task succeeds
    write([py, "/nonexistent/sionna_task.py"], out + "2")
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, 120)
    r = check_reports(out + "2", ["canyon"])["canyon"]
    assert "exec not allowed" in r["sionna_check"]["error"], r["sionna_check"]


TESTS = {"fleet": test_fleet, "bad_input": test_bad_input, "check": test_check}

if __name__ == "__main__":
    main(TESTS, prefix="sionna-")
