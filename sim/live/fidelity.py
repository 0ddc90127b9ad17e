"""Sim against reality: replay the live run's arrivals through the simulator and compare.

The service model is fitted from the live run's own batch metrics (per replica and window:
mean batch size against mean batch time, a least-squares line ``base_ms + per_item_ms * b``
weighted by batches), the cold start from how long Ray took to bring scaled-up replicas to
RUNNING; the same policy spec, bounds, interval and arrivals go into ``sim.replay.simulate``.
Errors follow simulator papers: relative error of p50/p99 latency and of replica-seconds,
the absolute difference of SLO attainment, and the mean and 90th percentile of the absolute
difference in replica count over time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from sim.replay import RunResult, simulate
from sim.scenario import scenario_from_dict
from sim.traces import trace_from_arrays

DEFAULT_COLD_START_S = 2.0


@dataclass(frozen=True)
class ServiceFit:
    base_ms: float
    per_item_ms: float
    cv: float
    windows: int


def fit_service(samples: Sequence[tuple[float, float, float]]) -> ServiceFit:
    """Weighted least squares of batch time on batch size over (size, time_s, batches) rows.

    E.g. rows (1, 0.075, 40) and (3, 0.125, 10) give base 50 ms and 25 ms per item. With one
    distinct batch size the slope is unknown: it is taken as 0 and the mean is the base.
    """
    rows = np.asarray([s for s in samples if s[2] > 0 and s[1] > 0], dtype=float)
    if len(rows) == 0:
        raise ValueError("fit_service: no batch samples (size, time_s, batches) with batches > 0")
    b, t, w = rows[:, 0], rows[:, 1] * 1000.0, rows[:, 2]
    if np.ptp(b) < 1e-6:
        base, slope = float(np.average(t, weights=w)), 0.0
    else:
        x = np.column_stack([np.ones_like(b), b]) * np.sqrt(w)[:, None]
        (base, slope), *_ = np.linalg.lstsq(x, t * np.sqrt(w), rcond=None)
        base, slope = float(base), float(slope)
        if slope < 0:    # noise: fall back to a flat model through the mean
            base, slope = float(np.average(t, weights=w)), 0.0
        if base < 0:
            base, slope = 0.0, float(np.average(t / b, weights=w))
    resid = t - (base + slope * b)
    # A window mean of k batches has variance sigma^2 / k: scale back to one batch.
    sigma_ms = float(np.sqrt(np.average(resid ** 2 * w, weights=w))) if len(rows) > 2 else 0.0
    mean_ms = float(np.average(t, weights=w))
    cv = min(1.0, sigma_ms / mean_ms) if mean_ms > 0 else 0.0
    return ServiceFit(round(base, 3), round(slope, 3), round(cv, 4), len(rows))


def cold_start_s(applied: Sequence[Any], replica_samples: Sequence[tuple[float, int, int]]
                 ) -> float:
    """Mean time from a scale-up being applied to that many replicas RUNNING."""
    delays = []
    for a in applied:
        change = a.changes.get("replicas")
        if change is None or change[0] is None or change[1] <= change[0]:
            continue
        for t, running, _starting in replica_samples:
            if t >= a.at_s and running >= change[1]:
                delays.append(t - a.at_s)
                break
    return float(np.mean(delays)) if delays else DEFAULT_COLD_START_S


def scenario_for(cfg: Any, fit: ServiceFit, cold_s: float) -> Any:
    """The simulator scenario of a live run (``cfg`` is a LiveConfig)."""
    return scenario_from_dict({
        "name": "live-replay",
        "trace": {"format": "poisson", "rate_rps": cfg.base_rps, "duration_s": cfg.duration_s},
        "service": {"model": "affine", "base_ms": fit.base_ms, "per_item_ms": fit.per_item_ms,
                    "cv": fit.cv, "dist": "lognormal" if fit.cv > 0 else "deterministic",
                    # The policy's cap, as in the live run's bounds (it sets the batch size
                    # at its first decision in both).
                    "max_batch": cfg.max_batch_size,
                    "batch_timeout_ms": cfg.batch_timeout_ms, "batching": "triton"},
        "replicas": {"initial": cfg.min_replicas, "min": cfg.min_replicas,
                     "max": cfg.max_replicas, "cold_start_s": round(cold_s, 3)},
        "slo": {"latency_s": cfg.slo_latency_s, "target": cfg.slo_target},
        "controller": {"interval_s": cfg.interval_s},
        "seed": cfg.seed, "drain_s": 60.0,
    }, source="live run")


def replay(cfg: Any, arrival_s: np.ndarray, fit: ServiceFit, cold_s: float) -> RunResult:
    sc = scenario_for(cfg, fit, cold_s)
    return simulate(sc, cfg.policy, trace_from_arrays(np.asarray(arrival_s)),
                    record_requests=True)


@dataclass
class ScriptedPolicy:
    """Replays the live run's applied decisions at their times (open loop, for diagnosis).

    With the controller's timing taken out, what is left of the error is the simulator's
    service and queueing model against the real serving stack.
    """

    applied: Sequence[Any]
    min_replicas: int
    interval_s: float = 1.0
    name: str = "live-decisions"

    @property
    def params(self) -> dict[str, Any]:
        return {}

    def initial_state(self) -> None:
        return None

    def decide(self, snapshot: Any, state: None, now_s: float) -> tuple[Any, None]:
        from controllers.types import Decision

        replicas, knobs = self.min_replicas, {}
        for a in self.applied:
            if a.at_s > now_s:
                break
            if "replicas" in a.changes:
                replicas = int(a.changes["replicas"][1])
            for field_, key in (("max_batch_size", "max_batch_size"),
                                ("concurrency_limit", "concurrency_limit")):
                if field_ in a.changes:
                    knobs[key] = int(a.changes[field_][1])
            if "batch_wait_timeout_s" in a.changes:
                knobs["batch_timeout_ms"] = 1000.0 * float(a.changes["batch_wait_timeout_s"][1])
        return Decision(replicas=replicas, reason="replayed", **knobs), None


def replay_decisions(cfg: Any, arrival_s: np.ndarray, fit: ServiceFit, cold_s: float,
                     applied: Sequence[Any]) -> RunResult:
    """The same arrivals with the live run's own scaling and knob changes at their times."""
    sc = scenario_for(cfg, fit, cold_s)
    sc = sc.model_copy(update={"service": sc.service.model_copy(
        update={"max_batch": cfg.initial_max_batch_size})})
    policy = ScriptedPolicy(sorted(applied, key=lambda a: a.at_s), cfg.min_replicas)
    return simulate(sc, policy, trace_from_arrays(np.asarray(arrival_s)), record_requests=True)


