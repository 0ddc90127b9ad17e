"""Sim against reality: replay the live run's arrivals through the simulator and compare.

The model is fitted from the live run's own metrics (``trimtab.up.fit``): the batch line from
the replicas' batch metrics, what a saturated replica really held and served (Ray's router),
the hop outside the replica, the cold start from how long Ray took to bring scaled-up
replicas to RUNNING. The same policy spec, bounds, interval and arrivals go into
``trimtab.sim.replay.simulate``, which runs the production control loop (its safety stages
and the live run's warm-up included) with the simulated source set to show what the live
controller saw and the simulated actuator set to apply what the live actuators apply
(``LiveModel.source`` and ``LiveModel.actuation``). Errors follow simulator papers: relative
error of p50/p99 latency and of replica-seconds, the absolute difference of SLO attainment, and
the mean and 90th percentile of the absolute difference in replica count over time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from trimtab.sim.actuator import SimActuatorConfig
from trimtab.sim.fleet.types import SERVED
from trimtab.sim.replay import RunResult, simulate
from trimtab.sim.scenario import scenario_from_dict
from trimtab.sim.source import SimSourceConfig
from trimtab.sim.traces import trace_from_arrays
from trimtab.up.fit import (DEFAULT_COLD_START_S, ReplicaWindow, Saturation, ServiceFit,
                          cold_start_s, effective_service, fit_hop_s, fit_saturation,
                          fit_service, lag_windows)
from trimtab.up.run import FLEET_MAX_ONGOING

__all__ = ["DEFAULT_COLD_START_S", "LIVE_UNAPPLIED", "LiveModel", "ScriptedPolicy", "ServiceFit",
           "cold_start_s", "compare", "evaluate", "fit_model", "fit_service", "on_load_clock",
           "replay", "replay_decisions", "scenario_for"]

# Decision fields the live run's actuators leave alone: the Ray Serve actuator and the sidecar
# gate set replicas, the concurrency limit and the batch settings, not the admission timeout.
LIVE_UNAPPLIED = ("queue_timeout_s",)


@dataclass(frozen=True)
class LiveModel:
    """Everything the replay takes from the live run (see ``trimtab.up.fit``)."""

    measured: ServiceFit               # the batch metrics' line
    service: ServiceFit                # the line the simulator runs
    saturation: Saturation
    hop_s: float
    cold_start_s: float
    lag: int                           # controller intervals in the live controller's view

    def source(self, interval_s: float) -> SimSourceConfig:
        """What the live controller read, from Prometheus through the sidecar: arrivals
        counted when they finish, over ``lag`` intervals (its rate window plus the scrape
        lag), queue and in flight split at the sidecar's gate, batch times as the replicas'
        batch metrics time them (the batch alone, not the effective line simulated)."""
        return SimSourceConfig(
            rate_window_s=self.lag * interval_s, counted_at_completion=True,
            gate_per_replica=FLEET_MAX_ONGOING,
            measured_line_ms=(self.measured.base_ms, self.measured.per_item_ms),
            effective_line_ms=(self.service.base_ms, self.service.per_item_ms))

    def actuation(self) -> SimActuatorConfig:
        """What the live actuators applied: no admission timeout; the fleet runs at the fitted
        effective concurrency (what Ray's router lets a saturated replica hold), never above
        the policy's, which reads back its own limit (Ray's 16 until it sets one)."""
        return SimActuatorConfig(unapplied=LIVE_UNAPPLIED,
                                 concurrency_cap=self.saturation.concurrency,
                                 initial_limit=FLEET_MAX_ONGOING)

    def summary(self) -> dict[str, Any]:
        """The fitted terms, for the JSON and the report."""
        return {"batch_base_ms": self.measured.base_ms,
                "batch_per_item_ms": self.measured.per_item_ms, "batch_cv": self.measured.cv,
                "effective_base_ms": self.service.base_ms,
                "effective_per_item_ms": self.service.per_item_ms,
                "saturated_concurrency": self.saturation.concurrency,
                "saturated_rps_per_replica": self.saturation.rps,
                "saturated_mean_batch": self.saturation.mean_batch,
                "saturated_windows": self.saturation.windows,
                "hop_ms": round(1000.0 * self.hop_s, 3),
                "cold_start_s": round(self.cold_start_s, 3),
                "view_lag_windows": self.lag}


def fit_model(cfg: Any, batch_samples: Sequence[tuple[float, float, float]],
              windows: Sequence[ReplicaWindow], latencies_s: Sequence[float],
              applied: Sequence[Any], replica_samples: Sequence[tuple[float, int, int]]
              ) -> LiveModel:
    """The replay's model of a live run, from that run's own metrics (``cfg``: LiveConfig)."""
    measured = fit_service(batch_samples)
    sat = fit_saturation(windows)
    return LiveModel(measured=measured,
                     service=effective_service(measured, sat, cfg.batch_timeout_ms),
                     saturation=sat, hop_s=fit_hop_s(latencies_s, measured, cfg.batch_timeout_ms),
                     cold_start_s=cold_start_s(applied, replica_samples),
                     lag=lag_windows(cfg.window_s, cfg.interval_s))


def scenario_for(cfg: Any, fit: ServiceFit, cold_s: float, concurrency: int | None = None
                 ) -> Any:
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
                     "max": cfg.max_replicas, "cold_start_s": round(cold_s, 3),
                     "concurrency_limit": concurrency},
        "slo": {"latency_s": cfg.slo_latency_s, "target": cfg.slo_target},
        # The live loop's warm-up is its rate window (trimtab.up.run): the same here.
        "controller": {"interval_s": cfg.interval_s, "warmup_s": cfg.window_s},
        "seed": cfg.seed, "drain_s": 60.0,
    }, source="live run")


def replay(cfg: Any, arrival_s: np.ndarray, fit: ServiceFit, cold_s: float,
           model: LiveModel | None = None) -> RunResult:
    """The same policy spec on the same arrivals (closed loop). Without ``model``: the batch
    line alone and the simulator's exact view (the figures before the stack was fitted)."""
    trace = trace_from_arrays(np.asarray(arrival_s))
    if model is None:
        return simulate(scenario_for(cfg, fit, cold_s), cfg.policy, trace, record_requests=True)
    sc = scenario_for(cfg, model.service, model.cold_start_s, model.saturation.concurrency)
    return simulate(sc, cfg.policy, trace, record_requests=True,
                    source=model.source(cfg.interval_s), actuation=model.actuation())


