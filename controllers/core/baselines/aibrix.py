"""AIBrix's PodAutoscaler, KPA and APA strategies, on vLLM's KV-cache usage.

Follows vllm-project/aibrix (main, 2026-08) pkg/controller/podautoscaler: algorithm/kpa.go and
algorithm/apa.go (the recommendation), context/context.go (the defaults), metrics/client.go
and types/metrics.go (the windows), autoscaler.go and podautoscaler_controller.go (the loop:
bounds, the cooldown windows). Each resync (10 s, DefaultResyncInterval) reads the metric of
every pod, records their mean in a stable window (180 s) and a panic window (60 s): plain
means of the values recorded, one per 1 s bucket (TimeWindow), 0 when empty. The documented
target is ``targetMetric: gpu_cache_usage_perc, targetValue: "0.5"`` (samples/autoscaling/
kpa.yaml, apa.yaml; docs/source/features/autoscaling/metric-based-autoscaling.rst); the
snapshot's ``kv_cache_usage_ratio`` is that gauge's mean over the ready replicas.

KPA (kpa.go): panic when the stable value is 0 or panic / stable > 2.0 (PanicThreshold);
each of stable and panic wants ``ceil(value / target)`` pods when the value is outside
``target x (1 +- 0.1)`` and the current count otherwise, kept within
``[floor(current / 2), max(1, ceil(2 x current))]`` (MaxScaleDown/UpRate 2); in panic the
larger of the two. The ScalingContext is built afresh each resync, so MaxPanicPods is 0 and
panic holds nothing from one resync to the next. The value divided by the target is the
pods' mean (UpdateMetrics averages the pod values), so at its defaults KPA never wants more
than ``ceil(1.0 / 0.5) = 2`` pods on KV-cache usage; its own tests (kpa_test.go) read the
value as a total ("20/10 = 2 pods needed"), which ``aggregate=sum`` gives (mean x ready pods).

APA (apa.go): the stable value only; ``ratio = value / target``; above ``1 + 0.1`` it wants
``ceil(current x ratio)`` at most ``ceil(2 x current)``; below ``1 - 0.1`` the same at least
``floor(current / 2)``; otherwise the current count.

Then (podautoscaler_controller.go) the bounds, and stabilizeRecommendation: a recommendation
above the current count is the highest of the last ``scale_up_cooldown_s`` (0 s: itself),
one below it the LOWEST of the last ``scale_down_cooldown_s`` (300 s), as the source does
(it picks the minimum for a scale-down, unlike the HPA's maximum); then the bounds again. At
zero replicas with a minimum above zero it does nothing ("scaling disabled").

Not modelled: the HPA strategy (that is the ``hpa`` baseline), ActivationScale (1 unless
set), scale-to-zero, schedules of bounds, several metric sources (the largest want wins),
the external and domain metric sources, the optimizer-based (GPU optimizer) mode, the metric
history and confidence (logged only). Values are read from the snapshot each resync, not
scraped from each pod: a pod that fails its scrape counts in the mean here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from trimtab.controllers.core.binding import PolicyConfig
from trimtab.controllers.core.guards import hold_on_unreadable
from trimtab.controllers.core.types import (
    FIELD_LLM, REASON_AT_MAX, REASON_AT_MIN, REASON_SCALE_DOWN, REASON_SCALE_UP, REASON_STEADY,
    Decision, Snapshot,
)

TICK_S = 10.0                       # podautoscaler_controller.go DefaultResyncInterval
GRANULARITY_S = 1.0                 # autoscaler.go NewMetricsClient(time.Second)
REASON_PANIC = "aibrix_panic"       # KPA in panic: the larger of stable and panic wants
REASON_COOLDOWN = "aibrix_cooldown"   # the cooldown window chose another count
REASON_DISABLED = "aibrix_scaling_disabled"   # 0 replicas and a minimum above 0
REASON_NO_DATA = "aibrix_no_data"

# bucket index (floor(t / granularity)) -> the value recorded in it, oldest first.
Buckets = tuple[tuple[int, float], ...]


class AibrixConfig(PolicyConfig):
    strategy: Literal["kpa", "apa"] = "kpa"
    target: float = Field(0.5, gt=0)                       # targetValue: gpu_cache_usage_perc
    aggregate: Literal["mean", "sum"] = "mean"             # mean: the source's UpdateMetrics
    stable_window_s: float = Field(180.0, gt=0)            # DefaultStableWindowDuration
    panic_window_s: float = Field(60.0, gt=0)              # DefaultPanicWindowDuration
    panic_threshold: float = Field(2.0, gt=0)              # PanicThreshold
    max_scale_up_rate: float = Field(2.0, gt=0)            # MaxScaleUpRate
    max_scale_down_rate: float = Field(2.0, gt=0)          # MaxScaleDownRate
    up_tolerance: float = Field(0.1, ge=0)                 # UpFluctuationTolerance
    down_tolerance: float = Field(0.1, ge=0, le=1)         # DownFluctuationTolerance
    scale_up_cooldown_s: float = Field(0.0, ge=0)          # ScaleUpCooldownWindow
    scale_down_cooldown_s: float = Field(300.0, ge=0)      # ScaleDownCooldownWindow


@dataclass(frozen=True)
class AibrixState:
    stable: Buckets = ()
    panic: Buckets = ()
    recommendations: tuple[tuple[float, int], ...] = ()    # (time s, recommended count)


def initial_state(config: AibrixConfig) -> AibrixState:
    return AibrixState()


def record(window: Buckets, t_s: float, value: float, duration_s: float,
           granularity_s: float = GRANULARITY_S) -> Buckets:
    """types/metrics.go TimeWindow.Record: the value replaces its bucket's; buckets before
    ``floor((t - duration) / granularity)`` are dropped.

    Example (metrics_test.go TestTimeWindow, 2 min window, 1 min buckets): 10 at 0 s, 20 at
    30 s -> [20]; 30 at 60 s -> [20, 30]; ... 70 at 180 s -> [40, 60, 70].
    """
    bucket = math.floor(t_s / granularity_s + 1e-9)
    cutoff = math.floor((t_s - duration_s) / granularity_s + 1e-9)
    kept = [(b, v) for b, v in window if b >= cutoff and b != bucket]
    return tuple(sorted(kept + [(bucket, value)]))


def average(window: Buckets) -> float:
    """TimeWindow.Avg: the plain mean of the buckets' values, 0 when there are none."""
    return sum(v for _, v in window) / len(window) if window else 0.0


