#!/usr/bin/env python3
"""End-to-end tests of report.html: the real `beamfleet run` on
procedural scenes writes report.html and thumbnails/, and headless Chromium
shows what the page promises.

  boresight   `run` on 3 scenegen scenes plus one whose name is an HTML
              injection; Chromium's DOM has the plots, one row per scene, two
              data: thumbnails per scene, the hostile name as text only and no
              console error or refused fetch; the screenshot has each plot's
              colour in that plot's column and the thumbnails' colours below.
  exec        `run` on an exec job: the table and the time-per-GPU plot, the
              map plots marked "no data", no thumbnails.
  thumbnails  `solve --maps` on a scene with a 150 x 150 grid: the result's
              thumbnails are the CSV map block-averaged 3 x 3 in linear power
              (and cell for cell on a 60 x 60 grid), rounded to 0.1 dB.

Run one: tests/report/test_report_html.py boresight   (BEAMFLEET_BIN=build/beamfleet)
Needs Chromium (Debian package `chromium`) for `boresight`: it is installed
with apt-get when missing and we are root; otherwise the test exits 77.
"""
import html.parser
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from fleet import Fleet, Skip, check_reports, main, read_jsonl  # noqa: E402

EVIL = "x<img src=q onerror=alert(1)>&\"'"
PERMISSIVE = ("validation: {p10_min_dbm: -400, p10_max_dbm: 0, p90_min_dbm: -400, "
              "min_percentile_range_db: 0}\n")
# The plot colours of collector_html.c, each in its own column of the page.
COLOURS = {"cdf-initial": ((0x1f, 0x77, 0xb4), 0), "cdf-optimized": ((0xff, 0x7f, 0x0e), 0),
           "hist": ((0x2c, 0xa0, 0x2c), 1), "gpu": ((0x94, 0x67, 0xbd), 2)}


# ---- a PNG reader (stdlib only: zlib + struct) ---------------------------------------

def read_png(data):
    """(width, height, channels, rows) of an 8-bit RGB/RGBA non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        assert zlib.crc32(typ + body) == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0], \
            f"bad CRC in {typ}"
        pos += 12 + n
        if typ == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif typ == b"IDAT":
            idat.append(body)
        elif typ == b"IEND":
            break
    w, h, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and interlace == 0 and ctype in (2, 6), f"unsupported PNG {hdr}"
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp
    assert len(raw) == h * (stride + 1), "truncated PNG data"
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif f == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        else:
            assert f == 0, f"bad filter {f}"
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def colour_hits(img, rgb, y0=0, y1=None):
    """(count, min x, max x, min y, max y) of the pixels exactly rgb."""
    w, h, bpp, rows = img
    key = bytes(rgb)
    n, xs, ys = 0, [], []
    for y in range(y0, min(h, y1 or h)):
        row, i = rows[y], rows[y].find(key)
        while i >= 0:
            if i % bpp == 0:
                n += 1
                xs.append(i // bpp)
                ys.append(y)
            i = row.find(key, i + 1)
    return (n, min(xs), max(xs), min(ys), max(ys)) if n else (0, -1, -1, -1, -1)


# ---- the DOM as Chromium serializes it -----------------------------------------------

class Dom(html.parser.HTMLParser):
    """Every element with its attributes, and the text, of a DOM dump."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.elements, self.text = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def having(self, tag, **attrs):
        return [a for t, a in self.elements
                if t == tag and all(k in a and v in a[k].split() for k, v in attrs.items())]


# ---- Chromium ----------------------------------------------------------------------

def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing chromium with apt-get (it is missing)", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for args in (["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                     ["apt-get", "update"],
                     ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
            try:
                subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=600)
            except (OSError, subprocess.TimeoutExpired):
                break
            if shutil.which("chromium"):
                return shutil.which("chromium")
    raise Skip("no chromium and it cannot be installed here")


def browse(fleet, page, *flags):
    """Runs headless Chromium on file://page; returns (stdout, stderr)."""
    profile = os.path.join(fleet.tmp, "chromium-profile")
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--force-color-profile=srgb", "--hide-scrollbars",
            "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}",
            "--window-size=1280,2000", *flags, "file://" + page]
    r = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"chromium exited {r.returncode}: {r.stderr[-2000:]}"
    return r.stdout, r.stderr


def console_trouble(stderr):
    """Console errors, uncaught exceptions and refused fetches in Chromium's log."""
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line or "Uncaught" in line or "Refused to" in line]


# ---- the tests ------------------------------------------------------------------------

