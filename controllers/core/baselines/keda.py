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

from trimtab.controllers.core.baselines.hpa import (
    SYNC_PERIOD_S, HpaBehavior, HpaState, apply_behavior, clamp_to_bounds,
    external_per_pod_replicas,
)
from trimtab.controllers.core.baselines.window import Sample, add_sample, window_mean
from trimtab.controllers.core.guards import hold_on_unreadable
from trimtab.controllers.core.types import Decision, Snapshot

REASON_ACTIVATE = "keda_activate"
REASON_COOLDOWN = "keda_cooldown_to_zero"
REASON_IDLE = "keda_idle_at_zero"
REASON_SCALER_ERROR = "keda_scaler_error"   # ignoreNullValues false and a null/non-finite result

_FIELDS = {"arrival_rate": "arrival_rate_rps", "queue_depth": "queue_depth",
           "in_flight": "in_flight"}


class KedaConfig(HpaBehavior):
    metric: Literal["arrival_rate", "queue_depth", "in_flight"] = "arrival_rate"
    threshold: float = Field(10.0, gt=0)
    activation_threshold: float = Field(0.0, ge=0)
    polling_interval_s: float = Field(30.0, gt=0)
    cooldown_s: float = Field(300.0, ge=0)
    query_window_s: float = Field(60.0, gt=0)   # the range of rate(...[1m]) in the query
    ignore_null_values: bool = True              # prometheus_scaler.go ignoreNullValues


@dataclass(frozen=True)
class KedaState:
    hpa: HpaState = HpaState()
    samples: tuple[Sample, ...] = ()
    last_poll_s: float | None = None
    last_active_s: float | None = None


def initial_state(config: KedaConfig) -> KedaState:
    return KedaState()


def query_value(snapshot: Snapshot, config: KedaConfig) -> float | None:
    """The query result as KEDA's Prometheus scaler returns it; None is a scaler error.

    prometheus_scaler.go ExecutePromQuery: a null, +Inf, -Inf or NaN result is 0 when
    ``ignoreNullValues`` is true (the default) and an error otherwise.
    """
    value = getattr(snapshot, _FIELDS[config.metric])
    if value is None or not math.isfinite(value):
        return 0.0 if config.ignore_null_values else None
    return float(value)


def _poll(state: KedaState, now_s: float, value: float | None, config: KedaConfig
          ) -> tuple[float | None, float | None]:
    """The operator's own loop: every ``polling_interval_s`` it records activity."""
    last_poll_s, last_active_s = state.last_poll_s, state.last_active_s
    if last_poll_s is None or now_s - last_poll_s >= config.polling_interval_s - 1e-9:
        last_poll_s = now_s
        if value is not None and value > config.activation_threshold:
            last_active_s = now_s
    return last_poll_s, last_active_s


def decide(snapshot: Snapshot, config: KedaConfig, state: KedaState, now_s: float
           ) -> tuple[Decision, KedaState]:
    hold = hold_on_unreadable(snapshot, [])
    if hold is not None or _FIELDS[config.metric] in snapshot.missing:
        return hold or Decision(replicas=snapshot.current_replicas, reason="hold_missing_metrics",
                                valid=False), state
    b = config.bounds
    current = snapshot.current_replicas
    observed = getattr(snapshot, _FIELDS[config.metric])
    raw = query_value(snapshot, config)
    if observed is not None and math.isfinite(observed):
        samples = add_sample(state.samples, now_s, snapshot.window_s, raw,
                             keep_s=config.query_window_s)
        value: float | None = window_mean(samples, now_s, config.query_window_s) or 0.0
    else:
        # A null or non-finite query result is the whole answer (0 or an error), whatever
        # the range inside the query.
        samples, value = state.samples, raw
    last_poll_s, last_active_s = _poll(state, now_s, value, config)
    base = KedaState(state.hpa, samples, last_poll_s, last_active_s)
    if value is None:
        # Inactive with an error: the executor does nothing, the HPA's metric fails.
        return Decision(replicas=current, reason=REASON_SCALER_ERROR, valid=False), base
    if current == 0:
        if last_active_s is not None and last_active_s == now_s:
            return Decision(replicas=max(1, b.min_replicas), reason=REASON_ACTIVATE), base
        return Decision(replicas=0, reason=REASON_IDLE), base
    inactive_since_s = last_active_s if last_active_s is not None else -math.inf
    # scale_scaledobjects.go scaleToZeroOrIdle: lastActiveTime + cooldown strictly before now.
    if (b.min_replicas == 0 and last_poll_s == now_s and value <= config.activation_threshold
            and now_s - inactive_since_s > config.cooldown_s):
        return Decision(replicas=0, reason=REASON_COOLDOWN), base
    min_r = max(1, b.min_replicas)
    clamped = clamp_to_bounds(current, state.hpa, now_s, config, min_r, b.max_replicas)
    if clamped is not None:
        decision, hpa = clamped
        return decision, KedaState(hpa, samples, last_poll_s, last_active_s)
    status = (snapshot.ready_replicas or 0) + (snapshot.starting_replicas or 0) or current
    desired, reason = external_per_pod_replicas(value, config.threshold, status, current,
                                                config.tolerance)
    replicas, reason, hpa = apply_behavior(current, desired, reason, state.hpa, now_s, config,
                                           min_r, b.max_replicas)
    return (Decision(replicas=replicas, reason=reason, details={"query_value": value}),
            KedaState(hpa, samples, last_poll_s, last_active_s))


INTERVAL_S = SYNC_PERIOD_S
