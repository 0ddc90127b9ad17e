"""The cheapest causal schedule: what exact knowledge of the past (not the future) costs.

An analysis beside the oracle, and the replay-only policy ``causal`` (``causal:window=8`` the
cheapest of that window, bisected by simulation; ``causal:window=8,load_factor=1.3`` that
schedule as is). Schedules of one family: at tick k hold
``need(f * the largest true arrival rate of the last W intervals)`` with the oracle's capacity
model and the scenario's true service line (exact past rates: no forecast error, no sampling
noise, but no future). For each window W the load factor f is bisected to the cheapest schedule
that meets the SLO in simulation. The oracle sizes each interval for the load that *will*
arrive, looking one cold start ahead; the gap between the two is the price of not knowing the
future for a policy that only reacts, and an online policy beats this family only by
forecasting what is forecastable (a daily cycle), not bursts.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from trimtab.controllers.core.registry import ReplayContext, make_policy, register_replay
from trimtab.controllers.core.spec import SpecError
from trimtab.controllers.core.types import FleetBounds
from trimtab.sim.oracle import SchedulePolicy, capacity_model, interval_rates, needs_for

WINDOWS_TICKS = (4, 8, 16, 40)    # how much past the schedule holds the peak of


def causal_schedule(need: np.ndarray, window: int, initial: int, lo: int, hi: int
                    ) -> np.ndarray:
    """Tick k holds the largest need of intervals k - window .. k - 1 (all in the past);
    until a whole window has been seen it also keeps the initial fleet (a start is safe, as
    in trimtab's warm-up: one quiet first interval does not shrink the fleet)."""
    if window < 1:
        raise ValueError(f"window = {window} ticks, must be >= 1")
    out = np.empty(len(need) + 1, dtype=np.int64)
    out[0] = initial
    for k in range(1, len(need) + 1):
        seen = need[max(0, k - window):k].max()
        out[k] = max(seen, initial) if k < window else seen
    return np.clip(out, lo, hi)


def inputs(ctx: ReplayContext, interval_s: float) -> tuple[np.ndarray, Any]:
    """The true arrival rate per interval and the true capacity model (a pilot run for a
    profile service, so worth computing once for many schedules)."""
    n_ticks = max(1, int(math.ceil(ctx.trace.duration_s / interval_s)))
    return interval_rates(ctx.trace.arrival_s, interval_s, n_ticks), capacity_model(ctx)


def schedule_policy(ctx: ReplayContext, bounds: FleetBounds, interval_s: float, window: int,
                    load_factor: float, given: tuple[np.ndarray, Any]) -> SchedulePolicy:
    """The schedule of ``window`` at ``load_factor`` from the inputs ``given``."""
    sc = ctx.scenario
    rates, fit = given
    need = needs_for(fit, rates, bounds, sc, load_factor)
    sched = causal_schedule(need, window, sc.replicas.initial, bounds.min_replicas,
                            bounds.max_replicas)
    return SchedulePolicy(tuple(int(x) for x in sched), interval_s, name="causal",
                          params={"window": window, "load_factor": round(load_factor, 4)})


def cheapest(ctx: ReplayContext, window: int, runs: int = 7,
             given: tuple[np.ndarray, Any] | None = None) -> dict[str, Any]:
    """The cheapest schedule of window ``window`` meeting the SLO (bisecting the load factor);
    ``given`` (``inputs``) when several windows share them. ``policy`` is the schedule found
    (None when none met the SLO)."""
    sc = ctx.scenario
    b = sc.bounds()
    interval_s = sc.controller.interval_s
    given = given if given is not None else inputs(ctx, interval_s)

    def run(f: float) -> tuple[SchedulePolicy, dict[str, Any]]:
        pol = schedule_policy(ctx, b, interval_s, window, f, given)
        return pol, ctx.run(pol).summary

    lo, hi = 0.5, 1.0
    pol, r = run(hi)
    while not r["meets_slo"] and hi < 8.0:
        lo, hi = hi, hi * 1.6
        pol, r = run(hi)
    if not r["meets_slo"]:
        return {"window_ticks": window, "meets_slo": False, "load_factor": hi,
                "slo_attainment": r["slo_attainment"], "policy": None}
    best = (hi, r, pol)
    for _ in range(runs - 2):
        mid = (lo + hi) / 2
        pol, r = run(mid)
        if r["meets_slo"]:
            hi = mid
            if r["replica_hours"] < best[1]["replica_hours"]:
                best = (mid, r, pol)
        else:
            lo = mid
    return {"window_ticks": window, "meets_slo": True, "load_factor": round(best[0], 4),
            "replica_hours": best[1]["replica_hours"],
            "slo_attainment": best[1]["slo_attainment"], "policy": best[2]}


def make_causal_policy(params: dict[str, Any], bounds: FleetBounds, interval_s: float,
                       ctx: ReplayContext) -> SchedulePolicy:
    """The ``causal`` factory: ``window`` (ticks, default 8) and, optionally, ``load_factor``
    (without it, the cheapest factor meeting the SLO, found by simulation)."""
    unknown = set(params) - {"window", "load_factor"}
    if unknown:
        raise SpecError(f"causal: unknown parameter(s) {sorted(unknown)}; "
                        "known: ['load_factor', 'window']")
    window = params.get("window", 8)
    if not isinstance(window, int) or window < 1:
        raise SpecError(f"causal: window = {window!r} ticks, must be an integer >= 1")
    given = inputs(ctx, interval_s)
    if "load_factor" in params:
        f = params["load_factor"]
        if not isinstance(f, (int, float)) or not f > 0:
            raise SpecError(f"causal: load_factor = {f!r}, must be a number > 0")
        return schedule_policy(ctx, bounds, interval_s, window, float(f), given)
    found = cheapest(ctx, window, given=given)
    if found["policy"] is None:
        raise SpecError(f"causal: window = {window}: no load factor up to "
                        f"{found['load_factor']:.3g} meets the SLO")
    return found["policy"]


def compare(ctx: ReplayContext, windows: Sequence[int] = WINDOWS_TICKS) -> dict[str, Any]:
    """The oracle's replica-hours beside the cheapest causal schedule of each window."""
    sc = ctx.scenario
    interval_s = sc.controller.interval_s
    oracle = ctx.run(make_policy("oracle", sc.bounds(), interval_s, context=ctx)).summary
    given = inputs(ctx, interval_s)
    rows = [{k: v for k, v in cheapest(ctx, w, given=given).items() if k != "policy"}
            for w in windows]
    met = [r for r in rows if r["meets_slo"]]
    best = min(met, key=lambda r: r["replica_hours"]) if met else None
    return {"scenario": sc.name, "oracle_replica_hours": oracle["replica_hours"],
            "causal": rows,
            "best_causal_vs_oracle": (round(best["replica_hours"] / oracle["replica_hours"], 3)
                                      if best else None)}


register_replay("causal", make_causal_policy)
