"""trimtab's policy: forecast + learned capacity + queueing model -> replicas and pod knobs.

Each tick: fold the window's batches into the capacity fit and its arrival rate into the
forecaster; plan on the upper forecast quantile at the horizon that matters (cold start plus
one interval), corrected by what the forecast missed (a backlog to drain, a burst far above
the forecast); size the fleet with the fewest replicas whose predicted p99 (queueing wait plus
batch time) fits the SLO budget; then the guards: bounds, bounded scale-up, a hysteresis band
and a stabilisation window for scale-down, restart warm-up, hold on missing data. The run-level
miss budget (trimtab.controllers.core.budget) widens the planning quantile once the run has overspent its
allowed misses and inflates the planned load after windows that missed outside a cold start.
The pod knobs change only when they move enough or the SLO demands it (trimtab.controllers.core.knobs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from pydantic import Field

from trimtab.controllers.core import budget as budget_
from trimtab.controllers.core import capacity, forecast, knobs
from trimtab.controllers.core.binding import BoundPolicy, PolicyConfig, build_config
from trimtab.controllers.core.guards import (
    bounded_step_up, clamp, hold_on_unreadable, prune, warmup, within_tolerance,
)
from trimtab.controllers.core.registry import register
from trimtab.controllers.core.types import (
    FIELD_ARRIVAL_RATE, REASON_BURST, REASON_SCALE_DOWN, REASON_SCALE_UP, REASON_STABILIZING,
    REASON_STEADY, REASON_WITHIN_TOLERANCE, Decision, FleetBounds, Policy, Snapshot,
)

REASON_NO_MODEL = "no_capacity_model"     # no batch seen yet: hold unless work piles up
REASON_BACKLOG = "backlog"                # reactive: queue beyond what batching explains


class TrimtabConfig(PolicyConfig):
    interval_s: float = Field(15.0, gt=0)
    quantile: float = Field(0.95, gt=0.5, lt=1)       # planning quantile of the forecast
    budget_fraction: float = Field(1.0, gt=0, le=1)   # share of the SLO the model plans for
    down_band: float = Field(0.25, ge=0, lt=1)        # scale down only if need(load*(1+band)) < n
    down_tolerance: float = Field(0.15, ge=0, lt=1)   # ... and by more than this share of n
    down_window_s: float | None = Field(None, ge=0)   # None: max(240, 2 * cold start)
    warmup_s: float | None = Field(None, ge=0)        # None: the down window
    burst_factor: float = Field(1.5, gt=1)            # load this far above forecast = burst
    max_step_ratio: float = Field(3.0, gt=1)          # scale-up bound per tick
    min_step: int = Field(4, ge=1)
    bucket_s: float = Field(60.0, gt=0)
    season_s: float = Field(86400.0, gt=0)
    refit_s: float = Field(900.0, gt=0)
    set_pod_knobs: bool = True                        # concurrency limit and max batch size
    shed_late: bool = True                            # admission wait capped at what can still
                                                      # meet the SLO (capacity.admission_wait_s)
    rate_weighted: bool = False                       # weigh burst history by its load

    def window_s(self) -> float:
        if self.down_window_s is not None:
            return self.down_window_s
        return max(240.0, 2.0 * self.bounds.cold_start_s)

    def forecast_config(self) -> forecast.ForecastConfig:
        return forecast.ForecastConfig(bucket_s=self.bucket_s, season_s=self.season_s,
                                       refit_s=self.refit_s, quantile=self.quantile,
                                       rate_weighted=self.rate_weighted)


@dataclass(frozen=True)
class TrimtabState:
    forecast: forecast.ForecastState = forecast.ForecastState()
    capacity: capacity.CapacityState = capacity.CapacityState()
    recommendations: tuple[tuple[float, int], ...] = ()
    started_s: float | None = None
    margin: float = 1.0          # >1 inflates the planned load (budget.headroom)
    budget: budget_.BudgetState = budget_.BudgetState()
    last_replicas: int | None = None
    max_batch: int | None = None           # pod knobs last decided (held by knobs.settle)
    concurrency_limit: int | None = None


def initial_state(config: TrimtabConfig) -> TrimtabState:
    return TrimtabState()


def plan_load(snapshot: Snapshot, fc: tuple[float, float] | None, fit: capacity.BatchFit,
              config: TrimtabConfig) -> tuple[float, str]:
    """The load to size for: upper forecast, plus a backlog to drain, or a burst."""
    now_rps = float(snapshot.arrival_rate_rps or 0.0)
    reason = REASON_STEADY
    if fc is None:
        planned = now_rps * config.burst_factor
    else:
        planned = max(fc[1], now_rps)
        if now_rps > config.burst_factor * max(fc[1], 1e-9) and now_rps > 1.0:
            planned, reason = now_rps * config.burst_factor, REASON_BURST
    ready = snapshot.ready_replicas or 0
    settled = capacity.settled_batch(fit, now_rps / ready) if ready else 0.0
    expected_wait = ready * (settled if math.isfinite(settled) else 0.0)
    backlog = max(0.0, float(snapshot.queue_depth or 0.0) - 2.0 * expected_wait)
    if backlog > 0:
        drain_s = config.bounds.cold_start_s + config.interval_s
        planned += backlog / drain_s
        if reason == REASON_STEADY:
            reason = REASON_BACKLOG
    return planned, reason


def decide(snapshot: Snapshot, config: TrimtabConfig, state: TrimtabState, now_s: float
           ) -> tuple[Decision, TrimtabState]:
    hold = hold_on_unreadable(snapshot, [FIELD_ARRIVAL_RATE])
    if hold is not None:
        return hold, state
    b = config.bounds
    started_s = now_s if state.started_s is None else state.started_s
    current = snapshot.current_replicas
    horizon_s = b.cold_start_s + config.interval_s
    fcfg = config.forecast_config()
    fstate = forecast.observe(state.forecast, fcfg, now_s, float(snapshot.arrival_rate_rps),
                              horizon_s)
    cstate = capacity.observe(state.capacity, snapshot.batch_samples)
    bstate = budget_.update(state.budget, snapshot, b.slo_latency_s, b.slo_target)
    margin = bstate.headroom
    fit = capacity.fit(cstate)
    state = replace(state, forecast=fstate, capacity=cstate, started_s=started_s, margin=margin,
                    budget=bstate)
    if fit is None:
        return (Decision(replicas=current, reason=REASON_NO_MODEL, valid=False),
                replace(state, last_replicas=current))
    q_plan = budget_.planning_quantile(config.quantile, bstate.burn(b.slo_target),
                                      budget_.confidence(bstate))
    now_rps = float(snapshot.arrival_rate_rps)
    noise_rps = 2.0 * math.sqrt(max(now_rps, 1.0) / max(snapshot.window_s, 1e-9))  # Poisson, 2 sd
    fc = forecast.forecast(fstate, replace(fcfg, quantile=q_plan), horizon_s, now_rps, noise_rps)
    load, load_reason = plan_load(snapshot, fc, fit, config)
    load *= margin
    budget_s = b.slo_latency_s * config.budget_fraction
    configured = b.max_batch_size or snapshot.max_batch_size or 1
    old_batch = state.max_batch if state.max_batch is not None else snapshot.max_batch_size
    max_batch = knobs.max_batch(fit, old_batch,
                                capacity.best_max_batch(fit, budget_s, configured),
                                budget_s, configured)
    timeout_s = (snapshot.batch_timeout_ms or b.batch_timeout_ms or 0.0) / 1000.0
    need = capacity.replicas_for(fit, load, budget_s, max_batch, b.slo_target, b.max_replicas,
                                 timeout_s)
    need_down = capacity.replicas_for(fit, load * (1 + config.down_band), budget_s, max_batch,
                                      b.slo_target, b.max_replicas, timeout_s)
    replicas, reason = _guards(current, need, need_down, load_reason, state, config, now_s)
    recs = prune(state.recommendations, now_s, config.window_s()) + ((now_s, need_down),)
    pod: dict[str, Any] = {}
    if config.set_pod_knobs:
        old_limit = (state.concurrency_limit if state.concurrency_limit is not None
                     else snapshot.concurrency_limit)
        limit = knobs.settle(old_limit, capacity.concurrency_limit(fit, max_batch,
                                                                   b.slo_latency_s))
        pod = {"max_batch_size": max_batch, "concurrency_limit": limit}
        if config.shed_late:
            pod["queue_timeout_s"] = round(capacity.admission_wait_s(
                fit, limit, max_batch, b.slo_latency_s, b.slo_target), 3)
    details = {"need": float(need), "need_down": float(need_down), "margin": margin,
               "burn": bstate.burn(b.slo_target), "quantile": q_plan,
               "a_s": fit.a_s, "c_s": fit.c_s}
    if fc is not None:
        details.update(forecast_mean_rps=fc[0], forecast_upper_rps=fc[1])
    decision = Decision(replicas=replicas, reason=reason, forecast_rps=load, details=details,
                        **pod)
    return decision, replace(state, recommendations=recs, last_replicas=replicas,
                             max_batch=max_batch if config.set_pod_knobs else state.max_batch,
                             concurrency_limit=pod.get("concurrency_limit"))


def _guards(current: int, need: int, need_down: int, load_reason: str, state: TrimtabState,
            config: TrimtabConfig, now_s: float) -> tuple[int, str]:
    """Bounds, bounded scale-up, hysteresis band, stabilisation window, warm-up."""
    b = config.bounds
    if need > current:
        n, why = bounded_step_up(current, need, config.max_step_ratio, config.min_step)
        n, bound_why = clamp(n, b.min_replicas, b.max_replicas)
        if n == current:
            return n, bound_why or REASON_STEADY
        return n, bound_why or why or (load_reason if load_reason != REASON_STEADY
                                       else REASON_SCALE_UP)
    if need_down >= current:
        n, why = clamp(current, b.min_replicas, b.max_replicas)
        return n, why or (REASON_WITHIN_TOLERANCE if need < current else REASON_STEADY)
    # Scale-down: to the largest recommendation in the window (including this one).
    window_max = max([need_down] + [r for t, r in state.recommendations
                                    if t > now_s - config.window_s()])
    target = max(window_max, b.min_replicas)
    if target >= current:
        return current, REASON_STABILIZING
    target, why = within_tolerance(current, target, config.down_tolerance)
    if why:
        return current, why
    warm_s = config.warmup_s if config.warmup_s is not None else config.window_s()
    n, why = warmup(current, target, state.started_s or now_s, now_s, warm_s)
    if why:
        return n, why
    n, why = clamp(n, b.min_replicas, b.max_replicas)
    return n, why or REASON_SCALE_DOWN


def _factory(params: dict[str, Any], bounds: FleetBounds, interval_s: float) -> Policy:
    config = build_config(TrimtabConfig, params, "trimtab", bounds, interval_s=interval_s)
    return BoundPolicy(name="trimtab", config=config, decide_fn=decide,
                       initial_state_fn=initial_state, interval_s=config.interval_s,
                       params=dict(params))


register("trimtab", _factory)
