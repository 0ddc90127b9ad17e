"""NVIDIA Dynamo's SLA planner, throughput-based, for an aggregated deployment.

Follows ai-dynamo/dynamo components/src/dynamo/planner: core/throughput_scaling.py
(``_throughput_agg``), core/perf_model/agg.py (``find_best_engine_agg_rps``,
``estimate_next_ttft``), core/load/predictors.py (the load predictors) and config/defaults.py
(SLAPlannerDefaults). Every ``throughput_adjustment_interval`` (180 s) it observes the
requests of the interval and their mean input and output lengths (ISL, OSL), predicts each
for the next interval, and sets ``replicas = max(ceil(demand_rps / engine_rps),
min_endpoint)``, where ``engine_rps`` is what one engine serves within the TTFT and ITL
targets: over decode batch sizes ``bs`` from 1 up to the smallest of the KV cap
(``max_kv_tokens / (isl + osl / 2)``), ``max_num_seqs`` and the prefill/decode balance
(``isl / (max_num_batched_tokens - bs) <= osl``), one iteration takes ``wt(prefill =
min(bs x isl / osl, max_num_batched_tokens), decode_kv = bs x (isl + osl / 2))``; ITL is
``wt``, TTFT the chunked prefill of ``prefill + isl`` tokens at that decode load; the
largest ``bs`` within both targets gives ``bs / (osl x wt)`` requests per second (Little's
law; at ``bs = 1`` over target, still ``1 / (osl x wt)``). It plans on means: a heavy tail of
lengths or a burst inside the interval is not seen, as Dynamo documents.

The profile ``wt`` is what Dynamo's profiler (or its forward-pass regression) measures of
the engine; here it is the scenario's own step model (sim/llm/types.StepModel), given as the
``profile_*`` parameters: ``c0 + c_prefill x P + c_decode x bs + c_kv x (decode_kv + P) +
c_attn x P x isl / 2`` ms (a prefill chunk's attention over half its prompt on average).
The load predictors: ``constant`` (the last value) as Dynamo's; ``arima`` (the default) is
an auto-ARIMA like pmdarima's: the differencing order from KPSS tests (up to 2), then the
(p, q) up to 2 of least AIC,
chosen on the first fit and kept (pmdarima fits once, then updates the model with each new
point; here the kept order is refitted on the whole history), falling back to log1p when it
selects (0, d, 0); fewer than 5 points: the last value; a constant history: that value;
leading zeros (the idle start) skipped.

Not modelled: the Kalman and Prophet predictors, load-based (forward-pass) scaling (off by
default), the KV-hit-rate discount (no prefix cache in the bundled scenarios), the GPU budget
(``max_gpu_budget`` 8 GPUs; the scenario's maximum replicas apply instead), disaggregated
modes and correction factors, advisory mode. ``trimtab replay`` builds it from the scenario
(``trimtab.sim.llm.dynamo_profile``): the step model, the scheduler's limits, the SLO's
``ttft_s`` and ``tpot_s`` as the targets.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Literal, Sequence

import numpy as np
from pydantic import Field

from trimtab.controllers.core.binding import PolicyConfig
from trimtab.controllers.core.guards import hold_on_unreadable
from trimtab.controllers.core.types import (
    FIELD_ARRIVAL_RATE, FIELD_LLM, REASON_SCALE_DOWN, REASON_SCALE_UP, REASON_STEADY, Decision,
    Snapshot,
)

INTERVAL_S = 180.0          # BasePlannerDefaults.throughput_adjustment_interval
MIN_POINTS = 5              # ARIMAPredictor minimum_data_points
REASON_NO_LOAD = "dynamo_no_load"   # nothing observed yet: no adjustment


class DynamoConfig(PolicyConfig):
    ttft_ms: float = Field(500.0, gt=0)            # SLAPlannerDefaults.ttft
    itl_ms: float = Field(50.0, gt=0)              # SLAPlannerDefaults.itl
    load_predictor: Literal["constant", "arima"] = "arima"
    min_endpoint: int = Field(1, ge=0)
    interval_s: float = Field(INTERVAL_S, gt=0)
    # The profile: the engine's iteration time (module docstring) and its limits.
    profile_c0_ms: float = Field(..., ge=0)
    profile_c_prefill_ms: float = Field(0.0, ge=0)
    profile_c_decode_ms: float = Field(0.0, ge=0)
    profile_c_kv_ms: float = Field(0.0, ge=0)
    profile_c_attn_ms: float = Field(0.0, ge=0)
    max_num_batched_tokens: int = Field(..., gt=1)
    max_num_seqs: int = Field(..., gt=0)
    max_kv_tokens: int = Field(..., gt=0)


@dataclass(frozen=True)
class Series:
    """One predictor's data: the values kept after the idle start, and the ARIMA order once
    chosen (pmdarima selects it on the first fit and then only updates the model)."""

    values: tuple[float, ...] = ()
    seen_nonzero: bool = False
    order: tuple[int, int, int] | None = None
    log1p: bool = False

    def add(self, value: float) -> "Series":
        """BasePredictor.add_data_point: non-finite is 0; zeros before the first non-zero
        value are skipped."""
        value = value if math.isfinite(value) else 0.0
        if value == 0 and not self.seen_nonzero:
            return self
        return replace(self, values=self.values + (value,),
                       seen_nonzero=self.seen_nonzero or value != 0)


@dataclass(frozen=True)
class DynamoState:
    num_req: Series = Series()
    isl: Series = Series()
    osl: Series = Series()


def initial_state(config: DynamoConfig) -> DynamoState:
    return DynamoState()


def wall_ms(prefill_tokens: float, decode_kv: float, batch: float, isl: float,
            config: DynamoConfig) -> float:
    """The profile's iteration time at this load (at least 1e-6 s, as _predict_2d)."""
    t = (config.profile_c0_ms + config.profile_c_prefill_ms * prefill_tokens
         + config.profile_c_decode_ms * batch + config.profile_c_kv_ms * (decode_kv + prefill_tokens)
         + config.profile_c_attn_ms * prefill_tokens * isl / 2.0)
    return max(1e-3, t)


