"""Peak-ratio statistics: how far load rose within the horizon over the base planned on.

Each window the forecaster plans on a base (the largest bucket forecast up to the horizon,
or the load now); once that horizon has passed, the peak load seen within it is scored as
``log(peak / base)`` into decayed histograms: one pooled, one per level band (the base
against the top of the load seen) and one per momentum (the base rising, or not). The
q-quantile of these ratios is the factor the planning base is raised by, so the upper bound
follows how bursty the load has actually been instead of a normal assumption.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

# (time s, planning base, level band, rising 0/1): one plan made, waiting for its horizon.
Base = tuple[float, float, int, int]


@dataclass(frozen=True)
class PeakConfig:
    """The statistics' tuning; the trimtab policy's config sets each by the same name."""

    # log(peak within horizon / planning base), binned: [-0.5, 1.5) in steps of 0.05.
    ratio_lo: float = -0.5
    ratio_step: float = 0.05
    ratio_bins: int = 40
    ratio_decay: float = 0.99         # per scored horizon: half-life about 70 (17 min at 15 s)
    ratio_min_samples: float = 40.0   # scored horizons before a histogram answers
    prior_peak_ratio: float = 1.3     # peaks assumed over the base with no history
    # Level bands: base / (the band_ref_q quantile of bucket means seen), split at these edges.
    band_edges: tuple[float, ...] = (0.3, 0.6)
    band_ref_q: float = 0.98
    band_min_buckets: int = 30        # history needed before the level is meaningful
    band_prior: float = 30.0          # horizons at which a band's own quantile and the
                                      # pooled weigh alike
    rise_ratio: float = 1.15          # base over the base one horizon before: a ramp
    rate_weighted: bool = False       # weigh scored horizons by their load


@dataclass(frozen=True)
class RatioHistogram:
    """Decayed weights of log(peak / base) per bin, and the decayed number of horizons."""

    weights: tuple[float, ...] = ()   # empty until the first horizon is scored
    count: float = 0.0

    def scored(self, i: int, w: float, cfg: PeakConfig) -> "RatioHistogram":
        """Decay by one scored horizon, add weight ``w`` at bin ``i``."""
        weights = [x * cfg.ratio_decay for x in self.weights or [0.0] * cfg.ratio_bins]
        weights[i] += w
        return RatioHistogram(tuple(weights), self.count * cfg.ratio_decay + 1.0)

    def quantile(self, q: float, cfg: PeakConfig) -> float | None:
        """The q-quantile ratio (None: too few scored horizons)."""
        return _quantile_of(self.weights, self.count, q, cfg)


@dataclass(frozen=True)
class PeakStats:
    """Plans waiting to be scored, the windows since, and the histograms scored so far."""

    bases: tuple[Base, ...] = ()
    recent: tuple[tuple[float, float], ...] = ()   # (time s, load) within the horizon
    pooled: RatioHistogram = RatioHistogram()
    # The same histogram per level band: how far load rises within the horizon depends on
    # where it is in its range (a morning ramp from the night's trough, or small swings
    # around the day's peak). Empty until the first horizon is checked.
    bands: tuple[RatioHistogram, ...] = ()
    # Split by momentum (the base rose by more than ``rise_ratio`` over the last horizon, or
    # not): a ramp's lagging base is not a plateau's, and this split needs no history of
    # the load's range, so it serves before the level bands can.
    trends: tuple[RatioHistogram, ...] = ()
    mean_rate: float = 0.0     # slow mean of the load, to normalise weights
    level_ref: float = 0.0     # top of the load seen (``band_ref_q`` of bucket means), set as
                               # each bucket closes; 0 until ``band_min_buckets`` are in


def level_band(stats: PeakStats, cfg: PeakConfig, base: float) -> int:
    """Which level band ``base`` is in (-1: too little history to say)."""
    if stats.level_ref <= 0:
        return -1
    level = base / stats.level_ref
    return sum(level >= e for e in cfg.band_edges)


def rising(stats: PeakStats, cfg: PeakConfig, base: float) -> int:
    """1 when ``base`` is over ``rise_ratio`` times the base planned one horizon ago, else 0."""
    return int(bool(stats.bases) and base > cfg.rise_ratio * stats.bases[0][1])


def level_ref(history: Sequence[float], cfg: PeakConfig) -> float:
    """The top of the load seen, once there is enough of it (0 before)."""
    if len(history) < cfg.band_min_buckets:
        return 0.0
    return float(np.quantile(np.asarray(history), cfg.band_ref_q))


def observe(stats: PeakStats, cfg: PeakConfig, now_s: float, value: float, horizon_s: float,
            base: float | None) -> PeakStats:
    """Score past planning bases against the peak that followed within the horizon, then
    add this window's plan ``base`` (None: no forecast yet, nothing to score later)."""
    recent = tuple(r for r in stats.recent if r[0] > now_s - horizon_s - 1e-9) + ((now_s, value),)
    pooled = stats.pooled
    bands = list(stats.bands) or [RatioHistogram() for _ in range(len(cfg.band_edges) + 1)]
    trends = list(stats.trends) or [RatioHistogram() for _ in range(2)]
    kept = []
    for t0_s, old_base, band, up in stats.bases:
        if t0_s + horizon_s <= now_s + 1e-9:
            peak = max((v for t, v in recent if t0_s < t <= t0_s + horizon_s + 1e-9),
                       default=None)
            if peak is not None and old_base > 0 and peak > 0:
                lr = math.log(peak / old_base)
                i = min(cfg.ratio_bins - 1, max(0, int((lr - cfg.ratio_lo) / cfg.ratio_step)))
                # Weighted by the load (requests are what the SLO counts), relative to the
                # running mean load so the weights stay near 1.
                w = peak / max(stats.mean_rate, 1e-9) if cfg.rate_weighted else 1.0
                pooled = pooled.scored(i, w, cfg)
                if band >= 0:
                    bands[band] = bands[band].scored(i, w, cfg)
                trends[up] = trends[up].scored(i, w, cfg)
        else:
            kept.append((t0_s, old_base, band, up))
    if base is not None:
        kept.append((now_s, base, level_band(stats, cfg, base), rising(stats, cfg, base)))
    a = 1 - cfg.ratio_decay
    mean_rate = value if stats.mean_rate <= 0 else (1 - a) * stats.mean_rate + a * value
    return replace(stats, recent=recent, bases=tuple(kept), pooled=pooled, mean_rate=mean_rate,
                   bands=tuple(bands), trends=tuple(trends))


