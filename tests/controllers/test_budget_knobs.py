"""Run-level miss budget (burn, headroom) and pod-knob hysteresis: table-driven cases."""
from __future__ import annotations

import pytest

from trimtab.controllers.core import budget, capacity, knobs
from trimtab.controllers.core.types import LatencyHistogram
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
    # 30 s of traffic: the allowed misses are counted over an hour at that rate.
    hour = 2045 / 30.0 * budget.DEFAULT.slo_window_s
    assert s.burn(0.99) == pytest.approx(245 / (0.01 * hour))


@pytest.mark.parametrize("requests, misses, elapsed_s, burn", [
    (2045, 245, 30.0, 245 / (0.01 * 2045 / 30.0 * 3600)),   # a bad first half-minute
    (1e6, 2e4, 7200.0, 2.0),                                 # past the window: the run's ratio
    (5e5, 2.5e3, 3600.0, 0.5),
], ids=["early-transient", "long-run", "one-window"])
def test_burn_counts_over_at_least_the_slo_window(requests, misses, elapsed_s, burn):
    s = budget.BudgetState(requests=requests, misses=misses, elapsed_s=elapsed_s)
    assert s.burn(0.99) == pytest.approx(burn)


@pytest.mark.parametrize("hist, starting, prior, grows", [
    (BAD, 0, budget.BudgetState(), True),
    (BAD, 3, budget.BudgetState(requests=1e5, misses=1e4), False),   # cold start's misses
    (GOOD, 0, budget.BudgetState(requests=1e6, misses=0, headroom=1.3), False),
], ids=["miss", "cold-start", "clean"])
def test_headroom_direction(hist, starting, prior, grows):
    after = budget.update(prior, snap(latency=hist, starting=starting), 1.0, 0.99)
    assert (after.headroom > prior.headroom) == grows


@pytest.mark.parametrize("misses, floor", [
    (0.0, 0.85),          # burn 0: the full floor
    (3e5, 0.85),          # burn 0.3, half the target: still the full floor
    (4.5e5, 0.925),       # burn 0.45: half of it
    (6e5, 1.0),           # burn 0.6, the target: none
], ids=["burn-0", "burn-0.3", "burn-0.45", "burn-0.6"])
def test_unused_budget_is_spent_less_and_less_toward_the_target_burn(misses, floor):
    """No step: a few more misses never switch the floor from 0.85 to 1 at once."""
    # 1e8 requests: the clean windows fed below barely move the burn.
    state = budget.BudgetState(requests=1e8, misses=misses, headroom=1.0, elapsed_s=7200.0)
    after = feed(state, GOOD, 200)     # clean windows: down to the floor, not below
    assert after.headroom == pytest.approx(floor, abs=2e-3)


@pytest.mark.parametrize("misses, elapsed_s, grows", [
    (0, 7200.0, False),       # calm: a run far within its budget, with full evidence
    (0, 600.0, True),         # too little evidence to call it calm
    (8e3, 7200.0, True),      # burn 0.8: not calm
], ids=["calm", "early", "spending"])
def test_one_bad_window_raises_headroom_unless_the_run_is_calm(misses, elapsed_s, grows):
    prior = budget.BudgetState(requests=1e6, misses=misses, elapsed_s=elapsed_s)
    after = budget.update(prior, snap(latency=BAD), 1.0, 0.99)
    assert (after.headroom > prior.headroom) == grows


def test_headroom_eases_fast_with_slack_slowly_without_and_stays_capped():
    hot = feed(budget.BudgetState(), BAD, 50)
    assert hot.headroom == budget.DEFAULT.headroom_max and hot.burn(0.99) > 1
    still = feed(hot, GOOD, 10)                              # overspent: eases slowly
    assert still.headroom == pytest.approx(hot.headroom * budget.DEFAULT.headroom_ease_over ** 10)
    eased = feed(budget.BudgetState(requests=1e7, misses=0, headroom=1.5), GOOD, 10)
    assert eased.headroom == pytest.approx(1.5 * budget.DEFAULT.headroom_ease ** 10)


@pytest.mark.parametrize("elapsed_s, floor", [
    (0.0, 0.9625),       # 20 clean windows = 300 s of evidence: 1 - 0.15 * 300 / 1200
    (300.0, 0.925),      # 600 s: 1 - 0.15 * 600 / 1200
    (7200.0, 0.85),      # plenty: headroom_min
], ids=["no-evidence", "some-evidence", "full-evidence"])
def test_unused_budget_is_spent_only_on_evidence(elapsed_s, floor):
    assert budget.DEFAULT.headroom_min == 0.85 and budget.DEFAULT.evidence_s == 1200.0
    calm = budget.BudgetState(requests=1e6, misses=0, headroom=1.0, elapsed_s=elapsed_s)
    after = feed(calm, GOOD, 20)
    assert after.headroom == pytest.approx(floor, abs=1e-6)


@pytest.mark.parametrize("burn, trust, q", [
    (0.0, 1.0, 0.95),                    # no burn known yet: as configured
    (0.6, 1.0, 0.95),                    # on target
    (2.4, 1.0, 0.975),                   # overspent: (0.6 / 2.4) ** 0.5 = half the tail
    (1e6, 1.0, 0.995),                   # at most ten-fold narrower
    (0.15, 0.0, 0.95),                   # budget to spare, but no evidence yet
    (0.15, 1.0, 0.90),                   # (0.6 / 0.15) ** 0.5 = twice the tail
    (0.01, 1.0, 0.85),                   # at most quantile_tail_mul = 3 times wider
    (0.01, 0.5, 0.90),                   # ... scaled by the evidence
], ids=["fresh", "on-target", "overspent", "capped-narrow", "no-evidence", "spare",
        "capped-wide", "half-evidence"])
def test_planning_quantile_follows_the_burn(burn, trust, q):
    assert budget.DEFAULT.quantile_tail_mul == 3.0 and budget.DEFAULT.target_burn == 0.6
    assert budget.planning_quantile(0.95, burn, trust) == pytest.approx(q)


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