def next_ttft_ms(queued_prefill: float, decode_kv: float, batch: float, isl: float,
                 config: DynamoConfig) -> float:
    """agg.py estimate_next_ttft: ``queued + isl`` tokens in chunks of the step budget, each
    chunk's iteration beside the decode load."""
    remaining = queued_prefill + isl
    mbt = config.max_num_batched_tokens
    total = 0.0
    for _ in range(math.ceil(remaining / mbt)):
        chunk = min(remaining, mbt)
        total += wall_ms(chunk, decode_kv, batch, isl, config)
        remaining -= chunk
    return total


def engine_rps(isl: float, osl: float, config: DynamoConfig) -> tuple[float, float, float]:
    """agg.py find_best_engine_agg_rps: (requests/s, TTFT ms, ITL ms) of one engine.

    Example: c0 = 10 ms, c_decode = 1 ms, isl 100, osl 100, budget 4,096, ITL target 20 ms:
    bs = 10 takes 20 ms (the last within target), so 10 / (100 x 0.020) = 5 rps.
    """
    if isl <= 0 or osl <= 0:
        return 0.0, 0.0, 0.0
    mbt = config.max_num_batched_tokens
    avg_ctx = isl + osl / 2.0
    kv_cap = max(1, int(config.max_kv_tokens / max(1.0, avg_ctx)))
    hard_cap = min(kv_cap, config.max_num_seqs, mbt - 1)
    lo, hi = 1, max(1, hard_cap)
    while lo < hi:                  # the largest bs with isl / (mbt - bs) <= osl
        mid = (lo + hi + 1) // 2
        if isl / (mbt - mid) <= osl:
            lo = mid
        else:
            hi = mid - 1
    best = (0.0, 0.0, 0.0)
    for bs in range(1, lo + 1):
        decode_kv = bs * avg_ctx
        prefill = min(bs * isl / max(1.0, osl), mbt)
        wt_ms = wall_ms(prefill, decode_kv, bs, isl, config)
        ttft_ms = next_ttft_ms(float(int(prefill)), float(int(decode_kv)), bs, isl, config)
        if wt_ms > config.itl_ms or ttft_ms > config.ttft_ms:
            if bs == 1:
                best = (1000.0 / (osl * wt_ms), ttft_ms, wt_ms)
            break
        best = (bs * 1000.0 / (osl * wt_ms), ttft_ms, wt_ms)
    return best


def _ndiffs(y: Sequence[float], max_d: int = 2) -> int:
    """pmdarima ndiffs(test='kpss', alpha=0.05): difference until KPSS stops rejecting."""
    from statsmodels.tsa.stattools import kpss

    x = np.asarray(y, dtype=float)
    for d in range(max_d + 1):
        if len(x) < 3 or np.ptp(x) == 0:
            return d
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = kpss(x, regression="c", nlags="auto")[1]
        if p >= 0.05:
            return d
        x = np.diff(x)
    return max_d


