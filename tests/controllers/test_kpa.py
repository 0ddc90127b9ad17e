"""Knative KPA baseline: stable/panic windows, panic never scales down, rates, start in panic."""
from __future__ import annotations

import functools

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


def _tick(pol, state, t_s, in_flight, ready=1, window_s=2.0):
    s = snap(t_s=t_s, window_s=window_s, ready=ready, desired=ready, in_flight=in_flight,
             queue_depth=0.0)
    return pol.decide(s, state, t_s)


def test_leaves_panic_only_once_strictly_more_than_a_stable_window_has_passed():
    # knative/serving pkg/autoscaler/scaling/autoscaler_test.go TestAutoscalerUnpanicAfterSlowIncrease
    # (panic still on at panicTime + stableWindow, off at + stableWindow + tickInterval):
    # autoscaler.go un-panics when panicTime.Add(StableWindow).Before(now).
    pol = make_policy("kpa:target=10", bounds(initial_replicas=1), 15.0)
    state = pol.initial_state()
    load = {2: 70.0, 4: 70.0, 6: 70.0}          # then nothing; 1 ready pod, target 7
    reasons = {}
    for t in range(2, 80, 2):
        d, state = _tick(pol, state, float(t), load.get(t, 0.0))
        reasons[t] = d.reason
    # Panic-window means: t=10 sees (70, 0, 0) / 3 = 23.3 -> 4 pods >= 2x of 1: last over.
    assert reasons[10] == kpa.REASON_PANIC and reasons[12] == kpa.REASON_PANIC
    assert reasons[70] == kpa.REASON_PANIC      # exactly 60 s after: still panicking (today: off)
    assert reasons[72] != kpa.REASON_PANIC      # 62 s after: stable mode


# knative/serving autoscaler_test.go TestAutoscalerScaleDownDelay ("simple" then "gradual"):
# TargetValue 10, MaxScaleUp/DownRate 10, PanicThreshold 100 (10000 %), delay 5 min; the
# test sets stable = panic concurrency, here a 6 s stable window with a panic window of 100 %.
_DELAY_STEPS = [(2, 40.0, 4),      # scale up to 40 / 10
                (300, 0.0, 4),     # 298 s at zero: less than the 5 min delay, stay
                (302, 0.0, 0),     # the 4 at t=2 has scrolled out of the 300 s window
                (540, 40.0, 4),
                (600, 30.0, 4),    # 4 still dominates
                (660, 0.0, 4),
                (840, 0.0, 3),     # the 4 scrolls out, the 3 at 600 s remains
                (900, 0.0, 0)]     # everything scrolled out


@functools.cache
def _scale_down_delay_run() -> dict[int, int]:
    pol = make_policy("kpa:target=10,target_utilization=1,max_scale_up_rate=10,"
                      "max_scale_down_rate=10,panic_threshold_pct=10000,"
                      "stable_window_s=6,panic_window_pct=100,scale_down_delay_s=300",
                      bounds(min_replicas=0, initial_replicas=0), 15.0)
    state, out = pol.initial_state(), {}
    for t, concurrency, _ in _DELAY_STEPS:
        d, state = _tick(pol, state, float(t), concurrency, ready=0, window_s=6.0)
        out[t] = d.replicas
    return out


@pytest.mark.parametrize("t_s,concurrency,expected", _DELAY_STEPS,
                         ids=[f"t={t}" for t, _, _ in _DELAY_STEPS])
def test_scale_down_delay_window(t_s, concurrency, expected):
    assert _scale_down_delay_run()[t_s] == expected


def test_scale_down_delay_defaults_to_zero():
    # knative/serving config/core/configmaps/autoscaler.yaml: scale-down-delay "0s";
    # autoscaler_test.go TestAutoscalerScaleDownDelayZero: with no delay, down at once.
    assert make_policy("kpa", bounds(), 15.0).config.scale_down_delay_s == 0.0
