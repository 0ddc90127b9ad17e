"""Run-level miss budget (burn, headroom) and pod-knob hysteresis: table-driven cases."""
from __future__ import annotations

import pytest

from controllers import budget, capacity, knobs
from controllers.types import LatencyHistogram
from tests.controllers.builders import snap

FIT = capacity.BatchFit(0.1, 0.02, 0)
BAD = LatencyHistogram((0.5, 1.0), (500, 300, 200))       # 20 % over the 1 s SLO
GOOD = LatencyHistogram((0.5, 1.0), (1000, 0, 0))


def feed(state, hist, n, starting=0):
    for _ in range(n):
        state = budget.update(state, snap(latency=hist, starting=starting), 1.0, 0.99)
    return state


def test_burn_counts_slow_shed_and_timed_out_and_waits_for_enough_requests():
    s = budget.update(budget.BudgetState(), snap(latency=BAD), 1.0, 0.99)
    assert s.requests == 1000 and s.misses == 200 and s.burn(0.99) == 0.0   # too few yet
    s = budget.update(s, snap(latency=GOOD, shed_rps=2.0, timed_out_rps=1.0), 1.0, 0.99)
    assert s.requests == pytest.approx(2045) and s.misses == pytest.approx(245)
    assert s.burn(0.99) == pytest.approx(245 / 20.45)


@pytest.mark.parametrize("hist, starting, prior, grows", [
    (BAD, 0, budget.BudgetState(), True),
    (BAD, 3, budget.BudgetState(requests=1e5, misses=1e4), False),   # cold start's misses
    (GOOD, 0, budget.BudgetState(requests=1e6, misses=0, headroom=1.3), False),
], ids=["miss", "cold-start", "clean"])
def test_headroom_direction(hist, starting, prior, grows):
    after = budget.update(prior, snap(latency=hist, starting=starting), 1.0, 0.99)
    assert (after.headroom > prior.headroom) == grows


def test_headroom_eases_fast_with_slack_slowly_without_and_stays_capped():
    hot = feed(budget.BudgetState(), BAD, 50)
    assert hot.headroom == budget.HEADROOM_MAX and hot.burn(0.99) > 1
    still = feed(hot, GOOD, 10)                              # overspent: eases slowly
    assert still.headroom == pytest.approx(hot.headroom * budget.EASE_OVER ** 10)
    eased = feed(budget.BudgetState(requests=1e7, misses=0, headroom=1.5), GOOD, 10)
    assert eased.headroom == pytest.approx(1.5 * budget.EASE ** 10)


@pytest.mark.parametrize("burn, q", [
    (0.0, 0.95), (0.9, 0.95), (1.0, 0.95), (4.0, 0.9875), (10.0, 0.995), (1e6, 0.995),
], ids=["fresh", "within", "at-budget", "burn-4", "burn-10", "capped"])
def test_planning_quantile_widens_only_when_overspent(burn, q):
    assert budget.planning_quantile(0.95, burn) == pytest.approx(q)


@pytest.mark.parametrize("old, new, held", [
    (None, 40, 40), (48, 47, 48), (48, 50, 48), (48, 36, 36), (48, 61, 61), (8, 7, 8),
], ids=["first", "down-1", "up-2", "down-25pc", "up-27pc", "batch-8-7"])
def test_settle(old, new, held):
    assert knobs.settle(old, new) == held


def test_max_batch_drops_at_once_when_the_slo_demands_it():
    # s(8) = 0.26 s: 2 * s(8) = 0.52 s exceeds a 0.5 s budget, so 7 replaces 8 at once.
    assert knobs.max_batch(FIT, 8, 7, 0.5, 8) == 7
    assert knobs.max_batch(FIT, 8, 7, 1.0, 8) == 8           # fits: hold
    assert knobs.max_batch(FIT, 16, 8, 1.0, 8) == 8          # over what memory allows
