#!/usr/bin/env python3
"""sionna_task.py SCENE_DIR [options] - the boresight task in Sionna RT, as an
exec task (docs/architecture.md, "Exec tasks"; examples/sionna-job.yaml).

Reads a Beamfleet scene directory (the Mitsuba XML, its meshes and
scene.yaml: transmitter, zone, measurement grid), builds the Sionna RT scene
and computes the radio map at the scene's orientation. Then it does what the
notebook's users do in Sionna: gradient steps on azimuth and tilt (Adam,
mi.ad.Adam) on the mean zone power in dBm, differentiated by Dr.Jit through
RadioMapSolver (loop_mode "evaluated"), tilt kept inside --tilt-range and
azimuth inside --azimuth-range. Every step's map is evaluated with the same
rays and seed, and the best orientation seen is the result (the initial one
stays unless a step beats it).

The last line on stdout is the result: the fields of the native boresight
task (docs/protocol.md, "Result document": zone_power_initial/optimized,
stats, boresight_initial/optimized, timings, solver, evaluations, objective,
optimum_on_bound,
thumbnails) plus elapsed_time and `optimizer` (the steps taken). Status is
`failed` when the initial zone fails the validation thresholds, as in the
native task. Bad scene input gives one line on stderr and a result with
status `error`, `fault: task` and that line as reason (exit 0, so the fleet
keeps the reason and blames the task, not the device); an unexpected error
exits 1 with one line on stderr.

Runs with the python of a virtual environment that has sionna-rt (tests/
sionna/setup.sh makes one); DRJIT_LIBLLVM_PATH is read from that
environment's llvm-path file when it is not set.
"""
import time

