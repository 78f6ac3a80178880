"""The fleet file and the job document, read as the C side reads them
(common/bf_config.c): one table of fields per document, every unknown key and
bad value refused with "file:line:column: field 'x': ...", defaults filled in,
and the job serialised as `beamfleet submit` sends it (bf_job_to_json: the
keys of the job file plus ``scenes_root`` and ``scenes``).

_JOB and _FLEET copy job_fields and fleet_fields of bf_config.c, the one
source of truth; ``tests/python/test_client.py tables`` fails when they
differ."""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Tuple, Union

from . import yamlite
from .errors import ConfigError, JobError
from .yamlite import Map, Scalar, Seq

STR_MAX = 4096
SCENES_MAX = 10000000
INT64_MAX = (1 << 63) - 1

# (path, type, flags, lo, hi); types as in bf_config.c. Flags: Y yaml only,
# R required in YAML, G exclusive minimum, O ordered pair, H has-flag (written
# only when given).
_JOB = [
    ("name", "name", "", 0, 0),
    ("scenes", "scenedir", "YR", 0, 0),
    ("max_scenes", "u64", "Y", 1, SCENES_MAX),
    ("output", "path", "", 0, 0),
    ("task", "task", "", 0, 0),
    ("timeout_s", "double", "G", 0, 8640000),
    ("max_attempts", "uint", "", 1, 100),
    ("validation", "section", "", 0, 0),
    ("validation.p10_min_dbm", "double", "", -500, 500),
    ("validation.p10_max_dbm", "double", "", -500, 500),
    ("validation.p90_min_dbm", "double", "", -500, 500),
    ("validation.min_percentile_range_db", "double", "", 0, 1000),
    ("solver", "section", "", 0, 0),
    ("solver.samples_per_tx", "u64", "", 1, 10000000000),
    ("solver.max_depth", "uint", "", 0, 32),
    ("solver.los", "bool", "", 0, 0),
    ("solver.specular_reflection", "bool", "", 0, 0),
    ("solver.refraction", "bool", "", 0, 0),
    ("solver.diffuse_reflection", "bool", "", 0, 0),
    ("solver.diffraction", "bool", "", 0, 0),
    ("solver.edge_diffraction", "bool", "", 0, 0),
    ("solver.diffraction_model", "dmodel", "", 0, 0),
    ("solver.seed", "u64", "", 0, INT64_MAX),
    ("solver.floor_dbm", "double", "", -1000, 100),
    ("solver.surface_offset", "offset", "", 0, 0),
    ("solver.noise", "section", "", 0, 0),
    ("solver.noise.figure_db", "double", "H", 0, 100),
    ("solver.noise.bandwidth_hz", "double", "HG", 0, 1e12),
    ("measurement", "section", "", 0, 0),
    ("measurement.center", "pair", "H", -1e9, 1e9),
    ("measurement.size", "pair", "HG", 0, 1e9),
    ("measurement.height", "double", "H", -1e6, 1e6),
    ("measurement.cell_size", "pair", "HG", 0, 1e6),
    ("optimizer", "section", "", 0, 0),
    ("optimizer.objective", "objective", "", 0, 0),
    ("optimizer.azimuth_deg", "pair", "O", -360, 720),
    ("optimizer.tilt_deg", "pair", "O", -90, 90),
    ("optimizer.coverage_dbm", "double", "", -500, 500),
    ("optimizer.sinr_db", "double", "H", -300, 300),
    ("exec", "section", "", 0, 0),
    ("exec.command", "strv", "", 1, 256),
    ("sionna_check", "section", "", 0, 0),
    ("sionna_check.command", "strv", "", 1, 256),
]

_JOB_DEFAULTS: Dict[str, Any] = {
    "task": "boresight", "timeout_s": 3600.0, "max_attempts": 3,
    "validation.p10_min_dbm": -270.0, "validation.p10_max_dbm": -80.0,
    "validation.p90_min_dbm": -130.0, "validation.min_percentile_range_db": 15.0,
    "solver.samples_per_tx": 1000000, "solver.max_depth": 3, "solver.los": True,
    "solver.specular_reflection": True, "solver.refraction": True,
    "solver.diffuse_reflection": False, "solver.diffraction": False,
    "solver.edge_diffraction": False, "solver.diffraction_model": "sionna",
    "solver.seed": 42,
    "solver.floor_dbm": -300.0, "solver.surface_offset": "sionna",
    "measurement.height": 1.5, "measurement.cell_size": [10.0, 10.0],
    "optimizer.objective": "mean_dbm", "optimizer.azimuth_deg": [0.0, 360.0],
    "optimizer.tilt_deg": [-10.0, 30.0], "optimizer.coverage_dbm": -100.0,
}

