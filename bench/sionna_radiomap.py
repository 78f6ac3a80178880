#!/usr/bin/env python3
"""bench/sionna_radiomap.py [XML] [--rays N] [--depth D] [--repeat R] - the
Sionna RT anchor of bench_radiomap (DESIGN section 7): Sionna's RadioMapSolver
(llvm_ad_mono_polarized) on the same scene, transmitter (0, 0, 40), grid
(the scene's bounding box, 10 m cells, 1.5 m) and rays; prints every run's
seconds and the best warm one (the first run compiles). Run it with the
python of the environment tests/sionna/setup.sh makes, DRJIT_LIBLLVM_PATH
set to the path in its llvm-path file:
  DRJIT_LIBLLVM_PATH=$(cat build/sionna-venv/llvm-path) \\
    build/sionna-venv/bin/python bench/sionna_radiomap.py ../shared/scenes/munich/munich.xml
"""
import argparse
import time

import mitsuba as mi
mi.set_variant("llvm_ad_mono_polarized")
from sionna.rt import load_scene, PlanarArray, Transmitter, RadioMapSolver  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("xml", nargs="?", default="../shared/scenes/munich/munich.xml")
ap.add_argument("--rays", type=int, default=1000000)
ap.add_argument("--depth", type=int, default=3)
ap.add_argument("--repeat", type=int, default=6)
a = ap.parse_args()
scene = load_scene(a.xml)
scene.frequency = 3.5e9
scene.tx_array = PlanarArray(num_rows=1, num_cols=1, pattern="tr38901", polarization="V")
scene.add(Transmitter("tx", position=mi.Point3f(0, 0, 40), orientation=mi.Point3f(0, 0, 0),
                      power_dbm=44))
bb = scene.mi_scene.bbox()
center = mi.Point3f((bb.min.x + bb.max.x) / 2, (bb.min.y + bb.max.y) / 2, 1.5)
size = mi.Point2f(bb.max.x - bb.min.x, bb.max.y - bb.min.y)
solver = RadioMapSolver()
times = []
for k in range(a.repeat + 1):
    t = time.monotonic()
    rm = solver(scene, center=center, orientation=mi.Point3f(0, 0, 0), size=size,
                cell_size=mi.Point2f(10, 10), samples_per_tx=a.rays, max_depth=a.depth, seed=k)
    rm.path_gain.numpy()
    times.append(time.monotonic() - t)
print(f"sionna {a.xml}: {a.rays} rays, depth {a.depth}, grid {rm.path_gain.shape[2]}x"
      f"{rm.path_gain.shape[1]}: runs {' '.join(f'{x:.3f}' for x in times)} s; "
      f"best warm {min(times[1:]):.3f} s, {a.rays / min(times[1:]):.3g} rays/s")
