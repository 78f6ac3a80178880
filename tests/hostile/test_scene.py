#!/usr/bin/env python3
"""Hostile-tenant tests of scene input (DESIGN section 5): a scene file that
is a link to something outside its scene directory is refused, and nothing of
what it points at reaches a result's reason in any report.

Run one: tests/hostile/test_scene.py scene_link   (BEAMFLEET_BIN=build/beamfleet)
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from fleet import Fleet, check_reports, main  # noqa: E402

SCENE_YAML = ("frequency_hz: 3.5e9\n"
              "transmitter: {position: [8.5, 21.0, 27.0], power_dbm: 44,\n"
              "  antenna: {pattern: tr38901, polarization: V}}\n"
              "zone: {rect: [-40, -30, 40, 30]}\n"
              "measurement: {cell_size: [10, 10]}\n")
SECRET = "root:$6$hostile-s3cr3t:19000:0:99999:7:::"


def shared_dir():
    d = os.environ.get("BF_SHARED_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared")
    return os.path.abspath(d)


def test_scene_link(fleet: Fleet):
    """Four scenes: a good one; one whose scene.yaml links to a 'secret'
    file outside; one whose meshes folder links to another scene's; one that
    is itself a link to a scene folder outside the scenes folder. The good
    one succeeds, the others fail with a reason naming the file, the secret
    appears in no report, and the worker is not blamed (fault: task)."""
    src = os.path.join(shared_dir(), "scenes", "simple_street_canyon")
    if not os.path.isdir(src):
        raise AssertionError(f"no shared scene at {src} (BF_SHARED_DIR)")
    secret = os.path.join(fleet.tmp, "secret.txt")
    with open(secret, "w") as f:
        f.write(SECRET + "\n")
    root = os.path.join(fleet.tmp, "scenes")
    for name in ("good", "yaml_link", "mesh_link"):
        shutil.copytree(src, os.path.join(root, name), ignore=shutil.ignore_patterns("*.py"))
        with open(os.path.join(root, name, "scene.yaml"), "w") as f:
            f.write(SCENE_YAML)
    os.remove(os.path.join(root, "yaml_link", "scene.yaml"))
    os.symlink(secret, os.path.join(root, "yaml_link", "scene.yaml"))
    shutil.rmtree(os.path.join(root, "mesh_link", "meshes"))
    os.symlink(os.path.join(root, "good", "meshes"), os.path.join(root, "mesh_link", "meshes"))
    elsewhere = os.path.join(fleet.tmp, "elsewhere")
    shutil.copytree(os.path.join(root, "good"), elsewhere)
    os.symlink(elsewhere, os.path.join(root, "dir_link"))
    out = os.path.join(fleet.tmp, "out")
    job = os.path.join(fleet.tmp, "job.yaml")
    with open(job, "w") as f:
        f.write(f"name: links\nscenes: {root}\noutput: {out}\ntask: boresight\nmax_attempts: 2\n"
                "solver: {samples_per_tx: 20000, max_depth: 2}\n"
                "validation: {p10_min_dbm: -400, p10_max_dbm: 100, p90_min_dbm: -400,\n"
                "  min_percentile_range_db: 0}\n")
    fleet.broker()
    fleet.collector()
    fleet.worker(["--gpus", "none", "--cpu", "1"])
    job_id = fleet.submit(job)
    fleet.wait_done(job_id, timeout=180)
    rows = check_reports(out, ["good", "yaml_link", "mesh_link", "dir_link"],
                         {"yaml_link": "error", "mesh_link": "error", "dir_link": "error"})
    assert "scene.yaml: leads out of" in rows["yaml_link"]["reason"], rows["yaml_link"]
    assert "leads out of" in rows["mesh_link"]["reason"], rows["mesh_link"]
    assert "leads out of the scenes folder" in rows["dir_link"]["reason"], rows["dir_link"]
    for name in ("yaml_link", "mesh_link", "dir_link"):
        assert rows[name].get("fault") == "task", rows[name]
    for report in os.listdir(out):
        path = os.path.join(out, report)
        if os.path.isfile(path):
            text = open(path, errors="replace").read()
            assert "s3cr3t" not in text and SECRET not in text, f"{report} echoes the secret"
    st = fleet.status()
    assert all(w["state"] != "quarantined" for w in st["workers"]), json.dumps(st["workers"])


if __name__ == "__main__":
    main({"scene_link": test_scene_link}, prefix="hostile-scene-")
