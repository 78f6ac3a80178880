#!/usr/bin/env python3
"""The chaos test's exec program: tests/e2e/task.py with a sleep of 50-300 ms
drawn per task. The draw is seeded by $CHAOS_SEED and the scene name, so a
seed replays the same task lengths (attempts of one task sleep alike)."""
import os
import random
import runpy
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
scene = os.path.basename(sys.argv[1].rstrip("/"))
seed = int(os.environ.get("CHAOS_SEED", "0"))
rng = random.Random(seed * 1000003 + zlib.crc32(scene.encode()))
os.environ["TASK_SLEEP"] = f"{rng.uniform(0.05, 0.30):.3f}"
sys.argv = [os.path.join(HERE, "..", "e2e", "task.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
