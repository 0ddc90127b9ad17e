"""Time-windowed averages over samples kept in a policy's immutable state."""
from __future__ import annotations

# (end time s, window s, value): the mean of a quantity over [end - window, end].
Sample = tuple[float, float, float]


def add_sample(history: tuple[Sample, ...], now_s: float, window_s: float, value: float,
               keep_s: float) -> tuple[Sample, ...]:
    """Append one window's mean and drop samples that ended more than ``keep_s`` ago."""
    cutoff_s = now_s - keep_s
    return tuple(s for s in history if s[0] > cutoff_s) + ((now_s, max(window_s, 1e-9), value),)


def window_mean(history: tuple[Sample, ...], now_s: float, window_s: float) -> float | None:
    """Time-weighted mean over ``[now_s - window_s, now_s]``; None when nothing overlaps.

    Example: samples (10, 10, 4) and (20, 10, 8) with a 15 s window at t=20 weigh 4 by 5 s
    and 8 by 10 s: (20 + 80) / 15 = 6.67.
    """
    lo_s = now_s - window_s
    total = weight = 0.0
    for end_s, win_s, value in history:
        start_s = end_s - win_s
        overlap_s = min(end_s, now_s) - max(start_s, lo_s)
        if overlap_s > 0:
            total += value * overlap_s
            weight += overlap_s
    return total / weight if weight > 0 else None
