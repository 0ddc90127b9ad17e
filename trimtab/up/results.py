"""A live run's figures read back from Prometheus: the summary, per-tick columns, batch samples.

The columns match ``trimtab.sim.replay.TICK_COLUMNS`` so the live run goes into the same HTML report
as a replay (``trimtab.sim.report.write_report``), beside the simulator's replay of the same load.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from trimtab.collectors import names as n
from trimtab.common.prometheus import PromClient
from trimtab.up import prom
from trimtab.up.fit import ReplicaWindow
from trimtab.up.run import LiveRun
from trimtab.sim.replay import TICK_COLUMNS, RunResult

STEP_S = 1.0


def _scalar(url: str, promql: str, at_s: float) -> float | None:
    result = PromClient(url).instant(promql, at_s)
    if not result:
        return None
    v = float(result[0]["value"][1])
    return v if math.isfinite(v) else None


def _column(url: str, promql: str, run: LiveRun, end_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(seconds since the load started, values) of a range query, NaN where absent."""
    ts, vs = prom.series(PromClient(url, timeout_s=20.0).range(promql, run.load_start_unix_s,
                                                                end_s, STEP_S))
    return np.asarray(ts) - run.load_start_unix_s, np.asarray(vs)


def _on_grid(grid_s: np.ndarray, t_s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample-and-hold ``v(t)`` onto ``grid_s`` (NaN before the first sample)."""
    if len(t_s) == 0:
        return np.full(len(grid_s), math.nan)
    idx = np.searchsorted(t_s, grid_s + 1e-9, side="right") - 1
    out = np.where(idx >= 0, v[np.clip(idx, 0, None)], math.nan)
    return out.astype(float)


def live_ticks(run: LiveRun) -> dict[str, np.ndarray]:
    """Per-second columns of the live run over [0, duration + settle], from Prometheus."""
    url, cfg = run.prom_url, run.config
    end_s = run.load_end_unix_s + cfg.settle_s
    grid = np.arange(STEP_S, cfg.duration_s + cfg.settle_s + 1e-9, STEP_S)
    req = n.BY_NAME[n.REQUESTS].exposed[0]
    dur = n.REQUEST_DURATION + "_bucket"
    queries = {
        "arrival_rate_rps": f"sum(rate({req}[5s]))",
        "desired_replicas": f"max({n.CTRL_APPLIED_REPLICAS})",
        "ready_replicas": f'max({n.LIVE_REPLICAS}{{state="running"}})',
        "starting_replicas": f'max({n.LIVE_REPLICAS}{{state="starting"}})',
        "queue_depth": f"sum({n.QUEUE_DEPTH})",
        "in_flight": f"sum({n.IN_FLIGHT})",
        "latency_p99_s": f"histogram_quantile(0.99, sum by (le) (rate({dur}[10s])))",
        "concurrency_limit": f"max({n.CTRL_DESIRED_CONCURRENCY})",
        "queue_timeout_s": f"max({n.QUEUE_TIMEOUT})",
        "max_batch_size": f"max({n.CTRL_DESIRED_BATCH})",
        "forecast_rps": f"max({n.CTRL_FORECAST_RPS})",
    }
    cols: dict[str, np.ndarray] = {"time_s": grid}
    for col, q in queries.items():
        t, v = _column(url, q, run, end_s)
        cols[col] = _on_grid(grid, t, v)
    cols["reason"] = np.full(len(grid), "", dtype=object)
    offset_s = getattr(run, "load_offset_s", 0.0)     # ticks are on the controller's clock
    reasons = [(t - offset_s, r.decision.reason) for t, r in run.ticks]
    for i, g in enumerate(grid):
        past = [r for t, r in reasons if t <= g]
        cols["reason"][i] = past[-1] if past else ""
    assert set(cols) == set(TICK_COLUMNS)
    return cols


def live_summary(run: LiveRun) -> dict[str, Any]:
    """Request figures over the whole run from the sidecar's histogram and counters."""
    url, cfg = run.prom_url, run.config
    end_s = run.load_end_unix_s + cfg.settle_s
    rng = f"[{int(math.ceil(end_s - run.load_start_unix_s + 2))}s]"
    req = n.BY_NAME[n.REQUESTS].exposed[0]
    dur = n.REQUEST_DURATION
    total = _scalar(url, f"sum(increase({req}{rng}))", end_s) or 0.0
    ok = _scalar(url, f'sum(increase({req}{{outcome="ok"}}{rng}))', end_s) or 0.0
    within = _scalar(url, f'sum(increase({dur}_bucket{{le="{_le(cfg.slo_latency_s)}"}}{rng}))',
                     end_s) or 0.0
    p50 = _scalar(url, f"histogram_quantile(0.5, sum by (le) (increase({dur}_bucket{rng})))",
                  end_s)
    p99 = _scalar(url, f"histogram_quantile(0.99, sum by (le) (increase({dur}_bucket{rng})))",
                  end_s)
    return {"requests_seen": round(total), "served": round(ok),
            "slo_attainment": round(min(within, ok) / total, 6) if total > 0 else None,
            "latency_p50_s": p50, "latency_p99_s": p99}


def _le(value_s: float) -> str:
    """A bucket bound as client_python writes it in the ``le`` label (0.5 -> "0.5")."""
    return repr(float(value_s))


def _per_pod_increase(run: LiveRun, window_s: float) -> dict[str, dict[tuple[str, float], float]]:
    """Per replica and window: the increase of the batch count, items and seconds counters."""
    url = run.prom_url
    end_s = run.load_end_unix_s + run.config.settle_s
    w = f"[{int(window_s)}s]"
    parts = {}
    for key, metric in (("count", n.BATCH_SIZE + "_count"), ("items", n.BATCH_SIZE + "_sum"),
                        ("secs", n.BATCH_DURATION + "_sum")):
        res = PromClient(url, timeout_s=20.0).range(f"sum by (pod) (increase({metric}{w}))",
                                                    run.load_start_unix_s, end_s, window_s)
        parts[key] = {(r["metric"].get("pod", ""), float(t)): float(v)
                      for r in res for t, v in r["values"]}
    return parts


def _rows(parts: dict[str, dict[tuple[str, float], float]]) -> list[tuple[float, float, float]]:
    """(batches, items, seconds) of every replica window with at least one batch."""
    out = []
    for k, count in parts["count"].items():
        items, secs = parts["items"].get(k), parts["secs"].get(k)
        if count >= 1 and items is not None and secs is not None and all(
                math.isfinite(x) for x in (count, items, secs)):
            out.append((count, items, secs))
    return out


def batch_samples(run: LiveRun, window_s: float = 10.0) -> list[tuple[float, float, float]]:
    """(mean batch size, mean batch time s, batches) per replica per window, from Prometheus."""
    return [(items / count, secs / count, count)
            for count, items, secs in _rows(_per_pod_increase(run, window_s))]


def replica_windows(run: LiveRun, window_s: float = 5.0) -> list[ReplicaWindow]:
    """Per replica and window: batches, items and busy seconds (for ``fit_saturation``).

    5 s windows: long enough for Ray's 2 s metric reports, short enough that a saturated
    stretch of 10 to 15 s gives windows busy back to back.
    """
    return [ReplicaWindow(count, items, secs, window_s)
            for count, items, secs in _rows(_per_pod_increase(run, window_s))]


def replica_seconds(samples: list[tuple[float, int, int]], until_s: float) -> float:
    """Integral of running + starting replicas over [0, until_s] from 1 s samples."""
    if not samples:
        return 0.0
    t = np.asarray([s[0] for s in samples])
    live = np.asarray([s[1] + s[2] for s in samples], dtype=float)
    grid = np.arange(0.0, until_s, 0.5)
    idx = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, None)
    return float(np.sum(live[idx]) * 0.5)


def live_result(run: LiveRun) -> RunResult:
    """The live run as a RunResult, so the replay report can show it."""
    ticks = live_ticks(run)
    summary = live_summary(run)
    counts = run.request_log.counts()
    ready = ticks["ready_replicas"][ticks["time_s"] <= run.config.duration_s]
    ready = ready[np.isfinite(ready)]
    summary.update({
        "policy": "live (Ray Serve)", "params": {"spec": run.config.policy},
        "meets_slo": None if summary["slo_attainment"] is None
        else bool(summary["slo_attainment"] >= run.config.slo_target),
        "replica_hours": round(replica_seconds(run.replica_samples, run.config.duration_s)
                               / 3600.0, 6),
        "replicas_min": int(ready.min()) if len(ready) else None,
        "replicas_max": int(ready.max()) if len(ready) else None,
        "batch_size_changes": run.batch_size_changes,
        "requests": int(len(run.arrival_s)), "client_outcomes": counts,
        "scale_events": sum(1 for a in run.applied if "replicas" in a.changes),
        "actuation_errors": len(run.actuation_errors),
    })
    return RunResult(summary=summary, ticks=ticks, accounting={})
