"""Guard stages: each a small pure function with its own reason code."""
from __future__ import annotations

import pytest

from trimtab.controllers.core import guards
from trimtab.controllers.core.types import (
    FIELD_ARRIVAL_RATE, REASON_AT_MAX, REASON_AT_MIN, REASON_HOLD_MISSING, REASON_HOLD_STALE,
    REASON_HOLD_WARMUP, REASON_SCALE_UP_LIMITED, REASON_STABILIZING, REASON_WITHIN_TOLERANCE,
)
from tests.controllers.builders import snap

UP, DOWN = guards.HPA_SCALE_UP, guards.HPA_SCALE_DOWN


@pytest.mark.parametrize("current,desired,events,expected,reason", [
    # max(ceil(10 * 2), 10 + 4) = 20: the +100 % policy wins (would be 14 with Pods only).
    (10, 40, (), 20, REASON_SCALE_UP_LIMITED),
    # 2 replicas: max(4, 6) = 6, the +4 pods policy wins.
    (2, 40, (), 6, REASON_SCALE_UP_LIMITED),
    # 5 were added 10 s ago: the period started at 5, so the limit is max(10, 9) = 10.
    (10, 40, ((95.0, 5),), 10, REASON_SCALE_UP_LIMITED),
    # ... but after the 15 s period it is measured from 10 again.
    (10, 40, ((80.0, 5),), 20, REASON_SCALE_UP_LIMITED),
    (10, 15, (), 15, None),
    (10, 0, (), 1, REASON_AT_MIN),          # -100 % allows 0, the bound says 1
    (10, 200, (), 20, REASON_SCALE_UP_LIMITED),
    (50, 200, (), 100, REASON_AT_MAX),
], ids=["percent-wins", "pods-wins", "period-start", "period-expired", "within-limit",
        "min-bound", "huge-jump", "max-bound"])
def test_rate_limit_like_hpa(current, desired, events, expected, reason):
    got = guards.rate_limit(current, desired, events, 100.0, UP, DOWN, 1, 100)
    assert got == (expected, reason)


def test_stabilize_holds_scale_down_for_the_window():
    history: tuple = ()
    t, current = 0.0, 10
    history = ((0.0, 10),)
    results = []
    for t in range(15, 400, 15):
        n, why, history = guards.stabilize(current, 5, history, float(t), 0.0, 300.0)
        results.append((t, n, why))
    # Until 300 s after the recommendation of 10, the count stays 10 (would be 5 without).
    assert all(n == 10 and why == REASON_STABILIZING for t, n, why in results if t < 300)
    assert [n for t, n, _ in results if t >= 300] == [5] * len([t for t, *_ in results if t >= 300])


def test_stabilize_scale_up_is_immediate_with_zero_window():
    n, why, _ = guards.stabilize(4, 9, ((0.0, 4),), 15.0, 0.0, 300.0)
    assert (n, why) == (9, None)


@pytest.mark.parametrize("current,desired,expected", [
    (10, 11, (10, REASON_WITHIN_TOLERANCE)), (10, 9, (10, REASON_WITHIN_TOLERANCE)),
    (10, 12, (12, None)), (10, 8, (8, None)), (0, 1, (1, None)),
], ids=["up-10pct", "down-10pct", "up-20pct", "down-20pct", "from-zero"])
def test_within_tolerance(current, desired, expected):
    assert guards.within_tolerance(current, desired, 0.1) == expected


def test_clamp_names_the_bound():
    assert guards.clamp(0, 1, 10) == (1, REASON_AT_MIN)
    assert guards.clamp(11, 1, 10) == (10, REASON_AT_MAX)
    assert guards.clamp(5, 1, 10) == (5, None)


def test_warmup_blocks_only_scale_down():
    assert guards.warmup(10, 5, 0.0, 60.0, 120.0) == (10, REASON_HOLD_WARMUP)
    assert guards.warmup(10, 15, 0.0, 60.0, 120.0) == (15, None)
    assert guards.warmup(10, 5, 0.0, 120.0, 120.0) == (5, None)


@pytest.mark.parametrize("kw,reason", [
    (dict(arrival_rate_rps=None, missing=frozenset({FIELD_ARRIVAL_RATE})), REASON_HOLD_MISSING),
    (dict(stale=frozenset({FIELD_ARRIVAL_RATE})), REASON_HOLD_STALE),
    (dict(ready=None), REASON_HOLD_MISSING),
], ids=["missing", "stale", "no-replica-count"])
def test_hold_on_unreadable_applies_nothing(kw, reason):
    ready = kw.pop("ready", 6)
    s = snap(ready=ready or 0, desired=6, **kw) if ready is not None else \
        snap(desired=6, **kw).with_(ready_replicas=None, desired_replicas=None)
    d = guards.hold_on_unreadable(s, [FIELD_ARRIVAL_RATE])
    assert d is not None and not d.valid and d.reason == reason


def test_hold_on_unreadable_passes_healthy_snapshot():
    assert guards.hold_on_unreadable(snap(), [FIELD_ARRIVAL_RATE]) is None


def test_bounded_step_up():
    assert guards.bounded_step_up(4, 50, 3.0, 4) == (12, REASON_SCALE_UP_LIMITED)
    assert guards.bounded_step_up(1, 50, 3.0, 4) == (5, REASON_SCALE_UP_LIMITED)
    assert guards.bounded_step_up(4, 10, 3.0, 4) == (10, None)
