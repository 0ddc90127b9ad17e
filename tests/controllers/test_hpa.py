"""Kubernetes HPA baseline: tolerance, not-ready pods, behavior windows, rate policies."""
from __future__ import annotations

import pytest

from trimtab.controllers.core.baselines import hpa
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.spec import SpecError
from trimtab.controllers.core.types import (
    FIELD_IN_FLIGHT, REASON_HOLD_MISSING, REASON_SCALE_UP_LIMITED, REASON_STABILIZING,
    REASON_WITHIN_TOLERANCE,
)
from tests.controllers.builders import bounds, run_loop, snap


def _hpa(**params):
    return make_policy("hpa", bounds(), 15.0) if not params else make_policy(
        "hpa:" + ",".join(f"{k}={v}" for k, v in params.items()), bounds(), 15.0)


@pytest.mark.parametrize("total,ready,unready,current,expected", [
    (32 * 1.09, 4, 0, 4, 4),    # ratio 1.09: within the 10 % tolerance, keep 4 (would be 5)
    (160 * 0.92, 20, 0, 20, 20),  # ratio 0.92: within tolerance, keep 20 (would be 19)
    (48, 4, 0, 4, 6),           # ratio 1.5: ceil(1.5 * 4) = 6
    (16, 4, 0, 4, 2),           # ratio 0.5: 2
    (48, 4, 2, 6, 6),           # 2 starting counted at 0: 48 / 6 / 8 = 1.0, keep (would be 6 of 4)
    (96, 4, 2, 6, 12),          # 96 / 6 / 8 = 2.0 -> ceil(2 * 6) = 12 (would be 12 vs 12)
    (40, 4, 4, 8, 8),           # ratio 1.25 -> with 4 unready at 0: 0.625 flips: keep 8
], ids=["tol-up", "tol-down", "up", "down", "unready-within-tol", "unready-up", "unready-flip"])
def test_per_pod_replicas(total, ready, unready, current, expected):
    got, _ = hpa.per_pod_replicas(total, ready, unready, current, 8.0, 0.1)
    assert got == expected


def test_keeps_count_within_tolerance_over_time():
    pol = _hpa()
    # in-flight per pod 8.6 vs target 8: ratio 1.075 -> no change, ever.
    decisions, fleet = run_loop(pol, [dict(in_flight=4 * 8.6)] * 40, start_replicas=4)
    assert fleet.events == 0
    assert all(d.replicas == 4 for d in decisions)
    assert decisions[0].reason == REASON_WITHIN_TOLERANCE


def test_scale_down_waits_300s_stabilisation_window():
    pol = _hpa()
    # Load drops from 10 pods' worth to 2 pods' worth at once.
    decisions, fleet = run_loop(pol, [dict(in_flight=10 * 8.0)] * 4 + [dict(in_flight=16.0)] * 30,
                                start_replicas=10)
    times = [(i + 1) * 15.0 for i in range(len(decisions))]
    last_high_s = 4 * 15.0
    for t, d in zip(times, decisions):
        if t < last_high_s + 300:
            assert d.replicas == 10, (t, d)        # would be 2 without the window
            if t > last_high_s:
                assert d.reason == REASON_STABILIZING
    assert decisions[-1].replicas == 2


def test_scale_up_rate_policy_limits_each_15s_period():
    pol = _hpa()
    decisions, _ = run_loop(pol, [dict(in_flight=4 * 8.0 * 20)] * 4, start_replicas=4)
    # 4 -> max(8, 8) = 8 -> 16 -> 32 -> 64: doubling per 15 s period (desired 80).
    assert [d.replicas for d in decisions] == [8, 16, 32, 64]
    assert decisions[0].reason == REASON_SCALE_UP_LIMITED


def test_missing_metric_holds_and_never_scales_down():
    pol = _hpa()
    state = pol.initial_state()
    s = snap(ready=10, in_flight=None, missing=frozenset({FIELD_IN_FLIGHT}))
    d, state2 = pol.decide(s, state, 15.0)
    assert not d.valid and d.reason == REASON_HOLD_MISSING and d.replicas == 10
    assert state2 == state


def test_min_replicas_is_one_and_max_bounds():
    pol = _hpa()
    decisions, _ = run_loop(pol, [dict(in_flight=0.0)] * 40, start_replicas=3)
    assert decisions[-1].replicas == 1
    pol = make_policy("hpa", bounds(max_replicas=6), 15.0)
    decisions, _ = run_loop(pol, [dict(in_flight=1000.0)] * 5, start_replicas=4)
    assert max(d.replicas for d in decisions) == 6