def _rel(sim: float | None, live: float | None) -> float | None:
    if sim is None or live is None or not live or not math.isfinite(sim) or not math.isfinite(
            live):
        return None
    return round(abs(sim - live) / abs(live), 4)


def _step_on_grid(t_s: np.ndarray, v: np.ndarray, grid_s: np.ndarray) -> np.ndarray:
    idx = np.clip(np.searchsorted(t_s, grid_s, side="right") - 1, 0, None)
    return v[idx]


def compare(live: dict[str, Any], live_latency_s: np.ndarray,
            live_replicas: Sequence[tuple[float, int, int]], sim: RunResult,
            duration_s: float, slo_latency_s: float) -> dict[str, Any]:
    """Fidelity figures: sim against live over [0, duration_s]."""
    grid = np.arange(0.0, duration_s, 1.0)
    lt = np.asarray([s[0] for s in live_replicas]) if live_replicas else np.zeros(1)
    lv = np.asarray([s[1] + s[2] for s in live_replicas], float) if live_replicas else \
        np.zeros(1)
    live_n = _step_on_grid(lt, lv, grid)
    st = np.concatenate([[0.0], sim.ticks["time_s"]])
    sv = sim.ticks["ready_replicas"] + sim.ticks["starting_replicas"]
    sim_n = _step_on_grid(st, np.concatenate([[sv[0]], sv]), grid)
    diff = np.abs(sim_n - live_n)
    live_rs, sim_rs = float(live_n.sum()), float(sim_n.sum())
    req = sim.requests or {}
    served = req.get("outcome") is not None
    sim_lat = (req["finish_s"] - req["arrival_s"])[np.isfinite(req["finish_s"])] if served \
        else np.asarray([])
    lat = np.asarray(live_latency_s, float)
    lat = lat[np.isfinite(lat)]
    p = {q: (float(np.quantile(lat, q)) if len(lat) else None,
             float(np.quantile(sim_lat, q)) if len(sim_lat) else None) for q in (0.5, 0.99)}
    live_att = live.get("slo_attainment")
    sim_att = sim.summary.get("slo_attainment")
    return {
        "p50_rel_error": _rel(p[0.5][1], p[0.5][0]),
        "p99_rel_error": _rel(p[0.99][1], p[0.99][0]),
        "replica_seconds_rel_error": _rel(sim_rs, live_rs),
        "slo_attainment_abs_error": None if live_att is None or sim_att is None
        else round(abs(sim_att - live_att), 4),
        "replicas_mean_abs_error": round(float(diff.mean()), 4),
        "replicas_p90_abs_error": round(float(np.quantile(diff, 0.9)), 4),
        "live": {"latency_p50_s": p[0.5][0], "latency_p99_s": p[0.99][0],
                 "replica_seconds": live_rs, "slo_attainment": live_att},
        "sim": {"latency_p50_s": p[0.5][1], "latency_p99_s": p[0.99][1],
                "replica_seconds": sim_rs, "slo_attainment": sim_att},
        "targets": {"p99_rel_error": 0.15, "replica_seconds_rel_error": 0.10},
    }
