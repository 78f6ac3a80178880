#!/usr/bin/env python3
"""A service consuming Beamfleet's live result stream.

The collector publishes every result it has durably written on a ZeroMQ PUB
socket (`collector.publish`, default tcp://127.0.0.1:5557) as two frames:

    b"result"    | MessagePack map: the result document (docs/protocol.md)
    b"job-done"  | MessagePack map: JOBINFO, once the job's final report is written

This example keeps a running summary per job and prints one line per result,
the way a dashboard, a database loader or an alerting service would start.
It reads the stream through the beamfleet Python package (python/ in the
repository: pip install ./python; it needs pyzmq and msgpack), which also
brings CURVE: with -c FLEET.yaml it uses the fleet file's keys.

    python3 examples/subscriber.py --endpoint tcp://127.0.0.1:5557 --until-job-done

A PUB socket drops messages for subscribers that are not connected yet: a
service that must see every result reads results.jsonl for what came before
it started (beamfleet.read_results), then follows the stream (de-duplicating
by task_id).
"""
import argparse
import json
import logging
import os
import sys

try:
    import beamfleet
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import beamfleet


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", default=None,
                    help="the collector's PUB endpoint [the fleet file's collector.publish, "
                         "tcp://127.0.0.1:5557]")
    ap.add_argument("-c", "--fleet", default=None, help="a fleet file (its CURVE keys, its endpoints)")
    ap.add_argument("--until-job-done", action="store_true", help="exit after the first job-done")
    ap.add_argument("--timeout", type=float, default=0, help="exit after this many idle seconds (0: never)")
    args = ap.parse_args()
    logging.basicConfig(format="subscriber: %(message)s")  # skipped messages go to stderr

    try:
        client = beamfleet.Client(fleet=args.fleet, publish=args.endpoint)
        stream = client.watch(until_done=args.until_job_done,
                              idle_timeout=args.timeout if args.timeout > 0 else None)
    except beamfleet.BeamfleetError as e:
        print(f"subscriber: {e}", file=sys.stderr)
        return 2

    jobs = {}  # job id -> {"n": results, "success": n, "improvement": sum}
    seen = set()
    try:
        for event in stream:
            if event["event"] == "result":
                doc = event["result"]
                if doc.get("task_id") in seen:
                    continue
                seen.add(doc.get("task_id"))
                j = jobs.setdefault(doc.get("job_id", "?"), {"n": 0, "success": 0, "improvement": 0.0})
                j["n"] += 1
                imp = (doc.get("stats") or {}).get("improvement_mean")
                if doc.get("status") == "success" and isinstance(imp, (int, float)):
                    j["success"] += 1
                    j["improvement"] += imp
                mean = j["improvement"] / j["success"] if j["success"] else 0.0
                print(json.dumps({"job": doc.get("job_id"), "scene": doc.get("scene"),
                                  "status": doc.get("status"), "improvement_db": imp,
                                  "results": j["n"], "mean_improvement_db": round(mean, 3)}), flush=True)
            else:
                doc = event["job"]
                j = jobs.get(doc.get("id"), {"n": 0})
                print(json.dumps({"job": doc.get("id"), "done": True, "state": doc.get("state"),
                                  "total": doc.get("total"), "seen": j["n"]}), flush=True)
    except beamfleet.FleetTimeout:
        print("subscriber: idle, exiting", file=sys.stderr)
        return 1
    except beamfleet.BeamfleetError as e:
        print(f"subscriber: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
