"""aibrix-kpa and aibrix-apa against vllm-project/aibrix's own tests and samples.

pkg/controller/podautoscaler/algorithm/kpa_test.go and apa_test.go (computeTargetReplicas),
types/metrics_test.go TestTimeWindow, metrics/client_test.go TestUpdateMetrics,
context/context.go NewBaseScalingContext (defaults), samples/autoscaling/kpa.yaml and apa.yaml
(gpu_cache_usage_perc, targetValue 0.5), podautoscaler_controller.go (stabilizeRecommendation,
DefaultResyncInterval). ActivationScale (kpa_test.go activation_scale_from_zero) is not
modelled, so that case is absent.
"""
from __future__ import annotations

import pytest

from trimtab.controllers.core import registry
from trimtab.controllers.core.baselines import aibrix
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.spec import SpecError
from trimtab.controllers.core.types import FIELD_LLM, REASON_HOLD_MISSING
from tests.controllers.builders import bounds, snap


def _cfg(spec: str = "aibrix-kpa", **kw) -> aibrix.AibrixConfig:
    return make_policy(spec, bounds(min_replicas=0, max_replicas=kw.pop("max_r", 10), **kw),
                       10.0).config


# kpa_test.go TestKPAAlgorithm_ComputeTargetReplicas: (name, pods, stable, panic, in panic,
# MaxPanicPods, MaxScaleUpRate, expected); target 10, MaxScaleDownRate 2, tolerance 0
# (the mock's zero values), max replicas 10 or 20.
KPA_CASES = [
    ("stable_mode_basic_scaling", 2, 20.0, 20.0, False, 0, 2.0, 2),
    ("panic_mode_scaling_up", 2, 30.0, 40.0, True, 2, 2.0, 4),
    ("panic_mode_no_scale_down", 5, 20.0, 20.0, True, 5, 2.0, 5),
    ("scale_to_zero", 1, 0.0, 0.0, False, 0, 2.0, 0),
    ("max_scale_up_rate_limit", 2, 100.0, 100.0, False, 0, 1.5, 3),
    ("max_scale_down_rate_limit", 4, 5.0, 5.0, False, 0, 2.0, 2),
]


@pytest.mark.parametrize("pods,stable,panic,in_panic,max_panic,up_rate,expected",
                         [c[1:] for c in KPA_CASES], ids=[c[0] for c in KPA_CASES])
def test_kpa_compute_target_replicas(pods, stable, panic, in_panic, max_panic, up_rate,
                                     expected):
    cfg = _cfg(f"aibrix-kpa:target=10,up_tolerance=0,down_tolerance=0,"
               f"max_scale_up_rate={up_rate}", max_r=20)
    assert aibrix.kpa_want(pods, stable, panic, in_panic, cfg, max_panic) == expected


@pytest.mark.parametrize("stable,panic,expected", [(0.0, 0.0, True), (10.0, 20.0, False),
                                                   (10.0, 20.5, True)],
                         ids=["stable 0", "ratio 2 (not above)", "ratio 2.05"])
def test_kpa_should_enter_panic_mode(stable, panic, expected):
    # kpa.go shouldEnterPanicMode: StableValue <= 0, or PanicValue / StableValue > 2.0.
    assert aibrix.kpa_in_panic(stable, panic, _cfg()) is expected


# apa_test.go TestAPAAlgorithm_ComputeTargetReplicas: (name, pods, per pod, MaxScaleUpRate,
# MaxScaleDownRate, expected); target 30, tolerances 0.1.
APA_CASES = [
    ("basic_scale_up", 2, 45.0, 2, 2, 3),
    ("scale_up_upto_ceiling", 2, 35.0, 2, 2, 3),
    ("scale_up_upto_max_scale_up", 2, 90.0, 2, 2, 4),
    ("scale_up_upto_max_scale_up_ceiling", 2, 90.0, 2.5, 2, 5),
    ("basic_scale_down", 6, 20.0, 2, 2, 4),
    ("scale_down_upto_ceiling", 6, 18.0, 2, 2, 4),
    ("scale_down_upto_max_scale_down", 6, 10.0, 2, 2, 3),
    ("scale_down_upto_max_scale_down_floor", 6, 5.0, 2, 2.5, 2),
    ("no_scaling_as_within_up_tolerance", 2, 33.0, 2, 2, 2),
    ("no_scaling_as_within_down_tolerance", 2, 27.0, 2, 2, 2),
]


@pytest.mark.parametrize("pods,use,up_rate,down_rate,expected", [c[1:] for c in APA_CASES],
                         ids=[c[0] for c in APA_CASES])
def test_apa_compute_target_replicas(pods, use, up_rate, down_rate, expected):
    cfg = _cfg(f"aibrix-apa:target=30,max_scale_up_rate={up_rate},"
               f"max_scale_down_rate={down_rate}")
    assert aibrix.apa_want(pods, use, cfg) == expected


def test_a_zero_target_is_refused():
    # apa_test.go division_by_zero: upstream logs "expectedUse (TargetValue) must be > 0" and
    # keeps the count; here the spec itself is refused, naming the parameter.
    with pytest.raises(SpecError, match="target"):
        _cfg("aibrix-apa:target=0")


