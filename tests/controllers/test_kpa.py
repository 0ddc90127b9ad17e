"""Knative KPA baseline: stable/panic windows, panic never scales down, rates, start in panic."""
from __future__ import annotations

import pytest

from trimtab.controllers.core.baselines import kpa
from trimtab.controllers.core.registry import make_policy
from tests.controllers.builders import bounds, run_loop, snap


def test_target_is_container_concurrency_times_utilisation():
    assert make_policy("kpa", bounds(concurrency_limit=10), 15.0).config.target_per_pod() == 7.0
    assert make_policy("kpa", bounds(concurrency_limit=None), 15.0).config.target_per_pod() \
        == pytest.approx(70.0)
    assert make_policy("kpa:target=20", bounds(), 15.0).config.target_per_pod() == 14.0


def test_ticks_every_2s():
    assert make_policy("kpa", bounds(), 15.0).interval_s == 2.0


def test_stable_mode_follows_the_60s_average():
    pol = make_policy("kpa:target=10", bounds(initial_replicas=1), 15.0)
    # 1 pod, concurrency 6 = 6/7 of target: stays 1.
    decisions, fleet = run_loop(pol, [dict(in_flight=6.0)] * 60, start_replicas=1)
    assert fleet.events == 0 and decisions[-1].replicas == 1


def test_panic_on_spike_and_never_scales_down_in_panic():
    pol = make_policy("kpa:target=10", bounds(initial_replicas=1), 15.0)
    load = [dict(in_flight=5.0)] * 40 + [dict(in_flight=70.0)] * 5 + [dict(in_flight=5.0)] * 40
    decisions, _ = run_loop(pol, load, start_replicas=1)
    panic = [i for i, d in enumerate(decisions) if d.reason == kpa.REASON_PANIC]
    assert panic and panic[0] == 40     # the first spiked tick: 70/7 = 10 pods >= 2x of 1
    in_panic = [decisions[i].replicas for i in panic]
    assert in_panic == sorted(in_panic)   # never decreases while in panic
    # Panic ends 60 s (30 ticks) after the last tick over the threshold.
    last_over = max(i for i in panic if decisions[i].details["panic_concurrency"] >= 14)
    assert all(d.reason != kpa.REASON_PANIC for d in decisions[last_over + 31:])


def test_scale_down_at_most_half_per_tick():
    pol = make_policy("kpa:target=10", bounds(initial_replicas=1), 15.0)
    state = pol.initial_state()
    # Not a fresh autoscaler with many pods: start with 1 pod, then 20 ready, load gone.
    d, state = pol.decide(snap(t_s=2, window_s=2, ready=1, in_flight=1.0), state, 2.0)
    d, state = pol.decide(snap(t_s=4, window_s=2, ready=20, in_flight=0.0), state, 4.0)
    assert d.replicas == 10              # floor(20 / 2), would be 1 without maxDown


def test_new_autoscaler_with_many_pods_starts_in_panic():
    pol = make_policy("kpa:target=10", bounds(initial_replicas=8), 15.0)
    decisions, _ = run_loop(pol, [dict(in_flight=0.0)] * 20, start_replicas=8)
    assert decisions[0].reason == kpa.REASON_PANIC
    assert all(d.replicas == 8 for d in decisions)   # lost history cannot scale it down
