"""Benchmark: cost of one evaluation of the shipped recording rules on a real Prometheus, vs a baseline.

Synthetic history for N models (the sidecar's request and latency series) is backfilled with
``promtool tsdb create-blocks-from openmetrics``; then every recording rule runs as an instant
query at the end of the history, and so does a baseline query (a plain ``sum by`` over a gauge)
the same number of times. Figures are medians over repeats, printed as ratios to the baseline
measured in the same run, because the machines are shared and noisy.
"""
from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from trimtab.alerts import promql as q
from trimtab.alerts.config import DEFAULT_CONFIG
from trimtab.alerts.recording import recording_groups
from trimtab.collectors import names as n
from trimtab.common.prometheus import PromClient, PrometheusServer, require_binary

OUTCOMES = ("ok", "error", "shed", "timeout")


def synthetic_openmetrics(models: int, days: float, step_s: int, end_s: int) -> str:
    """Counters growing at a steady rate per model (1 % errors, 5 % over 0.5 s)."""
    bounds = n.latency_buckets_s((DEFAULT_CONFIG.slo_latency_s,))
    steps = int(days * 86400 // step_s)
    lines = [f"# TYPE {n.REQUESTS} counter", f"# TYPE {n.REQUEST_DURATION} histogram",
             f"# TYPE {n.QUEUE_DEPTH} gauge"]
    share = {"ok": 0.97, "error": 0.01, "shed": 0.01, "timeout": 0.01}
    for m in range(models):
        lab = f'namespace="bench",model="m{m}",job="trimtab-sidecar",pod="m{m}-0"'
        rps = 5.0 + m % 7
        for k in range(steps + 1):
            ts = end_s - (steps - k) * step_s
            served = rps * k * step_s
            for o in OUTCOMES:
                lines.append(f'{q.series(n.REQUESTS)}{{{lab},outcome="{o}"}} '
                             f"{served * share[o]:.0f} {ts}")
            for b in bounds:
                within = 0.95 if b >= DEFAULT_CONFIG.slo_latency_s else 0.5 * b
                lines.append(f'{n.REQUEST_DURATION}_bucket{{{lab},le="{q.le_label(b)}"}} '
                             f"{served * 0.97 * min(within, 1.0):.0f} {ts}")
            lines.append(f'{n.REQUEST_DURATION}_bucket{{{lab},le="+Inf"}} {served * 0.97:.0f} {ts}')
            lines.append(f"{n.REQUEST_DURATION}_count{{{lab}}} {served * 0.97:.0f} {ts}")
            lines.append(f"{n.REQUEST_DURATION}_sum{{{lab}}} {served * 0.1:.3f} {ts}")
            lines.append(f"{n.QUEUE_DEPTH}{{{lab}}} {k % 5} {ts}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _query_s(client: PromClient, expr: str, at: int) -> float:
    """Seconds one instant query takes (QueryFailed if Prometheus refuses it)."""
    start = time.perf_counter()
    client.instant(expr, at)
    return time.perf_counter() - start


def run_bench(models: int = 20, days: float = 3.0, step_s: int = 300,
              repeats: int = 5) -> dict[str, Any]:
    """Backfill, start Prometheus, time the rule queries and the baseline; return the figures."""
    rules = [r for group in recording_groups(DEFAULT_CONFIG).values() for r in group]
    baseline = f"sum by (namespace, model) ({n.QUEUE_DEPTH})"
    end_s = int(time.time()) // step_s * step_s - 3600
    with tempfile.TemporaryDirectory(prefix="trimtab-alerts-bench-") as tmp:
        work = Path(tmp)
        om = work / "history.om"
        om.write_text(synthetic_openmetrics(models, days, step_s, end_s))
        data = work / "data"
        t0 = time.perf_counter()
        subprocess.run([require_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                        str(om), str(data)], check=True, capture_output=True)
        backfill_s = time.perf_counter() - t0
        with PrometheusServer(work, "global: {scrape_interval: 15s}\n", data_dir=data,
                              extra_args=("--storage.tsdb.retention.time=3650d",)) as prom:
            client = prom.client(timeout_s=120)
            for r in rules:                      # warm the page cache once
                _query_s(client, r.expr, end_s)
            cycles, base_cycles = [], []
            per_rule: dict[str, list[float]] = {r.record: [] for r in rules}
            for _ in range(repeats):
                total = 0.0
                for r in rules:
                    dt = _query_s(client, r.expr, end_s)
                    per_rule[r.record].append(dt)
                    total += dt
                cycles.append(total)
                base_cycles.append(sum(_query_s(client, baseline, end_s) for _ in rules))
    cycle_s, base_s = statistics.median(cycles), statistics.median(base_cycles)
    slowest = sorted(((statistics.median(v), k) for k, v in per_rule.items()), reverse=True)
    return {
        "models": models, "days": days, "step_s": step_s, "repeats": repeats,
        "recording_rules": len(rules), "backfill_s": round(backfill_s, 2),
        "rules_cycle_s": round(cycle_s, 4), "baseline_cycle_s": round(base_s, 4),
        "rules_vs_baseline": round(cycle_s / base_s, 2) if base_s else None,
        "slowest_rules": [{"record": k, "median_s": round(v, 4)} for v, k in slowest[:3]],
    }