@dataclass
class ScriptedPolicy:
    """Replays the live run's applied decisions at their times (open loop, for diagnosis).

    With the controller's timing taken out, what is left of the error is the simulator's
    service and queueing model against the real serving stack.
    """

    applied: Sequence[Any]
    min_replicas: int
    interval_s: float = 0.25      # a change takes effect at most this late
    name: str = "live-decisions"

    @property
    def params(self) -> dict[str, Any]:
        return {}

    def initial_state(self) -> None:
        return None

    def decide(self, snapshot: Any, state: None, now_s: float) -> tuple[Any, None]:
        from trimtab.controllers.core.types import Decision

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
                     applied: Sequence[Any], model: LiveModel | None = None) -> RunResult:
    """The same arrivals with the live run's own scaling and knob changes at their times."""
    concurrency = None if model is None else model.saturation.concurrency
    if model is not None:
        fit, cold_s = model.service, model.cold_start_s
    sc = scenario_for(cfg, fit, cold_s, concurrency)
    sc = sc.model_copy(update={"service": sc.service.model_copy(
        update={"max_batch": cfg.initial_max_batch_size})})
    policy = ScriptedPolicy(sorted(applied, key=lambda a: a.at_s), cfg.min_replicas)
    # The same cap on the fleet as the closed loop's, no change to what the policy sees.
    actuation = SimActuatorConfig(unapplied=LIVE_UNAPPLIED, concurrency_cap=concurrency)
    return simulate(sc, policy, trace_from_arrays(np.asarray(arrival_s)), record_requests=True,
                    actuation=actuation)


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
            duration_s: float, slo_latency_s: float, hop_s: float = 0.0) -> dict[str, Any]:
    """Fidelity figures: sim against live over [0, duration_s]; ``hop_s`` (the fitted hop
    outside the replica) is added to every simulated latency, attainment included."""
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
    sim_att = sim.summary.get("slo_attainment")
    if hop_s > 0 and served:
        ok = (req["outcome"] == SERVED) & np.isfinite(req["finish_s"])
        lat_ok = req["finish_s"][ok] - req["arrival_s"][ok] + hop_s
        n_req = len(req["outcome"])
        sim_att = round(float(np.count_nonzero(lat_ok <= slo_latency_s)) / n_req, 6) \
            if n_req else None
        sim_lat = sim_lat + hop_s
    lat = np.asarray(live_latency_s, float)
    lat = lat[np.isfinite(lat)]
    p = {q: (float(np.quantile(lat, q)) if len(lat) else None,
             float(np.quantile(sim_lat, q)) if len(sim_lat) else None) for q in (0.5, 0.99)}
    live_att = live.get("slo_attainment")
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


