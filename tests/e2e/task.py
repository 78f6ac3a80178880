#!/usr/bin/env python3
"""A stand-in for a user's Sionna pipeline, run by end-to-end tests through
`task: exec`. Its behaviour comes from the scene's name, so one job can hold
fast, slow, failing and hanging scenes:

  fail_*    exits 3 with a message on stderr, every attempt
  hang_*    sleeps for an hour (the worker's timeout must kill it)
  slow_*    sleeps 1.5 s, then succeeds
  flaky_*   fails on attempt 1 (marker file in the scene dir), then succeeds
  anything else: sleeps $TASK_SLEEP seconds (default 0.05), then succeeds
With TASK_SICK=1 in the worker's environment every scene fails (a sick GPU).

On success it prints progress noise, then a result line with the notebook's
fields (stats.improvement_mean derived from the name, so tests can check it).
"""
import json
import os
import sys
import time
import zlib

scene_dir = sys.argv[1]
scene = os.path.basename(scene_dir.rstrip("/"))
if os.environ.get("BEAMFLEET_SCENE") != scene:
    print(f"BEAMFLEET_SCENE={os.environ.get('BEAMFLEET_SCENE')!r}, expected {scene!r}", file=sys.stderr)
    sys.exit(4)

if os.environ.get("TASK_SICK"):
    print("CUDA error: an illegal memory access was encountered", file=sys.stderr)
    sys.exit(1)
if scene.startswith("fail_"):
    print("Traceback (most recent call last):\nRuntimeError: zone has no cells", file=sys.stderr)
    sys.exit(3)
if scene.startswith("hang_"):
    time.sleep(3600)
if scene.startswith("flaky_"):
    marker = os.path.join(scene_dir, ".attempted")
    if not os.path.exists(marker):
        open(marker, "w").close()
        print("transient CUDA error", file=sys.stderr)
        sys.exit(1)
time.sleep(1.5 if scene.startswith("slow_") else float(os.environ.get("TASK_SLEEP", "0.05")))

improvement = (zlib.crc32(scene.encode()) % 1000) / 100.0
print("loading scene ...")
print(json.dumps({
    "status": "success",
    "reason": "",
    "gpu_id": int(os.environ.get("BEAMFLEET_GPU_ID", "-1") or -1),
    "zone_power_initial": [-90.0, -80.0],
    "zone_power_optimized": [-90.0 + improvement, -80.0 + improvement],
    "stats": {"improvement_mean": improvement, "zone_cells": 2},
}))