_FLEET = [
    ("broker", "section", "", 0, 0),
    ("broker.endpoint", "str", "", 0, 0),
    ("broker.bind", "str", "", 0, 0),
    ("broker.state", "str", "", 0, 0),
    ("broker.insecure", "bool", "", 0, 0),
    ("broker.retain_s", "uint", "", 1, 365 * 86400),
    ("heartbeat", "section", "", 0, 0),
    ("heartbeat.interval_ms", "uint", "", 50, 60000),
    ("heartbeat.liveness", "uint", "", 1, 100),
    ("collector", "section", "", 0, 0),
    ("collector.publish", "str", "", 0, 0),
    ("collector.output_root", "str", "", 0, 0),
    ("worker", "section", "", 0, 0),
    ("worker.allow_exec", "strv", "", 0, 1024),
    ("worker.interpreters", "strv", "", 0, 1024),
    ("worker.prefetch", "uint", "", 1, 1024),
    ("security", "section", "", 0, 0),
    ("security.keys", "str", "", 0, 0),
    ("security.identity", "str", "", 0, 0),
    ("metrics", "section", "", 0, 0),
    ("metrics.listen", "str", "", 0, 0),
]

_CHOICES = {"task": ("boresight", "exec"),
            "objective": ("mean_dbm", "p10_dbm", "mean_linear", "coverage", "mean_sinr_db",
                          "sinr_coverage"),
            "offset": ("sionna", "tight"), "dmodel": ("sionna", "luebbers")}


def safe_name(name: str) -> bool:
    """bf_safe_name: one path component, no '/', control characters, '.' or '..'."""
    if not name or name in (".", "..") or len(name.encode()) > 255:
        return False
    return not any(c == "/" or ord(c) < 0x20 or ord(c) == 0x7F for c in name)


def _g(x: float) -> str:
    """C's %.15g."""
    s = "%.15g" % x
    return s


def _number(text: str) -> Optional[float]:
    """The strict YAML number syntax of bf_yaml.c parse_number, or None."""
    p = text[1:] if text[:1] in "+-" else text
    sign = -1.0 if text[:1] == "-" else 1.0
    if p in (".inf", ".Inf", ".INF"):
        return sign * math.inf
    if p in (".nan", ".NaN", ".NAN"):
        return math.nan
    import re
    if not re.fullmatch(r"(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", p):
        return None
    return float(text)


