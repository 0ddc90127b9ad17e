"""Kubernetes HPA (autoscaling/v2) on one per-pod metric, with its real defaults.

Follows horizontal.go (a count outside [min, max] goes to the bound at once, before any
metric is read; otherwise behavior: stabilisation windows, then rate policies and bounds)
and replica_calculator.go calcPlainMetricReplicas (tolerance; unready and missing pods
counted back at 0 scaling up, missing pods at the target scaling down; no direction flips).
The metric is in-flight requests, queue depth or GPU busy fraction per ready pod; ``also``
adds more metrics, and the largest desired count wins (computeReplicasForMetrics, with its
rule that an unreadable metric blocks a scale-down but not a scale-up).

Not modelled: the CPU resource path (utilisation of requests, the CPU
initialisation period); per-pod missing samples, because the snapshot holds fleet totals
(``decide`` passes no missing pods and treats starting pods as Pending, which report no
metric); selectPolicy Min or Disabled; scale to zero (the HPAScaleToZero alpha gate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from trimtab.controllers.core.binding import PolicyConfig
from trimtab.controllers.core.guards import (
    RatePolicy, RateRules, hold_on_unreadable, rate_limit, record_scale_event, stabilize,
)
from trimtab.controllers.core.types import (
    FIELD_GPU, FIELD_IN_FLIGHT, FIELD_QUEUE_DEPTH, REASON_AT_MAX, REASON_AT_MIN,
    REASON_SCALE_DOWN, REASON_SCALE_UP,
    REASON_STEADY, REASON_WITHIN_TOLERANCE, Decision, Snapshot,
)

SYNC_PERIOD_S = 15.0                      # --horizontal-pod-autoscaler-sync-period
REASON_NO_READY_PODS = "no_ready_pods"    # HPA: no pod reports the metric -> no change
REASON_SCALING_DISABLED = "scaling_disabled"  # spec.replicas == 0 with minReplicas > 0

# Per-metric default targets (HPA itself has none for custom metrics; these are typical).
DEFAULT_TARGETS = {"in_flight": 8.0, "queue_depth": 4.0, "gpu_busy": 0.7}
_METRIC_FIELD = {"in_flight": FIELD_IN_FLIGHT, "queue_depth": FIELD_QUEUE_DEPTH,
                 "gpu_busy": FIELD_GPU}


class HpaBehavior(PolicyConfig):
    """``spec.behavior`` and tolerance, with the Kubernetes defaults."""

    tolerance: float = Field(0.1, ge=0, lt=1)
    up_window_s: float = Field(0.0, ge=0, le=3600)
    down_window_s: float = Field(300.0, ge=0, le=3600)
    up_percent: float = Field(100.0, gt=0)
    up_pods: int = Field(4, gt=0)
    up_period_s: float = Field(15.0, gt=0, le=1800)
    down_percent: float = Field(100.0, gt=0, le=100)
    down_period_s: float = Field(15.0, gt=0, le=1800)

    def up_rules(self) -> RateRules:
        return RateRules(self.up_window_s, (RatePolicy("percent", self.up_percent, self.up_period_s),
                                            RatePolicy("pods", self.up_pods, self.up_period_s)))

    def down_rules(self) -> RateRules:
        return RateRules(self.down_window_s,
                         (RatePolicy("percent", self.down_percent, self.down_period_s),))


class HpaConfig(HpaBehavior):
    metric: Literal["in_flight", "queue_depth", "gpu_busy"] = "in_flight"
    target: float = Field(DEFAULT_TARGETS["in_flight"], gt=0)
    # More metrics, "name:target" joined by '+' (e.g. "queue_depth:4+gpu_busy:0.7"): the HPA
    # computes a count for each and takes the largest. Empty: one metric, as by default.
    also: str = ""

    @field_validator("also")
    @classmethod
    def _parse_also(cls, value: str) -> str:
        _metric_targets(value)
        return value

    def metric_targets(self) -> tuple[tuple[str, float], ...]:
        """(metric, per-pod target) for every metric, the main one first."""
        return ((self.metric, self.target),) + _metric_targets(self.also)


def _metric_targets(text: str) -> tuple[tuple[str, float], ...]:
    out = []
    for item in filter(None, (part.strip() for part in text.split("+"))):
        name, _, target = item.partition(":")
        try:
            value = float(target)
        except ValueError:
            value = -1.0
        if name not in _METRIC_FIELD or not value > 0:
            raise ValueError(f"also item {item!r} must be metric:target with metric one of "
                             f"{sorted(_METRIC_FIELD)} and target > 0")
        out.append((name, value))
    return tuple(out)


@dataclass(frozen=True)
class HpaState:
    """Recommendations (for the windows) and scale events (for the rate policies)."""

    recommendations: tuple[tuple[float, int], ...] = ()
    scale_events: tuple[tuple[float, int], ...] = ()
    seeded: bool = False     # horizontal.go seeds the history with (now, current) once


def initial_state(config: HpaBehavior) -> HpaState:
    return HpaState()


def per_pod_replicas(metric_sum: float, ready: int, unready: int, current: int, target: float,
                     tolerance: float, missing: int = 0) -> tuple[int, str]:
    """replica_calculator.go calcPlainMetricReplicas for a metric summed over ready pods.

    ``ready`` pods report the metric (for a custom metric a Running pod that is not Ready
    but reports counts here); ``unready`` are Pending; ``missing`` are Running without a
    sample. Scaling up, unready and missing pods are counted back at 0; scaling down,
    missing pods at the target and unready pods not at all. If that flips the direction or
    lands within tolerance, the count stays.

    Example: 4 ready pods summing 48 in flight, 2 starting, target 8: ratio 1.5 would give
    ceil(1.5 * 4) = 6; counting the 2 starting pods at 0 the ratio is 48 / 6 / 8 = 1.0,
    within tolerance, so the count stays at ``current``.
    """
    usage_ratio = metric_sum / ready / target
    scale_up_with_unready = unready > 0 and usage_ratio > 1.0
    if not scale_up_with_unready and missing == 0:
        if abs(1.0 - usage_ratio) <= tolerance:
            return current, REASON_WITHIN_TOLERANCE
        desired = math.ceil(usage_ratio * ready - 1e-9)
        return desired, _direction(desired, current)
    total, counted = metric_sum, ready
    if missing and usage_ratio < 1.0:
        total, counted = total + missing * target, counted + missing
    elif missing and usage_ratio > 1.0:
        counted += missing
    if scale_up_with_unready:
        counted += unready
    new_ratio = total / counted / target
    if (abs(1.0 - new_ratio) <= tolerance or (usage_ratio < 1.0 < new_ratio)
            or (usage_ratio > 1.0 > new_ratio)):
        return current, REASON_WITHIN_TOLERANCE
    desired = math.ceil(new_ratio * counted - 1e-9)
    if (new_ratio < 1.0 and desired > current) or (new_ratio > 1.0 and desired < current):
        return current, REASON_STEADY    # the imputed pods must not flip the direction
    return desired, _direction(desired, current)


def external_per_pod_replicas(value: float, per_pod_target: float, status_replicas: int,
                              current: int, tolerance: float) -> tuple[int, str]:
    """replica_calculator.go GetExternalPerPodMetricReplicas (an AverageValue target).

    Example: value 8600, 2150 per pod, 3 replicas: ratio 8600 / 6450 = 1.33, so 4.
    """
    ratio = value / (per_pod_target * status_replicas)
    if abs(1.0 - ratio) <= tolerance:
        return status_replicas, REASON_WITHIN_TOLERANCE
    desired = math.ceil(value / per_pod_target - 1e-9)
    return desired, _direction(desired, current)


def _direction(desired: int, current: int) -> str:
    if desired > current:
        return REASON_SCALE_UP
    return REASON_SCALE_DOWN if desired < current else REASON_STEADY


def apply_behavior(current: int, desired: int, reason: str, state: HpaState, now_s: float,
                   config: HpaBehavior, min_replicas: int, max_replicas: int
                   ) -> tuple[int, str, HpaState]:
    """horizontal.go normalizeDesiredReplicasWithBehaviors: windows, then rates and bounds."""
    up, down = config.up_rules(), config.down_rules()
    history = state.recommendations if state.seeded else ((now_s, current),)
    rec, why, recs = stabilize(current, desired, history, now_s,
                               up.window_s, down.window_s)
    reason = why or reason
    limited, why = rate_limit(current, rec, state.scale_events, now_s, up, down,
                              min_replicas, max_replicas)
    reason = why or reason
    keep_s = max(config.up_period_s, config.down_period_s)
    events = record_scale_event(state.scale_events, now_s, current, limited, keep_s)
    if limited == current and reason in (REASON_SCALE_UP, REASON_SCALE_DOWN):
        reason = REASON_STEADY
    return limited, reason, HpaState(recs, events, True)


def metric_sum(snapshot: Snapshot, metric: str, ready: int) -> float:
    """The metric summed over ready pods (the snapshot holds fleet totals or a mean)."""
    if metric == "in_flight":
        return float(snapshot.in_flight or 0.0)
    if metric == "queue_depth":
        return float(snapshot.queue_depth or 0.0)
    return float(snapshot.gpu_busy_ratio or 0.0) * ready


def clamp_to_bounds(current: int, state: HpaState, now_s: float, config: HpaBehavior,
                    min_replicas: int, max_replicas: int
                    ) -> tuple[Decision, HpaState] | None:
    """horizontal.go: a count outside [min, max] goes to the bound at once.

    Kubernetes checks the bounds before it reads any metric, and the clamp skips the
    stabilisation window and the rate policies (horizontal_test.go TestTooManyReplicas,
    TestTooFewReplicas, TestScaleDownRCImmediately). The change is still stored as a scale
    event, so the next period's rate limit counts it.
    """
    if min_replicas <= current <= max_replicas:
        return None
    target = max_replicas if current > max_replicas else min_replicas
    reason = REASON_AT_MAX if current > max_replicas else REASON_AT_MIN
    keep_s = max(config.up_period_s, config.down_period_s)
    events = record_scale_event(state.scale_events, now_s, current, target, keep_s)
    recs = state.recommendations if state.seeded else ((now_s, current),)
    return (Decision(replicas=target, reason=reason, details={"raw_desired": float(target)}),
            HpaState(recs, events, True))


def _field(metric: str) -> str:
    """The snapshot attribute a metric reads."""
    return "gpu_busy_ratio" if metric == "gpu_busy" else _METRIC_FIELD[metric]


def decide(snapshot: Snapshot, config: HpaConfig, state: HpaState, now_s: float
           ) -> tuple[Decision, HpaState]:
    """One HPA sync: bounds first, then metric -> raw desired count -> behavior."""
    b = config.bounds
    hold = hold_on_unreadable(snapshot, [])      # the replica count itself
    if hold is not None:
        return hold, state
    current = snapshot.current_replicas
    min_r = max(1, b.min_replicas)
    if current == 0:
        return Decision(replicas=0, reason=REASON_SCALING_DISABLED, valid=False), state
    clamped = clamp_to_bounds(current, state, now_s, config, min_r, b.max_replicas)
    if clamped is not None:
        return clamped
    ready = snapshot.ready_replicas or 0
    unready = snapshot.starting_replicas or 0
    if ready == 0:
        return Decision(replicas=current, reason=REASON_NO_READY_PODS, valid=False), state
    desired, reason, holds = -1, REASON_STEADY, []
    for metric, target in config.metric_targets():
        # "No series" (Snapshot.empty) holds like a failed query: the HPA's metrics client
        # answers an empty list with "no metrics returned from external metrics API".
        hold = hold_on_unreadable(snapshot, [_field(metric)])
        if hold is not None:
            holds.append(hold)
            continue
        n, why = per_pod_replicas(metric_sum(snapshot, metric, ready), ready, unready, current,
                                  target, config.tolerance)
        if n > desired:
            desired, reason = n, why
    # computeReplicasForMetrics: every metric invalid, or some invalid while the valid ones
    # would scale down -> an error, and the count stays.
    if holds and (desired < 0 or desired < current):
        return holds[0], state
    replicas, reason, new_state = apply_behavior(current, desired, reason, state, now_s,
                                                 config, min_r, b.max_replicas)
    return Decision(replicas=replicas, reason=reason,
                    details={"raw_desired": float(desired)}), new_state
