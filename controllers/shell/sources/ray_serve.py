"""Ray Serve source: another source's Snapshot with the replica counts and knobs Ray reports.

Where one sidecar sits in front of Ray Serve's proxy for the whole fleet (``trimtab up``), the
Prometheus source counts one replica per sidecar, not the fleet's: this source takes the
serving and starting replicas, and the batch settings in force, from Ray Serve itself.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from trimtab.controllers.core.types import FIELD_REPLICAS, Snapshot
from trimtab.controllers.shell.actuators.base import ActuationError, WorkloadRef
from trimtab.controllers.shell.actuators.ray_serve import (RayServeActuator, replica_counts,
                                                           steered_settings)
from trimtab.controllers.shell.sources.base import Source, TargetSelector


class RayReplicaSource(Source):
    """``inner``'s Snapshots, with replicas and knobs read from Ray for the targets in
    ``workloads`` (target key -> Ray Serve deployment)."""

    name = "prometheus+ray"

    def __init__(self, inner: Source, ray: RayServeActuator,
                 workloads: Mapping[str, WorkloadRef]) -> None:
        self.inner = inner
        self.ray = ray
        self.workloads = dict(workloads)
        self.last: dict[str, Snapshot] = {}      # the last read, for the demo's live view

    @property
    def last_errors(self) -> Sequence[str]:
        return self.inner.last_errors

    @property
    def last_causes(self) -> Sequence[str]:
        return self.inner.last_causes

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
            details = self.ray.deployment_details(workload)
        except ActuationError:
            return snap.with_(ready_replicas=None, missing=snap.missing | {FIELD_REPLICAS},
                              empty=snap.empty - {FIELD_REPLICAS})     # Ray's read failed
        running, starting = replica_counts(details)
        knobs = steered_settings(details.get("deployment_config") or {})
        timeout_s = knobs["batch_wait_timeout_s"]
        return snap.with_(
            ready_replicas=running, starting_replicas=starting,
            concurrency_limit=knobs["concurrency_limit"],
            max_batch_size=knobs["max_batch_size"],
            batch_timeout_ms=None if timeout_s is None else 1000.0 * float(timeout_s),
            missing=snap.missing - {FIELD_REPLICAS}, empty=snap.empty - {FIELD_REPLICAS},
            stale=snap.stale - {FIELD_REPLICAS})
