"""A generated family of held-out load: step, flash crowd, noisy diurnal, heavy-tailed bursts,
idle then burst; each kind a random rate curve drawn from its seed, scaled to a mean rate.

Trace format ``family`` (``trace: {format: family, family: {kind: idle-burst, mean_rps: 40},
duration_s: 7200, seed: 3}``). The curve is piecewise constant over PIECE_S pieces, then scaled
so its mean over the trace is ``mean_rps``; the shape's parameters are drawn per seed from the
ranges below, so many seeds check general behaviour rather than one trace. ``trimtab sim
family`` writes a folder of such scenarios.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from trimtab.sim.traces.rates import RateCurve, constant_pieces

PIECE_S = 5.0                  # resolution of every generated curve
KINDS = ("step", "flash-crowd", "diurnal-noise", "heavy-tail", "idle-burst")
Kind = Literal["step", "flash-crowd", "diurnal-noise", "heavy-tail", "idle-burst"]


class FamilyConfig(BaseModel):
    """One member of the family: its kind and the mean rate its curve is scaled to."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Kind
    mean_rps: float = Field(gt=0)


def curve(cfg: FamilyConfig, duration_s: float, seed: int) -> RateCurve:
    """The rate curve of ``cfg`` over ``[0, duration_s)`` drawn from ``seed``."""
    n = max(1, math.ceil(duration_s / PIECE_S))
    t = np.arange(n) * PIECE_S
    rng = np.random.default_rng([seed, KINDS.index(cfg.kind)])
    shape = SHAPES[cfg.kind](t, rng)
    rate = shape * (cfg.mean_rps / float(shape.mean()))
    end = np.minimum(t + PIECE_S, duration_s)
    return constant_pieces(t, end, rate)


def _steps(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Levels held 5 to 20 minutes, each a log-normal step (sigma 0.6) from the last."""
    out = np.empty_like(t)
    level, i = 1.0, 0
    while i < len(t):
        hold = int(rng.uniform(300, 1200) / PIECE_S)
        out[i:i + hold] = level
        level = float(np.clip(level * math.exp(rng.normal(0.0, 0.6)), 0.2, 5.0))
        i += hold
    return out


def _flash_crowds(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A steady base and one to three crowds: a 10-120 s ramp to 4-15x, held 1-10 minutes,
    a 1-5 minute decay."""
    out = np.ones_like(t)
    span = t[-1] + PIECE_S
    for _ in range(int(rng.integers(1, 4))):
        at = rng.uniform(0.1, 0.8) * span
        ramp, hold, decay = rng.uniform(10, 120), rng.uniform(60, 600), rng.uniform(60, 300)
        peak = rng.uniform(4, 15)
        knots_t = [at, at + ramp, at + ramp + hold, at + ramp + hold + decay]
        out += np.interp(t, knots_t, [0.0, peak - 1, peak - 1, 0.0], left=0.0, right=0.0)
    return out


def _noisy_diurnal(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A daily cycle compressed to 30-60 minutes (trough 20-50 % of peak), times log-normal
    AR(1) noise per minute (sigma 0.25, phi 0.9)."""
    period = rng.uniform(1800, 3600)
    trough = rng.uniform(0.2, 0.5)
    cycle = trough + (1 - trough) * (1 - np.cos(2 * np.pi * (t / period + rng.uniform()))) / 2
    minutes = (t // 60).astype(np.int64)
    noise = np.empty(minutes[-1] + 1)
    x = 0.0
    for k in range(len(noise)):
        x = 0.9 * x + rng.normal(0.0, 0.25 * math.sqrt(1 - 0.81))
        noise[k] = x
    return cycle * np.exp(noise[minutes])


def _heavy_tail(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A base, and bursts arriving every 5-15 minutes on average, each Pareto-high (shape
    1.3, capped at 50x the base) for an exponential 10-180 s."""
    out = np.ones_like(t)
    span = t[-1] + PIECE_S
    gap = rng.uniform(300, 900)
    at = rng.exponential(gap)
    while at < span:
        height = min(50.0, rng.pareto(1.3) + 1.0)
        length = float(np.clip(rng.exponential(60), 10, 180))
        out[(t >= at) & (t < at + length)] += height - 1.0
        at += length + rng.exponential(gap)
    return out


def _idle_bursts(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Idle minutes (0-0.3 % of a burst's rate) between bursts: gaps exponential with a mean of
    1.5-6 minutes (most within a scale-down window, some far longer), each burst an
    exponential 5-60 s (mean 15 s) at 0.5-1.5x the burst level, at full rate within one
    piece; bursts come to about 10-30 times the mean rate."""
    idle = rng.uniform(0.0, 0.003)
    out = np.full_like(t, idle)
    span = t[-1] + PIECE_S
    gap = rng.uniform(90, 360)
    at = rng.exponential(gap)
    while at < span:
        length = float(np.clip(rng.exponential(15), 5, 60))
        out[(t >= at) & (t < at + length)] = rng.uniform(0.5, 1.5)
        at += length + rng.exponential(gap)
    if out.max() <= idle:       # no burst drawn inside a short trace: one in the middle
        mid = len(out) // 2
        out[mid:mid + max(1, int(60 / PIECE_S))] = 1.0
    return out


SHAPES = {"step": _steps, "flash-crowd": _flash_crowds, "diurnal-noise": _noisy_diurnal,
          "heavy-tail": _heavy_tail, "idle-burst": _idle_bursts}
