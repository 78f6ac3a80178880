#!/usr/bin/env python3
"""bench/radiomap_vs_sionna.py [BUILD] - our radio map against Sionna RT's, in
one run (DESIGN section 7: >= 1.5x Sionna on the CPU at the same thread
count).

For each round, each scene and each ray count it runs our engine
(BUILD/bench/bench_radiomap --threads T --repeat R) and then Sionna RT
(bench/sionna_radiomap.py --repeat R, in the virtual environment
tests/sionna/setup.sh makes), so a change of load hits both alike. Both
engines trace the same scene, transmitter (0, 0, 40), full-scene grid (10 m
cells at 1.5 m), rays and depth. Ours is its best trace of R; Sionna's is its
best warm run of R (the first run, which compiles its kernels, is left out).
Prints one table, the best of every round against the best of every round,
with the load average before and after.

    python3 bench/radiomap_vs_sionna.py build --rounds 2
    python3 bench/radiomap_vs_sionna.py build --scenes munich --rays 1000000

Exits 2 with one line when the Sionna environment is missing (make it with
`sh tests/sionna/setup.sh BUILD/sionna-venv`, which `make test` runs).
"""
import argparse
import glob
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def scene_xml(shared, name):
    found = sorted(glob.glob(os.path.join(shared, "scenes", name, "*.xml")))
    if not found:
        sys.exit(f"radiomap_vs_sionna: no scene XML under {shared}/scenes/{name}")
    return found[0]


def ours(build, xml, rays, depth, threads, repeat):
    out = subprocess.run(
        [os.path.join(build, "bench", "bench_radiomap"), xml, "--rays", str(rays), "--depth",
         str(depth), "--threads", str(threads), "--repeat", str(repeat)],
        check=True, capture_output=True, text=True).stdout
    # the table row: | scene | triangles | rays | depth | threads | grid |
    # load s | bvh s | trace s | ...
    row = [line for line in out.splitlines() if line.startswith("| ") and
           not line.startswith("| scene")][-1]
    digest = re.search(r"FNV-1a (\w+)", out)
    return float(row.split("|")[9]), digest.group(1) if digest else "?"


def sionna(venv, xml, rays, depth, repeat):
    env = dict(os.environ)
    with open(os.path.join(venv, "llvm-path")) as f:
        env["DRJIT_LIBLLVM_PATH"] = f.read().strip()
    out = subprocess.run(
        [os.path.join(venv, "bin", "python"), os.path.join(HERE, "sionna_radiomap.py"), xml,
         "--rays", str(rays), "--depth", str(depth), "--repeat", str(repeat)],
        check=True, capture_output=True, text=True, env=env).stdout
    return float(re.search(r"best warm ([0-9.]+) s", out).group(1))


def load():
    return "%.1f" % os.getloadavg()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", nargs="?", default="build")
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared"))
    ap.add_argument("--venv", help="Sionna's virtual environment (default BUILD/sionna-venv)")
    ap.add_argument("--scenes", default="munich,etoile,simple_street_canyon")
    ap.add_argument("--rays", default="1000000,10000000")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    venv = a.venv or os.path.join(a.build, "sionna-venv")
    if not os.access(os.path.join(venv, "bin", "python"), os.X_OK) or \
            not os.path.exists(os.path.join(venv, "llvm-path")):
        print(f"radiomap_vs_sionna: no Sionna environment at {venv} "
              f"(make it with: sh tests/sionna/setup.sh {venv})", file=sys.stderr)
        return 2
    if not os.access(os.path.join(a.build, "bench", "bench_radiomap"), os.X_OK):
        print(f"radiomap_vs_sionna: no {a.build}/bench/bench_radiomap (build it first)",
              file=sys.stderr)
        return 2
    cases = [(s, int(r)) for s in a.scenes.split(",") for r in a.rays.split(",")]
    best = {c: [float("inf"), float("inf"), [], []] for c in cases}
    digests = {}
    loads = [load()]
    for k in range(a.rounds):
        for scene, rays in cases:
            xml = scene_xml(a.shared, scene)
            t, digests[(scene, rays)] = ours(a.build, xml, rays, a.depth, a.threads, a.repeat)
            s = sionna(venv, xml, rays, a.depth, a.repeat)
            b = best[(scene, rays)]
            b[0], b[1] = min(b[0], t), min(b[1], s)
            b[2].append(t)
            b[3].append(s)
            print(f"round {k + 1}: {scene} {rays} rays: ours {t:.3f} s, Sionna {s:.3f} s, "
                  f"load {load()}", file=sys.stderr, flush=True)
    loads.append(load())
    print(f"{a.threads} threads, depth {a.depth}, best of {a.repeat} per round, "
          f"{a.rounds} rounds; load average {loads[0]} before, {loads[1]} after")
    print("| scene | rays | ours (s), rounds | Sionna (s), rounds | Sionna / ours | map hash |")
    print("|---|---:|---|---|---:|---|")
    worst = float("inf")
    for scene, rays in cases:
        t, s, ts, ss = best[(scene, rays)]
        worst = min(worst, s / t)
        print(f"| {scene} | {rays} | {t:.3f} ({', '.join(f'{x:.3f}' for x in ts)}) | "
              f"{s:.3f} ({', '.join(f'{x:.3f}' for x in ss)}) | {s / t:.2f}x | "
              f"{digests[(scene, rays)]} |")
    print(f"worst case {worst:.2f}x (target >= 1.5x: {'met' if worst >= 1.5 else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
