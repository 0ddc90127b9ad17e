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
The idle-then-burst memory (trimtab.controllers.core.recurrence) keeps the fleet through a quiet
spell as long as quiet spells have lasted before a burst that found it too small.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from pydantic import Field, field_validator

from trimtab.controllers.core import budget as budget_
from trimtab.controllers.core import capacity, forecast, knobs, llm_capacity, peaks, recurrence
from trimtab.controllers.core.binding import BoundPolicy, PolicyConfig, build_config
from trimtab.controllers.core.defaults import INTERVAL_S
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
REASON_QUIET_HOLD = "quiet_hold"          # a quiet spell bursts have ended before (recurrence)


_FC = forecast.ForecastConfig()     # the defaults of the forecaster's, the peak statistics'
_PK = peaks.PeakConfig()            # and the budget's tuning: each is written there once
_BG = budget_.BudgetConfig()
_RC = recurrence.RecurrenceConfig()
_LC = llm_capacity.LlmCapacityConfig()


class TrimtabConfig(PolicyConfig):
    """Every setting of the policy, its tuning included; a spec sets any by name
    (``trimtab:refit_s=600,target_burn=0.5``). The forecaster's, the peak statistics' and the
    budget's take their defaults from those modules' configs, whose field names they share."""

    interval_s: float = Field(INTERVAL_S, gt=0)
    quantile: float = Field(_FC.quantile, gt=0.5, lt=1)   # planning quantile of the forecast
    budget_fraction: float = Field(1.0, gt=0, le=1)   # share of the SLO the model plans for
    down_band: float = Field(0.25, ge=0, lt=1)        # scale down only if need(load*(1+band)) < n
    down_tolerance: float = Field(0.15, ge=0, lt=1)   # ... and by more than this share of n
    down_window_s: float | None = Field(None, ge=0)   # None: max(240, 2 * cold start)
    warmup_s: float | None = Field(None, ge=0)        # None: the down window
    burst_factor: float = Field(1.5, gt=1)            # load this far above forecast = burst
    max_step_ratio: float = Field(3.0, gt=1)          # scale-up bound per tick
    min_step: int = Field(4, ge=1)
    jump_on_burst: bool = False                       # a burst or backlog seen now: no step
                                                      # bound (off: 2-5 % dearer on the NAB
                                                      # spikes, no gain on the family's bursts)
    set_pod_knobs: bool = True                        # concurrency limit and max batch size
    shed_late: bool = True                            # admission wait capped at what can still
                                                      # meet the SLO (capacity.admission_wait_s)
    knob_min_change: float = Field(knobs.MIN_CHANGE, ge=0)   # pod knobs: knobs.settle
    capacity_ew_weight: float = Field(capacity.EW_WEIGHT, gt=0, le=1)   # capacity.observe
    max_utilisation: float = Field(capacity.MAX_UTILISATION, gt=0, le=1)
    # The forecaster (forecast.ForecastConfig).
    bucket_s: float = Field(_FC.bucket_s, gt=0)
    season_s: float = Field(_FC.season_s, gt=0)
    refit_s: float = Field(_FC.refit_s, gt=0)
    error_halflife_buckets: float = Field(_FC.error_halflife_buckets, gt=0)
    holt_min_buckets: int = Field(_FC.holt_min_buckets, ge=2)
    fit_tail_seasons: int = Field(_FC.fit_tail_seasons, ge=2)
    fit_tail_min_buckets: int = Field(_FC.fit_tail_min_buckets, ge=1)
    # The peak-ratio statistics (peaks.PeakConfig).
    ratio_lo: float = _PK.ratio_lo
    ratio_step: float = Field(_PK.ratio_step, gt=0)
    ratio_bins: int = Field(_PK.ratio_bins, ge=1)
    ratio_decay: float = Field(_PK.ratio_decay, gt=0, lt=1)
    ratio_min_samples: float = Field(_PK.ratio_min_samples, ge=0)
    prior_peak_ratio: float = Field(_PK.prior_peak_ratio, gt=0)
    band_edges: tuple[float, ...] = _PK.band_edges
    band_ref_q: float = Field(_PK.band_ref_q, gt=0, le=1)
    band_min_buckets: int = Field(_PK.band_min_buckets, ge=1)
    band_prior: float = Field(_PK.band_prior, ge=0)
    rise_ratio: float = Field(_PK.rise_ratio, gt=0)
    rate_weighted: bool = _PK.rate_weighted             # weigh burst history by its load
    # The run-level miss budget (budget.BudgetConfig).
    burn_min_requests: float = Field(_BG.burn_min_requests, ge=0)
    slo_window_s: float = Field(_BG.slo_window_s, gt=0)
    evidence_s: float = Field(_BG.evidence_s, gt=0)
    headroom_raise: float = Field(_BG.headroom_raise, ge=1)
    headroom_ease: float = Field(_BG.headroom_ease, gt=0, le=1)
    headroom_ease_over: float = Field(_BG.headroom_ease_over, gt=0, le=1)
    headroom_max: float = Field(_BG.headroom_max, ge=1)
    headroom_min: float = Field(_BG.headroom_min, gt=0, le=1)
    target_burn: float = Field(_BG.target_burn, gt=0)
    quantile_tail_div: float = Field(_BG.quantile_tail_div, ge=1)
    quantile_tail_mul: float = Field(_BG.quantile_tail_mul, ge=1)
    burn_power: float = Field(_BG.burn_power, ge=0)
    raise_burn: float = Field(_BG.raise_burn, ge=0)
    # The idle-then-burst memory (recurrence.RecurrenceConfig).
    quiet_ratio: float = Field(_RC.quiet_ratio, gt=0, lt=1)
    return_ratio: float = Field(_RC.return_ratio, gt=0, le=1)
    min_returns: int = Field(_RC.min_returns, ge=1)
    hold_quantile: float = Field(_RC.hold_quantile, gt=0, le=1)
    hold_factor: float = Field(_RC.hold_factor, ge=1)
    max_hold_s: float = Field(_RC.max_hold_s, ge=0)
    memory: int = Field(_RC.memory, ge=1)
    # An LLM fleet's capacity model (llm_capacity.LlmCapacityConfig).
    llm_decay: float = Field(_LC.llm_decay, gt=0, le=1)
    llm_min_windows: int = Field(_LC.llm_min_windows, ge=1)
    tpot_share: float = Field(_LC.tpot_share, gt=0, le=1)
    llm_max_utilisation: float = Field(_LC.llm_max_utilisation, gt=0, lt=1)
    seqs_fill: float = Field(_LC.seqs_fill, gt=0, le=1)
    kv_limit: float = Field(_LC.kv_limit, gt=0, le=1)
    ttft_share: float = Field(_LC.ttft_share, gt=0, le=1)
    ttft_windows: int = Field(_LC.ttft_windows, ge=2)
    llm_plan_upper: bool = False      # plan an LLM fleet on the upper forecast (off: on its
                                      # mean; the first-token tail is fitted per window at the
                                      # window's own rate, which holds its bursts already)
    llm_headroom: bool = False        # the miss budget's headroom scales an LLM fleet's load
                                      # too (off: the first-token tail is learned from the
                                      # misses themselves; the planning quantile still moves)
    ttft_min_requests: float = Field(_LC.ttft_min_requests, ge=0)

    @field_validator("band_edges")
    @classmethod
    def _edges_increase(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(e2 <= e1 for e1, e2 in zip(value, value[1:])) or any(e <= 0 for e in value):
            raise ValueError("must be positive and increasing, e.g. (0.3, 0.6)")
        return value

    def window_s(self) -> float:
        if self.down_window_s is not None:
            return self.down_window_s
        return max(240.0, 2.0 * self.bounds.cold_start_s)

    def forecast_config(self) -> forecast.ForecastConfig:
        return _bind(forecast.ForecastConfig, self, quantile=self.quantile,
                     peaks=_bind(peaks.PeakConfig, self))

    def budget_config(self) -> budget_.BudgetConfig:
        return _bind(budget_.BudgetConfig, self)

    def recurrence_config(self) -> recurrence.RecurrenceConfig:
        return _bind(recurrence.RecurrenceConfig, self)

    def llm_config(self) -> llm_capacity.LlmCapacityConfig:
        return _bind(llm_capacity.LlmCapacityConfig, self)


def _bind(cls: type, config: TrimtabConfig, **given: Any) -> Any:
    """A core module's config (a dataclass) from the fields of ``config`` of the same names."""
    names = [f.name for f in fields(cls) if f.name not in given]
    return cls(**{n: getattr(config, n) for n in names}, **given)


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
    recurrence: recurrence.RecurrenceState = recurrence.RecurrenceState()
    llm: llm_capacity.LlmCapacityState = llm_capacity.LlmCapacityState()


def initial_state(config: TrimtabConfig) -> TrimtabState:
    return TrimtabState()


def plan_load(snapshot: Snapshot, fc: tuple[float, float] | None, expected_wait: float,
              config: TrimtabConfig) -> tuple[float, str]:
    """The load to size for: upper forecast, plus a backlog to drain, or a burst. Before the
    forecaster has anything to say, the load seen now with the burst factor's margin if the
    fleet is already overrun (a backlog, or requests lost), as seen if not: a fleet started
    right for a steady load is not scaled up on its first tick. ``expected_wait`` is the queue
    the fleet holds while keeping up (batches forming); more is a backlog."""
    now_rps = float(snapshot.arrival_rate_rps or 0.0)
    reason = REASON_STEADY
    backlog = max(0.0, float(snapshot.queue_depth or 0.0) - 2.0 * expected_wait)
    if fc is None:
        overrun = backlog > 0 or (snapshot.shed_rps or 0.0) + (snapshot.timed_out_rps or 0.0) > 0
        planned = now_rps * (config.burst_factor if overrun else 1.0)
    else:
        planned = max(fc[1], now_rps)
        if now_rps > config.burst_factor * max(fc[1], 1e-9) and now_rps > 1.0:
            planned, reason = now_rps * config.burst_factor, REASON_BURST
    if backlog > 0:
        drain_s = config.bounds.cold_start_s + config.interval_s
        planned += backlog / drain_s
        if reason == REASON_STEADY:
            reason = REASON_BACKLOG
    return planned, reason


@dataclass(frozen=True)
class _BatchSizer:
    """Sizing and pod knobs from the batch-time fit (a request-level server)."""

    fit: capacity.BatchFit
    max_batch: int
    budget_s: float
    timeout_s: float

    def replicas(self, load_rps: float, config: TrimtabConfig) -> int:
        b = config.bounds
        return capacity.replicas_for(self.fit, load_rps, self.budget_s, self.max_batch,
                                     b.slo_target, b.max_replicas, self.timeout_s,
                                     config.max_utilisation)

    def concurrency_limit(self, config: TrimtabConfig) -> int:
        return capacity.concurrency_limit(self.fit, self.max_batch, config.bounds.slo_latency_s)

    def queue_timeout_s(self, limit: int, config: TrimtabConfig) -> float:
        b = config.bounds
        return capacity.admission_wait_s(self.fit, limit, self.max_batch, b.slo_latency_s,
                                         b.slo_target)

    def details(self) -> dict[str, float]:
        return {"a_s": self.fit.a_s, "c_s": self.fit.c_s}


@dataclass(frozen=True)
class _LlmSizer:
    """Sizing and the door's limit from the LLM engine's step-time fit (llm_capacity)."""

    model: llm_capacity.LlmFit
    cfg: llm_capacity.LlmCapacityConfig
    max_num_seqs: int | None

    @property
    def max_batch(self) -> int | None:
        return self.max_num_seqs

    def replicas(self, load_rps: float, config: TrimtabConfig) -> int:
        b = config.bounds
        assert b.slo_tpot_s is not None
        t = llm_capacity.targets(self.model, b.slo_tpot_s, b.slo_ttft_s, b.slo_target,
                                 self.max_num_seqs, self.cfg)
        return llm_capacity.replicas_for(self.model, load_rps, t, b.max_replicas, self.cfg)

    def concurrency_limit(self, config: TrimtabConfig) -> int | None:
        return llm_capacity.concurrency_limit(self.model, self.max_num_seqs)

    def queue_timeout_s(self, limit: int, config: TrimtabConfig) -> float | None:
        return None          # waiting at the door is what the limit is for: no shedding

    def details(self) -> dict[str, float]:
        m = self.model
        out = {"c0_s": m.c0_s, "c_decode_s": m.c_d_s, "c_prefill_s": m.c_p_s,
               "prompt_per_request": m.prompt_per_request,
               "output_per_request": m.output_per_request, "kv_limit": m.kv_limit}
        if m.kv_per_seq is not None:
            out["kv_per_seq"] = m.kv_per_seq
        if m.ttft_slope is not None:
            out.update(ttft_floor=m.ttft_floor or 0.0, ttft_slope=m.ttft_slope)
        out["tpot_over"] = m.tpot_over
        return out


def _llm_mode(snapshot: Snapshot, config: TrimtabConfig) -> bool:
    """Plan on the LLM model: an LLM engine's series are read and a TPOT bound is given."""
    return config.bounds.slo_tpot_s is not None and llm_capacity.is_llm(snapshot)


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
    bcfg = config.budget_config()
    lcfg = config.llm_config()
    llm = _llm_mode(snapshot, config)
    fstate = forecast.observe(state.forecast, fcfg, now_s, float(snapshot.arrival_rate_rps),
                              horizon_s)
    cstate = capacity.observe(state.capacity, snapshot.batch_samples,
                              ew_weight=config.capacity_ew_weight)
    lstate = (llm_capacity.observe(state.llm, snapshot, lcfg, b.slo_ttft_s, b.slo_tpot_s)
              if llm else state.llm)
    bstate = budget_.update(state.budget, snapshot, b.slo_latency_s, b.slo_target, bcfg,
                            counts=_window_counts(snapshot, config, llm) if llm else None)
    margin = bstate.headroom
    state = replace(state, forecast=fstate, capacity=cstate, started_s=started_s, margin=margin,
                    budget=bstate, llm=lstate)
    budget_s = b.slo_latency_s * config.budget_fraction
    configured = b.max_batch_size or snapshot.max_batch_size or 1
    sizer: _BatchSizer | _LlmSizer
    if llm:
        model = llm_capacity.fit(lstate, lcfg, b.slo_ttft_s)
        if model is None:
            return (Decision(replicas=current, reason=REASON_NO_MODEL, valid=False),
                    replace(state, last_replicas=current))
        sizer = _LlmSizer(model=model, cfg=lcfg, max_num_seqs=b.max_batch_size)
        expected_wait = 0.0
    else:
        fit = capacity.fit(cstate)
        if fit is None:
            return (Decision(replicas=current, reason=REASON_NO_MODEL, valid=False),
                        replace(state, last_replicas=current))
        old_batch = state.max_batch if state.max_batch is not None else snapshot.max_batch_size
        max_batch = knobs.max_batch(fit, old_batch,
                                    capacity.best_max_batch(fit, budget_s, configured),
                                    budget_s, configured, config.knob_min_change)
        timeout_s = (snapshot.batch_timeout_ms or b.batch_timeout_ms or 0.0) / 1000.0
        sizer = _BatchSizer(fit=fit, max_batch=max_batch, budget_s=budget_s,
                            timeout_s=timeout_s)
        ready = snapshot.ready_replicas or 0
        now = float(snapshot.arrival_rate_rps or 0.0)
        settled = capacity.settled_batch(fit, now / ready) if ready else 0.0
        expected_wait = ready * (settled if math.isfinite(settled) else 0.0)
    burn = bstate.burn(b.slo_target, bcfg)
    q_plan = budget_.planning_quantile(config.quantile, burn, budget_.confidence(bstate, bcfg),
                                       bcfg)
    now_rps = float(snapshot.arrival_rate_rps)
    noise_rps = 2.0 * math.sqrt(max(now_rps, 1.0) / max(snapshot.window_s, 1e-9))  # Poisson, 2 sd
    fc = forecast.forecast(fstate, replace(fcfg, quantile=q_plan), horizon_s, now_rps, noise_rps)
    if llm and fc is not None and not config.llm_plan_upper:
        fc = (fc[0], fc[0])
    load, load_reason = plan_load(snapshot, fc, expected_wait, config)
    if not llm or config.llm_headroom:
        load *= margin
    need = sizer.replicas(load, config)
    need_down = sizer.replicas(load * (1 + config.down_band), config)
    replicas, reason = _guards(current, need, need_down, load_reason, state, config, now_s)
    need_now = sizer.replicas(now_rps, config)
    rcfg = config.recurrence_config()
    rstate = recurrence.observe(state.recurrence, need_now, replicas,
                                _missed(snapshot, config, llm), now_s, rcfg)
    keep = recurrence.floor(rstate, rcfg, config.interval_s, now_s)
    if keep > replicas:
        replicas, why = clamp(keep, b.min_replicas, b.max_replicas)
        reason = why or REASON_QUIET_HOLD
    recs = prune(state.recommendations, now_s, config.window_s()) + ((now_s, need_down),)
    pod: dict[str, Any] = {}
    if config.set_pod_knobs:
        old_limit = (state.concurrency_limit if state.concurrency_limit is not None
                     else snapshot.concurrency_limit)
        wanted = sizer.concurrency_limit(config)
        limit = knobs.settle(old_limit, wanted, config.knob_min_change) if wanted else None
        pod = {"max_batch_size": sizer.max_batch, "concurrency_limit": limit}
        if config.shed_late and limit is not None:
            wait_s = sizer.queue_timeout_s(limit, config)
            if wait_s is not None:
                pod["queue_timeout_s"] = round(wait_s, 3)
    details = {"need": float(need), "need_down": float(need_down), "margin": margin,
               "need_now": float(need_now), "quiet_floor": float(keep),
               "burn": burn, "quantile": q_plan, **sizer.details()}
    if fc is not None:
        details.update(forecast_mean_rps=fc[0], forecast_upper_rps=fc[1])
    decision = Decision(replicas=replicas, reason=reason, forecast_rps=load, details=details,
                        **pod)
    return decision, replace(state, recommendations=recs, last_replicas=replicas,
                             recurrence=rstate,
                             max_batch=sizer.max_batch if config.set_pod_knobs
                             else state.max_batch,
                             concurrency_limit=pod.get("concurrency_limit"))


def _window_counts(snapshot: Snapshot, config: TrimtabConfig, llm: bool
                   ) -> tuple[float, float] | None:
    """(requests, misses) of the window: on the TTFT and TPOT bounds for an LLM fleet, on the
    end-to-end latency otherwise."""
    b = config.bounds
    if llm:
        return llm_capacity.window_counts(snapshot, b.slo_ttft_s, b.slo_tpot_s)
    return budget_.window_counts(snapshot, b.slo_latency_s) if b.slo_latency_s else None


def _missed(snapshot: Snapshot, config: TrimtabConfig, llm: bool = False) -> bool:
    """Whether this window missed the SLO (over its share of slow, shed and timed out)."""
    counts = _window_counts(snapshot, config, llm)
    return (counts is not None and counts[0] >= 20
            and counts[1] > (1 - config.bounds.slo_target) * counts[0])


def _guards(current: int, need: int, need_down: int, load_reason: str, state: TrimtabState,
            config: TrimtabConfig, now_s: float) -> tuple[int, str]:
    """Bounds, bounded scale-up (``jump_on_burst``: unbounded for a burst or backlog measured
    now), hysteresis band, stabilisation window, warm-up."""
    b = config.bounds
    if need > current:
        jump = config.jump_on_burst and load_reason in (REASON_BURST, REASON_BACKLOG)
        n, why = (need, None) if jump else \
            bounded_step_up(current, need, config.max_step_ratio, config.min_step)
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
