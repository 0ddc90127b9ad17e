"""The oracle: knows the future arrivals and plans the cheapest replica schedule meeting the SLO.

It is the lower bound every result is compared with. Steps: (1) per controller interval, the
fewest replicas whose predicted quantile latency (trimtab.controllers.core.capacity, with the scenario's
true service model) fits the SLO at that interval's load scaled by a factor f; (2) provision
early: the count at tick t covers the need over [t, t + cold start + interval], since a replica
asked for later would not be ready in time; (3) simulate and bisect f to the smallest that meets
the SLO target; (4) bump intervals whose requests missed, and re-verify by simulation.

Registered as the replay-only policy ``oracle`` (``oracle`` or ``oracle:max_runs=12``): the
replay hands its factory a ReplayContext, whose ``run`` does the simulating, so this module
never imports the replay.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from trimtab.controllers.core import capacity
from trimtab.controllers.core.registry import ReplayContext, register_replay
from trimtab.controllers.core.spec import SpecError
from trimtab.controllers.core.types import Decision, FleetBounds, Snapshot

REASON_ORACLE = "oracle"


@dataclass
class SchedulePolicy:
    """A Policy replaying a precomputed schedule: tick k (t = k * interval) -> replicas[k]."""

    schedule: tuple[int, ...]
    interval_s: float
    name: str = "oracle"
    params: Mapping[str, Any] = field(default_factory=dict)

    def initial_state(self) -> None:
        return None

    def decide(self, snapshot: Snapshot, state: None, now_s: float) -> tuple[Decision, None]:
        k = min(len(self.schedule) - 1, max(0, int(round(now_s / self.interval_s))))
        return Decision(replicas=self.schedule[k], reason=REASON_ORACLE), None


def interval_rates(arrival_s: np.ndarray, interval_s: float, n_ticks: int) -> np.ndarray:
    """Arrival rate per interval: entry k covers [k * interval, (k + 1) * interval)."""
    idx = np.minimum((np.asarray(arrival_s) // interval_s).astype(np.int64), n_ticks - 1)
    return np.bincount(idx, minlength=n_ticks)[:n_ticks] / interval_s


def needs(rates: np.ndarray, fit: capacity.BatchFit, bounds: FleetBounds, max_batch: int,
          timeout_s: float, factor: float) -> np.ndarray:
    return np.array([capacity.replicas_for(fit, r * factor, bounds.slo_latency_s, max_batch,
                                           bounds.slo_target, bounds.max_replicas, timeout_s)
                     if r > 0 else bounds.min_replicas for r in rates], dtype=np.int64)


def schedule_from_needs(need: np.ndarray, bounds: FleetBounds, interval_s: float) -> np.ndarray:
    """Decision at tick k (time k * interval) = max need over the next cold start + interval."""
    ahead = int(math.ceil(bounds.cold_start_s / interval_s)) + 1
    n = len(need)
    out = np.empty(n + 1, dtype=np.int64)
    for k in range(n + 1):
        window = need[k:min(n, k + ahead)]
        out[k] = int(window.max()) if len(window) else bounds.min_replicas
    return np.clip(out, bounds.min_replicas, bounds.max_replicas)


def llm_needs(rates: np.ndarray, replica_rps: float, bounds: FleetBounds,
              factor: float) -> np.ndarray:
    """An LLM fleet's replicas per interval: the interval's rate times ``factor`` over what one
    replica sustains (``trimtab.sim.llm.fleet.llm_replica_rps``); the verified search below
    finds the factor, so the estimate need only be monotone in the rate."""
    need = np.ceil(np.asarray(rates, dtype=np.float64) * factor / replica_rps)
    return np.clip(need, bounds.min_replicas, bounds.max_replicas).astype(np.int64)


@dataclass(frozen=True)
class LlmCapacity:
    """What an LLM fleet's schedules are sized from: requests/s one replica sustains."""

    replica_rps: float


def capacity_model(ctx: ReplayContext) -> capacity.BatchFit | LlmCapacity:
    """The schedules' capacity model: the batch line (request-level fleets) or one LLM
    replica's sustained rate (``trimtab.sim.llm.fleet.llm_replica_rps``)."""
    if ctx.scenario.service.model == "llm":
        from trimtab.sim.llm.fleet import llm_replica_rps

        return LlmCapacity(llm_replica_rps(ctx.scenario, ctx.trace))
    return true_fit(ctx)


def needs_for(model: capacity.BatchFit | LlmCapacity, rates: np.ndarray, bounds: FleetBounds,
              scenario: Any, factor: float) -> np.ndarray:
    """Replicas per interval at ``factor`` times the rates, under either capacity model."""
    if isinstance(model, LlmCapacity):
        return llm_needs(rates, model.replica_rps, bounds, factor)
    return needs(rates, model, bounds, scenario.service.max_batch,
                 scenario.service.batch_timeout_ms / 1000.0, factor)


def true_fit(ctx: ReplayContext) -> capacity.BatchFit:
    """The scenario's real service model (affine), or one fitted on a pilot run (profile)."""
    scenario = ctx.scenario
    s = scenario.service
    if s.model == "affine":
        return capacity.BatchFit(s.base_ms / 1000.0, s.per_item_ms / 1000.0, 0)
    pilot = PilotPolicy(scenario.replicas.max, scenario.controller.interval_s)
    fit = capacity.fit(ctx.run(pilot).extra["policy_state"])
    if fit is None:
        raise ValueError(f"oracle: scenario {scenario.name!r}: the pilot run saw no batches")
    return fit