@dataclass(frozen=True)
class Applied:
    """One applied change, its time on the load's clock."""

    at_s: float
    changes: dict[str, tuple[Any, Any]]
    reason: str = ""


def on_load_clock(applied: Sequence[Any], load_offset_s: float) -> list[Applied]:
    """The live run's applied changes with times from the load's start, not the controller's
    (it starts about a second earlier): e.g. at_s 58.8 with an offset of 1.1 -> 57.7."""
    return [Applied(a.at_s - load_offset_s, dict(a.changes), getattr(a, "reason", ""))
            for a in applied]


HEADLINE = ("p50_rel_error", "p99_rel_error", "replica_seconds_rel_error",
            "slo_attainment_abs_error", "replicas_mean_abs_error")


def evaluate(run: Any, live_summary: dict[str, Any]) -> dict[str, Any]:
    """Fit the model from a finished live run (Prometheus still up) and replay it four ways.

    Returns ``fidelity`` (the closed-loop figures with the fitted stack, ``open_loop`` with
    the live decisions replayed, ``before``: both with the batch line alone and the exact
    view, and ``model``: the fitted terms), ``sim`` (the closed-loop RunResult, for the
    report) and ``model``.
    """
    from trimtab.up.results import batch_samples, replica_windows

    cfg = run.config
    log = run.request_log
    ok = np.asarray(log.outcome, dtype=object) == "ok"
    lat_ok = np.asarray(log.latency_s, dtype=float)[ok]
    applied = on_load_clock(run.applied, getattr(run, "load_offset_s", 0.0))
    model = fit_model(cfg, batch_samples(run), replica_windows(run), lat_ok, applied,
                      run.replica_samples)

    def against(sim: RunResult, hop_s: float) -> dict[str, Any]:
        return compare(live_summary, lat_ok, run.replica_samples, sim, cfg.duration_s,
                       cfg.slo_latency_s, hop_s)

    fit, cold_s = model.measured, model.cold_start_s
    sim = replay(cfg, run.arrival_s, fit, cold_s, model)
    fid = against(sim, model.hop_s)
    fid["open_loop"] = {k: v for k, v in against(replay_decisions(
        cfg, run.arrival_s, fit, cold_s, applied, model), model.hop_s).items()
        if k != "targets"}
    # Before: the batch line alone, the exact view, the controller's clock taken as the load's.
    cold_before_s = cold_start_s(run.applied, run.replica_samples)
    before = {"closed_loop": against(replay(cfg, run.arrival_s, fit, cold_before_s), 0.0),
              "open_loop": against(replay_decisions(cfg, run.arrival_s, fit, cold_before_s,
                                                    run.applied), 0.0)}
    fid["before"] = {name: {k: part[k] for k in HEADLINE} | {"sim": part["sim"]}
                     for name, part in before.items()}
    fid["model"] = model.summary()
    return {"fidelity": fid, "sim": sim, "model": model}
