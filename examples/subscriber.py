#!/usr/bin/env python3
"""A service consuming Beamfleet's live result stream.

The collector publishes every result it has durably written on a ZeroMQ PUB
socket (`collector.publish`, default tcp://127.0.0.1:5557) as two frames:

    b"result"    | MessagePack map: the result document (docs/protocol.md)
    b"job-done"  | MessagePack map: JOBINFO, once the job's final report is written

This example keeps a running summary per job and prints one line per result,
the way a dashboard, a database loader or an alerting service would start.
It needs pyzmq and msgpack (pip install pyzmq msgpack).

    python3 examples/subscriber.py --endpoint tcp://127.0.0.1:5557 --until-job-done

A PUB socket drops messages for subscribers that are not connected yet: a
service that must see every result reads results.jsonl for what came before
it started, then follows the stream (de-duplicating by task_id).
"""
import argparse
import json
import sys

import msgpack
import zmq


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", default="tcp://127.0.0.1:5557", help="the collector's PUB endpoint")
    ap.add_argument("--until-job-done", action="store_true", help="exit after the first job-done")
    ap.add_argument("--timeout", type=float, default=0, help="exit after this many idle seconds (0: never)")
    args = ap.parse_args()

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.MAXMSGSIZE, 8 << 20)  # the protocol's limit: a hostile peer cannot exhaust us
    sub.setsockopt(zmq.SUBSCRIBE, b"result")
    sub.setsockopt(zmq.SUBSCRIBE, b"job-done")
    sub.connect(args.endpoint)

    jobs = {}  # job id -> {"n": results, "success": n, "improvement": sum}
    seen = set()
    while True:
        if args.timeout and not sub.poll(int(args.timeout * 1000)):
            print("subscriber: idle, exiting", file=sys.stderr)
            return 1
        frames = sub.recv_multipart()
        if len(frames) != 2:
            print(f"subscriber: skipping a message of {len(frames)} frames", file=sys.stderr)
            continue
        topic, body = frames
        try:
            doc = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as e:  # untrusted bytes: report and go on
            print(f"subscriber: skipping undecodable {topic!r}: {e}", file=sys.stderr)
            continue
        if topic == b"result":
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
        elif topic == b"job-done":
            j = jobs.get(doc.get("id"), {"n": 0})
            print(json.dumps({"job": doc.get("id"), "done": True, "state": doc.get("state"),
                              "total": doc.get("total"), "seen": j["n"]}), flush=True)
            if args.until_job_done:
                return 0


if __name__ == "__main__":
    sys.exit(main())
