"""Benchmark: cost of one evaluation of the shipped recording rules on a real Prometheus, vs a baseline.

Synthetic history for N models (the sidecar's request and latency series) is backfilled with
``promtool tsdb create-blocks-from openmetrics``; then every recording rule runs as an instant
query at the end of the history, and so does a baseline query (a plain ``sum by`` over a gauge)
the same number of times. Figures are medians over repeats, printed as ratios to the baseline
measured in the same run, because the machines are shared and noisy.
"""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from trimtab.alerts import promql as q
from trimtab.alerts.config import DEFAULT_CONFIG
from trimtab.alerts.recording import recording_groups
from trimtab.collectors import names as n

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


def _query_s(base: str, expr: str, at: int) -> float:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": at})
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as resp:
        body = json.load(resp)
    elapsed = time.perf_counter() - start
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {body}")
    return elapsed


def _wait_ready(base: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/-/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("prometheus did not become ready")


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists()
                                  else None)
    if not path:
        raise RuntimeError(f"{name} not found: install the Debian package prometheus")
    return path


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
        subprocess.run([_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                        str(om), str(data)], check=True, capture_output=True)
        backfill_s = time.perf_counter() - t0
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        (work / "prometheus.yml").write_text("global: {scrape_interval: 15s}\n")
        with open(work / "prometheus.log", "wb") as log:
            proc = subprocess.Popen([_binary("prometheus"),
                                     f"--config.file={work / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={data}",
                                     "--storage.tsdb.retention.time=3650d",
                                     f"--web.listen-address=127.0.0.1:{port}"],
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_ready(base, proc)
                for r in rules:                      # warm the page cache once
                    _query_s(base, r.expr, end_s)
                cycles, base_cycles = [], []
                per_rule: dict[str, list[float]] = {r.record: [] for r in rules}
                for _ in range(repeats):
                    total = 0.0
                    for r in rules:
                        dt = _query_s(base, r.expr, end_s)
                        per_rule[r.record].append(dt)
                        total += dt
                    cycles.append(total)
                    base_cycles.append(sum(_query_s(base, baseline, end_s) for _ in rules))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    cycle_s, base_s = statistics.median(cycles), statistics.median(base_cycles)
    slowest = sorted(((statistics.median(v), k) for k, v in per_rule.items()), reverse=True)
    return {
        "models": models, "days": days, "step_s": step_s, "repeats": repeats,
        "recording_rules": len(rules), "backfill_s": round(backfill_s, 2),
        "rules_cycle_s": round(cycle_s, 4), "baseline_cycle_s": round(base_s, 4),
        "rules_vs_baseline": round(cycle_s / base_s, 2) if base_s else None,
        "slowest_rules": [{"record": k, "median_s": round(v, 4)} for v, k in slowest[:3]],
    }