@dataclass(frozen=True)
class PilotPolicy:
    """Holds ``replicas`` and learns the batch line: the capacity statistics are its state."""

    replicas: int
    interval_s: float
    name: str = "oracle-pilot"
    params: Mapping[str, Any] = field(default_factory=dict)

    def initial_state(self) -> capacity.CapacityState:
        return capacity.CapacityState()

    def decide(self, snapshot: Snapshot, state: capacity.CapacityState, now_s: float
               ) -> tuple[Decision, capacity.CapacityState]:
        return (Decision(replicas=self.replicas, reason=REASON_ORACLE),
                capacity.observe(state, snapshot.batch_samples))


def _misses_by_interval(run: Any, slo: Any, interval_s: float, n_ticks: int) -> np.ndarray:
    """Requests that missed the SLO (every bound it gives: end to end, and for an LLM fleet
    TTFT and TPOT), counted by the interval they arrived in."""
    req = run.requests
    from trimtab.sim.fleet.model import SERVED

    lat = req["finish_s"] - req["arrival_s"]
    served = req["outcome"] == SERVED
    miss = ~served
    if slo.latency_s is not None:
        miss |= ~(lat <= slo.latency_s)
    if "ttft_s" in req:
        if slo.ttft_s is not None:
            miss |= served & (req["ttft_s"] > slo.ttft_s)
        if slo.tpot_s is not None:
            miss |= served & (req["tpot_s"] > slo.tpot_s)     # NaN (one token): no miss
    idx = np.minimum((req["arrival_s"][miss] // interval_s).astype(np.int64), n_ticks - 1)
    return np.bincount(idx, minlength=n_ticks)[:n_ticks]


def plan(ctx: ReplayContext, bounds: FleetBounds, interval_s: float, max_runs: int = 12
         ) -> tuple[np.ndarray, dict[str, Any]]:
    """The cheapest verified schedule found, and how it was found."""
    scenario, trace = ctx.scenario, ctx.trace
    n_ticks = max(1, int(math.ceil(trace.duration_s / interval_s)))
    rates = interval_rates(trace.arrival_s, interval_s, n_ticks)
    model = capacity_model(ctx)
    runs = 0

    def attempt(sched: np.ndarray) -> Any:
        nonlocal runs
        runs += 1
        pol = SchedulePolicy(tuple(int(x) for x in sched), interval_s)
        return ctx.run(pol, record_requests=True)

    def build(f: float) -> np.ndarray:
        return schedule_from_needs(needs_for(model, rates, bounds, scenario, f), bounds,
                                   interval_s)

    best: tuple[float, np.ndarray] | None = None
    lo, hi = 0.6, 1.0
    run = attempt(build(hi))
    while not run.summary["meets_slo"] and hi < 3.0 and runs < max_runs // 2:
        lo, hi = hi, hi * 1.3
        run = attempt(build(hi))
    if run.summary["meets_slo"]:
        best = (run.summary["replica_hours"], build(hi))
    for _ in range(4):                        # bisect the load factor down
        if runs >= max_runs - 3 or best is None:
            break
        mid = (lo + hi) / 2
        r = attempt(build(mid))
        if r.summary["meets_slo"]:
            hi, run = mid, r
            if r.summary["replica_hours"] < best[0]:
                best = (r.summary["replica_hours"], build(mid))
        else:
            lo = mid
    sched = build(hi) if best is None else best[1]
    if best is None:                          # bump missing intervals until it meets
        allowed = (1 - bounds.slo_target) * len(trace.arrival_s) / n_ticks
        ahead = int(math.ceil(bounds.cold_start_s / interval_s)) + 1
        while runs < max_runs:
            r = attempt(sched)
            if r.summary["meets_slo"]:
                break
            bad = np.nonzero(_misses_by_interval(r, scenario.slo, interval_s,
                                                 n_ticks) > allowed)[0]
            for k in bad:
                lo_k = max(0, k - ahead + 1)
                sched[lo_k:k + 2] = np.minimum(sched[lo_k:k + 2] + 1, bounds.max_replicas)
    about = ({"replica_rps": model.replica_rps} if isinstance(model, LlmCapacity)
             else {"a_s": model.a_s, "c_s": model.c_s})
    return sched, {"runs": runs, "load_factor": hi, **about}


def make_oracle_policy(params: dict[str, Any], bounds: FleetBounds, interval_s: float,
                       ctx: ReplayContext) -> SchedulePolicy:
    """The ``oracle`` factory: plans (simulating several times) and replays the schedule."""
    unknown = set(params) - {"max_runs"}
    if unknown:
        raise SpecError(f"oracle: unknown parameter(s) {sorted(unknown)}; known: ['max_runs']")
    max_runs = params.get("max_runs", 12)
    if not isinstance(max_runs, int) or max_runs < 3:
        raise SpecError(f"oracle: max_runs = {max_runs!r}, must be an integer >= 3")
    sched, info = plan(ctx, bounds, interval_s, max_runs)
    return SchedulePolicy(tuple(int(x) for x in sched), interval_s,
                          params={k: round(float(v), 6) for k, v in info.items()})


register_replay("oracle", make_oracle_policy)
