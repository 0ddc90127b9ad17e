"""Forecaster: model choice by history, scheduled refits, error tracking, upper quantile."""
from __future__ import annotations

import math

import numpy as np
import pytest

from trimtab.controllers.core import forecast, peaks

CFG = forecast.ForecastConfig(bucket_s=60.0, season_s=3600.0, refit_s=600.0, quantile=0.95)
PK = CFG.peaks


def _feed(values, cfg=CFG, interval_s=15.0, horizon_s=75.0, state=None):
    state = state or forecast.ForecastState()
    fits = []
    for i, v in enumerate(values, start=1):
        state = forecast.observe(state, cfg, i * interval_s, float(v), horizon_s)
        fits.append(state.smoothing.last_fit_bucket)
    return state, fits


def test_model_kind_follows_history_length():
    t = np.arange(4 * 240)             # 15 s windows; 240 per 3600 s season
    values = 100 + 40 * np.sin(2 * np.pi * t / 240)
    state, _ = _feed(values[:20])
    assert state.smoothing.model.kind == "level"
    state, _ = _feed(values[:200])
    assert state.smoothing.model.kind == "holt"
    state, _ = _feed(values)           # four seasons: more than two
    assert state.smoothing.model.kind == "holt_winters"


def test_refits_on_a_schedule_not_every_tick():
    values = np.full(480, 50.0) + np.random.default_rng(1).normal(0, 2, 480)
    _, fits = _feed(values)
    distinct = sorted({f for f in fits if f is not None})
    # 480 ticks = 120 buckets; refit every 10 buckets (plus the level->holt switch).
    assert 10 <= len(distinct) <= 14


def test_holt_follows_a_ramp():
    values = np.linspace(10, 200, 400)
    state, _ = _feed(values)
    mean, upper = forecast.forecast(state, CFG, 75.0)
    assert mean == pytest.approx(200 + 190 / 400 * 8, rel=0.1)   # 2 buckets ahead
    assert upper >= mean


def test_seasonal_forecast_beats_flat_after_two_seasons():
    t = np.arange(6 * 240)
    values = 100 + 60 * np.sin(2 * np.pi * t / 240)
    state, _ = _feed(values[:-40])
    horizon_s = 600.0                  # 10 buckets ahead, into the rising part of the cycle
    mean, _ = forecast.forecast(state, CFG, horizon_s)
    future_peak = values[-40:].max()
    assert mean == pytest.approx(future_peak, rel=0.15)


def test_upper_widens_after_the_forecast_was_wrong():
    rng = np.random.default_rng(3)
    calm = 100 + rng.normal(0, 2, 300)
    state, _ = _feed(calm)
    _, upper_calm = forecast.forecast(state, CFG, 75.0, 100.0)
    jumpy = np.where(np.arange(300) % 20 < 4, 180.0, 100.0) + rng.normal(0, 2, 300)
    state, _ = _feed(jumpy, state=state)
    _, upper_jumpy = forecast.forecast(state, CFG, 75.0, 100.0)
    assert upper_calm < 115
    assert upper_jumpy > 1.4 * upper_calm     # the bursts were missed, so headroom grew


def test_state_is_bounded():
    state, _ = _feed(np.full(3000, 10.0))
    assert len(state.smoothing.history) <= max(3 * forecast.season_buckets(CFG), 600)
    assert len(state.smoothing.pending) <= 4 * 2 + 4 and len(state.peaks.recent) <= 10


def test_no_model_no_forecast():
    assert forecast.forecast(forecast.ForecastState(), CFG, 60.0) is None


def test_predict_is_never_negative():
    m = forecast.Model("holt", 0.5, 0.5, 0.0, 0.98, 1.0, -5.0)
    assert forecast.predict(m, 10) == 0.0
    assert not math.isnan(forecast.predict(m, 1))