def _quantile_of(hist: Sequence[float], count: float, q: float, cfg: PeakConfig
                 ) -> float | None:
    """The q-quantile ratio of one histogram (None: too few scored horizons)."""
    total = sum(hist)
    if count < cfg.ratio_min_samples * (cfg.ratio_decay ** cfg.ratio_min_samples) or total <= 0:
        return None
    seen = 0.0
    for i, w in enumerate(hist):
        seen += w
        if seen >= q * total:
            return math.exp(cfg.ratio_lo + (i + 1) * cfg.ratio_step)
    return math.exp(cfg.ratio_lo + cfg.ratio_bins * cfg.ratio_step)


def peak_ratio(stats: PeakStats, cfg: PeakConfig, q: float, base: float | None = None
               ) -> float | None:
    """The q-quantile of peak-within-horizon / planning base seen so far (None: too few).

    With ``base``, the quantile of its level band, shrunk by how few horizons the band has
    seen (weight n / (n + ``band_prior``), in log space) toward the geometric mean of the
    pooled quantile and the ratio assumed with no history: the pooled ratios alone would carry
    the very regimes the bands keep apart (a morning ramp's into the top band before the top
    has been seen twice), the prior alone would ignore peaks seen in other bands. Where the
    level band cannot answer yet (too little history, or too few horizons in it), the momentum
    split does (rising or not, ``rising``), shrunk the same way; the pooled quantile is the
    last resort.
    """
    pooled = stats.pooled.quantile(q, cfg)
    if base is None or not stats.bands or pooled is None:
        return pooled
    fallback = pooled
    if stats.trends:
        up = rising(stats, cfg, base)
        own_t = stats.trends[up].quantile(q, cfg)
        if own_t is not None:
            fallback = _shrunk(own_t, stats.trends[up].count, pooled, cfg)
    band = level_band(stats, cfg, base)
    if band < 0:
        return fallback
    own = stats.bands[band].quantile(q, cfg)
    if own is None:
        return fallback
    return _shrunk(own, stats.bands[band].count, pooled, cfg)


def _shrunk(own: float, n: float, pooled: float, cfg: PeakConfig) -> float:
    """A split's own quantile seen over ``n`` horizons, shrunk (log space) toward the
    geometric mean of the pooled quantile and the no-history ratio."""
    w = n / (n + cfg.band_prior)
    toward = 0.5 * (math.log(pooled) + math.log(cfg.prior_peak_ratio))
    return math.exp(w * math.log(own) + (1 - w) * toward)
