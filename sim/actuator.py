"""The simulated actuator: applies a Decision to the fleet with the real systems' semantics."""
from __future__ import annotations

from dataclasses import dataclass, field

from trimtab.controllers.core.types import Decision, FleetBounds
from trimtab.sim.fleet.model import NO_LIMIT, Fleet


@dataclass
class SimActuator:
    """Replicas are clamped to the bounds (as the scale subresource's owner would); new ones
    cold-start, removed ones drain (the fleet picks which). Pod-level settings apply to every
    replica at once; ``None`` leaves a setting as it is; ``valid=False`` applies nothing."""

    fleet: Fleet
    bounds: FleetBounds
    scale_events: int = 0
    applied: int = 0
    ignored: int = 0
    history: list[tuple[float, int]] = field(default_factory=list)

    def apply(self, d: Decision) -> bool:
        """Apply ``d``; True if the replica count changed."""
        if not d.valid:
            self.ignored += 1
            return False
        self.applied += 1
        f = self.fleet
        if d.concurrency_limit is not None:
            f.set_concurrency_limit(d.concurrency_limit)
        if d.max_batch_size is not None:
            f.set_max_batch(d.max_batch_size)
        if d.batch_timeout_ms is not None:
            f.set_batch_timeout_s(d.batch_timeout_ms / 1000.0)
        if d.queue_timeout_s is not None:
            f.set_queue_timeout_s(d.queue_timeout_s)
        n = min(max(int(d.replicas), self.bounds.min_replicas), self.bounds.max_replicas)
        if n == f.desired:
            return False
        f.set_desired(n)
        self.scale_events += 1
        self.history.append((f.eng.now, n))
        return True

    @property
    def concurrency_limit(self) -> int | None:
        return None if self.fleet.limit >= NO_LIMIT else int(self.fleet.limit)