def make_boresight_job(fleet, count, extra_scene=None):
    scenes = os.path.join(fleet.tmp, "cities")
    fleet.cli("scenegen", "--out", scenes, "--count", str(count), "--seed", "5")
    if extra_scene:
        shutil.copytree(os.path.join(scenes, sorted(os.listdir(scenes))[0]),
                        os.path.join(scenes, extra_scene))
    out = os.path.join(fleet.tmp, "out")
    job = os.path.join(fleet.tmp, "job.yaml")
    with open(job, "w") as f:
        f.write(f"name: cities\nscenes: {scenes}\noutput: {out}\ntask: boresight\n"
                "solver: {samples_per_tx: 20000}\n" + PERMISSIVE)
    return job, out, sorted(os.listdir(scenes))


def test_boresight(fleet: Fleet):
    chromium()  # skip early, before any work, when there is no browser
    job, out, names = make_boresight_job(fleet, 3, EVIL)
    t0 = time.time()
    fleet.cli("run", job, "--workers", "2", "--cpu", timeout=240)
    print(f"run: {len(names)} scenes in {time.time() - t0:.1f} s")
    by_scene = check_reports(out, names)
    page = os.path.join(out, "report.html")
    size = os.path.getsize(page)
    print(f"report.html: {size} bytes")

    # the thumbnails: in every result, and as files that decode
    for name, r in by_scene.items():
        th = r["thumbnails"]
        assert 1 <= th["nx"] <= 64 and 1 <= th["ny"] <= 64, th["nx"]
        for m in ("initial", "optimized"):
            assert len(th[m]) == th["nx"] * th["ny"], (name, m)
            vals = [v for v in th[m] if v is not None]
            assert vals and all(abs(v * 10 - round(v * 10)) < 1e-6 for v in vals), (name, m)
            with open(os.path.join(out, "thumbnails", f"{name}_{m}.png"), "rb") as f:
                w, h, _, _ = read_png(f.read())
            assert (w, h) == (th["nx"], th["ny"]), (w, h)  # one pixel per block

    # the DOM: plots, rows, images, the hostile name as text only, no console error
    dom_text, stderr = browse(fleet, page, "--dump-dom")
    trouble = console_trouble(stderr)
    assert not trouble, f"console: {trouble[:5]}"
    dom = Dom(dom_text)
    for pid in ("plot-cdf", "plot-hist", "plot-gpu"):
        assert dom.having("svg", id=pid), f"no <svg id={pid}> in the DOM"
    assert len(dom.having("polyline", **{"class": "cdf-initial"})) == 1
    assert len(dom.having("polyline", **{"class": "cdf-optimized"})) == 1
    assert len(dom.having("rect", **{"class": "bar"})) >= 2  # histogram + GPU bars
    rows = dom.having("tr", **{"class": "scene"})
    assert len(rows) == len(names), f"{len(rows)} table rows for {len(names)} scenes"
    imgs = [a for t, a in dom.elements if t == "img"]
    assert len(imgs) == 2 * len(names), f"{len(imgs)} images"
    assert all(a["src"].startswith("data:image/png;base64,") for a in imgs), "an image is not data:"
    assert not [t for t, _ in dom.elements if t in ("script", "iframe", "object", "embed")]
    handlers = [(t, k) for t, a in dom.elements for k in a if k.lower().startswith("on")]
    assert not handlers, f"event handler attributes in the DOM: {handlers}"
    text = "".join(dom.text)
    assert EVIL in text, "the hostile scene name is not shown as text"
    assert "no data:" not in text, "a plot has no data"

    # the screenshot: each plot's colour in its column, the thumbnails below
    shot = os.path.join(fleet.tmp, "shot.png")
    _, stderr = browse(fleet, page, f"--screenshot={shot}")
    t0 = time.time()
    with open(shot, "rb") as f:
        img = read_png(f.read())
    print(f"screenshot {img[0]}x{img[1]} decoded in {time.time() - t0:.1f} s")
    w = img[0]
    plots_bottom = None
    for name, (rgb, col) in COLOURS.items():
        n, x0, x1, y0, y1 = colour_hits(img, rgb, 0, 900)
        print(f"  {name}: {n} px in x {x0}..{x1}, y {y0}..{y1}")
        assert n >= 300, f"{name}: only {n} pixels of its colour: not drawn"
        assert col * w / 3 <= x0 and x1 <= (col + 1) * w / 3, f"{name}: outside its column"
        plots_bottom = max(plots_bottom or 0, y1)
    # thumbnails: the colours of the first scene's map are on the page, below the plots
    with open(os.path.join(out, "thumbnails", f"{names[0]}_optimized.png"), "rb") as f:
        tw, th_, bpp, trows = read_png(f.read())
    colours = {}
    for row in trows:
        for i in range(0, len(row), bpp):
            c = row[i:i + 3]
            if c != b"\xc8\xc8\xc8":
                colours[c] = colours.get(c, 0) + 1
    top = sorted(colours, key=colours.get, reverse=True)[:5]
    for c in top:
        n, _, _, y0, _ = colour_hits(img, c, plots_bottom)
        assert n >= colours[c] // 2 and y0 > plots_bottom, \
            f"thumbnail colour {tuple(c)}: {n} px on the page for {colours[c]} in the PNG"