def kpa_in_panic(stable: float, panic: float, config: AibrixConfig) -> bool:
    """kpa.go shouldEnterPanicMode: the stable value is 0, or panic / stable > threshold."""
    return stable <= 0 or panic / stable > config.panic_threshold


def kpa_want(current: int, stable: float, panic: float, in_panic: bool, config: AibrixConfig,
             max_panic_pods: int = 0) -> int:
    """kpa.go computeTargetReplicas (ActivationScale 1). ``max_panic_pods`` is the
    context's MaxPanicPods: 0 in the loop, which builds a fresh context every resync.

    Example (kpa_test.go panic_mode_scaling_up): 2 pods, target 10, stable 30, panic 40,
    in panic: stable wants 3, panic 4 (within [1, 4]): 4.
    """
    target = config.target
    ready = max(0.0, float(current))
    max_up = max(1.0, math.ceil(config.max_scale_up_rate * ready))
    max_down = math.floor(ready / config.max_scale_down_rate)
    up_at, down_at = target * (1 + config.up_tolerance), target * (1 - config.down_tolerance)

    def want(value: float) -> int:
        pods = math.ceil(value / target) if value > up_at or value < down_at else ready
        return int(min(max(pods, max_down), max_up))

    stable_pods = want(stable)
    if not in_panic:
        return stable_pods
    # In panic: the larger of the two, and never below the panic's highest count so far.
    return max(stable_pods, want(panic), max_panic_pods)


