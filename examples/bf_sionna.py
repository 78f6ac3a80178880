"""Beamfleet scene directories in Sionna RT: shared by examples/sionna_task.py
(the exec task that optimizes a transmitter's orientation in Sionna) and
tests/sionna/test_sionna.py (our engine against Sionna).

  read_scene(dir)      scene.yaml read and checked as kernels/kern_scene.c
                       does (same keys, ranges and defaults), plus the
                       scene's XML file; SceneError (one line) on bad input
  grid(scene, ...)     the measurement grid the native engine uses
                       (DESIGN section 3: corner at centre - size/2,
                       ceil(size/cell) cells per axis)
  in_zone(...)         the zone test of kern_scene_in_zone (even-odd rule)
  dbm(...), stats(...) dBm per cell with the engine's floor, and the zone
                       statistics of the boresight result (numpy's linear
                       percentiles are bf_percentile's)
  SionnaScene          the Sionna RT scene: XML, frequency, antenna,
                       transmitter; radio_map() runs RadioMapSolver on the grid

Only numpy (and, for SionnaScene, Mitsuba and Sionna RT with the
llvm_ad_mono_polarized variant or the one given) are needed: scene.yaml is
read by the small YAML reader below, which takes the block and flow styles
scene files use, because the Sionna virtual environment has no PyYAML.
"""
import math
import os
import re

import numpy as np

FLOOR_DBM = -300.0            # the engine's default solver.floor_dbm
PATTERNS = ("iso", "dipole", "hw_dipole", "tr38901")
POLARIZATIONS = ("V", "H", "cross", "cross_independent")
MAX_ZONE_POINTS = 4096


class SceneError(Exception):
    """Bad scene input; str() is one line naming the file and the field."""


# ---- a small YAML reader ------------------------------------------------------

def _scalar(text, where):
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        return t[1:-1]
    if t in ("true", "True"):
        return True
    if t in ("false", "False"):
        return False
    if t in ("", "~", "null"):
        return None
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", t):
        return float(t) if re.search(r"[.eE]", t) else int(t)
    if t[0] in "{}[],&*!|>%@`":
        raise SceneError(f"{where}: cannot read '{t[:30]}'")
    return t


