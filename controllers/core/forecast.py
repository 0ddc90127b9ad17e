"""Load forecasting: statsmodels exponential smoothing, refitted on a schedule, with online error.

Observations (arrival rate over each control window) are averaged into buckets of ``bucket_s``.
Before two seasons of history the model is Holt's damped trend (a level model on very short
history); after, additive Holt-Winters with the season. statsmodels fits the smoothing
parameters every ``refit_s``; between refits the fitted states are updated with the standard
recursions, one bucket at a time (cheap and pure). Forecasts made ``h`` buckets ahead are kept
and scored when their bucket completes, so the planning quantile widens when the forecast has
been wrong: ``upper = mean + z_q * sigma_h``; once enough horizons have been scored, the
planning base times the peak ratios actually seen (trimtab.controllers.core.peaks).

The state is two parts, each its own type: the smoothing model (``SmoothingState``: buckets,
fitted model, scored errors) and the peak-ratio statistics (``peaks.PeakStats``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import norm

from trimtab.controllers.core import peaks
from trimtab.controllers.core.defaults import REFIT_S


@dataclass(frozen=True)
class ForecastConfig:
    """The forecaster's settings; the trimtab policy's config sets each by the same name."""

    bucket_s: float = 60.0
    season_s: float = 86400.0
    refit_s: float = REFIT_S
    quantile: float = 0.95
    error_halflife_buckets: float = 30.0
    holt_min_buckets: int = 10
    # A fit estimates the smoothing parameters on the most recent seasons (at least this many
    # buckets): enough for the season's shape, and a refit on two weeks of 1-minute data stays
    # well under a second.
    fit_tail_seasons: int = 4
    fit_tail_min_buckets: int = 1000
    peaks: peaks.PeakConfig = peaks.PeakConfig()


@dataclass(frozen=True)
class Model:
    """Fitted exponential-smoothing state: parameters, level, trend and the season's states."""

    kind: str                      # 'level', 'holt' or 'holt_winters'
    alpha: float
    beta: float
    gamma: float
    phi: float
    level: float
    trend: float
    season: tuple[float, ...] = ()  # season[i] applies to the bucket i steps after the last
    resid_sigma: float = 0.0


@dataclass(frozen=True)
class SmoothingState:
    """The smoothing model's side: buckets, the fitted model and its scored errors."""

    history: tuple[float, ...] = ()          # completed bucket means, oldest first
    bucket_index: int | None = None          # index of the bucket being filled
    bucket_sum: float = 0.0
    bucket_weight_s: float = 0.0
    model: Model | None = None
    last_fit_bucket: int | None = None
    pending: tuple[tuple[int, float], ...] = ()  # (bucket index, predicted mean) to score
    err_var: float | None = None             # EW mean of squared h-step errors
    err_horizon: int = 0
    tick_rel_var: float = 0.0                # EW variance of one window around its bucket mean


@dataclass(frozen=True)
class ForecastState:
    """The smoothing model and the peak-ratio statistics, each its own state."""

    smoothing: SmoothingState = SmoothingState()
    peaks: peaks.PeakStats = peaks.PeakStats()


def season_buckets(cfg: ForecastConfig) -> int:
    return max(2, int(round(cfg.season_s / cfg.bucket_s)))


def fit(history: np.ndarray, season: int, holt_min: int = 10, tail_seasons: int = 4,
        tail_min_buckets: int = 1000) -> Model:
    """Fit with statsmodels: Holt-Winters once two seasons are there, Holt or a level before."""
    y = np.asarray(history, dtype=float)
    if len(y) < holt_min:
        level = float(y[-min(len(y), 3):].mean()) if len(y) else 0.0
        sigma = float(y.std()) if len(y) > 1 else 0.0
        return Model("level", 1.0, 0.0, 0.0, 1.0, level, 0.0, (), sigma)
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(y) >= 2 * season:
            y = y[-max(tail_seasons * season, tail_min_buckets):]
            res = ExponentialSmoothing(y, trend="add", damped_trend=True, seasonal="add",
                                       seasonal_periods=season,
                                       initialization_method="heuristic").fit(use_brute=False)
            season_states = np.asarray(res.season)[-season:]
            kind, gamma = "holt_winters", float(res.params["smoothing_seasonal"])
        else:
            y = y[-500:]
            res = ExponentialSmoothing(y, trend="add", damped_trend=True,
                                       initialization_method="estimated").fit(use_brute=False)
            season_states, kind, gamma = np.zeros(0), "holt", 0.0
    p = res.params
    resid = y - np.asarray(res.fittedvalues)
    return Model(kind, float(p["smoothing_level"]), float(p["smoothing_trend"]), gamma,
                 float(p["damping_trend"]), float(res.level[-1]), float(res.trend[-1]),
                 tuple(float(s) for s in season_states), float(np.std(resid)))


def update(model: Model, y: float) -> Model:
    """One bucket of the additive damped Holt(-Winters) recursion."""
    if model.kind == "level":
        return replace(model, level=0.5 * model.level + 0.5 * y)
    s_old = model.season[0] if model.season else 0.0
    level = model.alpha * (y - s_old) + (1 - model.alpha) * (model.level + model.phi * model.trend)
    trend = model.beta * (level - model.level) + (1 - model.beta) * model.phi * model.trend
    season = model.season
    if season:
        s_new = model.gamma * (y - level) + (1 - model.gamma) * s_old
        season = season[1:] + (s_new,)
    return replace(model, level=level, trend=trend, season=season)


def predict(model: Model, h: int) -> float:
    """Mean forecast ``h`` >= 1 buckets ahead (never negative)."""
    if model.kind == "level":
        return max(0.0, model.level)
    damp = sum(model.phi ** i for i in range(1, h + 1))
    s = model.season[(h - 1) % len(model.season)] if model.season else 0.0
    return max(0.0, model.level + damp * model.trend + s)


