"""Wrappers the live loop puts around the production source and actuator (Ray Serve specifics).

One sidecar sits in front of Ray Serve's proxy for the whole fleet, so the Prometheus
source's replica count (one per sidecar) is not the fleet's: ``RayReplicaSource`` takes the
ready and starting replica counts, and the batch settings in force, from Ray Serve itself.
``RecordingActuator`` keeps a timeline of what was applied, for the report and the JSON.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from controllers.actuators.base import ActuationError, Applied, WorkloadRef
from controllers.actuators.ray_serve import RayServeActuator
from controllers.sources.base import Source, TargetSelector
from controllers.types import FIELD_REPLICAS, Decision, Snapshot

STARTING_STATES = frozenset({"STARTING", "UPDATING", "RECOVERING", "PENDING_MIGRATION"})


def replica_counts(details: Mapping) -> tuple[int, int]:
    """(running, starting) replicas of one deployment from Ray's deployment details."""
    running = starting = 0
    for r in details.get("replicas") or []:
        state = str(getattr(r.get("state"), "value", r.get("state")))
        if state == "RUNNING":
            running += 1
        elif state in STARTING_STATES:
            starting += 1
    return running, starting


class RayReplicaSource:
    """A Source: the inner source's Snapshot with replica counts and knobs read from Ray."""

    name = "prometheus+ray"

    def __init__(self, inner: Source, actuator: RayServeActuator,
                 workloads: Mapping[str, WorkloadRef]) -> None:
        self.inner = inner
        self.actuator = actuator
        self.workloads = dict(workloads)
        self.last: dict[str, Snapshot] = {}

    def read(self, targets: Sequence[TargetSelector], now_s: float,
             window_s: float) -> dict[str, Snapshot]:
        snaps = self.inner.read(targets, now_s, window_s)
        out = {}
        for t in targets:
            snap = snaps.get(t.key) or Snapshot(time_s=now_s, window_s=window_s)
            workload = self.workloads.get(t.key)
            if workload is not None:
                snap = self._with_ray(snap, workload)
            out[t.key] = snap
        self.last = out
        return out

    def _with_ray(self, snap: Snapshot, workload: WorkloadRef) -> Snapshot:
        try:
            details = self.actuator.deployment_details(workload)
        except ActuationError:
            return snap.with_(ready_replicas=None, missing=snap.missing | {FIELD_REPLICAS})
        running, starting = replica_counts(details)
        cfg = details.get("deployment_config") or {}
        section = (cfg.get("user_config") or {}).get("trimtab") or {}
        timeout_s = section.get("batch_wait_timeout_s")
        return snap.with_(
            ready_replicas=running, starting_replicas=starting,
            concurrency_limit=cfg.get("max_ongoing_requests"),
            max_batch_size=section.get("max_batch_size"),
            batch_timeout_ms=None if timeout_s is None else 1000.0 * float(timeout_s),
            missing=snap.missing - {FIELD_REPLICAS},
            stale=snap.stale - {FIELD_REPLICAS})


@dataclass
class AppliedRecord:
    at_s: float
    changes: dict[str, tuple[object, object]]
    reason: str


@dataclass
class RecordingActuator:
    """Delegates to ``inner`` and records every change applied, with loop-relative time."""

    inner: RayServeActuator
    clock_s: object            # a zero-argument callable returning seconds since the run began
    history: list[AppliedRecord] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.inner.name

    def apply(self, workload: WorkloadRef, decision: Decision, reason: str) -> Applied:
        try:
            applied = self.inner.apply(workload, decision, reason)
        except ActuationError as exc:
            with self.lock:
                self.errors.append((self.clock_s(), exc.error))
            raise
        if applied.changes:
            with self.lock:
                self.history.append(AppliedRecord(self.clock_s(), dict(applied.changes), reason))
        return applied

    def current_replicas(self, workload: WorkloadRef) -> int | None:
        return self.inner.current_replicas(workload)

    def batch_size_changes(self) -> int:
        with self.lock:
            return sum(1 for a in self.history if "max_batch_size" in a.changes)
