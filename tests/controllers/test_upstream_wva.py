"""wva (llm-d's workload variant autoscaler, saturation mode) against its own tests and config.

llm-d/llm-d-workload-variant-autoscaler internal/saturation/analyzer_test.go (the analysis,
and CalculateSaturationTargets read for one variant), config/manager/
configmap-saturation-scaling.yaml and configmap.yaml (the defaults), constants.go.
"""
from __future__ import annotations

import pytest

from trimtab.controllers.core import registry
from trimtab.controllers.core.baselines import wva
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.types import REASON_SCALE_DOWN, REASON_SCALE_UP, REASON_STEADY
from tests.controllers.builders import bounds, snap


def _cfg(spec: str = "wva") -> wva.WvaConfig:
    return make_policy(spec, bounds(), 60.0).config


# TestAnalyzeModelSaturation_ScaleUp: (name, pods as (KV usage, queue), scale up)
SCALE_UP = [
    ("scale up due to low KV spare Saturation", [(0.75, 2), (0.76, 2)], True),
    ("scale up due to low queue spare Saturation", [(0.50, 3), (0.50, 3)], True),
    ("no scale up - healthy Saturation", [(0.50, 1), (0.50, 1)], False),
]


@pytest.mark.parametrize("pods,expected", [c[1:] for c in SCALE_UP], ids=[c[0] for c in SCALE_UP])
def test_scale_up(pods, expected):
    assert wva.analyze(pods, _cfg()).scale_up is expected


# TestAnalyzeModelSaturation_ScaleDownSafety
SCALE_DOWN = [
    ("scale down safe - adequate headroom", [(0.20, 1), (0.30, 1), (0.25, 1)], True),
    ("scale down unsafe - insufficient headroom", [(0.70, 2), (0.75, 2)], False),
    ("scale down unsafe - only one non-saturated replica", [(0.50, 2)], False),
]


@pytest.mark.parametrize("pods,expected", [c[1:] for c in SCALE_DOWN],
                         ids=[c[0] for c in SCALE_DOWN])
def test_scale_down_safety(pods, expected):
    assert wva.analyze(pods, _cfg()).scale_down_safe is expected


def test_saturated_replicas():
    # TestAnalyzeVariant_SaturatedReplicas: KV 0.85 (saturated), queue 6 (saturated), one not.
    a = wva.analyze([(0.85, 2), (0.50, 6), (0.60, 2)], _cfg())
    assert (a.replicas, a.non_saturated) == (3, 1)


def test_all_saturated():
    # TestAnalyzeModelSaturation_AllSaturated: no spare (0), scale up, scale-down unsafe.
    a = wva.analyze([(0.85, 2), (0.50, 6), (0.90, 7)], _cfg())
    assert (a.non_saturated, a.spare_kv, a.spare_queue) == (0, 0.0, 0.0)
    assert a.scale_up and not a.scale_down_safe


def test_empty_metrics():
    # TestAnalyzeModelSaturation_EmptyMetrics: nothing to analyse; the target is the current.
    a = wva.analyze([], _cfg())
    assert a.replicas == 0 and not a.scale_down_safe
    assert wva.target(a, 3, 0) == (3, wva.REASON_NO_DATA)


# CalculateSaturationTargets, one variant: (name, pods reporting, pods, desired, up, down, target)
TARGETS = [
    # ScaleUpCheapest: current 2, desired 0, scale up: ready + 1.
    ("ScaleUpCheapest", 2, 2, 0, True, False, 3),
    # ScaleDownMostExpensive: scale-down safe: ready - 1.
    ("ScaleDownMostExpensive", 2, 2, 0, False, True, 1),
    # ModelLevelTransitionBlocking: desired 4 != current 2: 4 is kept.
    ("ModelLevelTransitionBlocking", 2, 2, 4, True, False, 4),
    # MetricsMismatchBlocksScaling: 2 report metrics of 3 pods: the current count.
    ("MetricsMismatchBlocksScaling", 2, 3, 0, True, False, 3),
    # "baseTarget <= 1: skip": never below one replica by scale-down.
    ("scale down never below 1", 1, 1, 0, False, True, 1),
]


@pytest.mark.parametrize("reporting,current,desired,up,down,expected",
                         [c[1:] for c in TARGETS], ids=[c[0] for c in TARGETS])
def test_calculate_saturation_targets(reporting, current, desired, up, down, expected):
    a = wva.Analysis(reporting, reporting, 0.2, 3.0, up, down)
    assert wva.target(a, current, desired)[0] == expected


def test_defaults():
    # configmap-saturation-scaling.yaml default; configmap.yaml GLOBAL_OPT_INTERVAL 60s;
    # saturation.go max_over_time(...[1m]).
    pol = make_policy("wva", bounds(), 15.0)
    c = pol.config
    assert (c.kv_cache_threshold, c.queue_length_threshold) == (0.80, 5.0)
    assert (c.kv_spare_trigger, c.queue_spare_trigger, c.lookback_s) == (0.1, 3.0, 60.0)
    assert pol.interval_s == 60.0


def test_one_step_per_run_and_none_while_a_pod_starts():
    pol = make_policy("wva", bounds(max_replicas=16), 60.0)
    s0 = pol.initial_state()
    # 4 ready pods at 0.9 KV: every pod saturated: 4 + 1 = 5.
    d, s1 = pol.decide(snap(t_s=60, ready=4, kv_cache_usage_ratio=0.9, engine_waiting=0.0),
                       s0, 60.0)
    assert (d.replicas, d.reason) == (5, REASON_SCALE_UP)
    # The fifth is starting: in transition, no further step.
    d, _ = pol.decide(snap(t_s=120, ready=4, starting=1, kv_cache_usage_ratio=0.9,
                           engine_waiting=0.0), s1, 120.0)
    assert (d.replicas, d.reason) == (5, wva.REASON_TRANSITION)


def test_the_one_minute_peak_and_the_queue_share():
    pol = make_policy("wva", bounds(max_replicas=16), 60.0)
    # A 0.9 peak 30 s ago is still inside max_over_time[1m]: scale up at a quiet 0.2.
    _, st = pol.decide(snap(t_s=30, ready=3, kv_cache_usage_ratio=0.9, engine_waiting=0.0),
                       pol.initial_state(), 30.0)
    d, _ = pol.decide(snap(t_s=60, ready=3, kv_cache_usage_ratio=0.2, engine_waiting=0.0),
                      st, 60.0)
    assert d.replicas == 4
    # 9 waiting over 3 pods is 3 each: spare queue 2 < 3: scale up.
    d, _ = pol.decide(snap(t_s=60, ready=3, kv_cache_usage_ratio=0.2, engine_waiting=9.0),
                      pol.initial_state(), 60.0)
    assert d.replicas == 4
    # Quiet: 3 pods at 0.2 and no queue: safe to remove one.
    d, _ = pol.decide(snap(t_s=60, ready=3, kv_cache_usage_ratio=0.2, engine_waiting=0.0),
                      pol.initial_state(), 60.0)
    assert (d.replicas, d.reason) == (2, REASON_SCALE_DOWN)
    d, _ = pol.decide(snap(t_s=60, ready=2, kv_cache_usage_ratio=0.5, engine_waiting=0.0),
                      pol.initial_state(), 60.0)
    assert (d.replicas, d.reason) == (2, REASON_STEADY)


def test_registered_llm_only_with_a_sweep():
    from trimtab.controllers.core.sweep import SWEEPS

    registry.load_builtin_policies()
    assert "wva" in registry.LLM_ONLY
    assert "wva:kv_cache_threshold=0.8" in SWEEPS["wva"]