def test_peak_ratio_is_conditioned_on_the_level_band():
    # Each 240-tick season: a calm day near 300 and a night near 30 with random 3x jumps
    # (one window in ten), which no forecast can time.
    rng = np.random.default_rng(5)
    t = np.arange(4 * 240)
    night = (t % 240) < 120
    jump = night & (rng.random(len(t)) < 0.1)
    values = np.where(night, np.where(jump, 90.0, 30.0), 300.0) * rng.normal(1, 0.01, len(t))
    state, _ = _feed(values)
    low = peaks.peak_ratio(state.peaks, PK, 0.95, base=30.0)
    high = peaks.peak_ratio(state.peaks, PK, 0.95, base=300.0)
    pooled = peaks.peak_ratio(state.peaks, PK, 0.95)
    assert low > 2.0                 # a night horizon may hold a 3x jump
    assert high < 1.35               # the day's swings are small (shrunk toward the pooled)
    assert high < pooled <= low


def test_level_band_needs_history():
    state, _ = _feed(np.full(20, 50.0))   # 5 buckets: too few to place a level
    assert peaks.level_band(state.peaks, PK, 50.0) == -1
    state, _ = _feed(np.full(200, 50.0))
    assert peaks.level_band(state.peaks, PK, 5.0) == 0 and peaks.level_band(state.peaks, PK, 50.0) == 2


def test_a_young_band_is_shrunk_toward_pooled_and_prior_alike():
    def at(ratio: float, weight: float, count: float) -> peaks.RatioHistogram:
        h = [0.0] * PK.ratio_bins
        h[int((math.log(ratio) - PK.ratio_lo) / PK.ratio_step)] = weight
        return peaks.RatioHistogram(tuple(h), count)

    own_hist = at(1.1, 30.0, 30.0)
    stats = peaks.PeakStats(level_ref=100.0, pooled=at(2.0, 100.0, 100.0),
                            bands=(at(1.0, 0.0, 0.0),) * 2 + (own_hist,))
    state = forecast.ForecastState(forecast.SmoothingState(history=(100.0,) * 40), stats)
    pooled = peaks.peak_ratio(state.peaks, PK, 0.95)
    own = own_hist.quantile(0.95, PK)
    # 30 horizons in the band: weight 30 / (30 + 30) = 1/2 on its own quantile.
    toward = 0.5 * (math.log(pooled) + math.log(PK.prior_peak_ratio))
    expected = math.exp(0.5 * math.log(own) + 0.5 * toward)
    assert peaks.peak_ratio(state.peaks, PK, 0.95, base=100.0) == pytest.approx(expected)
    assert own < peaks.peak_ratio(state.peaks, PK, 0.95, base=100.0) < pooled


def test_a_ramp_does_not_set_the_plateau_after_it():
    """Before the level bands can say anything, the momentum split keeps a first morning
    ramp's lagging-base ratios (3x over 8 minutes) out of the plateau that follows."""
    rng = np.random.default_rng(7)
    quiet = np.full(40, 30.0)                       # 10 min at 30 req/s
    ramp = np.geomspace(30.0, 270.0, 32)            # 8 min: 9x
    plateau = np.full(40, 270.0)                    # 10 min
    values = np.concatenate([quiet, ramp, plateau]) * rng.normal(1, 0.03, 112)
    state, _ = _feed(values, horizon_s=105.0)
    assert peaks.level_band(state.peaks, PK, 270.0) == -1         # 28 buckets: no level yet
    split = peaks.peak_ratio(state.peaks, PK, 0.95, base=270.0)
    pooled = peaks.peak_ratio(state.peaks, PK, 0.95)
    assert peaks.rising(state.peaks, PK, 270.0) == 0
    assert pooled > 1.6                # the ramp is in the pooled ratios
    # The flat load's own ratios are near 1.1; the split also holds the ramp's first
    # minutes (the base not yet climbing), so it lies between, well under the pooled.
    assert split < pooled - 0.1
    # While the base still climbs, the rising split answers: the ramp's ratios.
    assert peaks.peak_ratio(state.peaks, PK, 0.95, base=2 * 270.0) > split
