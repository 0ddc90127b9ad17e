"""Knative KPA baseline against knative/serving pkg/autoscaler/scaling/autoscaler_test.go.

Each case replays one upstream test through ``kpa.scale``, the decider step that takes the
stable and panic concurrency as Knative's metric client hands them over. The upstream helper
newTestAutoscaler(target, tbc) means TargetValue = target (already after utilisation),
PanicThreshold 2 (200 %), MaxScaleUpRate 10, MaxScaleDownRate 10, stable window 60 s, and
one ready pod when the autoscaler is built (so it does not start in panic).
"""
from __future__ import annotations

import pytest

from trimtab.controllers.core.baselines import kpa
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.types import FIELD_IN_FLIGHT
from tests.controllers.builders import bounds, snap

# (seconds after start, ready pods, stable concurrency, panic concurrency, expected count)
Step = tuple[float, int, float, float, int]


def _config(target: float, **extra: object) -> kpa.KpaConfig:
    params: dict[str, object] = dict(target=target, target_utilization=1,
                                     max_scale_up_rate=10, max_scale_down_rate=10)
    params.update(extra)
    spec = "kpa:" + ",".join(f"{k}={v}" for k, v in params.items())
    return make_policy(spec, bounds(min_replicas=0, max_replicas=10_000), 15.0).config


def _run(config: kpa.KpaConfig, steps: list[Step], state: kpa.KpaState | None = None,
         built_with_ready: int = 1) -> list[int]:
    state = state or kpa.begin(kpa.KpaState(), built_with_ready, 0.0)
    out = []
    for t_s, ready, stable, panic, _ in steps:
        want, _, state = kpa.scale(stable, panic, ready, ready, state, t_s, config)
        out.append(want)
    return out


CASES: list[tuple[str, float, dict, list[Step]]] = [
    ("TestAutoscalerStableModeIncreaseWithConcurrencyDefault", 10, {},
     [(0, 1, 50, 10, 5), (0, 1, 100, 10, 10)]),
    ("TestAutoscalerStableModeDecrease", 10, {},
     [(0, 8, 100, 100, 10), (0, 8, 50, 50, 5)]),
    ("TestAutoscalerStableModeNoTrafficScaleToZero", 10, {},
     [(0, 1, 1, 0, 1), (0, 1, 0, 0, 0)]),
    ("TestAutoscalerScale/AutoscalerStableModeNoChange", 10, {}, [(0, 1, 50, 50, 5)]),
    ("TestAutoscalerScale/AutoscalerStableModeNoChangeAlreadyScaled", 10, {},
     [(0, 5, 50, 50, 5)]),
    # maxScaleUp = ceil(1.1 * 2) = 3 lets it grow by at least one pod.
    ("TestAutoscalerScale/AutoscalerStableModeIncreaseWithSmallScaleUpRate", 1,
     {"max_scale_up_rate": 1.1}, [(0, 2, 3, 3.1, 3)]),
    # maxScaleDown = floor(100 / 1.1) = 90 (would be 1 without it).
    ("TestAutoscalerScale/AutoscalerStableModeDecreaseWithSmallScaleDownRate", 10,
     {"max_scale_down_rate": 1.1}, [(0, 100, 1, 1, 90)]),
    # Panic concurrency takes precedence: 100 / 10 = 10 pods >= 2x of 1.
    ("TestAutoscalerScale/AutoscalerPanicModeDoublePodCount", 10, {}, [(0, 1, 50, 100, 10)]),
    ("TestAutoscalerRateLimitScaleUp", 10, {},
     [(0, 1, 1000, 1001, 10), (0, 10, 1000, 1001, 100)]),       # x10 per tick
    ("TestAutoscalerRateLimitScaleDown", 10, {},
     [(0, 100, 1, 1, 10), (0, 10, 1, 1, 1)]),                   # /10 per tick
    # No endpoints: readyPodsCount = max(1, 0), so the x10 limit gives 10 (not 20).
    ("TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound", 10, {}, [(0, 0, 1000, 888, 10)]),
    ("TestAutoscalerPanicModeExponentialTrackAndStabilize", 1, {},
     [(0, 1, 6, 6, 6), (0, 6, 36, 36, 36), (1, 36, 216, 216, 216),
      (1, 216, 1296, 1296, 1296), (2, 1296, 1296, 1296, 1296)]),
    # Still in panic at +30 s (41 of 40 pods is not over 200 %, the count never drops),
    # out of panic at +62 s: strictly more than the 60 s stable window.
    ("TestAutoscalerUnpanicAfterSlowIncrease", 1, {},
     [(0, 10, 11, 25, 25), (30, 40, 30, 41, 41), (62, 55, 50, 56, 50)]),
    # Still surging at +30 s: 80 / 40 = 200 % extends the panic window, so at +62 s it
    # still holds 80 (our extra step; from the first panic alone it would drop to 30).
    ("TestAutoscalerExtendPanicWindow", 1, {},
     [(0, 10, 11, 25, 25), (30, 40, 30, 80, 80), (62, 40, 30, 30, 80)]),
    # Traffic drops in panic: the count stays at 100 until the stable window has passed.
    ("TestAutoscalerPanicThenUnPanicScaleDown", 10, {},
     [(0, 1, 100, 100, 10), (0, 10, 100, 1000, 100), (30, 10, 1, 1, 100),
      (61, 10, 1, 1, 1)]),
]


