"""The Beamfleet wire format (docs/protocol.md sections 2-6): one ZeroMQ frame
per message, a MessagePack array ``[version, type, field, ...]`` whose fields
follow the global field order.

The tables below are copies of PROTO_FIELDS and PROTO_MESSAGES in
``proto/proto.h``, the one source of truth; ``tests/python/test_client.py
tables`` fails when they differ."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import msgpack

from .errors import ProtocolError

VERSION = 1
MAX_FRAME = 32 << 20  # PROTO_MAX_FRAME
MAX_STR = 4096  # PROTO_MAX_STR

FIELDS = ["worker", "job_id", "task_id", "scene", "stage", "reason", "credit", "attempt",
          "seq", "total", "code", "timeout_ms", "fraction", "obj"]
_EMPTY: Dict[str, Any] = {"credit": 0, "attempt": 0, "seq": 0, "total": 0, "code": 0,
                          "timeout_ms": 0, "fraction": 0.0}
_KIND = {f: "uint" for f in ("credit", "attempt", "seq", "total", "code", "timeout_ms")}
_KIND.update(fraction="real", obj="obj")

# code: (name, fields in wire order)
MESSAGES: Dict[int, Tuple[str, List[str]]] = {
    1: ("ready", ["worker", "credit", "obj"]),
    2: ("task", ["job_id", "task_id", "scene", "attempt", "timeout_ms", "obj"]),
    3: ("progress", ["task_id", "stage", "attempt", "fraction"]),
    4: ("result", ["task_id", "attempt", "obj"]),
    5: ("heartbeat", []), 6: ("goodbye", []), 7: ("submit", ["obj"]),
    8: ("submitted", ["job_id", "total"]), 9: ("status", ["job_id", "seq"]),
    10: ("status-reply", ["obj"]), 11: ("cancel", ["job_id"]),
    12: ("cancelled", ["job_id", "total"]), 13: ("collect", ["worker", "credit"]),
    14: ("deliver", ["job_id", "task_id", "seq", "obj"]),
    15: ("job-done", ["job_id", "seq", "obj"]), 16: ("ack", ["task_id", "seq"]),
    17: ("error", ["reason", "code"]), 18: ("abort", ["task_id", "reason"]),
    19: ("stats", ["obj"]), 20: ("lost", ["worker", "reason"]), 21: ("acks", ["obj"]),
}
CODES = {name: code for code, (name, _) in MESSAGES.items()}


def encode(name: str, **values: Any) -> bytes:
    """One message as its frame; missing fields are sent empty ("", 0, {})."""
    code = CODES[name]
    body = [VERSION, code]
    for f in MESSAGES[code][1]:
        v = values.get(f)
        if v is None:
            v = {} if f == "obj" else _EMPTY.get(f, "")
        body.append(v)
    try:
        frame = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"{name}: cannot encode: {e}") from None
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"the {name} request does not fit in one message "
                            f"({len(frame)} bytes, limit {MAX_FRAME >> 20} MiB)")
    return frame


def decode(frame: bytes) -> Tuple[str, Dict[str, Any]]:
    """A frame as (type name, {field: value}); ProtocolError when malformed."""
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"message of {len(frame)} bytes exceeds {MAX_FRAME}")
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as e:  # untrusted bytes: any decoder failure is a protocol error
        raise ProtocolError(f"not MessagePack: {e}") from None
    if not isinstance(msg, list) or len(msg) < 2:
        raise ProtocolError("expected an array [version, type, ...]")
    if msg[0] != VERSION:
        raise ProtocolError(f"version {msg[0]}, expected {VERSION}")
    if msg[1] not in MESSAGES:
        raise ProtocolError(f"unknown message type {msg[1]}")
    name, fields = MESSAGES[msg[1]]
    if len(msg) != 2 + len(fields):
        raise ProtocolError(f"{name}: {len(msg) - 2} fields, expected {len(fields)}")
    out = dict(zip(fields, msg[2:]))
    for f, v in out.items():
        kind = _KIND.get(f, "str")
        ok = (isinstance(v, str) if kind == "str" else
              isinstance(v, int) and not isinstance(v, bool) and v >= 0 if kind == "uint" else
              isinstance(v, (int, float)) and not isinstance(v, bool) if kind == "real" else
              isinstance(v, dict))
        if not ok:
            raise ProtocolError(f"{name}: field {f}: expected {kind if kind != 'obj' else 'map'}, "
                                f"got {type(v).__name__}")
    return name, out


def unpack_document(body: bytes) -> Dict[str, Any]:
    """A document of the collector's stream (a MessagePack map)."""
    try:
        doc = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as e:
        raise ProtocolError(f"not MessagePack: {e}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"expected a map, got {type(doc).__name__}")
    return doc
