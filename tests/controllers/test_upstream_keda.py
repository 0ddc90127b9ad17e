"""KEDA baseline against kedacore/keda's own tests.

pkg/scalers/prometheus_scaler_test.go (the query result), pkg/scaling/executor/
scale_scaledobjects_test.go (the executor's 0 <-> N moves), pkg/fallback/fallback_test.go
(fallback) and tests/internals/polling_cooldown_so (polling and cooldown). The HPA half
(GetExternalPerPodMetricReplicas) is in test_upstream_hpa.py.
"""
from __future__ import annotations

import math

import pytest

from trimtab.controllers.core.baselines import keda
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.types import FIELD_ARRIVAL_RATE, REASON_HOLD_MISSING
from tests.controllers.builders import bounds, snap


def _keda(spec: str = "keda", **kw):
    return make_policy(spec, bounds(**kw), 15.0)


# TestPrometheusScalerExecutePromQuery: (test name, value, ignoreNullValues, result or None
# for an error). An empty result reaches the baseline as None not named in ``missing``.
QUERY_CASES = [
    ("no results", None, True, 0.0),
    ("no values but shouldn't ignore", None, False, None),
    ("valid value", 2.0, True, 2.0),
    ("+Inf", math.inf, True, 0.0),
    ("+Inf but shouldn't ignore", math.inf, False, None),
    ("-Inf", -math.inf, True, 0.0),
    ("-Inf but shouldn't ignore", -math.inf, False, None),
    ("NaN", math.nan, True, 0.0),
    ("NaN but shouldn't ignore", math.nan, False, None),
]


@pytest.mark.parametrize("value,ignore,expected", [c[1:] for c in QUERY_CASES],
                         ids=[c[0] for c in QUERY_CASES])
def test_execute_prom_query(value, ignore, expected):
    spec = "keda" if ignore else "keda:ignore_null_values=false"
    cfg = _keda(spec).config
    assert keda.query_value(snap(arrival_rate_rps=value), cfg) == expected


def test_ignore_null_values_defaults_to_true():
    # prometheus_scaler.go: `keda:"name=ignoreNullValues, ..., default=true"`.
    assert _keda().config.ignore_null_values is True


@pytest.mark.parametrize("value,expected", [(5.0, 0), (5.5, 1)], ids=["equal", "above"])
def test_activation_is_strictly_above_the_threshold(value, expected):
    # prometheus_scaler.go GetMetricsAndActivity: active = val > activationThreshold.
    pol = _keda("keda:activation_threshold=5,query_window_s=15", min_replicas=0)
    d, _ = pol.decide(snap(ready=0, arrival_rate_rps=value), pol.initial_state(), 15.0)
    assert d.replicas == expected


# scale_scaledobjects_test.go: (test, minReplicaCount, current, rate, expected)
EXECUTOR_CASES = [
    # Inactive, never active (LastActiveTime nil, initialCooldownPeriod 0): 10 -> 0 at once.
    ("TestScaleToMinReplicasWhenNotActive", 0, 10, 0.0, 0),
    ("TestScaleFromMinReplicasWhenActive", 0, 0, 30.0, 1),
    ("TestScaleToMinReplicasFromLowerInitialReplicaCount", 5, 1, 0.0, 5),
    # Active from zero with minReplicaCount 5: scaleFromZeroOrIdle sets the minimum.
    ("TestScaleFromIdleToMinReplicasWhenActive (no idleReplicaCount)", 5, 0, 30.0, 5),
    # Inactive at zero below minReplicaCount 5: the executor sets the minimum (HPA is off at 0).
    ("RequestScale inactive, currentReplicas < minReplicas", 5, 0, 0.0, 5),
]


@pytest.mark.parametrize("min_r,current,rate,expected", [c[1:] for c in EXECUTOR_CASES],
                         ids=[c[0] for c in EXECUTOR_CASES])
def test_scale_executor(min_r, current, rate, expected):
    pol = _keda("keda:threshold=10,query_window_s=15", min_replicas=min_r)
    d, _ = pol.decide(snap(ready=current, arrival_rate_rps=rate), pol.initial_state(), 15.0)
    assert d.valid and d.replicas == expected


def test_stays_up_while_active_and_in_cooldown():
    # scaleToZeroOrIdle "ScalerCooldown": inactive, but the last active poll is within the
    # cooldown: no change (1 stays 1 at 45 + 300 s exactly; the strict boundary).
    pol = _keda("keda:threshold=10,query_window_s=15", min_replicas=0)
    state = pol.initial_state()
    for t, rate in [(15, 5.0), (45, 5.0), (75, 0.0), (345, 0.0)]:
        d, state = pol.decide(snap(t_s=t, ready=1, arrival_rate_rps=rate), state, float(t))
    assert d.valid and d.replicas == 1 and d.reason != keda.REASON_COOLDOWN


def _errors(pol, n, ready=5, t0=15.0):
    state, out = pol.initial_state(), []
    for i in range(n):
        t = t0 + 15.0 * i
        s = snap(t_s=t, ready=ready, arrival_rate_rps=None, missing=frozenset({FIELD_ARRIVAL_RATE}))
        d, state = pol.decide(s, state, t)
        out.append(d)
    return out


def test_fallback_after_more_than_failure_threshold_errors():
    # fallback_test.go "should bump the number of failures" / "should return a normalised
    # metric when number of failures are beyond threshold": threshold 3, replicas 10: the
    # first three errors hold, the fourth feeds the HPA 10 * target, so 5 -> 10.
    pol = _keda("keda:threshold=10,fallback_replicas=10,fallback_failure_threshold=3")
    ds = _errors(pol, 4)
    assert [d.valid for d in ds] == [False, False, False, True]
    assert ds[0].reason == REASON_HOLD_MISSING
    assert ds[3].replicas == 10 and ds[3].reason == keda.REASON_FALLBACK
    assert ds[3].details["query_value"] == 100.0


def test_fallback_disabled_propagates_the_error():
    # fallback_test.go "should propagate the error when fallback is disabled" (the default).
    ds = _errors(_keda("keda:threshold=10"), 6)
    assert all(not d.valid and d.replicas == 5 for d in ds)
    assert _keda().config.fallback_replicas is None


def test_a_success_resets_the_failure_count():
    # fallback_test.go "should reset the health status when scaler metrics are available".
    pol = _keda("keda:threshold=10,query_window_s=15,fallback_replicas=10,"
                "fallback_failure_threshold=1")
    state = pol.initial_state()
    fail = dict(arrival_rate_rps=None, missing=frozenset({FIELD_ARRIVAL_RATE}))
    for t, kw in [(15, fail), (30, dict(arrival_rate_rps=50.0)), (45, fail)]:
        d, state = pol.decide(snap(t_s=t, ready=5, **kw), state, float(t))
    assert state.failures == 1 and not d.valid       # one failure again, not two: no fallback


def test_shipped_defaults():
    # ScaledObject defaults: pollingInterval 30 s, cooldownPeriod 300 s; the Prometheus
    # scaler's activationThreshold 0; the HPA KEDA creates syncs every 15 s.
    pol = _keda()
    c = pol.config
    assert (c.polling_interval_s, c.cooldown_s, c.activation_threshold) == (30.0, 300.0, 0.0)
    assert pol.interval_s == 15.0
