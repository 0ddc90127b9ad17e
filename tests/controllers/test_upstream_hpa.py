"""Kubernetes HPA baseline against kubernetes pkg/controller/podautoscaler/replica_calculator_test.go.

Each case is one upstream test run through ``hpa.per_pod_replicas`` (calcPlainMetricReplicas).
CPU cases use requests of 1000m per pod, so a target of T % is a per-pod target of 10*T m;
they are taken only where the CPU path and the plain-metric path agree (no missing pods, or
a 100 % target, where "100 % of the request" and "the target" are the same value).
Pods: ``ready`` report the metric (for a custom metric a Running but not Ready pod that
reports counts here: TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale), ``unready`` are
Pending or CPU-unready, ``missing`` are Running without a sample; failed and deleted pods
are not passed at all.
"""
from __future__ import annotations

import pytest

from trimtab.controllers.core.baselines import hpa

# (upstream test, sum over ready pods, ready, unready, missing, current, per-pod target, expected)
CASES = [
    ("TestReplicaCalcScaleUp", 300 + 500 + 700, 3, 0, 0, 3, 300, 5),
    # 1 unready pod counted at 0 on the way up: 1200 / 3 / 300 = 1.33 -> 4 (would be 4 of 2 -> 4).
    ("TestReplicaCalcScaleUpUnreadyLessScale", 500 + 700, 2, 1, 0, 3, 300, 4),
    # 400 / 3 / 300 = 0.44 flips the direction: keep 3 (would be 2 of 1 -> 2).
    ("TestReplicaCalcScaleUpUnreadyNoScale", 400, 1, 2, 0, 3, 300, 3),
    ("TestReplicaCalcScaleUpIgnoresFailedPods", 500 + 700, 2, 0, 0, 2, 300, 4),
    ("TestReplicaCalcScaleUpIgnoresDeletionPods", 500 + 700, 2, 0, 0, 2, 300, 4),
    ("TestReplicaCalcScaleUpCM", 20000 + 10000 + 30000, 3, 0, 0, 3, 15000, 4),
    # Custom metric: the not-Ready pod reports, so it counts: 90000 / 15000 = 6.
    ("TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale", 50000 + 10000 + 30000, 3, 0, 0, 3,
     15000, 6),
    ("TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown", 50000 + 15000 + 30000, 3, 0,
     0, 3, 15000, 7),
    ("TestReplicaCalcScaleDown", 100 + 300 + 500 + 250 + 250, 5, 0, 0, 5, 500, 3),
    ("TestReplicaCalcScaleDownCM", 5 * 12000, 5, 0, 0, 5, 20000, 3),
    # Scaling down, unready pods are left out: ceil(0.6 * 3) = 2.
    ("TestReplicaCalcScaleDownIncludeUnreadyPods", 100 + 300 + 500, 3, 2, 0, 5, 500, 2),
    ("TestReplicaCalcScaleDownExcludeUnscheduledPods", 100, 1, 4, 0, 5, 500, 1),
    ("TestReplicaCalcScaleDownIgnoresFailedPods", 100 + 300 + 500 + 250 + 250, 5, 0, 0, 5,
     500, 3),
    ("TestReplicaCalcTolerance", 1010 + 1030 + 1020, 3, 0, 0, 3, 1020, 3),
    ("TestReplicaCalcToleranceCM", 20000 + 21000 + 21000, 3, 0, 0, 3, 20000, 3),
    # 2 pods missing, scaling down: counted at the target, (495 + 2000) / 4 / 1000 -> 3
    # (would be 1 if they were left out).
    ("TestReplicaCalcMissingMetrics", 400 + 95, 2, 0, 2, 4, 1000, 3),
    ("TestReplicaCalcMissingMetricsNoChangeEq", 1000, 1, 0, 1, 2, 1000, 2),
    # Scaling up with 1 missing pod at 0: 1900 / 2 = 950, within tolerance (would be 2 -> 2).
    ("TestReplicaCalcMissingMetricsNoChangeGt", 1900, 1, 0, 1, 2, 1000, 2),
    ("TestReplicaCalcMissingMetricsNoChangeLt", 600, 1, 0, 1, 2, 1000, 2),
    # 1 unready and 1 missing, both at 0 on the way up: 2000 / 3 / 500 -> 4 (would be 4 of 1).
    ("TestReplicaCalcMissingMetricsUnreadyScaleUp", 2000, 1, 1, 1, 3, 500, 4),
]


@pytest.mark.parametrize("total,ready,unready,missing,current,target,expected",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_replica_calculator(total, ready, unready, missing, current, target, expected):
    got, _ = hpa.per_pod_replicas(total, ready, unready, current, target, 0.1, missing=missing)
    assert got == expected


# replica_calculator_test.go external per-pod (AverageValue) cases, the path KEDA's metric
# takes: desired = ceil(value / per-pod target) unless within tolerance of the status count.
@pytest.mark.parametrize("value,target,status,expected", [
    (8600, 2150, 3, 4),      # TestReplicaCalcScaleUpPerPodCMExternal
    (8600, 2867, 5, 3),      # TestReplicaCalcScaleDownPerPodCMExternal
    (8600, 2900, 3, 3),      # TestReplicaCalcTolerancePerPodCMExternal (0.99: within 10 %)
], ids=["TestReplicaCalcScaleUpPerPodCMExternal", "TestReplicaCalcScaleDownPerPodCMExternal",
        "TestReplicaCalcTolerancePerPodCMExternal"])
def test_external_per_pod(value, target, status, expected):
    assert hpa.external_per_pod_replicas(value, target, status, status, 0.1)[0] == expected


def test_shipped_defaults():
    # horizontal.go / pkg/apis/autoscaling defaults: tolerance 0.1, scale-up window 0 with
    # max(+100 %, +4 pods) per 15 s, scale-down window 300 s with -100 % per 15 s, sync 15 s.
    from tests.controllers.builders import bounds
    from trimtab.controllers.core.registry import make_policy
    pol = make_policy("hpa", bounds(), 15.0)
    c = pol.config
    assert (c.tolerance, c.up_window_s, c.up_percent, c.up_pods, c.up_period_s,
            c.down_window_s, c.down_percent, c.down_period_s) == (
        0.1, 0.0, 100.0, 4, 15.0, 300.0, 100.0, 15.0)
    assert pol.interval_s == 15.0