def observe(state: ForecastState, cfg: ForecastConfig, now_s: float, value: float,
            horizon_s: float) -> ForecastState:
    """Add one window's mean rate; closes buckets, scores forecasts, refits when due, then
    scores past plans against the peaks that followed and keeps this window's plan."""
    smoothing = _observe_buckets(state.smoothing, cfg, now_s, value, horizon_s)
    stats = state.peaks
    before = state.smoothing.bucket_index
    if before is not None and smoothing.bucket_index != before:     # a bucket closed
        stats = replace(stats, level_ref=peaks.level_ref(smoothing.history, cfg.peaks))
    base = None
    if smoothing.model is not None:
        h = horizon_buckets(cfg, horizon_s)
        base = max(max(predict(smoothing.model, i) for i in range(1, h + 1)), value)
    stats = peaks.observe(stats, cfg.peaks, now_s, value, horizon_s, base)
    return ForecastState(smoothing, stats)


def _observe_buckets(state: SmoothingState, cfg: ForecastConfig, now_s: float, value: float,
                     horizon_s: float) -> SmoothingState:
    index = int(now_s // cfg.bucket_s)
    if state.model is not None:
        level = predict(state.model, 1)
        if level > 0:
            a = 1 - 0.5 ** (1 / (4 * cfg.error_halflife_buckets))
            rel2 = min((value / level - 1.0) ** 2, 4.0)
            state = replace(state, tick_rel_var=(1 - a) * state.tick_rel_var + a * rel2)
    if state.bucket_index is None:
        return replace(state, bucket_index=index, bucket_sum=value, bucket_weight_s=1.0)
    if index == state.bucket_index:
        return replace(state, bucket_sum=state.bucket_sum + value,
                       bucket_weight_s=state.bucket_weight_s + 1.0)
    y = state.bucket_sum / max(state.bucket_weight_s, 1e-9)
    state = _close_bucket(state, cfg, state.bucket_index, y, horizon_s)
    return replace(state, bucket_index=index, bucket_sum=value, bucket_weight_s=1.0)


def _close_bucket(state: SmoothingState, cfg: ForecastConfig, index: int, y: float,
                  horizon_s: float) -> SmoothingState:
    season = season_buckets(cfg)
    keep = max(3 * season, 600)
    history = (state.history + (y,))[-keep:]
    err_var = state.err_var
    pending = []
    a = 1 - 0.5 ** (1 / cfg.error_halflife_buckets)
    for target, predicted in state.pending:
        if target == index:
            e2 = (y - predicted) ** 2
            err_var = e2 if err_var is None else (1 - a) * err_var + a * e2
        elif target > index:
            pending.append((target, predicted))
    model, last_fit = state.model, state.last_fit_bucket
    refit_every = max(1, int(cfg.refit_s // cfg.bucket_s))
    due = (model is None or last_fit is None or index - last_fit >= refit_every
           or (model.kind == "level" and len(history) >= cfg.holt_min_buckets)
           or (model.kind == "holt" and len(history) >= 2 * season))
    if due:
        model, last_fit = fit(np.asarray(history), season, cfg.holt_min_buckets,
                              cfg.fit_tail_seasons, cfg.fit_tail_min_buckets), index
    else:
        model = update(model, y)
    h = horizon_buckets(cfg, horizon_s)
    pending.append((index + h, predict(model, h)))
    return replace(state, history=history, model=model, last_fit_bucket=last_fit,
                   pending=tuple(pending[-4 * h - 4:]), err_var=err_var, err_horizon=h)


def horizon_buckets(cfg: ForecastConfig, horizon_s: float) -> int:
    """Buckets ahead that cover ``horizon_s`` counted from the end of the current bucket."""
    return max(1, math.ceil(horizon_s / cfg.bucket_s))


def forecast(state: ForecastState, cfg: ForecastConfig, horizon_s: float,
             now_rps: float | None = None, now_noise_rps: float = 0.0
             ) -> tuple[float, float] | None:
    """(mean, upper quantile) of the rate over the next ``horizon_s``; None with no model.

    The mean is the largest bucket forecast up to the horizon (a scale-up must be ready by
    then); sigma combines the tracked error of bucket forecasts at that horizon (or the fit's
    residual widened by sqrt(h) until errors have been scored) with how far single windows
    stray from their bucket's mean (bursts shorter than a bucket). Once enough horizons have
    been scored, the upper bound is instead the planning base (max of the mean and the load
    now) times the q-quantile of the peak-to-base ratios actually seen; the load now counts
    only when it is above the mean by more than its own sampling noise ``now_noise_rps``, so
    a constant load's Poisson wobble does not move the plan from one window to the next.
    """
    sm = state.smoothing
    model = sm.model
    if model is None:
        return None
    h = horizon_buckets(cfg, horizon_s)
    mean = max(predict(model, i) for i in range(1, h + 1))
    prior_var = (model.resid_sigma ** 2) * h
    var = prior_var if sm.err_var is None else max(sm.err_var, 0.25 * prior_var)
    var += sm.tick_rel_var * mean * mean
    now = now_rps or 0.0
    base = now if now > mean + now_noise_rps else mean
    ratio = peaks.peak_ratio(state.peaks, cfg.peaks, cfg.quantile, base)
    if ratio is not None:       # enough history: the empirical peak ratio, not a normal
        return mean, base * max(ratio, 1.0)
    z = float(norm.ppf(cfg.quantile))
    # Too little history to know how bursty the load is: assume peaks 30 % over the base.
    return mean, max(mean + z * math.sqrt(var),
                     cfg.peaks.prior_peak_ratio * max(mean, now_rps or 0.0))
