"""The cheapest causal schedule: what exact knowledge of the past (not the future) costs.

An analysis beside the oracle, not a policy. Schedules of one family: at tick k hold
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

from trimtab.sim.oracle import SchedulePolicy, interval_rates, make_oracle_policy, needs, true_fit

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


def cheapest(scenario: Any, trace: Any, window: int, runs: int = 7,
             inputs: tuple[np.ndarray, Any] | None = None) -> dict[str, Any]:
    """The cheapest schedule of window ``window`` meeting the SLO (bisecting the load factor);
    ``inputs`` (``_inputs``) when several windows share them."""
    from trimtab.sim.replay import simulate

    b = scenario.bounds()
    interval_s = scenario.controller.interval_s
    rates, fit = inputs if inputs is not None else _inputs(scenario, trace)
    timeout_s = scenario.service.batch_timeout_ms / 1000.0

    def run(f: float) -> dict[str, Any]:
        need = needs(rates, fit, b, scenario.service.max_batch, timeout_s, f)
        sched = causal_schedule(need, window, scenario.replicas.initial, b.min_replicas,
                                b.max_replicas)
        pol = SchedulePolicy(tuple(int(x) for x in sched), interval_s, name="causal")
        return simulate(scenario, pol, trace).summary

    lo, hi = 0.5, 1.0
    r = run(hi)
    while not r["meets_slo"] and hi < 8.0:
        lo, hi = hi, hi * 1.6
        r = run(hi)
    if not r["meets_slo"]:
        return {"window_ticks": window, "meets_slo": False, "load_factor": hi,
                "slo_attainment": r["slo_attainment"]}
    best = (hi, r)
    for _ in range(runs - 2):
        mid = (lo + hi) / 2
        r = run(mid)
        if r["meets_slo"]:
            hi = mid
            if r["replica_hours"] < best[1]["replica_hours"]:
                best = (mid, r)
        else:
            lo = mid
    return {"window_ticks": window, "meets_slo": True, "load_factor": round(best[0], 4),
            "replica_hours": best[1]["replica_hours"],
            "slo_attainment": best[1]["slo_attainment"]}


def _inputs(scenario: Any, trace: Any) -> tuple[np.ndarray, Any]:
    """The true arrival rate per interval and the true service line (a pilot run for a
    profile service, so worth computing once)."""
    interval_s = scenario.controller.interval_s
    n_ticks = max(1, int(math.ceil(trace.duration_s / interval_s)))
    return interval_rates(trace.arrival_s, interval_s, n_ticks), true_fit(scenario, trace)


def compare(scenario: Any, trace: Any, windows: Sequence[int] = WINDOWS_TICKS
            ) -> dict[str, Any]:
    """The oracle's replica-hours beside the cheapest causal schedule of each window."""
    from trimtab.sim.replay import simulate

    oracle = simulate(scenario, make_oracle_policy(scenario, trace, scenario.bounds()),
                      trace).summary
    inputs = _inputs(scenario, trace)
    rows = [cheapest(scenario, trace, w, inputs=inputs) for w in windows]
    met = [r for r in rows if r["meets_slo"]]
    best = min(met, key=lambda r: r["replica_hours"]) if met else None
    return {"scenario": scenario.name, "oracle_replica_hours": oracle["replica_hours"],
            "causal": rows,
            "best_causal_vs_oracle": (round(best["replica_hours"] / oracle["replica_hours"], 3)
                                      if best else None)}