def _flow(text, pos, where):
    """A flow value at text[pos:]: (value, next position)."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        raise SceneError(f"{where}: unexpected end of a flow collection")
    c = text[pos]
    if c in "[{":
        close = "]" if c == "[" else "}"
        out = [] if c == "[" else {}
        pos += 1
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos < len(text) and text[pos] == close:
                return out, pos + 1
            if c == "[":
                v, pos = _flow(text, pos, where)
                out.append(v)
            else:
                m = re.compile(r"\s*([^:,{}\[\]]+?)\s*:(\s|$)").match(text, pos)
                if not m:
                    raise SceneError(f"{where}: expected 'key: value' in '{text[pos:pos + 30]}'")
                key = _scalar(m.group(1), where)
                if key in out:
                    raise SceneError(f"{where}: key '{key}' given twice")
                v, pos = _flow(text, m.end(), where)
                out[key] = v
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos < len(text) and text[pos] == ",":
                pos += 1
            elif pos < len(text) and text[pos] == close:
                continue
            else:
                raise SceneError(f"{where}: expected ',' or '{close}'")
    if c in "\"'":
        end = text.find(c, pos + 1)
        if end < 0:
            raise SceneError(f"{where}: unterminated string")
        return text[pos + 1:end], end + 1
    m = re.compile(r"[^,\]}]*").match(text, pos)
    return _scalar(m.group(0), where), m.end()


def _strip_comment(line):
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _depth(text):
    """Open brackets left at the end of text (quoted text aside)."""
    depth, quote = 0, None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return depth


def parse_yaml(text, name="scene.yaml"):
    """The subset of YAML scene and job files use: block mappings and
    sequences, flow collections (over several lines too), plain and quoted
    scalars, comments."""
    lines = []
    for no, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[:len(raw) - len(raw.lstrip())]:
            raise SceneError(f"{name}:{no}: tabs are not allowed for indentation")
        s = _strip_comment(raw).rstrip()
        if s.strip() and s.strip() not in ("---", "..."):
            lines.append((len(s) - len(s.lstrip()), s.strip(), no))

    def value(rest, i, no):
        """The value after 'key:' or '- ' on line i: (value, next line)."""
        if rest[:1] in ("[", "{"):
            buf, j = rest, i + 1
            while _depth(buf) > 0 and j < len(lines):  # a collection over lines
                buf += " " + lines[j][1]
                j += 1
            v, end = _flow(buf, 0, f"{name}:{no}")
            if buf[end:].strip():
                raise SceneError(f"{name}:{no}: text after a flow collection")
            return v, j
        if rest:
            return _scalar(rest, f"{name}:{no}"), i + 1
        if i + 1 < len(lines) and lines[i + 1][0] > lines[i][0]:
            return block(i + 1, lines[i + 1][0])
        if i + 1 < len(lines) and lines[i + 1][0] == lines[i][0] and lines[i + 1][1][:2] == "- ":
            return block(i + 1, lines[i + 1][0])
        return None, i + 1

    def block(i, indent):
        seq = lines[i][1] == "-" or lines[i][1].startswith("- ")
        out = [] if seq else {}
        while i < len(lines) and lines[i][0] == indent:
            _, s, no = lines[i]
            if seq:
                if not (s == "-" or s.startswith("- ")):
                    raise SceneError(f"{name}:{no}: expected '- item'")
                v, i = value(s[2:].strip(), i, no)
                out.append(v)
                continue
            m = re.fullmatch(r"([^:{}\[\]]+?)\s*:(\s+(.*))?", s)
            if not m:
                raise SceneError(f"{name}:{no}: expected 'key: value'")
            key = m.group(1).strip().strip("\"'")
            if key in out:
                raise SceneError(f"{name}:{no}: key '{key}' given twice")
            out[key], i = value((m.group(3) or "").strip(), i, no)
        if i < len(lines) and lines[i][0] > indent:
            raise SceneError(f"{name}:{lines[i][2]}: unexpected indentation")
        return out, i

    if not lines:
        return None
    if lines[0][1][:1] in ("[", "{"):
        v, i = value(lines[0][1], 0, lines[0][2])
    else:
        v, i = block(0, lines[0][0])
    if i < len(lines):
        raise SceneError(f"{name}:{lines[i][2]}: unexpected indentation")
    return v


# ---- scene.yaml, checked as kern_scene.c checks it ----------------------------

def _keys(d, what, allowed, where):
    if not isinstance(d, dict):
        raise SceneError(f"{where}: '{what}' must be a mapping")
    for k in d:
        if k not in allowed:
            raise SceneError(f"{where}: unknown key '{what + '.' if what else ''}{k}'")


def _num(v, what, lo, hi, where):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or not lo <= v <= hi:
        raise SceneError(f"{where}: field '{what}': expected a number in [{lo:g}, {hi:g}]")
    return float(v)


def _nums(v, what, n, where):
    if not isinstance(v, list) or len(v) != n:
        raise SceneError(f"{where}: field '{what}': expected a list of {n} numbers")
    return [_num(x, what, -1e300, 1e300, where) for x in v]


def find_xml(scene_dir):
    """scene.xml, else the one *.xml of the directory (kern_scene.c's rule)."""
    if os.path.isfile(os.path.join(scene_dir, "scene.xml")):
        return os.path.join(scene_dir, "scene.xml")
    try:
        xs = sorted(f for f in os.listdir(scene_dir) if f.endswith(".xml") and f[0] != ".")
    except OSError as e:
        raise SceneError(f"{scene_dir}: {e.strerror}")
    if not xs:
        raise SceneError(f"{scene_dir}: no scene XML file")
    if len(xs) > 1:
        raise SceneError(f"{scene_dir}: {len(xs)} XML files and no scene.xml: which is the scene?")
    return os.path.join(scene_dir, xs[0])


def read_scene(scene_dir):
    """The scene directory as a dict: dir, name, xml, frequency_hz, tx
    {position, power_dbm, pattern, polarization, azimuth_deg, tilt_deg,
    roll_deg}, zone (list of (x, y), a rect as its 4 corners), measurement
    (only the keys scene.yaml gives)."""
    scene_dir = os.path.abspath(scene_dir)
    where = os.path.join(scene_dir, "scene.yaml")
    try:
        with open(where, encoding="utf-8") as f:
            text = f.read((1 << 20) + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise SceneError(f"{where}: {getattr(e, 'strerror', None) or e}")
    if len(text) > 1 << 20:
        raise SceneError(f"{where}: larger than 1 MiB")
    root = parse_yaml(text, where)
    if root is None:
        raise SceneError(f"{where}: empty")
    _keys(root, "", ("frequency_hz", "transmitter", "zone", "measurement"), where)
    for k in ("frequency_hz", "transmitter", "zone"):
        if k not in root:
            raise SceneError(f"{where}: missing key '{k}'")
    s = {"dir": scene_dir, "name": os.path.basename(scene_dir.rstrip("/")),
         "frequency_hz": _num(root["frequency_hz"], "frequency_hz", 1e3, 1e13, where)}
    t = root["transmitter"]
    _keys(t, "transmitter", ("position", "power_dbm", "antenna", "orientation"), where)
    if "position" not in t:
        raise SceneError(f"{where}: missing key 'transmitter.position'")
    tx = {"position": _nums(t["position"], "transmitter.position", 3, where),
          "power_dbm": _num(t.get("power_dbm", 44), "transmitter.power_dbm", -100, 100, where),
          "pattern": "tr38901", "polarization": "V",
          "azimuth_deg": 0.0, "tilt_deg": 0.0, "roll_deg": 0.0}
    ant = t.get("antenna", {})
    _keys(ant, "transmitter.antenna", ("pattern", "polarization"), where)
    for key, names in (("pattern", PATTERNS), ("polarization", POLARIZATIONS)):
        if key in ant:
            if ant[key] not in names:
                raise SceneError(f"{where}: field 'transmitter.antenna.{key}': expected one of "
                                 f"{', '.join(names)}, not '{ant[key]}'")
            tx[key] = ant[key]
    o = t.get("orientation", {})
    _keys(o, "transmitter.orientation", ("azimuth_deg", "tilt_deg", "roll_deg"), where)
    for k in o:
        tx[k] = _num(o[k], k, -360, 720, where)
    s["tx"] = tx
    z = root["zone"]
    _keys(z, "zone", ("polygon", "rect"), where)
    if ("polygon" in z) == ("rect" in z):
        raise SceneError(f"{where}: zone: give exactly one of 'polygon' or 'rect'")
    if "rect" in z:
        r = _nums(z["rect"], "zone.rect", 4, where)
        if not (r[0] < r[2] and r[1] < r[3]):
            raise SceneError(f"{where}: zone.rect: expected [xmin, ymin, xmax, ymax] with "
                             "xmin < xmax and ymin < ymax")
        s["zone"] = [(r[0], r[1]), (r[2], r[1]), (r[2], r[3]), (r[0], r[3])]
    else:
        p = z["polygon"]
        if not isinstance(p, list) or not 3 <= len(p) <= MAX_ZONE_POINTS:
            raise SceneError(f"{where}: zone.polygon: expected a list of 3 to "
                             f"{MAX_ZONE_POINTS} [x, y] points")
        s["zone"] = [tuple(_nums(q, "zone.polygon point", 2, where)) for q in p]
    m = root.get("measurement", {})
    _keys(m, "measurement", ("center", "size", "height", "cell_size"), where)
    meas = {}
    for k in ("center", "size", "cell_size"):
        if k in m:
            meas[k] = _nums(m[k], f"measurement.{k}", 2, where)
            if k != "center" and not (meas[k][0] > 0 and meas[k][1] > 0):
                raise SceneError(f"{where}: measurement.{k}: both sides must be positive")
    if "height" in m:
        meas["height"] = _num(m["height"], "measurement.height", -1e4, 1e4, where)
    s["measurement"] = meas
    s["xml"] = find_xml(scene_dir)
    return s


def grid(scene, bbox, cell_size=(10.0, 10.0), height=1.5, center=None, size=None):
    """The measurement grid: (x0, y0, dx, dy, nx, ny, z). scene.yaml's
    measurement wins over the job's (the arguments), which win over the
    scene's bounding box ((xmin, ymin), (xmax, ymax))."""
    m = scene["measurement"]
    (bx0, by0), (bx1, by1) = bbox
    c = m.get("center") or center or ((bx0 + bx1) / 2, (by0 + by1) / 2)
    w, h = m.get("size") or size or (bx1 - bx0, by1 - by0)
    dx, dy = m.get("cell_size") or cell_size
    z = m.get("height", height)
    if not (w > 0 and h > 0):
        raise SceneError(f"{scene['dir']}: measurement: empty grid (size {w:g} x {h:g} m)")
    nx = max(1, math.ceil(w / dx - 1e-9))
    ny = max(1, math.ceil(h / dy - 1e-9))
    if nx * ny > 1 << 24:
        raise SceneError(f"{scene['dir']}: measurement: {nx} x {ny} cells is too many")
    return (c[0] - w / 2, c[1] - h / 2, dx, dy, nx, ny, z)


def check_zone(scene, bbox):
    """The zone must lie within the scene's footprint (1 m slack)."""
    (bx0, by0), (bx1, by1) = bbox
    for x, y in scene["zone"]:
        if x < bx0 - 1 or x > bx1 + 1 or y < by0 - 1 or y > by1 + 1:
            raise SceneError(f"{scene['dir']}/scene.yaml: zone: point ({x:g}, {y:g}) lies "
                             f"outside the scene (x {bx0:g}..{bx1:g}, y {by0:g}..{by1:g})")


def in_zone(zone, x, y):
    """Boolean array: the points (x, y) inside the polygon (even-odd rule,
    kern_scene_in_zone)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    inside = np.zeros(np.broadcast(x, y).shape, dtype=bool)
    n = len(zone)
    for i in range(n):
        (xi, yi), (xj, yj) = zone[i], zone[i - 1]
        if yi == yj:
            continue
        cross = ((yi > y) != (yj > y)) & (x < (xj - xi) * (y - yi) / (yj - yi) + xi)
        inside ^= cross
    return inside


def dbm(gain, power_dbm, floor_dbm=FLOOR_DBM):
    """dBm per cell from linear path gains; floor_dbm where no ray came."""
    g = np.asarray(gain, dtype=np.float64)
    return np.where(g > 0, 10 * np.log10(np.maximum(g, 1e-300)) + power_dbm, floor_dbm)


def stats(v):
    """mean, median, p10, p90 of dBm values (bf_percentile = numpy's linear)."""
    v = np.asarray(v, dtype=np.float64)
    return {"mean": float(np.mean(v)), "median": float(np.percentile(v, 50)),
            "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90))}


# ---- Sionna RT ------------------------------------------------------------------

class SionnaScene:
    """A Beamfleet scene (read_scene's dict) as a Sionna RT scene with its
    transmitter "tx"; Mitsuba's variant is set on first use."""

    def __init__(self, scene, variant="llvm_ad_mono_polarized"):
        import mitsuba as mi
        if mi.variant() != variant:
            mi.set_variant(variant)
        from sionna.rt import load_scene, RadioMapSolver, Transmitter
        self.mi = mi
        self.s = scene
        try:
            self.scene = load_scene(scene["xml"])
        except Exception as e:  # Mitsuba's message runs over lines
            first = str(e).strip().splitlines()
            raise SceneError(f"{scene['xml']}: Sionna cannot load it: "
                             f"{first[0] if first else type(e).__name__}")
        self.scene.frequency = scene["frequency_hz"]
        self.polarize(scene["tx"]["polarization"], scene["tx"]["pattern"])
        tx = scene["tx"]
        self.tx = Transmitter("tx", position=mi.Point3f(*tx["position"]),
                              orientation=mi.Point3f(0, 0, 0), power_dbm=tx["power_dbm"])
        self.scene.add(self.tx)
        self.solver = RadioMapSolver()
        bb = self.scene.mi_scene.bbox()
        self.bbox = ((float(bb.min[0]), float(bb.min[1])), (float(bb.max[0]), float(bb.max[1])))

    def polarize(self, pol, pattern="tr38901"):
        """Sionna's PlanarArray(polarization="cross") is our `cross`; our
        `cross_independent` (two uncorrelated ports) has no single-map
        equivalent in Sionna (docs/radio.md)."""
        from sionna.rt import PlanarArray
        if pol == "cross_independent":
            raise SceneError(f"{self.s['dir']}/scene.yaml: polarization cross_independent has "
                             "no Sionna RT radio map equivalent (use cross, V or H)")
        self.scene.tx_array = PlanarArray(num_rows=1, num_cols=1, pattern=pattern,
                                          polarization=pol)

    def orient(self, az, tilt, roll=0.0):
        """Our azimuth, tilt, roll in degrees: Sionna's (yaw, pitch, roll)."""
        self.tx.orientation = self.mi.Point3f(math.radians(az), math.radians(tilt),
                                              math.radians(roll))

    def orient_rad(self, az, tilt, roll):
        """Dr.Jit values in radians (gradients flow through them)."""
        self.tx.orientation = self.mi.Point3f(az, tilt, roll)

    def radio_map(self, g, rays, depth=3, los=True, refl=True, refr=True, seed=42,
                  diffuse=False, diffraction=False, edge_diffraction=False):
        """RadioMapSolver on grid g (grid()'s tuple): the size is a whole
        number of cells, so Sionna's cells are ours."""
        mi = self.mi
        x0, y0, dx, dy, nx, ny, z = g
        return self.solver(self.scene, center=mi.Point3f(x0 + nx * dx / 2, y0 + ny * dy / 2, z),
                           orientation=mi.Point3f(0, 0, 0), size=mi.Point2f(nx * dx, ny * dy),
                           cell_size=mi.Point2f(dx, dy), samples_per_tx=rays, max_depth=depth,
                           los=los, specular_reflection=refl, diffuse_reflection=diffuse,
                           refraction=refr, diffraction=diffraction,
                           edge_diffraction=edge_diffraction, seed=seed)
