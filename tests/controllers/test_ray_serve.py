"""Ray Serve baseline: look-back average, delays, smoothing, 0 -> 1 at once."""
from __future__ import annotations

import pytest

from trimtab.controllers.core.baselines import ray_serve
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.types import REASON_AT_MAX, REASON_STABILIZING
from tests.controllers.builders import bounds, run_loop, snap


def _ray(**params):
    spec = "ray" + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")
    return make_policy(spec, bounds(), 15.0)


def test_defaults():
    cfg = _ray().config
    assert (cfg.target_ongoing_requests, cfg.upscale_delay_s, cfg.downscale_delay_s,
            cfg.look_back_period_s, cfg.metrics_interval_s) == (2.0, 30.0, 600.0, 30.0, 10.0)


def test_waits_600s_of_consistent_downscale_decisions():
    pol = _ray()
    decisions, fleet = run_loop(pol, [dict(in_flight=2.0)] * 700, start_replicas=8)
    first_down = next(i for i, d in enumerate(decisions) if d.replicas < 8)
    # Decided from the first tick (t=1 s); acted once 600 s of the same decision had passed.
    assert first_down + 1 >= 600
    assert all(d.reason == REASON_STABILIZING for d in decisions[1:first_down])
    assert decisions[first_down].replicas == 1


def test_direction_change_resets_the_delay():
    pol = _ray()
    low, high = dict(in_flight=2.0), dict(in_flight=16.0)   # 8 replicas want 1, then 8
    load = [low] * 400 + [high] * 40 + [low] * 500
    decisions, fleet = run_loop(pol, load, start_replicas=8)
    assert fleet.events == 0      # neither run lasted its full delay (would act at 600 s)


def test_upscale_after_30s():
    pol = _ray()
    decisions, _ = run_loop(pol, [dict(in_flight=32.0)] * 60, start_replicas=4)
    first_up = next(i for i, d in enumerate(decisions) if d.replicas > 4)
    assert 29 <= first_up <= 31
    assert decisions[first_up].replicas == 16


@pytest.mark.parametrize("total,running,factor,expected", [
    (3.0, 4, 0.5, 3),     # 1 + (0.375 - 1) * 0.5 = 0.6875 -> ceil(2.75) = 3
    (5.0, 4, 0.1, 3),     # smoothed 0.9625 -> ceil(3.85) = 4 == running: stuck, step down by 1
    (16.0, 4, 1.0, 8),
], ids=["smoothed", "stuck-steps-down-one", "plain-up"])
def test_desired_replicas_smoothing(total, running, factor, expected):
    cfg = _ray(downscaling_factor=factor).config
    assert ray_serve.desired_replicas(total, running, cfg) == expected


def test_from_zero_scales_up_at_once():
    pol = make_policy("ray", bounds(min_replicas=0), 15.0)
    d, _ = pol.decide(snap(t_s=1, window_s=1, ready=0, desired=0, queue_depth=3.0, in_flight=0.0),
                      pol.initial_state(), 1.0)
    assert d.replicas == 1 and d.reason == ray_serve.REASON_FROM_ZERO


def _first_tick_at(decisions, count):
    return next(i + 1 for i, d in enumerate(decisions) if d.replicas == count)


# ray python/ray/serve/tests/unit/test_autoscaling_policy.py
# TestReplicaQueueLengthPolicy.test_upscale_downscale_delay[None|300] (_run_upscale_downscale_flow)
# and autoscaling_policy.py _apply_delay_logic: N -> 0 goes N -> 1 after downscale_delay_s,
# then 1 -> 0 after downscale_to_zero_delay_s (downscale_delay_s when unset), each timer
# starting on the tick after the last scale. The policy ticks every 1 s from t=1.
@pytest.mark.parametrize("params,to_one_s,to_zero_s", [
    ({}, 601, 602 + 600),                                    # today: 8 -> 0 at 601
    ({"downscale_to_zero_delay_s": 300}, 601, 602 + 300),
    ({"downscale_delay_s": 0, "downscale_to_zero_delay_s": 0}, 1, 2),  # test_scaling_factor_scale_down_to_0_replicas
], ids=["to-zero-delay-unset", "to-zero-delay-300", "no-delays-still-two-steps"])
def test_scale_to_zero_in_two_steps(params, to_one_s, to_zero_s):
    spec = "ray" + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")
    pol = make_policy(spec, bounds(min_replicas=0), 15.0)
    decisions, _ = run_loop(pol, [dict(in_flight=0.0, queue_depth=0.0)] * 1300,
                            start_replicas=8)
    assert _first_tick_at(decisions, 1) == to_one_s
    assert _first_tick_at(decisions, 0) == to_zero_s
    assert all(d.replicas >= 1 for d in decisions[:to_zero_s - 1])


def test_downscale_to_zero_delay_default_is_unset():
    # test_autoscaling_policy / test_deploy: "downscale_to_zero_delay_s": None by default.
    assert _ray().config.downscale_to_zero_delay_s is None


# test_autoscaling_policy.py TestReplicaQueueLengthPolicy.test_scaling_factor_scale_up_from_0_replicas
# and autoscaling_policy.py _get_cold_start_scale_up_replicas: from 0 running replicas with
# requests, max(ceil(1 * upscaling_factor), target), then the bounds (min 0 here).
@pytest.mark.parametrize("factor,max_replicas,expected,reason", [
    (10, 2, 2, REASON_AT_MAX),                   # 1 * 10 = 10, clamped to max 2 (today: 1)
    (10, 100, 10, ray_serve.REASON_FROM_ZERO),   # today: 1
    (0.5, 100, 1, ray_serve.REASON_FROM_ZERO),   # ceil(0.5) = 1
    (None, 100, 1, ray_serve.REASON_FROM_ZERO),  # no factor: smoothing_factor 1.0
], ids=["factor-10-max-2", "factor-10", "factor-0.5", "default"])
def test_first_scale_up_from_zero_uses_the_upscaling_factor(factor, max_replicas, expected,
                                                          reason):
    spec = "ray" if factor is None else f"ray:upscaling_factor={factor}"
    pol = make_policy(spec, bounds(min_replicas=0, max_replicas=max_replicas), 15.0)
    d, _ = pol.decide(snap(t_s=1, window_s=1, ready=0, desired=0, queue_depth=1.0, in_flight=0.0),
                      pol.initial_state(), 1.0)
    assert d.replicas == expected and d.reason == reason