class _Reader:
    """One document read through a field table, from YAML nodes or Python values."""

    def __init__(self, fields, what: str, source: str):
        self.fields = fields
        self.what = what
        self.source = source  # file name for YAML; "" for a dict
        self.values: Dict[str, Any] = {}
        self.where: Dict[str, Any] = {}
        self.seen: set = set()

    # ---- messages --------------------------------------------------------
    def at(self, node) -> str:
        if isinstance(node, (Scalar, Seq, Map)) and self.source:
            return f"{self.source}:{node.line}:{node.column}: "
        if isinstance(node, tuple) and self.source:
            return f"{self.source}:{node[0]}:{node[1]}: "
        return f"{self.source}: " if self.source else ""

    def fail(self, node, path: str, what: str):
        raise JobError(f"{self.at(node)}field '{path}': {what}") if self.what == "job" else \
            ConfigError(f"{self.at(node)}field '{path}': {what}")

    def error(self, node, text: str):
        raise (JobError if self.what == "job" else ConfigError)(f"{self.at(node)}{text}")

    @staticmethod
    def kind(node) -> str:
        if isinstance(node, (Map, dict)):
            return "a mapping"
        if isinstance(node, (Seq, list, tuple)):
            return "a list"
        return "a scalar"

    @staticmethod
    def shown(node) -> str:
        return node.value[:64] if isinstance(node, Scalar) else repr(node)[:64]

    # ---- the table ---------------------------------------------------------
    def children(self, prefix: str) -> List[Tuple[str, str, str, float, float]]:
        out = []
        for f in self.fields:
            path = f[0]
            if prefix:
                if path.startswith(prefix + ".") and "." not in path[len(prefix) + 1:]:
                    out.append(f)
            elif "." not in path:
                out.append(f)
        return out

    def section(self, node, prefix: str) -> None:
        what = prefix or self.what
        fields = self.children(prefix)
        allowed = [f[0].rsplit(".", 1)[-1] for f in fields]
        if isinstance(node, dict):
            entries = [(k, None, v) for k, v in node.items()]
        elif isinstance(node, Map):
            entries = list(zip(node.keys, node.key_pos, node.items))
        else:
            if isinstance(node, Scalar):
                self.fail(node, what, f"expected a mapping, got '{node.value[:64]}'")
            self.fail(node, what, f"expected a mapping, got {self.kind(node)}")
        done: Dict[str, int] = {}
        for key, pos, _ in entries:
            if not isinstance(key, str) or key not in allowed:
                self.error(pos, f"unknown key '{str(key)[:64]}' in {what} "
                                f"(allowed: {', '.join(allowed)})")
            if key in done:
                self.error(pos, f"duplicate key '{key[:64]}' in {what} (first at line {done[key]})")
            done[key] = pos[0] if pos else 0
        for key, pos, value in entries:
            f = fields[allowed.index(key)]
            self.seen.add(f[0])
            self.where[f[0]] = value
            if f[1] == "section":
                self.section(value, f[0])
            else:
                self.values[f[0]] = self.value(f, value)

    def value(self, f, node) -> Any:
        path, typ, flags, lo, hi = f
        if typ in ("str", "name", "path", "scenedir", "task", "objective", "offset", "dmodel"):
            s = self.string(node, path)
            return self.check_str(typ, node, path, s)
        if typ in ("uint", "u64"):
            return self.integer(node, path, lo, hi)
        if typ == "double":
            return self.real(f, node, path)
        if typ == "bool":
            return self.boolean(node, path)
        if typ == "pair":
            return self.pair(f, node)
        if typ == "strv":
            return self.strv(f, node)
        raise AssertionError(typ)

    def string(self, node, path: str) -> str:
        words = "a non-empty string"
        if isinstance(node, Scalar):
            null = not node.quoted and node.value in ("~", "null")
            if not node.value or null:
                self.fail(node, path, f"expected {words}, got '{node.value}'")
            return node.value
        if isinstance(node, (Map, Seq, dict, list, tuple)):
            self.fail(node, path, f"expected {words}, got {self.kind(node)}")
        if not isinstance(node, str) or not node:
            self.fail(node, path, f"expected {words}, got {node!r}")
        return node

    def check_str(self, typ: str, node, path: str, s: str) -> str:
        if len(s.encode()) > STR_MAX:
            self.fail(node, path, f"string longer than {STR_MAX} bytes")
        if "\0" in s:
            self.fail(node, path, "NUL character in a string")
        if typ == "name" and not safe_name(s):
            self.fail(node, path, f"'{s[:64]}' is not a usable name (one path component, "
                                  "no '/', control characters, '.' or '..')")
        if typ in _CHOICES and s not in _CHOICES[typ]:
            self.fail(node, path, f"expected one of {'|'.join(_CHOICES[typ])}, got '{s[:64]}'")
        return s

    def integer(self, node, path: str, lo: int, hi: int) -> int:
        words = f"an integer in [{lo}, {hi}]"
        if isinstance(node, Scalar):
            v: Optional[int] = None
            t = node.value
            if not node.quoted:
                p = t[1:] if t.startswith("+") else t
                if p.isdigit() and p.isascii():
                    v = int(p)
                else:
                    d = _number(t)
                    if d is not None and math.isfinite(d) and d >= 0 and d == math.floor(d) \
                            and d < 2.0 ** 64:
                        v = int(d)
            if v is None or v < lo or v > hi:
                self.fail(node, path, f"expected {words}, got '{t[:64]}'")
            return v
        if isinstance(node, (Map, Seq)):
            self.fail(node, path, f"expected {words}, got {self.kind(node)}")
        ok = isinstance(node, int) and not isinstance(node, bool)
        if isinstance(node, float) and math.isfinite(node) and node == math.floor(node):
            node, ok = int(node), True
        if not ok or not lo <= node <= hi:
            self.fail(node, path, f"expected {words}, got {node!r}")
        return int(node)

    def real(self, f, node, path: str) -> float:
        _, _, flags, lo, hi = f
        gt = "G" in flags
        words = f"a number in {'(' if gt else '['}{_g(lo)}, {_g(hi)}]"
        if isinstance(node, Scalar):
            d = None if node.quoted else _number(node.value)
            if d is None or math.isnan(d) or d < lo or d > hi or (gt and d <= lo):
                self.fail(node, path, f"expected {words}, got '{node.value[:64]}'")
            return d
        if isinstance(node, (Map, Seq, dict, list, tuple)):
            self.fail(node, path, f"expected {words}, got {self.kind(node)}")
        if isinstance(node, bool) or not isinstance(node, (int, float)) or \
                not math.isfinite(node) or node < lo or node > hi or (gt and node <= lo):
            self.fail(node, path, f"expected {words}, got {node!r}")
        return float(node)

    def boolean(self, node, path: str) -> bool:
        if isinstance(node, Scalar):
            if not node.quoted:
                low = node.value.lower()
                if low in ("true", "yes", "on"):
                    return True
                if low in ("false", "no", "off"):
                    return False
            self.fail(node, path, "expected true or false, got "
                                  f"{'the string ' if node.quoted else ''}'{node.value[:64]}'")
        if isinstance(node, (Map, Seq)):
            self.fail(node, path, f"expected true or false, got {self.kind(node)}")
        if not isinstance(node, bool):
            self.fail(node, path, f"expected true or false, got {node!r}")
        return node

    def pair(self, f, node) -> List[float]:
        path = f[0]
        items = node.items if isinstance(node, Seq) else node if isinstance(node, (list, tuple)) \
            else None
        if items is None or len(items) != 2:
            if items is not None:
                self.fail(node, path, f"expected a list of 2 numbers, got {len(items)} items")
            if isinstance(node, Scalar):
                self.fail(node, path, f"expected a list of 2 numbers, got '{node.value[:64]}'")
            self.fail(node, path, f"expected a list of 2 numbers, got {self.kind(node)}")
        for i, item in enumerate(items):  # any number first, as bf_yaml_doubles
            if isinstance(item, Scalar) and (item.quoted or _number(item.value) is None):
                self.fail(item, f"{path}[{i}]", f"expected a number, got '{item.value[:64]}'")
            if isinstance(item, (Map, Seq)):
                self.fail(item, f"{path}[{i}]", f"expected a number, got {self.kind(item)}")
        v = [self.real(f, item, f"{path}[{i}]") for i, item in enumerate(items)]
        if "O" in f[2] and not v[0] < v[1]:
            shown = [x.value if isinstance(x, Scalar) else _g(float(x)) for x in items]
            self.fail(node, path, f"expected [low, high] with low < high, "
                                  f"got [{shown[0]}, {shown[1]}]")
        return v

    def strv(self, f, node) -> List[str]:
        path, _, _, lo, hi = f
        if isinstance(node, Seq):
            items = node.items
        elif isinstance(node, (list, tuple)):
            items = list(node)
        else:
            self.fail(node, path, "expected a list of strings, got "
                                  f"{'a mapping' if isinstance(node, (Map, dict)) else 'a scalar'}")
        if not lo <= len(items) <= hi:
            self.fail(node, path, f"expected {lo} to {hi} strings, got {len(items)}")
        out = []
        for i, item in enumerate(items):
            s = self.string(item, f"{path}[{i}]")
            out.append(self.check_str("str", item, f"{path}[{i}]", s))
        return out


