"""Run-level miss budget: how much of the SLO's error budget has been spent, and the headroom.

The SLO is "``target`` of requests within the latency over the run", not "every window at p99".
The budget keeps decayed totals of requests and misses (slow, shed, timed out) and their
ratio to the allowed misses, ``burn = misses / ((1 - target) * requests)``: below 1 the run
is within its SLO. The headroom (a factor on the planned load) rises when windows miss and
the budget is being overspent (even while replicas start: a cold start that keeps costing
misses is a reason for standing headroom), and eases back only while the budget has slack.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from controllers.types import Snapshot

MIN_REQUESTS = 2000.0        # below this, the burn is not yet meaningful
RAISE = 1.2                  # headroom step after a window over its share of misses
EASE = 0.98                  # headroom step after a clean window with budget slack
EASE_OVER = 0.998            # ... and, slowly, after a clean window over budget
HEADROOM_MAX_S = 1.6         # cap while the run is within budget
HEADROOM_MAX_OVER = 2.5      # cap while the run is over budget
STARTING_BURN = 3.0          # over this burn, misses during a cold start also raise it


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


def window_counts(snapshot: Snapshot, slo_s: float) -> tuple[float, float] | None:
    """(requests, misses) of the window, counting shed and timed out; None if unreadable."""
    hist = snapshot.latency
    if hist is None:
        return None
    lost = ((snapshot.shed_rps or 0.0) + (snapshot.timed_out_rps or 0.0)) * snapshot.window_s
    return hist.total + lost, hist.count_over(slo_s) + lost


def update(state: BudgetState, snapshot: Snapshot, slo_s: float, target: float,
           decay: float = 1.0) -> BudgetState:
    """Fold the window in; adjust the headroom on this window's and the run's miss rate."""
    counts = window_counts(snapshot, slo_s)
    if counts is None or counts[0] < 20:
        return state
    total, misses = counts
    state = replace(state, requests=state.requests * decay + total,
                    misses=state.misses * decay + misses)
    allowed = 1.0 - target
    rate = misses / total
    burn = state.burn(target)
    headroom = state.headroom
    if rate > allowed:
        starting = (snapshot.starting_replicas or 0) > 0
        if burn > STARTING_BURN or (burn > 1.0 and not starting):
            headroom = min(HEADROOM_MAX_OVER, headroom * RAISE)
        elif not starting:      # misses while replicas start are the cold start's
            headroom = min(max(HEADROOM_MAX_S, headroom), headroom * RAISE)
    elif rate < 0.25 * allowed:
        headroom = max(1.0, headroom * (EASE if burn < 0.7 else EASE_OVER))
    return replace(state, headroom=headroom)