def test_exec(fleet: Fleet):
    names = [f"s{i:02d}" for i in range(4)]
    job, out = fleet.make_job(names)
    fleet.cli("run", job, "--workers", "2", timeout=120)
    check_reports(out, names)
    with open(os.path.join(out, "report.html")) as f:
        page = f.read()
    dom = Dom(page)
    assert len(dom.having("tr", **{"class": "scene"})) == 4
    # the plots the fields allow: task.py's results may carry zone powers and
    # stats.improvement_mean (then they are plotted) or not ("no data")
    results = read_jsonl(os.path.join(out, "results.jsonl"))
    has_cdf = any(r.get("zone_power_initial") and r.get("zone_power_optimized") for r in results)
    has_hist = any("improvement_mean" in (r.get("stats") or {}) for r in results)
    assert bool(dom.having("polyline", **{"class": "cdf-initial"})) == has_cdf
    assert ("no data: no zone power" in page) == (not has_cdf)
    assert ("no data: no improvement_mean" in page) == (not has_hist)
    assert len(dom.having("g", **{"class": "gpu"})) >= 1, "no time-per-GPU bar"
    assert "data:image/png" not in page and not os.path.exists(os.path.join(out, "thumbnails"))
    assert "\u2014" in "".join(dom.text), "missing fields should be dashes"


def block_average(dbm, nx, ny, f, floor=-300.0):
    """The thumbnail the kernel should send for a map given as dBm per cell."""
    tnx, tny = -(-nx // f), -(-ny // f)
    out = []
    for by in range(tny):
        for bx in range(tnx):
            cells = [dbm[iy * nx + ix] for iy in range(by * f, min(ny, (by + 1) * f))
                     for ix in range(bx * f, min(nx, (bx + 1) * f))]
            lin = sum(10 ** (v / 10) for v in cells if v > floor) / len(cells)
            out.append(round(10 * math.log10(lin), 1) if lin > 0 else None)
    return tnx, tny, out


def test_thumbnails(fleet: Fleet):
    scenes = os.path.join(fleet.tmp, "cities")
    fleet.cli("scenegen", "--out", scenes, "--count", "1", "--seed", "9")
    scene = os.path.join(scenes, os.listdir(scenes)[0])
    job = os.path.join(fleet.tmp, "job.yaml")
    with open(job, "w") as f:
        f.write(f"scenes: {scenes}\ntask: boresight\nsolver: {{samples_per_tx: 20000}}\n" + PERMISSIVE)
    with open(os.path.join(scene, "scene.yaml")) as f:
        yaml = f.read()
    # scenegen's measurement grid: its 500 m city, cells of `cell` m; blocks
    # of ceil(n / 64) cells a side
    for cell, n, factor in ((5, 100, 2), (2, 250, 4)):
        with open(os.path.join(scene, "scene.yaml"), "w") as f:
            f.write(yaml.replace("cell_size: [5, 5]", f"cell_size: [{cell}, {cell}]"))
        res_path = os.path.join(fleet.tmp, f"r{cell}.json")
        maps = os.path.join(fleet.tmp, f"maps{cell}")
        fleet.cli("solve", scene, "-j", job, "--out", res_path, "--maps", maps, timeout=240)
        th = json.load(open(res_path))["thumbnails"]
        assert (th["dx"], th["dy"]) == (cell * factor, cell * factor), th["dx"]
        assert (th["x0"], th["y0"]) == (-250, -250), (th["x0"], th["y0"])
        for m in ("initial", "optimized"):
            with open(os.path.join(maps, f"{m}.csv")) as f:
                lines = f.read().splitlines()[1:]
            assert len(lines) == n * n, len(lines)
            dbm = [float(line.split(",")[2]) for line in lines]
            tnx, tny, want = block_average(dbm, n, n, factor)
            assert (th["nx"], th["ny"]) == (tnx, tny), (th["nx"], th["ny"], tnx, tny)
            got = th[m]
            assert [v is None for v in got] == [v is None for v in want], f"{m}: empty blocks differ"
            # the CSV has 4 decimals: a value on a rounding edge may land 0.1 away
            bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want))
                   if g is not None and abs(g - w) > 0.1 + 1e-9]
            edge = sum(1 for g, w in zip(got, want) if g is not None and abs(g - w) > 1e-9)
            assert not bad and edge <= len(got) // 100, f"{m}: {bad[:5]}, {edge} off by 0.1"
            print(f"  cell {cell} m, {m}: {tnx}x{tny} blocks of {factor}x{factor}, "
                  f"{sum(v is None for v in got)} empty, {edge} on a rounding edge")


TESTS = {"boresight": test_boresight, "exec": test_exec, "thumbnails": test_thumbnails}


if __name__ == "__main__":
    main(TESTS, prefix="report-")
