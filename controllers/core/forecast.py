"""Load forecasting: statsmodels exponential smoothing, refitted on a schedule, with online error.

Observations (arrival rate over each control window) are averaged into buckets of ``bucket_s``.
Before two seasons of history the model is Holt's damped trend (a level model on very short
history); after, additive Holt-Winters with the season. statsmodels fits the smoothing
parameters every ``refit_s``; between refits the fitted states are updated with the standard
recursions, one bucket at a time (cheap and pure). Forecasts made ``h`` buckets ahead are kept
and scored when their bucket completes, so the planning quantile widens when the forecast has
been wrong: ``upper = mean + z_q * sigma_h``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy.stats import norm

# A fit estimates the smoothing parameters on the most recent four seasons (at least 1000
# buckets): enough for the season's shape, and a refit on two weeks of 1-minute data stays
# well under a second.
_FIT_TAIL_SEASONS = 4
_FIT_TAIL_MIN = 1000


@dataclass(frozen=True)
class ForecastConfig:
    bucket_s: float = 60.0
    season_s: float = 86400.0
    refit_s: float = 3600.0
    quantile: float = 0.95
    error_halflife_buckets: float = 30.0
    holt_min_buckets: int = 10
    rate_weighted: bool = False      # weigh scored horizons by their load


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
class ForecastState:
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
    # Horizon check: (time, planning base) made each window, and the windows seen since, so
    # the peak load within the horizon can be compared with what was planned on.
    bases: tuple[tuple[float, float, int, int], ...] = ()  # (time, base, level band, rising)
    recent: tuple[tuple[float, float], ...] = ()
    ratio_hist: tuple[float, ...] = ()       # decayed weights of log(peak / base) per bin
    ratio_count: float = 0.0                 # decayed number of scored horizons
    mean_rate: float = 0.0                   # slow mean of the load, to normalise weights
    # The same histogram per level band (the base against the top of the load seen): how
    # far load rises within the horizon depends on where it is in its range (a morning ramp
    # from the night's trough, or small swings around the day's peak).
    band_hist: tuple[tuple[float, ...], ...] = ()
    band_count: tuple[float, ...] = ()
    level_ref: float = 0.0     # top of the load seen (``_BAND_REF_Q`` of bucket means), set as
                               # each bucket closes; 0 until ``_BAND_MIN_BUCKETS`` are in
    # The same histogram split by momentum (the base rose by more than ``_RISE`` over the
    # last horizon, or not): a ramp's lagging base is not a plateau's, and this split needs no
    # history of the load's range, so it serves before the level bands can.
    trend_hist: tuple[tuple[float, ...], ...] = ()
    trend_count: tuple[float, ...] = ()


# log(peak within horizon / planning base), binned: [-0.5, 1.5) in steps of 0.05.
_LR_LO, _LR_STEP, _LR_BINS = -0.5, 0.05, 40
_LR_DECAY = 0.99           # per scored horizon: half-life about 70 (17 min at 15 s ticks)
_LR_MIN_SAMPLES = 40.0
_PRIOR_PEAK_RATIO = 1.3
# Level bands: base / (the 98th percentile of bucket means seen), split at these edges.
_BAND_EDGES = (0.3, 0.6)
_BAND_REF_Q = 0.98
_BAND_MIN_BUCKETS = 30     # history needed before the level is meaningful
_BAND_PRIOR = 30.0         # horizons at which a band's own quantile and the pooled weigh alike
_RISE = 1.15               # base over the base one horizon before: a ramp


def level_band(state: "ForecastState", base: float) -> int:
    """Which level band ``base`` is in (-1: too little history to say)."""
    if state.level_ref <= 0:
        return -1
    level = base / state.level_ref
    return sum(level >= e for e in _BAND_EDGES)


def rising(state: "ForecastState", base: float) -> int:
    """1 when ``base`` is over ``_RISE`` times the base planned on one horizon ago, else 0."""
    return int(bool(state.bases) and base > _RISE * state.bases[0][1])


def _level_ref(history: tuple[float, ...]) -> float:
    """The top of the load seen, once there is enough of it (0 before)."""
    if len(history) < _BAND_MIN_BUCKETS:
        return 0.0
    return float(np.quantile(np.asarray(history), _BAND_REF_Q))


def season_buckets(cfg: ForecastConfig) -> int:
    return max(2, int(round(cfg.season_s / cfg.bucket_s)))


def fit(history: np.ndarray, season: int, holt_min: int = 10) -> Model:
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
            y = y[-max(_FIT_TAIL_SEASONS * season, _FIT_TAIL_MIN):]
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
    """Add one window's mean rate; closes buckets, scores forecasts, refits when due."""
    state = _observe_buckets(state, cfg, now_s, value, horizon_s)
    return _check_horizon(state, cfg, now_s, value, horizon_s)


