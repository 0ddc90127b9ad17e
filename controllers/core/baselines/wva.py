"""llm-d's workload variant autoscaler (WVA) in saturation mode, one variant.

Follows llm-d/llm-d-workload-variant-autoscaler (main, 2026-02): internal/saturation/
analyzer.go (the V1 analyzer, the default: ``analyzerName`` unset) and constants.go,
internal/collector/registration/saturation.go (the queries), config/manager/
configmap-saturation-scaling.yaml (the thresholds) and configmap.yaml (GLOBAL_OPT_INTERVAL
60 s); docs/saturation-analyzer.md explains them. Every 60 s it reads, per ready pod,
``max_over_time(vllm:kv_cache_usage_perc[1m])`` and ``max_over_time(
vllm:num_requests_waiting[1m])``. A pod is saturated when its KV usage >= 0.80 or its queue
>= 5; over the non-saturated ones it averages the spare KV (0.80 - usage) and spare queue
(5 - queue), 0 when every pod is saturated. It scales up when the spare KV < 0.1 or the spare
queue < 3; it may scale down when at least 2 pods are non-saturated and their load spread
over one pod fewer still leaves both spares at or above their triggers. The target
(CalculateSaturationTargets): while the model is in transition (the desired count, when
set, differs from the pods' count, or fewer pods report metrics than exist) the desired
count, or the pods' count; otherwise the reporting pods' count, plus one to scale up, minus
one (never below 1) to scale down. One step per 60 s, and no step up while a pod starts.

The snapshot has the fleet's mean KV usage and its total waiting queue, not each pod's: each
ready pod is taken to hold the mean and an equal share of the queue, and the 1 min maximum is
the highest of the snapshots of the last minute. Not modelled: several variants and their
costs (cheapest up, most expensive down), the GPU limiter (off by default), the V2 token
analyzer, scale to and from zero, and the actuator in between (an HPA or a KEDA
ScaledObject reading ``wva_desired_replicas`` with target 1: its own stabilisation is not
applied; the count is applied as WVA publishes it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pydantic import Field

from trimtab.controllers.core.binding import PolicyConfig
from trimtab.controllers.core.guards import hold_on_unreadable
from trimtab.controllers.core.types import (
    FIELD_LLM, REASON_SCALE_DOWN, REASON_SCALE_UP, REASON_STEADY, Decision, Snapshot,
)

INTERVAL_S = 60.0                       # configmap.yaml GLOBAL_OPT_INTERVAL
MIN_NON_SATURATED_FOR_SCALE_DOWN = 2    # constants.go MinNonSaturatedReplicasForScaleDown
REASON_TRANSITION = "wva_in_transition"   # desired != pods, or pods not all reporting
REASON_NO_DATA = "wva_no_metrics"


class WvaConfig(PolicyConfig):
    kv_cache_threshold: float = Field(0.80, gt=0, le=1)   # kvCacheThreshold
    queue_length_threshold: float = Field(5.0, gt=0)      # queueLengthThreshold
    kv_spare_trigger: float = Field(0.1, ge=0)            # kvSpareTrigger
    queue_spare_trigger: float = Field(3.0, ge=0)         # queueSpareTrigger
    lookback_s: float = Field(60.0, gt=0)                 # max_over_time(...[1m])


@dataclass(frozen=True)
class Analysis:
    """analyzer.go ModelSaturationAnalysis, the fields the target uses."""

    replicas: int
    non_saturated: int
    spare_kv: float
    spare_queue: float
    scale_up: bool
    scale_down_safe: bool


@dataclass(frozen=True)
class WvaState:
    recent: tuple[tuple[float, float, float], ...] = ()   # (time s, KV usage, queue per pod)


def initial_state(config: WvaConfig) -> WvaState:
    return WvaState()


def analyze(pods: Sequence[tuple[float, float]], config: WvaConfig) -> Analysis:
    """AnalyzeModelSaturation over (KV usage, queue length) per reporting pod.

    Example (analyzer_test.go "scale up due to low KV spare"): pods (0.75, 2), (0.76, 2):
    spare KV (0.05 + 0.04) / 2 = 0.045 < 0.1: scale up.
    """
    spares = [(config.kv_cache_threshold - kv, config.queue_length_threshold - q)
              for kv, q in pods
              if kv < config.kv_cache_threshold and q < config.queue_length_threshold]
    n = len(spares)
    spare_kv = sum(s[0] for s in spares) / n if n else 0.0
    spare_queue = sum(s[1] for s in spares) / n if n else 0.0
    up = spare_kv < config.kv_spare_trigger or spare_queue < config.queue_spare_trigger
    safe = False
    if n >= MIN_NON_SATURATED_FOR_SCALE_DOWN:
        # isScaleDownSafe: the average load spread over one pod fewer.
        factor = n / (n - 1)
        kv_after = (config.kv_cache_threshold - spare_kv) * factor
        queue_after = (config.queue_length_threshold - spare_queue) * factor
        safe = (config.kv_cache_threshold - kv_after >= config.kv_spare_trigger
                and config.queue_length_threshold - queue_after >= config.queue_spare_trigger)
    return Analysis(len(pods), n, spare_kv, spare_queue, up, safe)


def target(analysis: Analysis, current: int, desired: int) -> tuple[int, str]:
    """CalculateSaturationTargets for one variant: (target, reason). ``current`` is the
    pods' count, ``desired`` the last published count (0: none yet).

    Example (analyzer_test.go ModelLevelTransitionBlocking): current 2, desired 4: 4.
    """
    if analysis.replicas == 0:
        return current, REASON_NO_DATA
    if desired != 0 and desired != current:
        return desired, REASON_TRANSITION
    if analysis.replicas != current:
        return current, REASON_TRANSITION
    base = analysis.replicas
    if analysis.scale_up:
        return base + 1, REASON_SCALE_UP
    if analysis.scale_down_safe and base > 1:
        return base - 1, REASON_SCALE_DOWN
    return base, REASON_STEADY


def pods_from(snapshot: Snapshot, state: WvaState, now_s: float, config: WvaConfig
              ) -> tuple[list[tuple[float, float]], WvaState]:
    """Each ready pod as (KV usage, queue), the highest of the last ``lookback_s``."""
    ready = snapshot.ready_replicas or 0
    kv, waiting = snapshot.kv_cache_usage_ratio, snapshot.engine_waiting
    if ready <= 0 or kv is None or waiting is None:
        return [], state
    recent = tuple(r for r in state.recent if r[0] > now_s - config.lookback_s)
    recent += ((now_s, float(kv), float(waiting) / ready),)
    peak_kv = max(r[1] for r in recent)
    peak_queue = max(r[2] for r in recent)
    return [(peak_kv, peak_queue)] * ready, WvaState(recent)


def decide(snapshot: Snapshot, config: WvaConfig, state: WvaState, now_s: float
           ) -> tuple[Decision, WvaState]:
    hold = hold_on_unreadable(snapshot, [FIELD_LLM])
    if hold is not None:
        return hold, state
    b = config.bounds
    pods, state = pods_from(snapshot, state, now_s, config)
    current = (snapshot.ready_replicas or 0) + (snapshot.starting_replicas or 0)
    desired = snapshot.desired_replicas or 0
    analysis = analyze(pods, config)
    want, reason = target(analysis, current, desired)
    replicas = min(max(want, b.min_replicas), b.max_replicas)
    details = {"spare_kv": analysis.spare_kv, "spare_queue": analysis.spare_queue,
               "non_saturated": float(analysis.non_saturated)}
    return (Decision(replicas=replicas, reason=reason, valid=reason != REASON_NO_DATA,
                     details=details), state)
