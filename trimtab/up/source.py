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

from trimtab.controllers.shell.actuators.base import ActuationError, Applied, WorkloadRef
from trimtab.controllers.shell.actuators.ray_serve import RayServeActuator
from trimtab.controllers.shell.sources.base import Source, TargetSelector
from trimtab.controllers.core.types import FIELD_REPLICAS, Decision, Snapshot

# UPDATING is a running replica being reconfigured (user_config): it keeps serving.
SERVING_STATES = frozenset({"RUNNING", "UPDATING"})
STARTING_STATES = frozenset({"STARTING", "RECOVERING", "PENDING_MIGRATION"})


def replica_counts(details: Mapping) -> tuple[int, int]:
    """(serving, starting) replicas of one deployment from Ray's deployment details."""
    running = starting = 0
    for r in details.get("replicas") or []:
        state = str(getattr(r.get("state"), "value", r.get("state")))
        if state in SERVING_STATES:
            running += 1
        elif state in STARTING_STATES:
            starting += 1
    return running, starting


def running_actor_ids(details: Mapping) -> dict[str, str]:
    """replica id -> Ray actor id of the serving replicas (a restart changes both)."""
    return {r["replica_id"]: r["actor_id"] for r in details.get("replicas") or []
            if str(getattr(r.get("state"), "value", r.get("state"))) in SERVING_STATES}


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


class GateActuator:
    """Keeps the one sidecar's admission limit at replicas x per-replica limit.

    Ray Serve's proxy would otherwise queue the excess where no metric shows it; with the
    gate, what the fleet cannot take yet waits in the sidecar's queue (trimtab_queue_depth),
    which the policy reads. Applied after the Ray Serve actuator in the same tick.
    """

    name = "sidecar_gate"

    def __init__(self, admin_url: str, token: str, ray: RayServeActuator,
                 timeout_s: float = 2.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        self.token = token
        self.ray = ray
        self.timeout_s = timeout_s
        self.limit: int | None = None

    def current_replicas(self, workload: WorkloadRef) -> int | None:
        return None   # the Ray Serve actuator answers this

    def apply(self, workload: WorkloadRef, decision: Decision, reason: str) -> Applied:
        import json
        import urllib.error
        import urllib.request

        per_replica = decision.concurrency_limit
        if per_replica is None:
            cfg = self.ray.deployment_details(workload).get("deployment_config") or {}
            per_replica = cfg.get("max_ongoing_requests") or 1
        if decision.max_batch_size is not None:
            per_replica = max(per_replica, decision.max_batch_size)
        limit = max(1, int(per_replica) * max(1, decision.replicas))
        if limit == self.limit:
            return Applied()
        req = urllib.request.Request(
            self.admin_url + "/control/v1/settings", method="PUT",
            data=json.dumps({"concurrency_limit": limit}).encode(),
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s):
                pass
        except urllib.error.HTTPError as exc:
            raise ActuationError("invalid" if exc.code in (400, 422) else "error",
                                 f"sidecar gate: HTTP {exc.code}", retryable=exc.code >= 500)
        except OSError as exc:
            raise ActuationError("unavailable", f"sidecar gate: {exc}") from exc
        old, self.limit = self.limit, limit
        return Applied(changes={"gate_concurrency_limit": (old, limit)}, note=reason)
