#!/usr/bin/env python3
"""A campaign, notebook style, with the beamfleet Python package: the steps
of the notebook Beamfleet replaces (parallel boresight optimization over
many scenes, then analysis and plots), with the fleet doing the work.

    python3 examples/campaign.py examples/demo.yaml -c fleet.yaml --plots plots/

Cell 1 looks at the fleet, cell 2 submits the job and follows its results
live, cell 3 reads the results table from the collector's reports, cell 4
prints the aggregate statistics and cell 5 draws the notebook's three plots
(CDF of initial vs optimized power, improvement histogram, time per worker)
when matplotlib is installed. Needs the package (pip install ./python) and a
running fleet (`beamfleet broker`, `collector`, `worker`).
"""
import argparse
import os
import statistics
import sys

try:
    import beamfleet
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import beamfleet


def percentile(values, q):
    """numpy's linear-interpolation percentile, as the reports compute it."""
    v = sorted(values)
    k = (len(v) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", help="the job file (YAML)")
    ap.add_argument("-c", "--fleet", help="the fleet file (endpoints, CURVE keys)")
    ap.add_argument("--broker", help="the broker's endpoint [fleet file, tcp://127.0.0.1:5555]")
    ap.add_argument("--publish", help="the collector's stream [fleet file, tcp://127.0.0.1:5557]")
    ap.add_argument("--plots", default=".", help="where to write the PNGs [.]")
    ap.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    args = ap.parse_args()

    # ---- CELL 1: the fleet -------------------------------------------------
    client = beamfleet.Client(broker=args.broker, fleet=args.fleet, publish=args.publish)
    status = client.status()
    workers = status["workers"]
    print(f"Fleet at {client.broker}: {len(workers)} workers, "
          f"collector {'connected' if status['collector']['connected'] else 'NOT connected'}")
    for w in workers:
        print(f"  {w['name']:<28} {w['device']:<24} {w['backend']}")

    # ---- CELL 2: submit and follow -----------------------------------------
    stream = client.watch()  # subscribe first: the stream drops what comes before
    job_id = client.submit(args.job)
    total = client.last_total
    print(f"\nJob {job_id}: {total} scenes")
    done = 0
    try:
        for event in stream:
            if event["event"] == "job-done":
                if event["job"]["id"] == job_id:
                    break
                continue
            r = event["result"]
            if r.get("job_id") != job_id:
                continue
            done += 1
            imp = (r.get("stats") or {}).get("improvement_mean")
            mark = "✓" if r.get("status") == "success" else "✗"
            what = f"{imp:+.2f} dB" if isinstance(imp, (int, float)) else r.get("reason", "")[:60]
            print(f"{mark} [{done}/{total}] {r.get('scene')}: {what} in "
                  f"{r.get('elapsed_time', 0):.1f} s (GPU {r.get('gpu_id')})", flush=True)
    except KeyboardInterrupt:
        print(f"\ncancelling: {client.cancel(job_id)} tasks cancelled")
        return 1
    finally:
        stream.close()
    job = client.wait(job_id, timeout=args.timeout)

    # ---- CELL 3: the results table -----------------------------------------
    table = client.results(job["output"])
    rows = table.to_dict("records") if hasattr(table, "to_dict") else table
    print(f"\nResults of {job['name']} ({job['output']}):")
    print(f"  {'scene':<16} {'status':<9} {'improvement':>11} {'time':>7}  worker")
    for r in rows:
        imp = r["improvement_mean"]
        print(f"  {r['scene']:<16} {r['status']:<9} "
              f"{(f'{imp:+.2f} dB' if isinstance(imp, (int, float)) else '-'):>11} "
              f"{r['elapsed_time'] or 0:>6.1f}s  {r['worker']}")

    # ---- CELL 4: aggregate statistics --------------------------------------
    ok = [r for r in rows if r["status"] == "success"]
    print(f"\nSuccessful: {len(ok)} / {len(rows)}")
    initial = [x for r in ok for x in (r["zone_power_initial"] or [])]
    optimized = [x for r in ok for x in (r["zone_power_optimized"] or [])]
    if initial and optimized:
        for name, v in (("Initial", initial), ("Optimized", optimized)):
            print(f"{name}: mean {statistics.fmean(v):.2f} dBm, median "
                  f"{statistics.median(v):.2f} dBm, P10 {percentile(v, 10):.2f} dBm")
        print(f"Improvement: mean {statistics.fmean(optimized) - statistics.fmean(initial):+.2f} dB")

    # ---- CELL 5: plots --------------------------------------------------------
    os.makedirs(args.plots, exist_ok=True)
    try:
        for name, plot in (("cdf", beamfleet.plot_cdf), ("improvement", beamfleet.plot_improvement),
                           ("time_per_worker", beamfleet.plot_time_per_worker)):
            path = os.path.join(args.plots, f"{name}.png")
            plot(table, save=path)
            print(f"Plot saved to: {path}")
    except beamfleet.MissingDependency as e:
        print(f"(no plots: {e})")
    except beamfleet.ResultsError as e:
        print(f"(no plots: {e})")
    client.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except beamfleet.BeamfleetError as e:
        print(f"campaign: {e}", file=sys.stderr)
        sys.exit(1)