@pytest.mark.parametrize("target,extra,steps", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_autoscaler_scale(target, extra, steps):
    assert _run(_config(target, **extra), steps) == [s[-1] for s in steps]


# TestAutoscalerScale AutoscalerPanicStable{Larger,Less}ThanPanic: already in panic for 5 s
# holding 5 pods: "we use stable concurrency" when larger, else panic.
@pytest.mark.parametrize("stable,panic,expected", [(50, 30, 50), (20, 30, 30)],
                         ids=["AutoscalerPanicStableLargerThanPanic",
                              "AutoscalerPanicStableLessThanPanic"])
def test_in_panic_takes_the_larger_of_stable_and_panic(stable, panic, expected):
    state = kpa.KpaState(panic_since_s=-5.0, max_panic_pods=5, started=True)
    assert _run(_config(1), [(0, 5, stable, panic, expected)], state=state) == [expected]


@pytest.mark.parametrize("ready,in_panic,max_panic", [(0, False, 0), (1, False, 0),
                                                       (2, True, 2)])
def test_start_in_panic_mode(ready, in_panic, max_panic):
    # TestStartInPanicMode: built with 0 or 1 ready pod, no panic; with 2, panic holding 2.
    state = kpa.begin(kpa.KpaState(), ready, 0.0)
    assert (state.panic_since_s is not None) == in_panic
    assert state.max_panic_pods == max_panic


def test_no_data_no_autoscale():
    # TestAutoscalerNoDataNoAutoscale: the metric client has no data -> invalid, no change.
    pol = make_policy("kpa", bounds(), 15.0)
    d, _ = pol.decide(snap(t_s=2, window_s=2.0, ready=3, in_flight=None,
                           missing=frozenset({FIELD_IN_FLIGHT})), pol.initial_state(), 2.0)
    assert not d.valid and d.replicas == 3


def test_shipped_defaults():
    # knative/serving config/core/configmaps/autoscaler.yaml and pkg/autoscaler/config.
    cfg = make_policy("kpa", bounds(concurrency_limit=None), 15.0).config
    assert (cfg.target_utilization, cfg.stable_window_s, cfg.panic_window_pct,
            cfg.panic_threshold_pct, cfg.max_scale_up_rate, cfg.max_scale_down_rate,
            cfg.scale_down_delay_s) == (0.7, 60.0, 10.0, 200.0, 1000.0, 2.0, 0.0)
    assert cfg.target_per_pod() == pytest.approx(70.0)   # container-concurrency-target-default 100


# --- The data path: excess burst capacity and the activator (issue 14) ---------------------

def _ebc_config(target_value: float, tbc: float) -> kpa.KpaConfig:
    # newTestAutoscaler: TargetValue = target, TotalValue = target / 0.75 (75 % utilisation),
    # no containerConcurrency.
    return _config(target_value / 0.75, target_utilization=0.75, container_concurrency=0,
                   target_burst_capacity=tbc)


# (upstream case, TargetValue, TBC, ready pods, panic concurrency, expected EBC); the expected
# value is autoscaler_test.go expectedEBC: floor(target / 0.75 x pods - TBC - concurrency).
EBC_CASES = [
    ("TestAutoscalerScale/AutoscalerStableModeUnlimitedTBC", 181, -1, 1, 26, -1),
    ("TestAutoscalerScale/Autoscaler0TBC", 10, 0, 1, 49, 0),
    ("TestAutoscalerScale/AutoscalerStableModeNoChange", 10, 100, 1, 50, -137),
    ("TestAutoscalerScale/AutoscalerStableModeNoChangeAlreadyScaled", 10, 100, 5, 50, -84),
    ("TestAutoscalerScale/AutoscalerStableModeDecreaseWithSmallScaleDownRate", 10, 1982, 100, 1,
     -650),
    ("TestAutoscalerScale/AutoscalerPanicModeDoublePodCount", 10, 84, 1, 100, -171),
    ("TestAutoscalerStableModeDecrease", 10, 98, 8, 50, -42),
    ("TestAutoscalerRateLimitScaleDown", 10, 61, 10, 1, 71),
    ("TestAutoscalerPanicModeExponentialTrackAndStabilize", 1, 101, 1296, 1296, 331),
    # No endpoints: the EBC uses the 0 pods read, not the max(1, 0) of the rates.
    ("TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound", 10, 81, 0, 888, -969),
]


@pytest.mark.parametrize("target,tbc,ready,panic,expected", [c[1:] for c in EBC_CASES],
                         ids=[c[0] for c in EBC_CASES])
def test_excess_burst_capacity(target, tbc, ready, panic, expected):
    assert kpa.excess_burst_capacity(ready, panic, _ebc_config(target, tbc)) == expected


# pkg/reconciler/autoscaling/kpa/kpa_test.go TestReconcile: the SKS mode from the decider's
# (desired scale, EBC); defaultScale is 11. Proxy = the activator in the data path.
MODE_CASES = [
    ("steady not serving", 0, 0, True),
    ("from serving to proxy", 0, 0, True),
    ("steady not enough capacity", 11, -42, True),
    ("traffic increased, no longer enough burst capacity", 11, -18, True),
    ("traffic decreased, now we have enough burst capacity", 11, 1, False),
]


@pytest.mark.parametrize("want,ebc,in_path", [c[1:] for c in MODE_CASES],
                         ids=[c[0] for c in MODE_CASES])
def test_activator_in_path(want, ebc, in_path):
    assert kpa.activator_in_path(want, ebc) is in_path


# pkg/reconciler/autoscaling/resources/target_test.go TestResolveMetricTarget (concurrency):
# (case, containerConcurrency, target annotation, utilisation, want target, want total).
TARGET_CASES = [
    ("defaults", 0, None, 1.0, 100, 100),
    ("with container concurrency 10 and TU=80%", 10, None, 0.8, 8, 10),
    ("with container concurrency 1", 1, None, 1.0, 1, 1),
    ("with target annotation 1 and TU=0.1%", 0, 1, 0.001, 0.01, 1),     # TargetMin
    ("with target annotation 10 and TU=75%", 0, 10, 0.75, 7.5, 10),
    ("with container concurrency greater than target annotation (ok)", 10, 1, 1.0, 1, 1),
    ("with target annotation greater than default (ok)", 0, 500, 1.0, 500, 500),
    ("with target annotation greater than container concurrency (ignore annotation for "
     "safety)", 1, 10, 1.0, 1, 1),
]


@pytest.mark.parametrize("cc,target,tu,want_target,want_total", [c[1:] for c in TARGET_CASES],
                         ids=[c[0] for c in TARGET_CASES])
def test_resolve_metric_target(cc, target, tu, want_target, want_total):
    cfg = kpa.KpaConfig(bounds=bounds(), target=target, container_concurrency=cc,
                        target_utilization=tu)
    assert (cfg.target_per_pod(), cfg.total_value()) == pytest.approx((want_target, want_total))


def test_target_burst_capacity_default_and_rule():
    # config.go: target-burst-capacity 211; "must be either non-negative or -1 (for unlimited)".
    assert make_policy("kpa", bounds(), 15.0).config.target_burst_capacity == 211
    with pytest.raises(Exception, match="target_burst_capacity = -2.*non-negative or -1"):
        make_policy("kpa:target_burst_capacity=-2", bounds(), 15.0)


def test_decision_names_the_data_path():
    # The demo's pods (containerConcurrency 32): 6 ready, 1,900 requests in the revision
    # (192 in pods, the rest buffered): EBC = 6 x 32 - 211 - 1900 < 0, the activator proxies;
    # 60 ready and 45 in flight: 60 x 32 - 211 - 45 >= 0, the pods serve directly.
    pol = make_policy("kpa", bounds(max_replicas=60), 15.0)
    d, state = pol.decide(snap(t_s=2, window_s=2.0, ready=6, desired=60, in_flight=192.0,
                               queue_depth=1708.0), pol.initial_state(), 2.0)
    assert d.details["excess_burst_capacity"] == 6 * 32 - 211 - 1900
    assert d.details["activator_in_path"] == 1.0
    d, _ = pol.decide(snap(t_s=4, window_s=2.0, ready=60, desired=60, in_flight=45.0,
                           queue_depth=0.0), pol.initial_state(), 4.0)
    assert d.details["excess_burst_capacity"] >= 0 and d.details["activator_in_path"] == 0.0