def test_time_window():
    # metrics_test.go TestTimeWindow: a 2 min window of 1 min buckets.
    w: aibrix.Buckets = ()
    seen = []
    for t, v in [(0, 10), (30, 20), (60, 30), (90, 40), (120, 50), (150, 60), (180, 70),
                 (210, 80)]:
        w = aibrix.record(w, float(t), float(v), 120.0, granularity_s=60.0)
        seen.append([x for _, x in w])
    assert seen == [[10], [20], [20, 30], [20, 40], [20, 40, 50], [20, 40, 60], [40, 60, 70],
                    [40, 60, 80]]
    assert aibrix.average(()) == 0.0       # Avg of an empty window is 0, no error


def test_the_recorded_value_is_the_pods_mean():
    # client_test.go TestUpdateMetrics: pods at 30 and 50 record 40 in both windows. The
    # snapshot's KV-cache usage is that mean; aggregate=sum multiplies it by the ready pods.
    s = snap(ready=2, kv_cache_usage_ratio=0.4)
    assert aibrix.pod_value(s, _cfg()) == 0.4
    assert aibrix.pod_value(s, _cfg("aibrix-kpa:aggregate=sum")) == 0.8


def test_defaults():
    # context.go NewBaseScalingContext, metrics/client.go windows, samples' targetValue 0.5,
    # the controller's 10 s resync.
    pol = make_policy("aibrix-kpa", bounds(), 15.0)
    c = pol.config
    assert (c.strategy, c.target, c.aggregate) == ("kpa", 0.5, "mean")
    assert (c.stable_window_s, c.panic_window_s, c.panic_threshold) == (180.0, 60.0, 2.0)
    assert (c.max_scale_up_rate, c.max_scale_down_rate) == (2.0, 2.0)
    assert (c.up_tolerance, c.down_tolerance) == (0.1, 0.1)
    assert (c.scale_up_cooldown_s, c.scale_down_cooldown_s) == (0.0, 300.0)
    assert pol.interval_s == 10.0
    assert make_policy("aibrix-apa", bounds(), 15.0).config.strategy == "apa"


def test_stabilize_picks_the_highest_up_and_the_lowest_down():
    # stabilizeRecommendation: up window 0 s (the recommendation itself), down window 300 s,
    # the minimum of the recommendations strictly after now - 300 s.
    cfg = _cfg()
    n, h = aibrix.stabilize(2, 4, (), 0.0, cfg)
    assert n == 2
    n, h = aibrix.stabilize(5, 2, h, 100.0, cfg)
    assert n == 5
    n, h = aibrix.stabilize(3, 5, h, 200.0, cfg)
    assert n == 2                          # 2 (t=0) is still inside the 300 s window
    n, h = aibrix.stabilize(3, 5, h, 300.0, cfg)
    assert n == 3                          # t=0 is no longer strictly after 300 - 300


def test_kpa_at_its_defaults_never_wants_more_than_two_pods_on_kv_usage():
    # The mean over pods divided by 0.5: at most ceil(1.0 / 0.5) = 2, however many pods;
    # from 8 the scale-down rate halves the count each resync: 4, 2, then 2 holds.
    pol = make_policy("aibrix-kpa", bounds(max_replicas=16), 10.0)
    state, n, seen = pol.initial_state(), 8, []
    for t in range(10, 60, 10):
        d, state = pol.decide(snap(t_s=t, window_s=10, ready=n, kv_cache_usage_ratio=1.0),
                              state, float(t))
        n = d.replicas
        seen.append(n)
    assert seen == [4, 2, 2, 2, 2] and d.details["recommended"] == 2.0


def test_apa_scales_on_kv_usage_and_cools_down():
    # 4 pods at 0.9 against 0.5: ceil(4 x 1.8) = 8 (at most 2 x 4); then load falls to 0.1.
    pol = make_policy("aibrix-apa", bounds(max_replicas=16), 10.0)
    state = pol.initial_state()
    d, state = pol.decide(snap(t_s=10, window_s=10, ready=4, kv_cache_usage_ratio=0.9), state,
                          10.0)
    assert d.replicas == 8
    for t in range(20, 400, 10):
        d, state = pol.decide(snap(t_s=t, window_s=10, ready=8, kv_cache_usage_ratio=0.1),
                              state, float(t))
    assert d.replicas < 8


def test_holds_on_an_unread_llm_group_and_without_ready_pods():
    pol = make_policy("aibrix-apa", bounds(), 10.0)
    d, _ = pol.decide(snap(ready=3, missing=frozenset({FIELD_LLM})), pol.initial_state(), 10.0)
    assert not d.valid and d.reason == REASON_HOLD_MISSING
    d, _ = pol.decide(snap(ready=0, starting=2, kv_cache_usage_ratio=None, engine_waiting=0.0),
                      pol.initial_state(), 10.0)
    assert not d.valid and d.replicas == 2 and d.reason == aibrix.REASON_NO_DATA


def test_registered_llm_only_with_sweeps():
    from trimtab.controllers.core.sweep import SWEEPS

    registry.load_builtin_policies()
    for name in ("aibrix-kpa", "aibrix-apa"):
        assert name in registry.LLM_ONLY and name in registry.known_policies()
        assert f"{name}:target=0.5" in SWEEPS[name]
