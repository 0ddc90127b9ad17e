"""KEDA Prometheus scaler baseline: AverageValue on the HPA, activation, cooldown, NaN as 0."""
from __future__ import annotations

import math

import pytest

from trimtab.controllers.core.baselines import keda
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.types import FIELD_ARRIVAL_RATE, REASON_HOLD_MISSING, REASON_WITHIN_TOLERANCE
from tests.controllers.builders import bounds, run_loop, snap


@pytest.mark.parametrize("rate,current,expected", [
    (100.0, 4, 10),      # ceil(100 / 10)
    (42.0, 4, 4),        # 42 / (10 * 4) = 1.05: within tolerance (would be 5)
    (15.0, 4, 2),        # after the 300 s window
], ids=["up", "tolerance", "down"])
def test_desired_is_ceil_value_over_threshold(rate, current, expected):
    pol = make_policy("keda:threshold=10,query_window_s=15", bounds(), 15.0)
    decisions, _ = run_loop(pol, [dict(arrival_rate_rps=rate)] * 30, start_replicas=current)
    assert decisions[-1].replicas == expected
    if expected == current:
        assert decisions[-1].reason == REASON_WITHIN_TOLERANCE


def test_nan_counts_as_zero():
    s = snap(arrival_rate_rps=math.nan)
    cfg = make_policy("keda", bounds(), 15.0).config
    assert keda.query_value(s, cfg) == 0.0


def test_unreadable_source_holds():
    pol = make_policy("keda", bounds(), 15.0)
    s = snap(ready=5, arrival_rate_rps=None, missing=frozenset({FIELD_ARRIVAL_RATE}))
    d, _ = pol.decide(s, pol.initial_state(), 15.0)
    assert not d.valid and d.reason == REASON_HOLD_MISSING


def test_one_to_zero_only_after_cooldown():
    pol = make_policy("keda:threshold=10,query_window_s=15", bounds(min_replicas=0), 15.0)
    state = pol.initial_state()
    replicas = 1
    t = 0.0
    went_to_zero_s = None
    for i in range(1, 50):
        t = i * 15.0
        rate = 5.0 if t <= 60 else 0.0        # active until 60 s, idle after
        d, state = pol.decide(snap(t_s=t, ready=replicas, arrival_rate_rps=rate), state, t)
        if d.valid:
            replicas = d.replicas
        if replicas == 0 and went_to_zero_s is None:
            went_to_zero_s = t
    assert went_to_zero_s is not None
    # Polls at 15, 45, 75 ... s: the last active poll is at 45 s. KEDA's scale executor
    # (pkg/scaling/executor/scale_scaledobjects.go scaleToZeroOrIdle) scales in once
    # lastActiveTime + cooldownPeriod is strictly Before(now): not at 345 s (exactly 300 s
    # after), but at the next poll, 375 s (would be 75 s with no cooldown).
    assert went_to_zero_s == 45 + 300 + 30


def test_zero_to_one_on_activation():
    pol = make_policy("keda:threshold=10,activation_threshold=2", bounds(min_replicas=0), 15.0)
    state = pol.initial_state()
    d, state = pol.decide(snap(ready=0, arrival_rate_rps=1.0), state, 15.0)
    assert d.replicas == 0          # 1 <= activation threshold 2: stays at zero
    d, state = pol.decide(snap(t_s=45, ready=0, arrival_rate_rps=30.0), state, 45.0)
    assert d.replicas == 1 and d.reason == keda.REASON_ACTIVATE


def test_polls_every_30s_and_runs_at_hpa_period():
    pol = make_policy("keda", bounds(), 15.0)
    assert pol.interval_s == 15.0
    assert pol.config.polling_interval_s == 30.0 and pol.config.cooldown_s == 300.0


# kedacore/keda pkg/scaling/executor/scale_scaledobjects_test.go: below minReplicaCount the
# target goes to the minimum at once, inactive (the executor sets it) or active (the HPA's
# own below-minReplicas clamp). Each case is (minReplicaCount, current, rate) -> count.
@pytest.mark.parametrize("min_r,current,rate,expected", [
    (5, 1, 0.0, 5),      # TestScaleToMinReplicasFromLowerInitialReplicaCount (today: 1)
    (5, 4, 40.0, 5),     # 40 / (10 * 4) = 1.0 is within tolerance of 4, still 5 (today: 4)
    (5, 2, 30.0, 5),     # active, would want 3: the HPA clamps to 5 (today: 3, then 5 at most)
], ids=["TestScaleToMinReplicasFromLowerInitialReplicaCount", "within-tolerance", "active"])
def test_below_min_replica_count_goes_to_min_at_once(min_r, current, rate, expected):
    pol = make_policy("keda:threshold=10,query_window_s=15", bounds(min_replicas=min_r), 15.0)
    d, _ = pol.decide(snap(ready=current, arrival_rate_rps=rate), pol.initial_state(), 15.0)
    assert d.valid and d.replicas == expected


# kedacore/keda pkg/scalers/prometheus_scaler_test.go TestPrometheusScalerExecutePromQuery
# ("+Inf", "-Inf", "NaN" and their "but shouldn't ignore" cases): a non-finite result is 0
# when ignoreNullValues is true (the default) and an error otherwise; an error holds.
@pytest.mark.parametrize("value,ignore,expected", [
    (math.inf, True, 0.0),       # today: OverflowError in decide
    (-math.inf, True, 0.0),      # today: OverflowError in decide
    (math.nan, True, 0.0),
    (math.inf, False, None),     # None: the scaler returned an error
    (-math.inf, False, None),
    (math.nan, False, None),
    (12.0, False, 12.0),
], ids=["+Inf", "-Inf", "NaN", "+Inf-no-ignore", "-Inf-no-ignore", "NaN-no-ignore", "valid"])
def test_non_finite_query_results(value, ignore, expected):
    pol = make_policy("keda" if ignore else "keda:ignore_null_values=false", bounds(), 15.0)
    d, _ = pol.decide(snap(ready=4, arrival_rate_rps=value), pol.initial_state(), 15.0)
    if expected is None:
        assert not d.valid and d.reason == keda.REASON_SCALER_ERROR and d.replicas == 4
    else:
        assert d.valid and d.details["query_value"] == expected