def _normalize(path: str) -> str:
    """The lexical normalization of bf_config.c (normalize): '//', '/./', 'x/..'."""
    parts: List[str] = []
    for p in path.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    return "/" + "/".join(parts)


def _resolve(base: str, path: str) -> str:
    return _normalize(path if path.startswith("/") else f"{base}/{path}")


def _list_scenes(r: _Reader, at, root: str) -> List[str]:
    try:
        names = os.listdir(root)
    except OSError as e:
        r.fail(at, "scenes", f"cannot list '{root}': {e.strerror}")
    out = []
    for n in names:
        if n.startswith(".") or not os.path.isdir(os.path.join(root, n)) or not safe_name(n):
            continue
        out.append(n)
    return sorted(out, key=lambda s: s.encode())


def job_document(job: Union[str, os.PathLike, Dict[str, Any]],
                 base_dir: Optional[str] = None) -> Dict[str, Any]:
    """The SUBMIT document for a job file (path) or a job dict (the keys of a
    job file, as Python values; relative paths against base_dir, default the
    current directory). JobError names the file, line, column and field."""
    if isinstance(job, dict):
        r = _Reader(_JOB, "job", "")
        source_path = None
        r.section(job, "")
        base = os.path.realpath(base_dir or os.getcwd())
        root_node = None
    else:
        source_path = os.fspath(job)
        if not os.path.exists(source_path):
            raise JobError(f"{source_path}: No such file or directory")
        if os.path.isdir(source_path):
            raise JobError(f"{source_path}: Is a directory")
        try:
            root_node = yamlite.load(source_path)
        except JobError:
            raise
        except ConfigError as e:
            raise JobError(str(e)) from None
        r = _Reader(_JOB, "job", source_path)
        r.section(root_node, "")
        head = os.path.dirname(source_path) or "."
        base = os.path.realpath(head)
    if "scenes" not in r.seen:
        if root_node is not None:
            r.error(root_node, "missing required key 'scenes' in job")
        raise JobError("missing required key 'scenes' in job")
    values = dict(_JOB_DEFAULTS)
    values.update(r.values)
    if "name" not in r.values:
        name = "job"
        if source_path:
            name = os.path.basename(source_path)
            dot = name.rfind(".")
            if dot > 0:
                name = name[:dot]
            if not safe_name(name) or len(name.encode()) > STR_MAX:
                name = "job"
        values["name"] = name
    at = r.where.get("scenes")
    written = values.pop("scenes")
    root = os.path.realpath(_resolve(base, written))
    if not os.path.exists(root):
        r.fail(at, "scenes", f"no such directory '{written[:256]}'")
    if not os.path.isdir(root):
        r.fail(at, "scenes", f"not a directory '{written[:256]}'")
    if len(root.encode()) > STR_MAX:
        r.fail(at, "scenes", f"path longer than {STR_MAX} bytes")
    scenes = _list_scenes(r, at, root)
    if not scenes:
        r.fail(at, "scenes", f"no scene directories in '{root[:256]}'")
    max_scenes = values.pop("max_scenes", None)
    if max_scenes is not None:
        scenes = scenes[:max_scenes]
    output = _resolve(base, values.get("output", "parallel_results"))
    if len(output.encode()) > STR_MAX:
        r.fail(r.where.get("output"), "output", f"path longer than {STR_MAX} bytes")
    if values["task"] == "exec" and "exec.command" not in values:
        r.fail(r.where.get("exec") or r.where.get("task"), "exec.command",
               "missing: task exec needs a command to run")
    if values["task"] == "boresight" and "exec" in r.seen:
        r.fail(r.where.get("exec"), "exec", "only allowed with task: exec")
    if values["task"] == "exec" and "sionna_check" in r.seen:
        r.fail(r.where.get("sionna_check"), "sionna_check", "only allowed with task: boresight")
    if "sionna_check" in r.seen and "sionna_check.command" not in values:
        r.fail(r.where.get("sionna_check"), "sionna_check.command",
               "missing: the program to run (e.g. [python3, sionna_task.py])")
    # bf_job_to_json: the table's order; has-fields only when given.
    doc: Dict[str, Any] = {}
    extra = {"scenes_root": root, "scenes": scenes, "output": output}
    for path, typ, flags, _, _ in _JOB:
        if path == "scenes":
            doc["scenes_root"] = extra["scenes_root"]
            doc["scenes"] = extra["scenes"]
            continue
        if typ == "section" or "Y" in flags:
            continue
        if path == "output":
            doc["output"] = output
            continue
        if path not in values:
            continue
        v = values[path]
        cur = doc
        parts = path.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = list(v) if isinstance(v, list) else v
    return doc


