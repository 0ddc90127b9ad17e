"""Run-level miss budget: how much of the SLO's error budget is spent, and what that changes.

The SLO is "``target`` of requests within the latency over the run", not "every window at p99".
The budget keeps running totals of requests and misses (slow, shed, timed out) and their ratio
to the misses allowed so far, ``burn = misses / ((1 - target) * requests)``: at or below 1
the run is within its SLO. Two things follow from it:

- the planning quantile: once the run has overspent (burn > 1), the tail of the peak-ratio
  quantile the policy plans on shrinks by the burn (at most ten-fold), so the bursts it has
  seen are covered; within budget the configured quantile stands;
- the headroom (a factor on the planned load, for model error): it rises after a window that
  missed outside a cold start, eases quickly after clean windows while the budget has slack
  (burn < 0.7) and only slowly while it has not.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from controllers.types import Snapshot

MIN_REQUESTS = 2000.0        # below this, the burn is not yet meaningful
RAISE = 1.2                  # headroom step after a window over its share of misses
EASE = 0.98                  # headroom step after a clean window with budget slack
EASE_OVER = 0.998            # ... and, slowly, after a clean window over budget
HEADROOM_MAX = 1.6           # cap of the headroom factor
QUANTILE_TAIL_DIV = 10.0     # the planning tail shrinks at most ten-fold when overspent


@dataclass(frozen=True)
class BudgetState:
    requests: float = 0.0
    misses: float = 0.0
    headroom: float = 1.0

    def burn(self, target: float) -> float:
        """Misses over the misses the SLO allows so far (0 until enough requests)."""
        if self.requests < MIN_REQUESTS:
            return 0.0
        return self.misses / max((1.0 - target) * self.requests, 1e-9)


def planning_quantile(quantile: float, burn: float) -> float:
    """The forecast quantile to plan on: its tail shrinks as the run overspends its budget.

    ``1 - quantile`` is divided by the burn once that exceeds 1 (at most ten-fold): a run that
    has spent four times its allowed misses plans on a quarter of the tail (0.95 -> 0.9875),
    so the peaks it has seen are covered more often. Within budget: the quantile as is.
    """
    return 1.0 - (1.0 - quantile) / min(max(burn, 1.0), QUANTILE_TAIL_DIV)


def window_counts(snapshot: Snapshot, slo_s: float) -> tuple[float, float] | None:
    """(requests, misses) of the window, counting shed and timed out; None if unreadable."""
    hist = snapshot.latency
    if hist is None:
        return None
    lost = ((snapshot.shed_rps or 0.0) + (snapshot.timed_out_rps or 0.0)) * snapshot.window_s
    return hist.total + lost, hist.count_over(slo_s) + lost


def update(state: BudgetState, snapshot: Snapshot, slo_s: float, target: float
           ) -> BudgetState:
    """Fold the window in; adjust the headroom on this window's and the run's miss rate."""
    counts = window_counts(snapshot, slo_s)
    if counts is None or counts[0] < 20:
        return state
    total, misses = counts
    state = replace(state, requests=state.requests + total, misses=state.misses + misses)
    allowed = 1.0 - target
    rate = misses / total
    burn = state.burn(target)
    headroom = state.headroom
    if rate > allowed:
        if not (snapshot.starting_replicas or 0):   # misses in a cold start are the cold start's
            headroom = min(HEADROOM_MAX, headroom * RAISE)
    elif rate < 0.25 * allowed:
        headroom = max(1.0, headroom * (EASE if burn < 0.7 else EASE_OVER))
    return replace(state, headroom=headroom)
