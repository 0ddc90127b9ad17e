"""Issue 14 (4): KEDA reads an empty Prometheus result as 0 and a failed query as an error
counting toward ``fallback``; the source says which through ``Snapshot.empty``.

kedacore/keda pkg/scalers/prometheus_scaler.go ExecutePromQuery: ``len(result) == 0`` is 0
with ignoreNullValues (the default) and "target may be lost, the result is empty" otherwise;
an HTTP error or a non-2xx answer is an error. Cases from pkg/scalers/prometheus_scaler_test.go
TestPrometheusScalerExecutePromQuery ("no results", "no values but shouldn't ignore") and
pkg/fallback/fallback_test.go ("should bump the number of failures", "should return a
normalised metric when number of failures are beyond threshold").
"""
from __future__ import annotations

import pytest

from trimtab.controllers.core.baselines import keda
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.types import (FIELD_ARRIVAL_RATE, FIELD_REPLICAS,
                                            REASON_AT_MIN, REASON_HOLD_MISSING, Snapshot)
from tests.controllers.builders import bounds, snap

ARRIVAL = frozenset({FIELD_ARRIVAL_RATE})


def _empty(**kw) -> Snapshot:
    """The arrival query answered with no series for the target."""
    return snap(arrival_rate_rps=None, missing=ARRIVAL, empty=ARRIVAL, **kw)


def _failed(**kw) -> Snapshot:
    """The arrival query failed (HTTP error, timeout): missing, not empty."""
    return snap(arrival_rate_rps=None, missing=ARRIVAL, **kw)


# (upstream case, snapshot, spec, reason, query value the HPA is fed or None, failures after)
CASES = [
    ("TestPrometheusScalerExecutePromQuery/no results", _empty, "keda", None, 0.0, 0),
    ("TestPrometheusScalerExecutePromQuery/no values but shouldn't ignore", _empty,
     "keda:ignore_null_values=false", keda.REASON_SCALER_ERROR, None, 1),
    ("ExecutePromQuery: a failed query is an error", _failed, "keda", REASON_HOLD_MISSING,
     None, 1),
]


@pytest.mark.parametrize("make,spec,reason,value,failures", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_an_empty_result_is_zero_and_a_failed_query_an_error(make, spec, reason, value,
                                                             failures):
    pol = make_policy(spec, bounds(), 15.0)
    d, st = pol.decide(make(), pol.initial_state(), 15.0)
    assert st.failures == failures
    if value is None:
        assert (d.valid, d.reason) == (False, reason)
    else:
        assert d.valid and d.details["query_value"] == value


# fallback_test.go: more than failureThreshold (3) consecutive errors -> fallback replicas;
# an empty result is no error (with ignoreNullValues), so it never reaches the fallback.
FALLBACK = [("failed query x4 -> fallback", _failed, keda.REASON_FALLBACK, 4),
            ("empty result x4 -> no fallback", _empty, None, 0)]


@pytest.mark.parametrize("make,reason,failures", [c[1:] for c in FALLBACK],
                         ids=[c[0] for c in FALLBACK])
def test_only_failed_queries_count_toward_fallback(make, reason, failures):
    pol = make_policy("keda:threshold=10,fallback_replicas=10,fallback_failure_threshold=3",
                      bounds(), 15.0)
    st = pol.initial_state()
    for k in range(4):
        d, st = pol.decide(make(t_s=15.0 * (k + 1)), st, 15.0 * (k + 1))
    assert st.failures == failures
    if reason is None:
        assert d.reason != keda.REASON_FALLBACK and d.details["query_value"] == 0.0
    else:
        assert d.reason == reason and d.details["query_value"] == 100.0


def test_no_pod_up_is_a_known_count_at_zero_going_to_the_minimum():
    """No pod up: the arrival and the ready-count queries both answer no series; KEDA reads
    the count from the workload (0) and, below minReplicaCount, goes to it at once
    (scale_scaledobjects_test.go TestScaleToMinReplicasFromLowerInitialReplicaCount).
    Counterfactual: a failed ready-count query holds."""
    groups = frozenset({FIELD_ARRIVAL_RATE, FIELD_REPLICAS})
    pol = make_policy("keda", bounds(min_replicas=2), 15.0)
    none_up = snap(ready=0, desired=0, arrival_rate_rps=None, missing=groups, empty=groups)
    d, _ = pol.decide(none_up, pol.initial_state(), 30.0)
    assert (d.valid, d.replicas, d.reason) == (True, 2, REASON_AT_MIN)
    failed = none_up.with_(empty=frozenset())
    d, _ = pol.decide(failed, pol.initial_state(), 30.0)
    assert (d.valid, d.reason) == (False, REASON_HOLD_MISSING)


def test_empty_must_be_named_missing_too():
    """An empty group is a missing one too, so readers that ignore ``empty`` still hold."""
    with pytest.raises(ValueError, match="Snapshot.empty"):
        Snapshot(time_s=0.0, window_s=15.0, empty=ARRIVAL)
