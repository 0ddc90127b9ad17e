"""Gate actuator: the one sidecar before a Ray Serve fleet admits replicas x per-replica limit."""
from __future__ import annotations

from trimtab.controllers.core.types import Decision
from trimtab.controllers.shell.actuators.base import ActuationError, Actuator, Applied, WorkloadRef
from trimtab.controllers.shell.actuators.ray_serve import RayServeActuator
from trimtab.controllers.shell.actuators.sidecar import SidecarControlClient, SidecarControlError

GATE_LIMIT = "gate_concurrency_limit"     # the name of the change in Applied


def gate_limit(decision: Decision, per_replica_in_force: int | None) -> int:
    """The sidecar's admission limit for ``decision``: replicas x what one replica holds.

    One replica holds the decision's concurrency limit (else the one in force, else 1), and
    at least one batch. E.g. 3 replicas, limit 4, batch 8: each holds 8, the gate 24.
    """
    per_replica = decision.concurrency_limit
    if per_replica is None:
        per_replica = per_replica_in_force or 1
    if decision.max_batch_size is not None:
        per_replica = max(per_replica, decision.max_batch_size)
    return max(1, int(per_replica) * max(1, decision.replicas))


class GateActuator(Actuator):
    """Keeps the one sidecar's admission limit at replicas x per-replica limit.

    Ray Serve's proxy would otherwise queue the excess where no metric shows it; with the
    gate, what the fleet cannot take yet waits in the sidecar's queue (trimtab_queue_depth),
    which the policy reads. Listed after the Ray Serve actuator, so it follows the same tick.
    """

    name = "sidecar_gate"
    sets_replicas = False      # the Ray Serve actuator sets and reports the replicas

    def __init__(self, sidecar: SidecarControlClient, ray: RayServeActuator) -> None:
        self.sidecar = sidecar
        self.ray = ray
        self.limit: int | None = None       # what the sidecar was last set to

    def current_replicas(self, workload: WorkloadRef) -> int | None:
        return None

    def apply(self, workload: WorkloadRef, decision: Decision, reason: str) -> Applied:
        in_force = None
        if decision.concurrency_limit is None:
            cfg = self.ray.deployment_details(workload).get("deployment_config") or {}
            in_force = cfg.get("max_ongoing_requests")
        limit = gate_limit(decision, in_force)
        if limit == self.limit:
            return Applied()
        try:
            self.sidecar.update({"concurrency_limit": limit})
        except SidecarControlError as exc:
            if exc.status is None:
                raise ActuationError("unavailable", f"sidecar gate: {exc.detail}") from exc
            raise ActuationError("invalid" if exc.status in (400, 422) else "error",
                                 f"sidecar gate: HTTP {exc.status}: {exc.detail}",
                                 retryable=exc.status >= 500) from exc
        old, self.limit = self.limit, limit
        return Applied(changes={GATE_LIMIT: (old, limit)}, note=reason)