class Fleet:
    """What a client needs of a fleet file (bf_fleet_t, client side)."""

    def __init__(self) -> None:
        env = os.environ.get("BEAMFLEET_BROKER")
        self.broker_endpoint: str = env if env else "tcp://127.0.0.1:5555"
        self.collector_publish: str = "tcp://127.0.0.1:5557"
        self.security_keys: Optional[str] = None
        self.security_identity: Optional[str] = None
        self.path: Optional[str] = None
        self.values: Dict[str, Any] = {}


def load_fleet(path: Optional[str]) -> Fleet:
    """The fleet file at path over the defaults (None: the defaults alone)."""
    fleet = Fleet()
    if path is None:
        return fleet
    root = yamlite.load(os.fspath(path))
    r = _Reader(_FLEET, "fleet", os.fspath(path))
    r.section(root, "")
    if "security" in r.seen and ("security.keys" in r.values) != ("security.identity" in r.values):
        r.fail(r.where.get("security"), "security", "needs both 'keys' and 'identity'")
    fleet.path = os.fspath(path)
    fleet.values = r.values
    fleet.broker_endpoint = r.values.get("broker.endpoint", fleet.broker_endpoint)
    fleet.collector_publish = r.values.get("collector.publish", fleet.collector_publish)
    fleet.security_keys = r.values.get("security.keys")
    fleet.security_identity = r.values.get("security.identity")
    return fleet


