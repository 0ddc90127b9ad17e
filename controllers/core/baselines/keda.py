"""KEDA's Prometheus scaler: activation and cooldown for 0 <-> 1, the HPA for 1 <-> N.

KEDA exposes the query result to the HPA as an External metric with an AverageValue target,
so ``desired = ceil(value / threshold)`` under the HPA's tolerance and behavior
(replica_calculator.go GetExternalPerPodMetricReplicas). The operator polls every 30 s; a
trigger is active when ``value > activation_threshold``; going 1 -> 0 waits ``cooldown_s``
(300 s) from the last active poll. A null or NaN query result counts as 0; an unreadable
source (the query failed) holds, as the HPA does on a metrics error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from trimtab.controllers.core.baselines.hpa import SYNC_PERIOD_S, HpaBehavior, HpaState, apply_behavior
from trimtab.controllers.core.baselines.window import Sample, add_sample, window_mean
from trimtab.controllers.core.guards import hold_on_unreadable
from trimtab.controllers.core.types import (
    REASON_SCALE_DOWN, REASON_SCALE_UP, REASON_STEADY, REASON_WITHIN_TOLERANCE, Decision,
    Snapshot,
)

REASON_ACTIVATE = "keda_activate"
REASON_COOLDOWN = "keda_cooldown_to_zero"
REASON_IDLE = "keda_idle_at_zero"

_FIELDS = {"arrival_rate": "arrival_rate_rps", "queue_depth": "queue_depth",
           "in_flight": "in_flight"}


class KedaConfig(HpaBehavior):
    metric: Literal["arrival_rate", "queue_depth", "in_flight"] = "arrival_rate"
    threshold: float = Field(10.0, gt=0)
    activation_threshold: float = Field(0.0, ge=0)
    polling_interval_s: float = Field(30.0, gt=0)
    cooldown_s: float = Field(300.0, ge=0)
    query_window_s: float = Field(60.0, gt=0)   # the range of rate(...[1m]) in the query


@dataclass(frozen=True)
class KedaState:
    hpa: HpaState = HpaState()
    samples: tuple[Sample, ...] = ()
    last_poll_s: float | None = None
    last_active_s: float | None = None


def initial_state(config: KedaConfig) -> KedaState:
    return KedaState()


def query_value(snapshot: Snapshot, config: KedaConfig) -> float:
    """The raw query result for this window; null or NaN counts as 0, as KEDA does."""
    value = getattr(snapshot, _FIELDS[config.metric])
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0.0
    return float(value)


def decide(snapshot: Snapshot, config: KedaConfig, state: KedaState, now_s: float
           ) -> tuple[Decision, KedaState]:
    hold = hold_on_unreadable(snapshot, [])
    if hold is not None or _FIELDS[config.metric] in snapshot.missing:
        return hold or Decision(replicas=snapshot.current_replicas, reason="hold_missing_metrics",
                                valid=False), state
    b = config.bounds
    samples = add_sample(state.samples, now_s, snapshot.window_s, query_value(snapshot, config),
                         keep_s=config.query_window_s)
    value = window_mean(samples, now_s, config.query_window_s) or 0.0
    current = snapshot.current_replicas
    last_poll_s, last_active_s = state.last_poll_s, state.last_active_s
    if last_poll_s is None or now_s - last_poll_s >= config.polling_interval_s - 1e-9:
        last_poll_s = now_s
        if value > config.activation_threshold:
            last_active_s = now_s
    base = KedaState(state.hpa, samples, last_poll_s, last_active_s)
    if current == 0:
        if last_active_s is not None and last_active_s == now_s:
            return Decision(replicas=max(1, b.min_replicas), reason=REASON_ACTIVATE), base
        return Decision(replicas=0, reason=REASON_IDLE), base
    inactive_since_s = last_active_s if last_active_s is not None else -math.inf
    if (b.min_replicas == 0 and last_poll_s == now_s and value <= config.activation_threshold
            and now_s - inactive_since_s >= config.cooldown_s):
        return Decision(replicas=0, reason=REASON_COOLDOWN), base
    status = (snapshot.ready_replicas or 0) + (snapshot.starting_replicas or 0) or current
    ratio = value / (config.threshold * status)
    if abs(1.0 - ratio) <= config.tolerance:
        desired, reason = status, REASON_WITHIN_TOLERANCE
    else:
        desired = math.ceil(value / config.threshold - 1e-9)
        reason = (REASON_SCALE_UP if desired > current
                  else REASON_SCALE_DOWN if desired < current else REASON_STEADY)
    min_r = max(1, b.min_replicas)
    replicas, reason, hpa = apply_behavior(current, desired, reason, state.hpa, now_s, config,
                                           min_r, b.max_replicas)
    return (Decision(replicas=replicas, reason=reason, details={"query_value": value}),
            KedaState(hpa, samples, last_poll_s, last_active_s))


INTERVAL_S = SYNC_PERIOD_S
