"""KEDA's Prometheus scaler: activation and cooldown for 0 <-> 1, the HPA for 1 <-> N.

KEDA exposes the query result to the HPA as an External metric with an AverageValue target,
so ``desired = ceil(value / threshold)`` under the HPA's tolerance, bounds and behavior
(replica_calculator.go GetExternalPerPodMetricReplicas). The operator polls every 30 s; a
trigger is active when ``value > activation_threshold``; going to zero waits until
``cooldown_s`` (300 s) after the last active poll has strictly passed; below
``minReplicaCount`` it goes to the minimum at once. A null, +Inf, -Inf or NaN result is 0
with ``ignoreNullValues`` (the default) and a scaler error otherwise; a field the source
could not read is a failed query, also an error. An error holds (the HPA's metric fails)
unless ``fallback`` is set: after more than ``fallback_failure_threshold`` consecutive
errors the HPA is fed ``fallback_replicas * threshold`` (fallback.go, behavior "static").
The source tells the two apart: a field named in ``Snapshot.empty`` was answered with no
series (0, or an error without ignoreNullValues), one only in ``missing`` failed. The
replica count is the workload's (the scale subresource), so "no series" for the ready count
(no pod up) does not hold when the count asked for is known.

``metric=vllm_waiting`` is KServe's recipe for vLLM (kserve/website docs/model-serving/
generative-inference/autoscaling/autoscaling.md; kserve pkg/controller/v1beta1/inferenceservice/
reconcilers/keda/keda_reconciler.go): an ``External`` metric with backend ``prometheus``,
query ``vllm:num_requests_waiting`` and target ``Value: 2`` (the Red Hat OpenShift AI guide
built on KServe), which KServe writes as a prometheus trigger with ``threshold`` 2 and no
``metricType`` (so AverageValue: ``desired = ceil(waiting / 2)``), polling 30 s and cooldown
300 s (KEDA's defaults: KServe sets neither). The gauge is read as an instant query: the last
scrape, not a range. KServe's bare query returns one series per pod, which KEDA's scaler
refuses ("returned multiple elements") once two pods run; it is modelled as the sum over the
fleet (``sum(vllm:num_requests_waiting)``), what an operator writes to make it work.
``keda-vllm`` names that preset.

Not modelled: idleReplicaCount, the fallback behaviours other than "static", pausing
annotations, scalingModifiers and several triggers, initialCooldownPeriod (default 0, as
here) and the metrics adapter's cache (useCachedMetrics, off by default). A None value not
named in ``missing`` is also read as an empty result. The loop's safety stages still hold
what is applied while the arrival rate is "no series" (trimtab's production rule, for every
policy): the baseline's own decision (exported as a shadow) is KEDA's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import Field

from trimtab.controllers.core.baselines.hpa import (
    SYNC_PERIOD_S, HpaBehavior, HpaState, apply_behavior, clamp_to_bounds,
    external_per_pod_replicas,
)
from trimtab.controllers.core.baselines.window import Sample, add_sample, window_mean
from trimtab.controllers.core.guards import hold_on_unreadable
from trimtab.controllers.core.types import (FIELD_REPLICAS, REASON_AT_MIN, REASON_HOLD_MISSING,
                                            Decision, FieldGroup, Snapshot)

REASON_ACTIVATE = "keda_activate"
REASON_COOLDOWN = "keda_cooldown_to_zero"
REASON_IDLE = "keda_idle_at_zero"
REASON_SCALER_ERROR = "keda_scaler_error"   # the query failed, or a null/non-finite result
REASON_FALLBACK = "keda_fallback"           # too many errors: the HPA sees fallback replicas

_FIELDS = {"arrival_rate": "arrival_rate_rps", "queue_depth": "queue_depth",
           "in_flight": "in_flight", "vllm_waiting": "engine_waiting"}
# Gauges read by an instant query (the last scrape), not over the query's range.
_INSTANT = frozenset({"vllm_waiting"})
# KServe's vLLM recipe (module docstring): the preset ``keda-vllm``.
VLLM_PRESET = {"metric": "vllm_waiting", "threshold": 2.0}


class KedaConfig(HpaBehavior):
    metric: Literal["arrival_rate", "queue_depth", "in_flight", "vllm_waiting"] = "arrival_rate"
    threshold: float = Field(10.0, gt=0)
    activation_threshold: float = Field(0.0, ge=0)
    polling_interval_s: float = Field(30.0, gt=0)
    cooldown_s: float = Field(300.0, ge=0)
    query_window_s: float = Field(60.0, gt=0)   # the range of rate(...[1m]) in the query
    ignore_null_values: bool = True              # prometheus_scaler.go ignoreNullValues
    # spec.fallback: off by default; KEDA requires both fields when it is set.
    fallback_replicas: int | None = Field(None, ge=0)
    fallback_failure_threshold: int = Field(3, ge=0)


@dataclass(frozen=True)
class KedaState:
    hpa: HpaState = HpaState()
    samples: tuple[Sample, ...] = ()
    last_poll_s: float | None = None
    last_active_s: float | None = None
    failures: int = 0           # consecutive scaler errors (fallback.go NumberOfFailures)


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


def _read(snapshot: Snapshot, state: KedaState, now_s: float, config: KedaConfig
          ) -> tuple[float | None, tuple[Sample, ...]]:
    """This sync's query result (None: a scaler error) and the samples behind its range."""
    field_name = _FIELDS[config.metric]
    if _failed(snapshot, config):
        return None, state.samples          # the query itself failed
    # Empty (no series): the value is None, read as KEDA reads an empty result.
    observed = getattr(snapshot, field_name)
    if observed is None or not math.isfinite(observed) or config.metric in _INSTANT:
        # A null or non-finite result is the whole answer, whatever the range in the query;
        # an instant query's answer is the last scrape.
        return query_value(snapshot, config), state.samples
    samples = add_sample(state.samples, now_s, snapshot.window_s, float(observed),
                         keep_s=config.query_window_s)
    return window_mean(samples, now_s, config.query_window_s) or 0.0, samples