@pytest.mark.parametrize("metric,kw,expected", [
    ("queue_depth", dict(queue_depth=4 * 4 * 2.0), 8),
    ("gpu_busy", dict(gpu_busy_ratio=0.35), 2),
], ids=["queue-depth", "gpu-busy"])
def test_other_metrics(metric, kw, expected):
    pol = make_policy(f"hpa:metric={metric}", bounds(down_window_s=0) if False else bounds(), 15.0)
    decisions, _ = run_loop(pol, [kw] * 30, start_replicas=4)
    assert decisions[-1].replicas == expected


def test_unknown_parameter_lists_known_ones():
    with pytest.raises(SpecError, match=r"unknown parameter\(s\) \['targte'\].*known:.*target"):
        make_policy("hpa:targte=5", bounds())
    with pytest.raises(SpecError, match="tolerance = 2"):
        make_policy("hpa:tolerance=2", bounds())


def test_runs_at_the_hpa_sync_period():
    assert _hpa().interval_s == 15.0


# kubernetes pkg/controller/podautoscaler/horizontal_test.go: a count outside
# [minReplicas, maxReplicas] is set to the bound at once, before (and without) the metrics,
# the stabilisation window or the rate policies. Each case is (min, max, current, load) and
# the count Kubernetes sets on the first sync.
_NO_METRICS = dict(in_flight=None, missing=frozenset({FIELD_IN_FLIGHT}))


@pytest.mark.parametrize("min_r,max_r,current,load,expected", [
    # TestTooManyReplicas: 10 > max 5, no metrics reported: 5 (today: hold at 10).
    (3, 5, 10, _NO_METRICS, 5),
    # TestTooFewReplicas: 2 < min 3, no metrics reported: 3 (today: hold at 2).
    (3, 5, 2, _NO_METRICS, 3),
    # TestScaleDownRCImmediately: 6 > max 5 under high load: 5 at once (today: the
    # seeded 300 s window holds 6).
    (2, 5, 6, dict(in_flight=6 * 8.0 * 3), 5),
    # TestScaleUpRCImmediately: 1 < min 2 with zero load: 2 at once.
    (2, 6, 1, dict(in_flight=0.0), 2),
    # Below min by more than the +4 pods / +100 % rate allows: 1 -> 10 at once (today: 4).
    (10, 20, 1, dict(in_flight=0.0), 10),
], ids=["TestTooManyReplicas", "TestTooFewReplicas", "TestScaleDownRCImmediately",
        "TestScaleUpRCImmediately", "below-min-ignores-rate-policy"])
def test_bounds_clamp_at_once(min_r, max_r, current, load, expected):
    pol = make_policy("hpa", bounds(min_replicas=min_r, max_replicas=max_r), 15.0)
    d, _ = pol.decide(snap(ready=current, **load), pol.initial_state(), 15.0)
    assert d.valid and d.replicas == expected


# horizontal.go computeReplicasForMetrics: with several metrics the largest desired count
# wins; an unreadable metric beside a valid scale-up still scales up
# (horizontal_test.go TestScaleUpOneMetricInvalid); "if all metrics are invalid or some are
# invalid and we would scale down", it is an error and nothing changes.
@pytest.mark.parametrize("load,expected,valid", [
    (dict(in_flight=4 * 8.0, queue_depth=4 * 4.0 * 1.5), 6, True),  # queue wants 6, in-flight 4
    (dict(in_flight=4 * 8.0 * 1.5, queue_depth=0.0), 6, True),       # in-flight 6, queue 0
    (dict(in_flight=4 * 8.0 * 1.5, queue_depth=None,
          missing=frozenset({"queue_depth"})), 6, True),              # one invalid, scale-up
    (dict(in_flight=4 * 8.0 / 2, queue_depth=None,
          missing=frozenset({"queue_depth"})), 4, False),             # one invalid, would go down
], ids=["largest-wins-queue", "largest-wins-in-flight", "TestScaleUpOneMetricInvalid",
        "invalid-and-down-holds"])
def test_several_metrics(load, expected, valid):
    pol = make_policy("hpa:also=queue_depth:4,down_window_s=0", bounds(), 15.0)
    d, _ = pol.decide(snap(ready=4, **load), pol.initial_state(), 15.0)
    assert (d.replicas, d.valid) == (expected, valid)


def test_also_names_the_rule_on_bad_input():
    with pytest.raises(SpecError, match="also item 'latency:3' must be metric:target"):
        make_policy("hpa:also=latency:3", bounds())