# ---- CURVE key files (common/bf_security.c) ---------------------------------

ROLES = ("worker", "collector", "client", "admin", "broker")


def load_key(keys_dir: str, name: str, secret: bool) -> Dict[str, str]:
    """DIR/NAME.public or DIR/NAME.secret as {name, role, public[, secret]},
    checked as bf_key_load checks it (mode 0600 for a secret, Z85 keys, the
    public key derived from the secret)."""
    import stat

    import zmq
    from zmq.utils import z85

    path = f"{keys_dir}/{name}.{'secret' if secret else 'public'}"
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    if secret and st.st_mode & 0o077:
        raise ConfigError(f"{path}: a secret key readable by others (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    root = yamlite.load(path, 16 << 10)
    fields = ["name", "role", "public"] + (["secret"] if secret else [])
    if not isinstance(root, Map):
        raise ConfigError(f"{path}:{root.line}:{root.column}: field 'key': expected a mapping")
    for k, pos in zip(root.keys, root.key_pos):
        if k not in fields:
            raise ConfigError(f"{path}:{pos[0]}:{pos[1]}: unknown key '{k[:64]}' in key "
                              f"(allowed: {', '.join(fields)})")
    out: Dict[str, str] = {}
    n = root.get("name")
    if not isinstance(n, Scalar) or n.value != name:
        where = n or root
        raise ConfigError(f"{path}:{where.line}:{where.column}: field 'name': expected '{name}' "
                          "(the file's name)")
    out["name"] = name
    n = root.get("role")
    if not isinstance(n, Scalar) or n.value not in ROLES:
        where = n or root
        raise ConfigError(f"{path}:{where.line}:{where.column}: field 'role': expected worker, "
                          "collector, client, admin or broker")
    out["role"] = n.value
    for field in fields[2:]:
        n = root.get(field)
        if n is None:
            raise ConfigError(f"{path}:{root.line}:{root.column}: missing field '{field}'")
        ok = isinstance(n, Scalar) and len(n.value) == 40
        if ok:
            try:
                z85.decode(n.value.encode())
            except Exception:
                ok = False
        if not ok:
            raise ConfigError(f"{path}:{n.line}:{n.column}: field '{field}': expected a "
                              "40-character Z85 CURVE key")
        out[field] = n.value
    if secret:
        derived = zmq.curve_public(out["secret"].encode()).decode()
        if derived != out["public"]:
            raise ConfigError(f"{path}: 'public' is not the public key of 'secret'")
    return out


class Identity:
    """A process's CURVE identity (bf_security_new): its own key pair and the
    broker's public key, from the fleet file's security section."""

    def __init__(self, keys_dir: str, identity: str):
        self.dir = keys_dir
        self.own = load_key(keys_dir, identity, True)
        self.broker = load_key(keys_dir, "broker", False)
        if self.broker["role"] != "broker":
            raise ConfigError(f"{keys_dir}/broker.public: role is {self.broker['role']}, "
                              "expected broker")
        if (self.own["role"] == "broker") != (identity == "broker"):
            raise ConfigError(f"{keys_dir}/{identity}.secret: role {self.own['role']}: only the "
                              "key named broker has role broker")

    def apply(self, sock, server_public: Optional[str] = None) -> None:
        """Makes sock a CURVE client of the broker, or of server_public."""
        import zmq

        sock.setsockopt(zmq.CURVE_SERVERKEY, (server_public or self.broker["public"]).encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.own["public"].encode())
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.own["secret"].encode())

    def server_key(self, name: str) -> str:
        """The public key of DIR/name.public (the collector's stream)."""
        return load_key(self.dir, name, False)["public"]
