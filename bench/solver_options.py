#!/usr/bin/env python3
"""What the radio engine's options cost per scene: `beamfleet solve --cpu` on
each scene with the default solver and with each option on (the diffuse
reflection, diffraction, both), interleaved round by round so that a load
change on a shared machine hits every variant alike, and the median of each
stage over the rounds. The anchor is the default solver in the same rounds:
the table's ratios are option / default.

    bench/solver_options.py BUILD/beamfleet SCENE_DIR... [--rounds 3]
                            [--rays 1000000] [--threads 2]

A scene directory holds its scene.yaml (a `beamfleet scenegen` city, or a
Sionna scene with one). Prints one line per scene and variant: the trace,
optimize and maps stages [s] (docs/benchmarks.md, "Radio engine options").
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

VARIANTS = [("default", {}),
            ("diffuse_reflection", {"diffuse_reflection": "true"}),
            ("diffraction", {"diffraction": "true"}),
            ("diffraction+diffuse", {"diffraction": "true", "diffuse_reflection": "true"})]


def solve(binary, scene, tmp, tag, rays, threads, flags):
    job = os.path.join(tmp, f"job-{tag}.yaml")
    extra = "".join(f", {k}: {v}" for k, v in flags.items())
    with open(job, "w") as f:
        f.write(f"scenes: {os.path.dirname(os.path.abspath(scene))}\ntask: boresight\n"
                f"solver: {{samples_per_tx: {rays}, max_depth: 3{extra}}}\n"
                "validation: {p10_min_dbm: -500, p10_max_dbm: 500, p90_min_dbm: -500, "
                "min_percentile_range_db: 0}\n")
    out = os.path.join(tmp, f"r-{tag}.json")
    p = subprocess.run([binary, "solve", scene, "-j", job, "--out", out, "--cpu", "--threads",
                        str(threads)], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"solver_options: beamfleet solve {scene} ({tag}) failed: "
                 f"{p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
    r = json.load(open(out))
    return r["timings"], r["solver"].get("zone_crossings", 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("scenes", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rays", type=int, default=1000000)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if not os.access(a.binary, os.X_OK):
        sys.exit(f"solver_options: '{a.binary}' is not an executable beamfleet binary")
    for s in a.scenes:
        if not os.path.isfile(os.path.join(s, "scene.yaml")):
            sys.exit(f"solver_options: '{s}' has no scene.yaml")
    print(f"# {a.rays} rays, depth 3, {a.threads} threads, {a.rounds} rounds (medians); "
          f"load average {os.getloadavg()[0]:.1f}")
    print("scene | variant | trace s | optimize s | maps s | total s | total / default | "
          "zone crossings")
    with tempfile.TemporaryDirectory() as tmp:
        for scene in a.scenes:
            runs = {name: [] for name, _ in VARIANTS}
            for rnd in range(a.rounds):
                for name, flags in VARIANTS:
                    runs[name].append(solve(a.binary, scene, tmp, f"{name}-{rnd}", a.rays,
                                            a.threads, flags))
            base = None
            for name, _ in VARIANTS:
                t = {k: statistics.median(r[0][k] for r in runs[name])
                     for k in ("trace", "optimize", "maps")}
                total = sum(t.values())
                base = base or total
                print(f"{os.path.basename(os.path.normpath(scene))} | {name} | {t['trace']:.2f} | "
                      f"{t['optimize']:.2f} | {t['maps']:.2f} | {total:.2f} | "
                      f"{total / base:.2f} | {runs[name][0][1]}", flush=True)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