def apa_want(current: int, value: float, config: AibrixConfig) -> int:
    """apa.go computeTargetReplicas.

    Example (apa_test.go basic_scale_up): 2 pods, target 30, 45 per pod: 1.5 > 1.1, so
    ceil(2 x 1.5) = 3 (at most ceil(2 x 2) = 4).
    """
    ratio = value / config.target
    n = float(current)
    if ratio > 1 + config.up_tolerance:
        return int(min(math.ceil(n * ratio), math.ceil(config.max_scale_up_rate * n)))
    if ratio < 1 - config.down_tolerance:
        return int(max(math.ceil(n * ratio), math.floor(n / config.max_scale_down_rate)))
    return current


def stabilize(recommendation: int, current: int, history: tuple[tuple[float, int], ...],
              now_s: float, config: AibrixConfig) -> tuple[int, tuple[tuple[float, int], ...]]:
    """podautoscaler_controller.go stabilizeRecommendation: up, the highest recommendation
    after ``now - scale_up_cooldown_s``; down, the lowest after ``now - scale_down_cooldown_s``
    (strictly after, time.After); none in the window: the recommendation itself.

    Example: recommendations 2 at t=0 and 5 at t=100 with 4 pods: 5 is an increase, the up
    window (0 s) holds nothing, so 5; then 3 at t=200: a decrease, the lowest of the last
    300 s is 2.
    """
    keep_s = max(config.scale_up_cooldown_s, config.scale_down_cooldown_s)
    history = history + ((now_s, recommendation),)
    history = tuple(h for h in history if h[0] > now_s - keep_s)
    if recommendation == current:
        return current, history
    up = recommendation > current
    window_s = config.scale_up_cooldown_s if up else config.scale_down_cooldown_s
    inside = [n for t, n in history if t > now_s - window_s]
    if not inside:
        return recommendation, history
    return (max(inside) if up else min(inside)), history


def _bounded(n: int, config: AibrixConfig) -> int:
    return min(max(n, config.bounds.min_replicas), config.bounds.max_replicas)


def pod_value(snapshot: Snapshot, config: AibrixConfig) -> float | None:
    """The value recorded this resync: the pods' mean KV-cache usage (times the ready pods
    with ``aggregate=sum``); None when no pod answered."""
    usage = snapshot.kv_cache_usage_ratio
    if usage is None or not math.isfinite(usage) or not snapshot.ready_replicas:
        return None
    return usage * snapshot.ready_replicas if config.aggregate == "sum" else usage


def decide(snapshot: Snapshot, config: AibrixConfig, state: AibrixState, now_s: float
           ) -> tuple[Decision, AibrixState]:
    hold = hold_on_unreadable(snapshot, [FIELD_LLM])
    if hold is not None:
        return hold, state
    b = config.bounds
    current = snapshot.current_replicas
    if current == 0 and b.min_replicas != 0:
        return Decision(replicas=0, reason=REASON_DISABLED, valid=False), state
    if current > b.max_replicas:
        return Decision(replicas=b.max_replicas, reason=REASON_AT_MAX), state
    if current < b.min_replicas:
        return Decision(replicas=b.min_replicas, reason=REASON_AT_MIN), state
    value = pod_value(snapshot, config)
    if value is None:
        # collectFromPods: every pod failed: the snapshot is an error, nothing recorded.
        return Decision(replicas=current, reason=REASON_NO_DATA, valid=False), state
    stable_w = record(state.stable, now_s, value, config.stable_window_s)
    panic_w = record(state.panic, now_s, value, config.panic_window_s)
    stable, panic = average(stable_w), average(panic_w)
    in_panic = config.strategy == "kpa" and kpa_in_panic(stable, panic, config)
    if config.strategy == "kpa":
        want = kpa_want(current, stable, panic, in_panic, config)
    else:
        want = apa_want(current, stable, config)
    want = _bounded(want, config)
    chosen, history = stabilize(want, current, state.recommendations, now_s, config)
    replicas = _bounded(chosen, config)
    if chosen != want:
        reason = REASON_COOLDOWN
    elif in_panic:
        reason = REASON_PANIC
    else:
        reason = (REASON_SCALE_UP if replicas > current
                  else REASON_SCALE_DOWN if replicas < current else REASON_STEADY)
    details = {"stable_value": stable, "panic_value": panic, "recommended": float(want)}
    return (Decision(replicas=replicas, reason=reason, details=details),
            AibrixState(stable_w, panic_w, history))
