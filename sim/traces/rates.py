"""Rate curves and exact non-homogeneous Poisson sampling; the synthetic load generators.

A rate curve is a set of pieces ``[start_s, end_s)`` each with an upper bound ``max_rps`` on
the rate inside it, and optionally one vectorised function ``rate_fn(t_s)`` giving the exact
rate (None: the rate is ``max_rps`` on each piece). Overlapping pieces add, which is how counts
rows that overlap are superposed rather than dropped. Sampling is Lewis–Shedler thinning per
piece: draw Poisson(max * width) uniform points, keep each with probability rate(t) / max;
on a constant piece every point is kept, so that is the per-interval Poisson count method.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from trimtab.common.poisson import thinned_arrivals_s

RateFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RateCurve:
    start_s: np.ndarray
    end_s: np.ndarray
    max_rps: np.ndarray
    rate_fn: RateFn | None = None

    @property
    def span_s(self) -> float:
        if len(self.end_s) == 0:
            return 0.0
        return float(self.end_s.max() - self.start_s.min())

    def expected_count(self) -> float:
        """Mean number of arrivals (exact for constant pieces, an upper bound otherwise)."""
        return float(np.sum(self.max_rps * (self.end_s - self.start_s)))

    def scaled_time(self, time_scale: float) -> "RateCurve":
        """Divide times by ``time_scale``: the same arrivals, ``time_scale`` times faster."""
        fn = self.rate_fn
        new_fn = None if fn is None else (lambda t: time_scale * fn(t * time_scale))
        return RateCurve(self.start_s / time_scale, self.end_s / time_scale,
                         self.max_rps * time_scale, new_fn)

    def scaled_rate(self, rate_scale: float) -> "RateCurve":
        fn = self.rate_fn
        new_fn = None if fn is None else (lambda t: rate_scale * fn(t))
        return RateCurve(self.start_s, self.end_s, self.max_rps * rate_scale, new_fn)

    def shifted(self, offset_s: float) -> "RateCurve":
        """Times minus ``offset_s``."""
        fn = self.rate_fn
        new_fn = None if fn is None else (lambda t: fn(t + offset_s))
        return RateCurve(self.start_s - offset_s, self.end_s - offset_s, self.max_rps, new_fn)

    def clipped(self, lo_s: float, hi_s: float) -> "RateCurve":
        """Only the part inside ``[lo_s, hi_s)``."""
        start = np.maximum(self.start_s, lo_s)
        end = np.minimum(self.end_s, hi_s)
        keep = end > start
        return RateCurve(start[keep], end[keep], self.max_rps[keep], self.rate_fn)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Sorted arrival times of one realisation of the process."""
        return thinned_arrivals_s(rng, self.start_s, self.end_s, self.max_rps, self.rate_fn)


def constant_pieces(start_s: np.ndarray, end_s: np.ndarray, rate_rps: np.ndarray) -> RateCurve:
    return RateCurve(np.asarray(start_s, float), np.asarray(end_s, float),
                     np.asarray(rate_rps, float))


def poisson(rate_rps: float, duration_s: float) -> RateCurve:
    return constant_pieces(np.array([0.0]), np.array([duration_s]), np.array([rate_rps]))


def step(steps: list[tuple[float, float]], duration_s: float) -> RateCurve:
    """Rate ``steps[i][1]`` from ``steps[i][0]`` until the next step (the last until
    ``duration_s``); zero before the first step."""
    times = np.array([t for t, _ in steps] + [max(duration_s, steps[-1][0])], float)
    rates = np.array([r for _, r in steps], float)
    return constant_pieces(times[:-1], times[1:], rates).clipped(0.0, duration_s)


def diurnal(peak_rps: float, trough_rps: float, period_s: float, duration_s: float
            ) -> RateCurve:
    """``trough + (peak - trough) * (1 - cos(2 pi t / period)) / 2``: trough at t = 0, peak at
    half a period. Pieces of 1/48 period keep thinning cheap (acceptance near 1)."""
    amplitude = peak_rps - trough_rps

    def rate_fn(t: np.ndarray) -> np.ndarray:
        return trough_rps + amplitude * (1.0 - np.cos(2.0 * np.pi * t / period_s)) / 2.0

    n = max(1, math.ceil(48 * duration_s / period_s))
    edges = np.linspace(0.0, duration_s, n + 1)
    start, end = edges[:-1], edges[1:]
    max_rps = np.maximum(rate_fn(start), rate_fn(end))
    # A piece holding a peak (t = (k + 1/2) period) reaches peak_rps inside.
    next_peak_s = (np.ceil(start / period_s - 0.5) + 0.5) * period_s
    holds_peak = next_peak_s < end
    max_rps = np.where(holds_peak, peak_rps, max_rps)
    return RateCurve(start, end, max_rps, rate_fn)


def flash_crowd(base_rps: float, peak_rps: float, at_s: float, ramp_s: float, hold_s: float,
                duration_s: float) -> RateCurve:
    """``base_rps``, then at ``at_s`` a linear ramp over ``ramp_s`` to ``peak_rps``, held for
    ``hold_s``, and a linear ramp back down over ``ramp_s``."""
    knots_t = np.array([0.0, at_s, at_s + ramp_s, at_s + ramp_s + hold_s,
                        at_s + 2 * ramp_s + hold_s, max(duration_s, at_s + 2 * ramp_s + hold_s)])
    knots_r = np.array([base_rps, base_rps, peak_rps, peak_rps, base_rps, base_rps])

    def rate_fn(t: np.ndarray) -> np.ndarray:
        return np.interp(t, knots_t, knots_r)

    start, end = knots_t[:-1], knots_t[1:]
    max_rps = np.maximum(knots_r[:-1], knots_r[1:])
    keep = end > start
    return RateCurve(start[keep], end[keep], max_rps[keep], rate_fn).clipped(0.0, duration_s)