def _check_horizon(state: ForecastState, cfg: ForecastConfig, now_s: float, value: float,
                   horizon_s: float) -> ForecastState:
    """Score past planning bases against the peak that followed within the horizon."""
    recent = tuple(r for r in state.recent if r[0] > now_s - horizon_s - 1e-9) + ((now_s, value),)
    pooled = [list(state.ratio_hist) or [0.0] * _LR_BINS]
    pooled_count = [state.ratio_count]
    bands = [list(h) for h in state.band_hist] or [[0.0] * _LR_BINS
                                                   for _ in range(len(_BAND_EDGES) + 1)]
    band_count = list(state.band_count) or [0.0] * (len(_BAND_EDGES) + 1)
    trends = [list(h) for h in state.trend_hist] or [[0.0] * _LR_BINS for _ in range(2)]
    trend_count = list(state.trend_count) or [0.0, 0.0]
    kept = []
    for t0_s, base, band, up in state.bases:
        if t0_s + horizon_s <= now_s + 1e-9:
            peak = max((v for t, v in recent if t0_s < t <= t0_s + horizon_s + 1e-9),
                       default=None)
            if peak is not None and base > 0 and peak > 0:
                lr = math.log(peak / base)
                i = min(_LR_BINS - 1, max(0, int((lr - _LR_LO) / _LR_STEP)))
                # Weighted by the load (requests are what the SLO counts), relative to the
                # running mean load so the weights stay near 1.
                w = peak / max(state.mean_rate, 1e-9) if cfg.rate_weighted else 1.0
                _score_into(pooled, pooled_count, 0, i, w)
                if band >= 0:
                    _score_into(bands, band_count, band, i, w)
                _score_into(trends, trend_count, up, i, w)
        else:
            kept.append((t0_s, base, band, up))
    if state.model is not None:
        h = horizon_buckets(cfg, horizon_s)
        base = max(max(predict(state.model, i) for i in range(1, h + 1)), value)
        kept.append((now_s, base, level_band(state, base), rising(state, base)))
    a = 1 - _LR_DECAY
    mean_rate = value if state.mean_rate <= 0 else (1 - a) * state.mean_rate + a * value
    return replace(state, recent=recent, bases=tuple(kept), ratio_hist=tuple(pooled[0]),
                   ratio_count=pooled_count[0], mean_rate=mean_rate,
                   band_hist=tuple(tuple(b) for b in bands), band_count=tuple(band_count),
                   trend_hist=tuple(tuple(b) for b in trends), trend_count=tuple(trend_count))


def _score_into(hists: list[list[float]], counts: list[float], k: int, i: int, w: float
                ) -> None:
    """Histogram ``k`` of a split: decay by one scored horizon, add weight ``w`` at bin ``i``."""
    hists[k] = [x * _LR_DECAY for x in hists[k]]
    hists[k][i] += w
    counts[k] = counts[k] * _LR_DECAY + 1.0


