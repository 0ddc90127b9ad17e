"""The replay report: results.json, a per-tick CSV per policy, and an HTML page with plots."""
from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trimtab.sim.replay import TICK_COLUMNS, RunResult

TABLE_FIELDS = ("slo_attainment", "meets_slo", "latency_p50_s", "latency_p99_s",
                "replica_hours", "cost", "cost_vs_oracle", "cold_starts", "scale_events",
                "shed", "timed_out", "oom")


def run_label(summary: dict[str, Any]) -> str:
    """``static:replicas=8``-style label of a result (unique per spec)."""
    params = summary.get("params") or {}
    label = summary["policy"]
    if params:
        label += ":" + ",".join(f"{k}={v}" for k, v in params.items())
    return label


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)


def results_json(scenario_name: str, requests: int, results: Sequence[dict[str, Any]],
                 oracle: dict[str, Any] | None = None) -> dict[str, Any]:
    """The issue's JSON shape: ``{"scenario", "requests", "results": [...]}`` (+ oracle)."""
    doc: dict[str, Any] = {"scenario": scenario_name, "requests": requests,
                           "results": [json_safe(r) for r in results]}
    if oracle is not None:
        doc["oracle"] = json_safe(oracle)
    return doc


def json_safe(x: Any) -> Any:
    """JSON-safe: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_ticks_csv(path: Path, ticks: dict[str, np.ndarray]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TICK_COLUMNS)
        for row in zip(*(ticks[c] for c in TICK_COLUMNS)):
            w.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])


def _plots(out: Path, runs: Sequence[tuple[str, RunResult]], slo_latency_s: float) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, ax1 = plt.subplots(figsize=(11, 4.5))
    first = runs[0][1].ticks
    ax1.fill_between(first["time_s"] / 60, first["arrival_rate_rps"], color="0.85",
                     label="arrival rate (rps)")
    ax1.set_xlabel("time (min)")
    ax1.set_ylabel("arrival rate (requests/s)")
    ax2 = ax1.twinx()
    for label, r in runs:
        ax2.step(r.ticks["time_s"] / 60, r.ticks["desired_replicas"], where="post", label=label)
    ax2.set_ylabel("replicas (desired)")
    ax2.legend(loc="upper left", fontsize=7)
    ax1.set_title("Load and replicas over time")
    fig.tight_layout()
    fig.savefig(out / "load_replicas.png", dpi=90)
    plt.close(fig)
    names.append("load_replicas.png")
    for fname, col, ylabel, title, log in (
            ("p99.png", "latency_p99_s", "p99 latency (s)", "p99 latency per window vs SLO", True),
            ("queue.png", "queue_depth", "mean router queue depth", "Queue depth", False)):
        fig, ax = plt.subplots(figsize=(11, 3.8))
        for label, r in runs:
            ax.plot(r.ticks["time_s"] / 60, r.ticks[col], label=label, lw=1)
        if col == "latency_p99_s":
            ax.axhline(slo_latency_s, color="red", ls="--", label=f"SLO {slo_latency_s:g} s")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("time (min)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=90)
        plt.close(fig)
        names.append(fname)
    return names


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(out: Path, doc: dict[str, Any], runs: Sequence[tuple[str, RunResult]],
                 slo_latency_s: float, slo_target: float) -> dict[str, Path]:
    """Write results.json, ticks_<policy>.csv and report.html (+ PNG plots) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"results": out / "results.json", "html": out / "report.html"}
    files["results"].write_text(json.dumps(doc, indent=2) + "\n")
    for label, r in runs:
        p = out / f"ticks_{_slug(label)}.csv"
        write_ticks_csv(p, r.ticks)
        files[f"ticks:{label}"] = p
    plots = _plots(out, runs, slo_latency_s) if runs else []
    rows = list(doc["results"]) + ([dict(doc["oracle"], policy="oracle (lower bound)")]
                                   if doc.get("oracle") else [])
    head = "".join(f"<th>{html.escape(f)}</th>" for f in ("policy",) + TABLE_FIELDS)
    body = []
    for res in rows:
        label = run_label(res) + (" (sweep best)" if res.get("sweep") else "")
        cells = "".join(f"<td>{html.escape(_fmt(res.get(f)))}</td>" for f in TABLE_FIELDS)
        body.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    imgs = "".join(f'<p><img src="{p}" alt="{p}"></p>' for p in plots)
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>trimtab replay: {html.escape(doc['scenario'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}}</style></head><body>
<h1>Replay of scenario {html.escape(doc['scenario'])}</h1>
<p>{doc['requests']} requests; SLO: p&le;{slo_latency_s:g} s for {slo_target:.2%} of requests
(shed, timed-out and failed requests are misses).</p>
<table><tr>{head}</tr>{''.join(body)}</table>{imgs}</body></html>
"""
    files["html"].write_text(page)
    return files