T0 = time.monotonic()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bf_sionna as bs  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(prog="sionna_task.py", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene_dir")
    p.add_argument("--rays", type=int, default=1_000_000, help="samples_per_tx [1000000]")
    p.add_argument("--depth", type=int, default=3, help="max_depth [3]")
    p.add_argument("--seed", type=int, default=42, help="solver seed [42]")
    p.add_argument("--no-los", action="store_true")
    p.add_argument("--no-reflection", action="store_true")
    p.add_argument("--no-refraction", action="store_true")
    p.add_argument("--cell-size", type=float, nargs=2, default=(10.0, 10.0), metavar=("DX", "DY"),
                   help="measurement cell when scene.yaml gives none [10 10]")
    p.add_argument("--height", type=float, default=1.5, help="measurement height [1.5]")
    p.add_argument("--iterations", type=int, default=8, help="gradient steps [8]")
    p.add_argument("--at", type=float, nargs=2, metavar=("AZ", "TILT"),
                   help="no search: the map at the scene's orientation and at this one "
                        "(the job option sionna_check: Sionna's view of the native optimum)")
    p.add_argument("--lr-deg", type=float, default=3.0, help="Adam's learning rate, deg [3]")
    p.add_argument("--azimuth-range", type=float, nargs=2, default=(0.0, 360.0),
                   metavar=("LO", "HI"), help="deg [0 360]: a full turn wraps")
    p.add_argument("--tilt-range", type=float, nargs=2, default=(-10.0, 30.0),
                   metavar=("LO", "HI"), help="deg [-10 30]")
    p.add_argument("--p10-min-dbm", type=float, default=-270.0)
    p.add_argument("--p10-max-dbm", type=float, default=-80.0)
    p.add_argument("--p90-min-dbm", type=float, default=-130.0)
    p.add_argument("--min-percentile-range-db", type=float, default=15.0)
    p.add_argument("--variant", default="llvm_ad_mono_polarized",
                   help="Mitsuba variant [llvm_ad_mono_polarized; cuda_ad_mono_polarized on a GPU]")
    a = p.parse_args(argv)
    if a.at:
        a.iterations = 1                  # the scene's orientation, then the one asked for
    if a.rays < 1 or a.depth < 0 or a.seed < 0 or a.iterations < 0 or not a.lr_deg > 0:
        p.error("--rays >= 1, --depth >= 0, --seed >= 0, --iterations >= 0, --lr-deg > 0")
    if not (a.azimuth_range[0] < a.azimuth_range[1] and a.tilt_range[0] < a.tilt_range[1]):
        p.error("--azimuth-range and --tilt-range: LO < HI")
    if not (a.cell_size[0] > 0 and a.cell_size[1] > 0):
        p.error("--cell-size: both sides must be positive")
    return a


def bad_input(msg):
    """A result that blames the task, with the one-line reason."""
    msg = " ".join(str(msg).split())
    print(f"sionna_task: {msg}", file=sys.stderr, flush=True)
    print(json.dumps({"status": "error", "reason": msg, "fault": "task"}), flush=True)
    sys.exit(0)


def validate(a, st):
    """The native task's validation of the initial zone: reason, "" on pass."""
    if st["p10"] < a.p10_min_dbm:
        return f"p10 {st['p10']:.1f} dBm below p10_min_dbm {a.p10_min_dbm:.1f}"
    if st["p10"] > a.p10_max_dbm:
        return f"p10 {st['p10']:.1f} dBm above p10_max_dbm {a.p10_max_dbm:.1f}"
    if st["p90"] < a.p90_min_dbm:
        return f"p90 {st['p90']:.1f} dBm below p90_min_dbm {a.p90_min_dbm:.1f}"
    if st["p90"] - st["p10"] < a.min_percentile_range_db:
        return (f"p90-p10 range {st['p90'] - st['p10']:.1f} dB below "
                f"min_percentile_range_db {a.min_percentile_range_db:.1f}")
    return ""


def thumbnails(g, gain, power_dbm, np):
    """The whole grid in at most 64 x 64 blocks, as the native task's
    thumbnails: mean linear power per block in dBm to 0.1 dB, None where no
    ray came."""
    x0, y0, dx, dy, nx, ny, _ = g
    fx, fy = math.ceil(nx / 64), math.ceil(ny / 64)
    tx, ty = math.ceil(nx / fx), math.ceil(ny / fy)
    out = []
    for iy in range(ty):
        for ix in range(tx):
            m = float(np.mean(gain[iy * fy:(iy + 1) * fy, ix * fx:(ix + 1) * fx]))
            out.append(round(10 * math.log10(m) + power_dbm, 1) if m > 0 else None)
    return {"nx": tx, "ny": ty, "x0": x0, "y0": y0, "dx": dx * fx, "dy": dy * fy, "blocks": out}


def deg_out(d):
    return round(d, 2) + 0.0


def main(argv):
    a = parse_args(argv)
    try:
        scene = bs.read_scene(a.scene_dir)
    except bs.SceneError as e:
        bad_input(e)
    llvm = os.path.join(sys.prefix, "llvm-path")
    if not os.environ.get("DRJIT_LIBLLVM_PATH") and os.path.exists(llvm):
        os.environ["DRJIT_LIBLLVM_PATH"] = open(llvm).read().strip()

    import numpy as np
    import mitsuba as mi
    import drjit as dr
    try:
        mi.set_variant(a.variant)
    except Exception as e:  # an unknown or unavailable variant
        print(f"sionna_task: Mitsuba variant {a.variant}: {e}", file=sys.stderr)
        return 1
    import sionna.rt

    t = time.monotonic()
    tx = scene["tx"]
    try:
        ss = bs.SionnaScene(scene, a.variant)
        bs.check_zone(scene, ss.bbox)
        g = bs.grid(scene, ss.bbox, a.cell_size, a.height)
    except bs.SceneError as e:
        bad_input(e)
    x0, y0, dx, dy, nx, ny, _ = g
    xs = x0 + (np.arange(nx) + 0.5) * dx
    ys = y0 + (np.arange(ny) + 0.5) * dy
    cx, cy = np.meshgrid(xs, ys)          # [ny, nx]: zone cells in the engine's order
    zone = bs.in_zone(scene["zone"], cx, cy)
    cells = int(zone.sum())
    if cells == 0:
        bad_input(f"{scene['dir']}: the zone contains no measurement cell centre")
    mask = mi.TensorXf(zone.astype(np.float32).reshape(1, ny, nx))
    ss.solver.loop_mode = "evaluated"     # Dr.Jit differentiates evaluated loops only
    load_s = time.monotonic() - t

    ln10 = math.log(10.0)
    az_lo, az_hi = a.azimuth_range
    tilt_lo, tilt_hi = a.tilt_range
    full_turn = az_hi - az_lo >= 360.0

    def rad(deg):
        """An angle as a Dr.Jit Float the kernels read from memory: a literal
        would be compiled into them, and every new angle would compile anew."""
        v = mi.Float(math.radians(deg))
        dr.make_opaque(v)
        return v

    opt = mi.ad.Adam(lr=math.radians(a.lr_deg))
    opt["az"] = rad(tx["azimuth_deg"])
    opt["tilt"] = rad(tx["tilt_deg"])
    roll = rad(tx["roll_deg"])
    evals = []                            # (mean dBm, az, tilt, gain [ny, nx])
    trace_s = 0.0
    t = t_step = time.monotonic()
    for it in range(a.iterations + 1):
        last = it == a.iterations
        az, tilt = math.degrees(opt["az"][0]), math.degrees(opt["tilt"][0])
        # the last map too with the differentiable angles: the same kernels
        # as the steps before (no backward pass follows it)
        ss.orient_rad(opt["az"], opt["tilt"], roll)
        rm = ss.radio_map(g, a.rays, a.depth, not a.no_los, not a.no_reflection,
                          not a.no_refraction, a.seed)
        gain = rm.path_gain               # TensorXf [1, ny, nx]
        if it == 0:
            c = rm.cell_centers.numpy()
            if c.shape[:2] != (ny, nx) or not np.allclose(c[..., 0], cx, atol=1e-3 * dx) or \
                    not np.allclose(c[..., 1], cy, atol=1e-3 * dy):
                raise RuntimeError(f"Sionna's grid {c.shape[:2]} is not ours ({ny}, {nx})")
        cell_dbm = dr.select(gain > 0, 10.0 / ln10 * dr.log(dr.maximum(gain, 1e-37))
                             + tx["power_dbm"], bs.FLOOR_DBM)
        mean = dr.sum(cell_dbm * mask, axis=None) / cells
        g_np = gain.numpy()[0].astype(np.float64)
        m = float(np.mean(bs.dbm(g_np, tx["power_dbm"])[zone]))
        evals.append((m, az, tilt, g_np))
        print(f"sionna_task: step {it}: azimuth {az:.2f} tilt {tilt:.2f} zone mean {m:.3f} dBm "
              f"({time.monotonic() - t_step:.1f} s)", flush=True)
        t_step = time.monotonic()
        if it == 0:
            trace_s = time.monotonic() - t
        if last:
            break
        if a.at:                          # no search: the one orientation asked for
            opt["az"], opt["tilt"] = rad(a.at[0]), rad(a.at[1])
            continue
        dr.backward(-mean)                # Adam minimizes: the loss is minus the mean
        opt.step()
        a_new = math.degrees(opt["az"][0])
        if full_turn:
            a_new = az_lo + (a_new - az_lo) % 360.0
        else:
            a_new = min(max(a_new, az_lo), az_hi)
        opt["az"] = rad(a_new)
        opt["tilt"] = rad(min(max(math.degrees(opt["tilt"][0]), tilt_lo), tilt_hi))
    optimize_s = time.monotonic() - t - trace_s

    # with --at, the orientation asked for, better or not
    best = 1 if a.at else max(range(len(evals)), key=lambda i: (evals[i][0], -i))
    z0 = bs.dbm(evals[0][3], tx["power_dbm"])[zone]
    z1 = bs.dbm(evals[best][3], tx["power_dbm"])[zone]
    s0, s1 = bs.stats(z0), bs.stats(z1)
    reason = validate(a, s0)
    st = {"zone_cells": cells}
    st.update({f"initial_{k}": v for k, v in s0.items()})
    st.update({f"optimized_{k}": v for k, v in s1.items()})
    st["improvement_mean"] = s1["mean"] - s0["mean"]
    th0 = thumbnails(g, evals[0][3], tx["power_dbm"], np)
    th1 = thumbnails(g, evals[best][3], tx["power_dbm"], np)
    thumbs = {k: th0[k] for k in ("nx", "ny", "x0", "y0", "dx", "dy")}
    thumbs.update(initial=th0["blocks"], optimized=th1["blocks"])
    # the native result's optimum_on_bound (docs/protocol.md section 13):
    # the bounds of the ranges the best step sits on (the steps are clamped
    # to them, so an optimum held there is the bound itself, to the float32
    # of Dr.Jit's angles: 1e-4 deg)
    b_az, b_tilt = evals[best][1], evals[best][2]
    on_bound = [name for name, hit in (
        ("azimuth_min", not full_turn and abs(b_az - az_lo) <= 1e-4),
        ("azimuth_max", not full_turn and abs(b_az - az_hi) <= 1e-4),
        ("tilt_min", abs(b_tilt - tilt_lo) <= 1e-4),
        ("tilt_max", abs(b_tilt - tilt_hi) <= 1e-4)) if hit and not a.at]
    result = {
        "status": "failed" if reason else "success",
        "reason": reason,
        "zone_power_initial": [float(v) for v in z0],
        "zone_power_optimized": [float(v) for v in z1],
        "stats": st,
        "boresight_initial": {"azimuth_deg": deg_out(tx["azimuth_deg"]),
                              "tilt_deg": deg_out(tx["tilt_deg"])},
        "boresight_optimized": {"azimuth_deg": deg_out(evals[best][1]),
                                "tilt_deg": deg_out(evals[best][2])},
        "timings": {"load": load_s, "trace": trace_s, "optimize": optimize_s, "maps": 0.0},
        "solver": {"rays": a.rays, "max_depth": a.depth, "seed": a.seed,
                   "backend": f"sionna-rt {sionna.rt.__version__} {a.variant}"},
        "evaluations": len(evals),
        "objective": evals[best][0],
        "optimum_on_bound": on_bound,
        "thumbnails": thumbs,
        "optimizer": {"method": "at" if a.at else "adam", "lr_deg": a.lr_deg, "iterations": a.iterations,
                      "best_step": best,
                      "steps": [[round(e[1], 3), round(e[2], 3), round(e[0], 4)] for e in evals]},
        "elapsed_time": time.monotonic() - T0,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # one line for the fleet's reason; the trace is not it
        print(f"sionna_task: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(1)
