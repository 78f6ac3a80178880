"""A job's results from the collector's reports, and the notebook's plots.

The collector writes ``results.jsonl`` first, one result document per line,
and derives every other report from it (collector/collector_report.c); this
module reads that log the same way: lines that do not parse are skipped, a
task id seen before is skipped, and the newest result of a scene wins (as in
``results_progress.json``).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Union

from .errors import ResultsError, missing

#: The columns of results.csv (collector_report_csv_columns) and where each
#: comes from in a result document.
CSV_COLUMNS = [
    ("scene", ("scene",)), ("status", ("status",)), ("reason", ("reason",)),
    ("host", ("host",)), ("gpu_id", ("gpu_id",)), ("device", ("device",)),
    ("attempt", ("attempt",)), ("elapsed_time", ("elapsed_time",)),
    ("initial_azimuth_deg", ("boresight_initial", "azimuth_deg")),
    ("initial_tilt_deg", ("boresight_initial", "tilt_deg")),
    ("optimized_azimuth_deg", ("boresight_optimized", "azimuth_deg")),
    ("optimized_tilt_deg", ("boresight_optimized", "tilt_deg")),
    ("zone_cells", ("stats", "zone_cells")),
    ("initial_mean_dbm", ("stats", "initial_mean")),
    ("initial_median_dbm", ("stats", "initial_median")),
    ("initial_p10_dbm", ("stats", "initial_p10")),
    ("initial_p90_dbm", ("stats", "initial_p90")),
    ("optimized_mean_dbm", ("stats", "optimized_mean")),
    ("optimized_median_dbm", ("stats", "optimized_median")),
    ("optimized_p10_dbm", ("stats", "optimized_p10")),
    ("optimized_p90_dbm", ("stats", "optimized_p90")),
    ("improvement_mean", ("stats", "improvement_mean")),
    ("initial_sinr_mean_db", ("stats", "initial_sinr_mean")),
    ("optimized_sinr_mean_db", ("stats", "optimized_sinr_mean")),
    ("transmitters_initial", ("transmitters", "initial")),
    ("transmitters_optimized", ("transmitters", "optimized")),
    ("optimum_on_bound", ("optimum_on_bound",)),
]
#: Columns after the CSV's: who ran it, and the zone powers the CDF needs.
EXTRA_COLUMNS = ["job_id", "task_id", "worker", "backend", "fault",
                 "zone_power_initial", "zone_power_optimized"]
COLUMNS = [c for c, _ in CSV_COLUMNS] + EXTRA_COLUMNS

Rows = List[Dict[str, Any]]


def read_results(output_dir: str) -> List[Dict[str, Any]]:
    """The result documents of results.jsonl in output_dir, one per scene,
    in the order their scenes first appear."""
    path = os.path.join(os.fspath(output_dir), "results.jsonl")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        hint = "" if os.path.isdir(output_dir) else " (no such directory)"
        raise ResultsError(f"{path}: no results log{hint}: is this the job's output, and has "
                           "the collector written a result yet?") from None
    except OSError as e:
        raise ResultsError(f"{path}: {e.strerror}") from None
    by_scene: Dict[str, Dict[str, Any]] = {}
    ids = set()
    for line in data.split(b"\n")[:-1]:  # the last piece has no newline yet: not complete
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        tid = doc.get("task_id")
        if isinstance(tid, str):
            if tid in ids:
                continue
            ids.add(tid)
        scene = doc.get("scene") if isinstance(doc.get("scene"), str) and doc.get("scene") else "?"
        by_scene[scene] = doc
    return list(by_scene.values())


def _transmitters(doc: Dict[str, Any], which: str) -> Optional[str]:
    """A site's orientations as results.csv writes them (collector_report.c
    csv_transmitters): "name:azimuth/tilt" per transmitter, to 0.01 deg."""
    txs = doc.get("transmitters")
    if not isinstance(txs, list) or not txs:
        return None
    out = []
    for t in txs:
        o = t.get(which) if isinstance(t, dict) else None
        o = o if isinstance(o, dict) else {}
        az, tilt = (round(float(o.get(k, 0.0)) * 100.0) / 100.0 + 0.0
                    for k in ("azimuth_deg", "tilt_deg"))
        out.append(f"{t.get('name', '?')}:{az:.12g}/{tilt:.12g}")
    return " ".join(out)


def _row(doc: Dict[str, Any]) -> Dict[str, Any]:
    row: Dict[str, Any] = {}
    for column, path in CSV_COLUMNS:
        if path[0] == "transmitters":
            row[column] = _transmitters(doc, path[1])
            continue
        v: Any = doc
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        if isinstance(v, list):  # optimum_on_bound, as results.csv: "tilt_max;azimuth_min"
            v = ";".join(x for x in v if isinstance(x, str)) or None
        row[column] = v
    for column in EXTRA_COLUMNS:
        row[column] = doc.get(column)
    return row


def results(output_dir: str, as_dataframe: Optional[bool] = None):
    """The job's results as a table, one row per scene: the columns of
    results.csv (COLUMNS: scene, status, ..., improvement_mean, the SINR means and
    the transmitters' orientations) plus job_id,
    task_id, worker, backend, fault and the zone power lists.

    A pandas DataFrame when pandas is importable (as_dataframe=None) or when
    as_dataframe is True (MissingDependency without pandas); else a list of
    dicts with the same keys."""
    rows = [_row(d) for d in read_results(output_dir)]
    if as_dataframe is False:
        return rows
    try:
        import pandas as pd
    except ImportError:
        if as_dataframe:
            raise missing("pandas", what="results(as_dataframe=True)") from None
        return rows
    return pd.DataFrame(rows, columns=COLUMNS)


def _rows(data: Union[str, "os.PathLike[str]", Sequence[Dict[str, Any]], Any]) -> Rows:
    """Rows from an output directory, a list of dicts or a DataFrame."""
    if isinstance(data, (str, os.PathLike)):
        return [_row(d) for d in read_results(os.fspath(data))]
    if hasattr(data, "to_dict"):  # a pandas DataFrame
        return data.to_dict("records")
    return list(data)


def _ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _figure(size):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise missing("matplotlib", what="plotting") from None
    return Figure(figsize=size)


def _save(fig, save: Optional[str]):
    if save:
        fig.savefig(os.fspath(save), dpi=150)
    return fig


def plot_cdf(data, save: Optional[str] = None):
    """The CDF of every zone cell's power, initial against optimized, over
    the successful scenes (the notebook's first plot). data: an output
    directory, results() or a list of result rows. Returns the Figure; with
    save, also writes it as a PNG there."""
    rows = [r for r in _rows(data) if r.get("status") == "success"]
    initial = sorted(float(x) for r in rows for x in (r.get("zone_power_initial") or [])
                     if _ok(x))
    optimized = sorted(float(x) for r in rows for x in (r.get("zone_power_optimized") or [])
                       if _ok(x))
    if not initial or not optimized:
        raise ResultsError("plot_cdf: no successful result has zone_power_initial and "
                           "zone_power_optimized")
    fig = _figure((6, 5))
    ax = fig.add_subplot(1, 1, 1)
    for values, label in ((initial, "Initial"), (optimized, "Optimized")):
        n = len(values)
        ax.plot(values, [100.0 * (i + 1) / n for i in range(n)], linewidth=2, label=label,
                alpha=0.7)
    ax.axhline(y=50, color="gray", linestyle="--", alpha=0.3)
    ax.axhline(y=10, color="red", linestyle="--", alpha=0.3)
    ax.set_xlabel("Signal Strength (dBm)")
    ax.set_ylabel("Cumulative Probability (%)")
    ax.set_title(f"CDF: Initial vs Optimized\n({len(rows)} scenes)")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, save)


def plot_improvement(data, save: Optional[str] = None, bins: int = 20):
    """The histogram of each successful scene's mean improvement (dB), with
    its mean (the notebook's second plot). Returns the Figure."""
    imps = [float(r["improvement_mean"]) for r in _rows(data)
            if r.get("status") == "success" and _ok(r.get("improvement_mean"))]
    if not imps:
        raise ResultsError("plot_improvement: no successful result has "
                           "stats.improvement_mean")
    mean = sum(imps) / len(imps)
    fig = _figure((6, 5))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(imps, bins=bins, edgecolor="black", alpha=0.7)
    ax.axvline(x=mean, color="red", linestyle="--", label=f"Mean: {mean:+.2f} dB")
    ax.axvline(x=0, color="gray", linestyle="-", alpha=0.5)
    ax.set_xlabel("Mean Power Improvement (dB)")
    ax.set_ylabel("Number of Scenes")
    ax.set_title("Distribution of Improvements")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, save)


def time_per_worker(data, by: str = "worker") -> Dict[Any, float]:
    """Mean elapsed_time of the successful scenes per `by` (worker, host,
    gpu_id or device)."""
    groups: Dict[Any, List[float]] = {}
    for r in _rows(data):
        if r.get("status") == "success" and _ok(r.get("elapsed_time")):
            groups.setdefault(r.get(by), []).append(float(r["elapsed_time"]))
    return {k: sum(v) / len(v) for k, v in sorted(groups.items(), key=lambda kv: str(kv[0]))}


def plot_time_per_worker(data, save: Optional[str] = None, by: str = "worker"):
    """Average processing time per worker (by="worker"), or per GPU id as the
    notebook drew it (by="gpu_id"; -1 is the CPU), host or device. Returns
    the Figure."""
    if by not in ("worker", "host", "gpu_id", "device"):
        raise ValueError(f"plot_time_per_worker: by: expected worker, host, gpu_id or device, "
                         f"got {by!r}")
    means = time_per_worker(data, by)
    if not means:
        raise ResultsError("plot_time_per_worker: no successful result has elapsed_time")
    fig = _figure((max(6, 0.6 * len(means)), 5))
    ax = fig.add_subplot(1, 1, 1)
    labels = [str(k) for k in means]
    ax.bar(range(len(labels)), list(means.values()), edgecolor="black", alpha=0.7)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30 if by in ("worker", "device") else 0, ha="right"
                       if by in ("worker", "device") else "center")
    names = {"worker": "Worker", "host": "Host", "gpu_id": "GPU ID", "device": "Device"}
    ax.set_xlabel(names[by])
    ax.set_ylabel("Average Processing Time (s)")
    ax.set_title(f"Processing Time by {names[by]}")
    ax.grid(True, alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, save)
