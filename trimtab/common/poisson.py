"""Poisson arrival times: a steady rate, or a rate curve by thinning, from a seeded generator."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

RateFn = Callable[[np.ndarray], np.ndarray]


def thinned_arrivals_s(rng: np.random.Generator, start_s: np.ndarray, end_s: np.ndarray,
                       max_rps: np.ndarray, rate_fn: RateFn | None = None) -> np.ndarray:
    """Sorted arrival times of a Poisson process on pieces ``[start_s, end_s)``.

    Lewis-Shedler thinning per piece: Poisson(max_rps * width) uniform points, each kept with
    probability rate_fn(t) / max_rps (every point when ``rate_fn`` is None: then the count per
    piece is just Poisson). ``max_rps`` must bound ``rate_fn`` on its piece. E.g. one piece
    [0, 10) s at max 4 rps with rate_fn = 2 rps: about 40 points, about 20 kept.
    """
    start_s, end_s = np.asarray(start_s, float), np.asarray(end_s, float)
    max_rps = np.asarray(max_rps, float)
    if not start_s.shape == end_s.shape == max_rps.shape:
        raise ValueError(f"start_s, end_s and max_rps must have one shape, got {start_s.shape},"
                         f" {end_s.shape} and {max_rps.shape}")
    width_s = end_s - start_s
    if (width_s < 0).any() or (max_rps < 0).any() or not np.isfinite(max_rps * width_s).all():
        raise ValueError("every piece needs end_s >= start_s and a finite max_rps >= 0")
    counts = rng.poisson(max_rps * width_s)
    piece = np.repeat(np.arange(len(counts)), counts)
    t = start_s[piece] + rng.random(len(piece)) * width_s[piece]
    if rate_fn is not None and len(t):
        accept = rng.random(len(t)) * max_rps[piece] < rate_fn(t)
        t = t[accept]
    t.sort()
    return t


def steady_arrivals_s(rate_rps: float, duration_s: float, seed: int | np.random.Generator
                      ) -> np.ndarray:
    """Sorted arrival times in ``[0, duration_s)`` at a constant ``rate_rps``."""
    if not (math.isfinite(rate_rps) and rate_rps >= 0):
        raise ValueError(f"rate_rps = {rate_rps!r}: must be a finite number >= 0")
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration_s = {duration_s!r}: must be a finite number >= 0")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return thinned_arrivals_s(rng, np.array([0.0]), np.array([float(duration_s)]),
                              np.array([float(rate_rps)]))
