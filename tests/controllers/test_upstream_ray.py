"""Ray Serve baseline against ray python/ray/serve/tests/unit/test_autoscaling_policy.py.

Each case replays one upstream test through ``ray_serve.step`` (the wrapped default policy:
cold start, scaling factors, delays) with the bounds applied after it, as Ray's
autoscaling_state does. ``target`` is Ray's target_num_replicas and ``running`` its
current_num_replicas; ``total`` is total_num_requests.
"""
from __future__ import annotations

import pytest

from trimtab.controllers.core.baselines import ray_serve
from trimtab.controllers.core.guards import clamp
from trimtab.controllers.core.registry import make_policy
from tests.controllers.builders import bounds


def _config(min_r=0, max_r=1000, **params) -> ray_serve.RayConfig:
    spec = "ray" + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")
    return make_policy(spec, bounds(min_replicas=min_r, max_replicas=max_r), 1.0).config


class Policy:
    """The policy state Ray keeps between calls, and one call at a given time."""

    def __init__(self, config: ray_serve.RayConfig) -> None:
        self.config, self.direction, self.since_s = config, 0, 0.0

    def __call__(self, now_s: float, total: float, running: int, target: int) -> int:
        n, _, self.direction, self.since_s = ray_serve.step(
            total, total > 0, running, target, self.direction, self.since_s, now_s, self.config)
        b = self.config.bounds
        return clamp(n, b.min_replicas, b.max_replicas)[0]


def test_scaling_factor_scale_down_to_0_replicas():
    # TestReplicaQueueLengthPolicy.test_scaling_factor_scale_down_to_0_replicas:
    # downscaling factor 10, no delays: 5 -> 1 first, then 1 -> 0; with factor 0.2 it must
    # not get stuck above zero: five calls from 5 reach 0.
    pol = Policy(_config(max_r=5, downscaling_factor=10, upscale_delay_s=0, downscale_delay_s=0))
    assert pol(0.0, 0, 5, 5) == 1
    assert pol(0.1, 0, 1, 1) == 0
    pol = Policy(_config(max_r=5, downscaling_factor=0.2, upscale_delay_s=0,
                         downscale_delay_s=0))
    n = 5
    for i in range(5):
        n = pol(0.1 * i, 0, n, n)
    assert n == 0


def test_replicas_delayed_startup():
    # test_replicas_delayed_startup: upscale delay 0, downscale delay 100000, target 1 per
    # replica; replicas start slowly, the target only grows, and never drops in the delay.
    pol = Policy(_config(min_r=1, max_r=200, target_ongoing_requests=1, upscale_delay_s=0,
                         downscale_delay_s=100000))
    assert pol(0.0, 100, 1, 1) == 100
    assert pol(0.1, 100, 1, 100) == 100      # no new replica ready yet
    assert pol(0.2, 123, 3, 100) == 123      # two more ready
    assert pol(0.3, 10, 4, 123) == 123       # drained, but the downscale delay holds


@pytest.mark.parametrize("delay_s,up,down", [(30.0, 1, 2), (0.0, 2, 1)],
                         ids=["delay-30", "delay-0"])
def test_fluctuating_ongoing_requests(delay_s, up, down):
    # test_fluctuating_ongoing_requests: target 50, alternating 100 (at 1 replica) and 40
    # (at 2): with 30 s delays nothing moves, with none it follows every call.
    pol = Policy(_config(min_r=1, max_r=10, target_ongoing_requests=50,
                         upscale_delay_s=delay_s, downscale_delay_s=delay_s))
    for trial in range(200):
        t = trial * 0.1
        if trial % 2 == 0:
            assert pol(t, 100, 1, 1) == up, trial
        else:
            assert pol(t, 40, 2, 2) == down, trial


@pytest.mark.parametrize("ongoing,expected", [(20, 4), (100, 20), (10, 2)])
def test_single_replica_receives_all_requests(ongoing, expected):
    # test_single_replica_receives_all_requests: target 5, 4 replicas, no delays:
    # desired = total / 5 however the requests are spread.
    pol = Policy(_config(min_r=1, max_r=50, target_ongoing_requests=5, upscale_delay_s=0,
                         downscale_delay_s=0))
    assert pol(0.0, ongoing, 4, 4) == expected