def _fit(y: Sequence[float], order: tuple[int, int, int]) -> tuple[float, float] | None:
    """(AIC, one-step forecast) of ARIMA ``order`` on ``y``; None when it cannot be fitted."""
    from statsmodels.tsa.arima.model import ARIMA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = ARIMA(list(y), order=order, trend="c" if order[1] == 0 else "n").fit()
        except (ValueError, IndexError, ArithmeticError, np.linalg.LinAlgError):
            return None
    aic, forecast = float(fit.aic), float(fit.forecast(1)[0])
    return (aic, forecast) if math.isfinite(aic) and math.isfinite(forecast) else None


def auto_order(y: Sequence[float]) -> tuple[int, int, int]:
    """The (p, d, q), p and q up to 2, of least AIC, d from KPSS tests."""
    d = _ndiffs(y)
    best: tuple[float, tuple[int, int, int]] | None = None
    for p in range(3):
        for q in range(3):
            got = _fit(y, (p, d, q))
            if got is not None and (best is None or got[0] < best[0]):
                best = (got[0], (p, d, q))
    return best[1] if best is not None else (0, d, 0)


def predict_next(series: Series, predictor: str) -> tuple[float, Series]:
    """The predictor's next value (0 with no data yet, as get_last_value) and the series
    with the ARIMA order it chose on its first fit."""
    y = series.values
    if not y:
        return 0.0, series
    if predictor == "constant" or len(y) < MIN_POINTS:
        return float(y[-1]), series
    if len(set(y)) == 1:
        return float(y[0]), series
    if series.order is None:
        order, log1p = auto_order(y), False
        if order[0] == 0 and order[2] == 0:
            # (0, d, 0) on the raw series: log1p instead (spiky series), as ARIMAPredictor.
            order, log1p = auto_order([math.log1p(max(0.0, v)) for v in y]), True
        series = replace(series, order=order, log1p=log1p)
    assert series.order is not None
    data = [math.log1p(max(0.0, v)) for v in y] if series.log1p else list(y)
    got = _fit(data, series.order)
    if got is None:
        return float(y[-1]), series
    forecast = math.expm1(got[1]) if series.log1p else got[1]
    return max(0.0, forecast), series


def observe(snapshot: Snapshot, state: DynamoState, config: DynamoConfig) -> DynamoState:
    """The interval's request count (arrivals) and mean ISL and OSL: token rates per
    completed request, as the frontend's per-request histograms average them over the
    requests served (the arrival rate would understate both while the fleet is saturated)."""
    rate = float(snapshot.arrival_rate_rps or 0.0)
    state = replace(state, num_req=state.num_req.add(rate * config.interval_s))
    done = snapshot.completion_rate_rps
    if done and done > 0 and snapshot.prompt_tokens_rps is not None \
            and snapshot.generation_tokens_rps is not None:
        state = replace(state, isl=state.isl.add(snapshot.prompt_tokens_rps / done),
                        osl=state.osl.add(snapshot.generation_tokens_rps / done))
    return state


def decide(snapshot: Snapshot, config: DynamoConfig, state: DynamoState, now_s: float
           ) -> tuple[Decision, DynamoState]:
    hold = hold_on_unreadable(snapshot, [FIELD_ARRIVAL_RATE, FIELD_LLM])
    if hold is not None:
        return hold, state
    state = observe(snapshot, state, config)
    current = snapshot.current_replicas
    nr, num_req = predict_next(state.num_req, config.load_predictor)
    isl, isl_s = predict_next(state.isl, config.load_predictor)
    osl, osl_s = predict_next(state.osl, config.load_predictor)
    state = DynamoState(num_req, isl_s, osl_s)
    demand_rps = nr / config.interval_s
    rps, ttft_ms, itl_ms = engine_rps(isl, osl, config)
    if rps <= 0:
        # No ISL or OSL yet: "perf model not ready, skipping throughput scaling".
        return Decision(replicas=current, reason=REASON_NO_LOAD, valid=False), state
    want = max(math.ceil(demand_rps / rps - 1e-9), config.min_endpoint)
    b = config.bounds
    replicas = min(max(want, b.min_replicas), b.max_replicas)
    reason = (REASON_SCALE_UP if replicas > current
              else REASON_SCALE_DOWN if replicas < current else REASON_STEADY)
    details = {"predicted_rps": demand_rps, "predicted_isl": isl, "predicted_osl": osl,
               "engine_rps": rps, "engine_ttft_ms": ttft_ms, "engine_itl_ms": itl_ms}
    return Decision(replicas=replicas, reason=reason, forecast_rps=demand_rps,
                    details=details), state
