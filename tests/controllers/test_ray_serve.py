"""Ray Serve baseline: look-back average, delays, smoothing, 0 -> 1 at once."""
from __future__ import annotations

import pytest

from trimtab.controllers.core.baselines import ray_serve
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.types import REASON_STABILIZING
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