@pytest.mark.parametrize("running,total,up,down,expected", [
    (10, 40, 0.5, None, 15),   # test_apply_scaling_factors_upscale: 10 + 0.5 * (20 - 10)
    (20, 10, None, 0.5, 13),   # ..._downscale: ceil(20 - 0.5 * (20 - 5)) = ceil(12.5)
    (10, 18, None, 0.5, 9),    # ..._stuck_downscale: ceil(9.5) = 10 == current: step to 9
    (1, 6, 0.5, None, 2),      # TestCustomPolicyWithDefaultParameters.test_apply_scaling_factors
    (1, 6, 1.0, None, 3),
    (3, 0, None, 0.5, 2),      # ceil(3 + 0.5 * (0 - 3)) = ceil(1.5)
], ids=["upscale", "downscale", "stuck-downscale", "custom-up-0.5", "custom-up-1.0",
        "custom-down-0.5"])
def test_apply_scaling_factors(running, total, up, down, expected):
    params = {k: v for k, v in dict(upscaling_factor=up, downscaling_factor=down).items()
              if v is not None}
    cfg = _config(**params)
    assert ray_serve.desired_replicas(total, running, cfg) == expected


def test_apply_delay_logic_upscale():
    # test_apply_delay_logic_upscale: upscale_delay_s 0.3 measured in wall-clock seconds.
    pol = Policy(_config(min_r=1, max_r=10, upscale_delay_s=0.3))
    for i in range(3):
        assert pol(1000 + 0.05 * i, 10, 1, 1) == 1
    assert pol(1000.31, 10, 1, 1) == 5


def test_apply_delay_logic_downscale():
    # test_apply_delay_logic_downscale: 4 -> 1 after downscale_delay_s 0.3, then 1 -> 0
    # after downscale_to_zero_delay_s 0.4.
    pol = Policy(_config(min_r=0, max_r=10, downscale_delay_s=0.3,
                         downscale_to_zero_delay_s=0.4))
    for i in range(3):
        assert pol(1000 + 0.05 * i, 0, 4, 4) == 4
    assert pol(1000.31, 0, 4, 4) == 1
    for i in range(3):
        assert pol(1000.5 + 0.1 * i, 0, 1, 1) == 1
    assert pol(1000.91, 0, 1, 1) == 0


def test_upscale_downscale_flow():
    # TestReplicaQueueLengthPolicy.test_upscale_downscale_delay (_run_upscale_downscale_flow),
    # 0.1 s ticks: 0 -> 1 at once; 1 -> 2 after 30 s of scale-up decisions; 2 -> 1 after
    # 600 s; 1 -> 0 after another 600 s; an interrupting decision resets the count.
    pol = Policy(_config(min_r=0, max_r=2, target_ongoing_requests=1))
    t = 0.0
    assert pol(t, 1, 0, 0) == 1

    def run(n, total, running, target):
        nonlocal t
        out = []
        for _ in range(n):
            t = round(t + 0.1, 6)
            out.append(pol(t, total, running, target))
        return out

    assert set(run(300, 2, 1, 1)) == {1} and run(1, 2, 1, 1) == [2]
    assert set(run(6000, 0, 2, 2)) == {2} and run(1, 0, 2, 2) == [1]
    assert set(run(6000, 0, 1, 1)) == {1} and run(1, 0, 1, 1) == [0]
    run(150, 2, 1, 1)               # half the scale-up delay ...
    run(1, 0, 1, 1)                 # ... interrupted by a scale-down decision
    assert set(run(300, 2, 1, 1)) == {1} and run(1, 2, 1, 1) == [2]


def test_shipped_defaults():
    # ray/serve/config.py AutoscalingConfig and test_deploy's `num_replicas="auto"` defaults.
    c = _config()
    assert (c.target_ongoing_requests, c.look_back_period_s, c.metrics_interval_s,
            c.upscale_delay_s, c.downscale_delay_s, c.downscale_to_zero_delay_s,
            c.smoothing_factor, c.upscaling_factor, c.downscaling_factor) == (
        2.0, 30.0, 10.0, 30.0, 600.0, None, 1.0, None, None)