def _quantile_of(hist: Sequence[float], count: float, q: float) -> float | None:
    """The q-quantile ratio of one histogram (None: too few scored horizons)."""
    total = sum(hist)
    if count < _LR_MIN_SAMPLES * (_LR_DECAY ** _LR_MIN_SAMPLES) or total <= 0:
        return None
    seen = 0.0
    for i, w in enumerate(hist):
        seen += w
        if seen >= q * total:
            return math.exp(_LR_LO + (i + 1) * _LR_STEP)
    return math.exp(_LR_LO + _LR_BINS * _LR_STEP)


def peak_ratio(state: ForecastState, q: float, base: float | None = None) -> float | None:
    """The q-quantile of peak-within-horizon / planning base seen so far (None: too few).

    With ``base``, the quantile of its level band, shrunk by how few horizons the band has
    seen (weight n / (n + ``_BAND_PRIOR``), in log space) toward the geometric mean of the
    pooled quantile and the ratio assumed with no history: the pooled ratios alone would carry
    the very regimes the bands keep apart (a morning ramp's into the top band before the top
    has been seen twice), the prior alone would ignore peaks seen in other bands. Where the
    level band cannot answer yet (too little history, or too few horizons in it), the momentum
    split does (rising or not, ``rising``), shrunk the same way; the pooled quantile is the
    last resort.
    """
    pooled = _quantile_of(state.ratio_hist, state.ratio_count, q)
    if base is None or not state.band_hist or pooled is None:
        return pooled
    fallback = pooled
    if state.trend_hist:
        up = rising(state, base)
        own_t = _quantile_of(state.trend_hist[up], state.trend_count[up], q)
        if own_t is not None:
            fallback = _shrunk(own_t, state.trend_count[up], pooled)
    band = level_band(state, base)
    if band < 0:
        return fallback
    own = _quantile_of(state.band_hist[band], state.band_count[band], q)
    if own is None:
        return fallback
    return _shrunk(own, state.band_count[band], pooled)


def _shrunk(own: float, n: float, pooled: float) -> float:
    """A split's own quantile seen over ``n`` horizons, shrunk (log space) toward the
    geometric mean of the pooled quantile and the no-history ratio."""
    w = n / (n + _BAND_PRIOR)
    toward = 0.5 * (math.log(pooled) + math.log(_PRIOR_PEAK_RATIO))
    return math.exp(w * math.log(own) + (1 - w) * toward)


def _observe_buckets(state: ForecastState, cfg: ForecastConfig, now_s: float, value: float,
                     horizon_s: float) -> ForecastState:
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


def _close_bucket(state: ForecastState, cfg: ForecastConfig, index: int, y: float,
                  horizon_s: float) -> ForecastState:
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
        model, last_fit = fit(np.asarray(history), season, cfg.holt_min_buckets), index
    else:
        model = update(model, y)
    h = horizon_buckets(cfg, horizon_s)
    pending.append((index + h, predict(model, h)))
    return replace(state, history=history, model=model, last_fit_bucket=last_fit,
                   pending=tuple(pending[-4 * h - 4:]), err_var=err_var, err_horizon=h,
                   level_ref=_level_ref(history))


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
    model = state.model
    if model is None:
        return None
    h = horizon_buckets(cfg, horizon_s)
    mean = max(predict(model, i) for i in range(1, h + 1))
    prior_var = (model.resid_sigma ** 2) * h
    var = prior_var if state.err_var is None else max(state.err_var, 0.25 * prior_var)
    var += state.tick_rel_var * mean * mean
    now = now_rps or 0.0
    base = now if now > mean + now_noise_rps else mean
    ratio = peak_ratio(state, cfg.quantile, base)
    if ratio is not None:       # enough history: the empirical peak ratio, not a normal
        return mean, base * max(ratio, 1.0)
    z = float(norm.ppf(cfg.quantile))
    # Too little history to know how bursty the load is: assume peaks 30 % over the base.
    return mean, max(mean + z * math.sqrt(var), _PRIOR_PEAK_RATIO * max(mean, now_rps or 0.0))
