"""Hysteresis for the pod knobs (concurrency limit, max batch size): change only when it matters.

Each change of a pod knob is a reconfigure of every replica (a Ray Serve redeploy of its
options, a Triton model-config reload), so the policy must not move them by one every tick as
the capacity fit wobbles. A new value replaces the one in force only when it differs by at
least ``min_change`` (relative), or when the SLO demands it: a max batch whose worst case (wait
for one batch, ride in the next) no longer fits the latency budget is lowered at once.
"""
from __future__ import annotations

from trimtab.controllers.core import capacity

MIN_CHANGE = 0.25          # relative change below which a knob keeps its value


def settle(old: int | None, new: int, min_change: float = MIN_CHANGE) -> int:
    """``new`` if there is no value in force or it moved at least ``min_change``; else ``old``."""
    if old is None or old <= 0:
        return new
    if abs(new - old) >= min_change * old:
        return new
    return old


def max_batch(fit: capacity.BatchFit, old: int | None, new: int, budget_s: float,
              configured: int, min_change: float = MIN_CHANGE) -> int:
    """The max batch to apply: held unless it moved enough, lowered at once if it breaks the SLO."""
    if old is not None and old > configured:
        return new                  # over what memory allows: never hold it
    if old is not None and 2 * fit.batch_time_s(old) > budget_s and new < old:
        return new                  # the SLO demands a smaller batch now
    return settle(old, new, min_change)