def _failed(snapshot: Snapshot, config: KedaConfig) -> bool:
    """Whether the query failed: its field's group is missing and not merely empty."""
    return FieldGroup.of(_FIELDS[config.metric]) in snapshot.unread


def _replicas_from_workload(snapshot: Snapshot) -> Snapshot:
    """The snapshot with "no series" for the ready count not holding, when the workload's
    count (``desired_replicas``, its scale subresource) is known: KEDA reads the count from
    the workload, so a fleet with no pod up (no series) is still a known count."""
    if FIELD_REPLICAS in snapshot.empty and snapshot.desired_replicas is not None:
        return snapshot.with_(missing=snapshot.missing - {FIELD_REPLICAS},
                              empty=snapshot.empty - {FIELD_REPLICAS})
    return snapshot


def decide(snapshot: Snapshot, config: KedaConfig, state: KedaState, now_s: float
           ) -> tuple[Decision, KedaState]:
    hold = hold_on_unreadable(_replicas_from_workload(snapshot), [])   # the replica count
    if hold is not None:
        return hold, state
    b = config.bounds
    current = snapshot.current_replicas
    value, samples = _read(snapshot, state, now_s, config)
    last_poll_s, last_active_s = _poll(state, now_s, value, config)
    failures = 0 if value is not None else state.failures + 1
    base = KedaState(state.hpa, samples, last_poll_s, last_active_s, failures)
    polled = last_poll_s == now_s
    if value is None:
        fallback = config.fallback_replicas
        if fallback is None or failures <= config.fallback_failure_threshold or current == 0:
            # The executor does nothing on an inactive error; the HPA's metric fails.
            return Decision(replicas=current, valid=False,
                            reason=(REASON_HOLD_MISSING if _failed(snapshot, config)
                                    else REASON_SCALER_ERROR)), base
        value, reason_hint = fallback * config.threshold, REASON_FALLBACK
    else:
        reason_hint = None
    if current == 0:
        if last_active_s is not None and last_active_s == now_s:
            # scaleFromZeroOrIdle: minReplicaCount if above 0, else 1.
            return Decision(replicas=max(1, b.min_replicas), reason=REASON_ACTIVATE), base
        if polled and b.min_replicas > 0:
            # Inactive below minReplicaCount: the executor sets the minimum.
            return Decision(replicas=b.min_replicas, reason=REASON_AT_MIN), base
        return Decision(replicas=0, reason=REASON_IDLE), base
    inactive_since_s = last_active_s if last_active_s is not None else -math.inf
    # scale_scaledobjects.go scaleToZeroOrIdle: lastActiveTime + cooldown strictly before now.
    if (reason_hint is None and b.min_replicas == 0 and polled
            and value <= config.activation_threshold
            and now_s - inactive_since_s > config.cooldown_s):
        return Decision(replicas=0, reason=REASON_COOLDOWN), base
    min_r = max(1, b.min_replicas)
    clamped = clamp_to_bounds(current, state.hpa, now_s, config, min_r, b.max_replicas)
    if clamped is not None:
        decision, hpa = clamped
        return decision, replace(base, hpa=hpa)
    status = (snapshot.ready_replicas or 0) + (snapshot.starting_replicas or 0) or current
    desired, reason = external_per_pod_replicas(value, config.threshold, status, current,
                                                config.tolerance)
    replicas, reason, hpa = apply_behavior(current, desired, reason, state.hpa, now_s, config,
                                           min_r, b.max_replicas)
    return (Decision(replicas=replicas, reason=reason_hint or reason,
                     details={"query_value": value}), replace(base, hpa=hpa))


INTERVAL_S = SYNC_PERIOD_S
