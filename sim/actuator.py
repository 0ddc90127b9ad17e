"""The simulated actuator: an Actuator that applies a Decision to the fleet as the real systems do."""
from __future__ import annotations

from dataclasses import dataclass, field

from trimtab.controllers.core.types import Decision, FleetBounds
from trimtab.controllers.shell.actuators.base import Actuator, Applied, WorkloadRef
from trimtab.sim.fleet.model import NO_LIMIT, Fleet

KNOBS = ("concurrency_limit", "max_batch_size", "batch_timeout_ms", "queue_timeout_s")


@dataclass(frozen=True)
class SimActuatorConfig:
    """How the simulated actuator differs from applying every decision as asked (the default).

    ``unapplied`` names Decision fields the modelled actuators leave alone (the Ray Serve
    actuator and the sidecar gate never set the admission timeout); ``concurrency_cap`` is
    what a saturated replica really holds (Ray's router), so the fleet runs at
    ``min(asked, cap)`` while the limit read back is the one asked, starting at
    ``initial_limit`` (Ray's own ``max_ongoing_requests``).
    """

    unapplied: tuple[str, ...] = ()
    concurrency_cap: int | None = None
    initial_limit: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.unapplied) - set(KNOBS)
        if unknown:
            raise ValueError(f"SimActuatorConfig: unapplied = {sorted(unknown)}: not a pod "
                             f"setting; known: {list(KNOBS)}")
        if self.concurrency_cap is not None and self.concurrency_cap < 1:
            raise ValueError(f"SimActuatorConfig: concurrency_cap = {self.concurrency_cap}, "
                             "must be >= 1 (or None)")


@dataclass
class SimActuator(Actuator):
    """Replicas are clamped to the bounds (as the scale subresource's owner would); new ones
    cold-start, removed ones drain (the fleet picks which). Pod-level settings apply to every
    replica at once; ``None`` leaves a setting as it is. One fleet: every workload is it.
    ``cfg`` models a live stack's actuators (``trimtab.up.fidelity``); ``scale_events``
    counts replica changes.
    """

    fleet: Fleet
    bounds: FleetBounds
    cfg: SimActuatorConfig = SimActuatorConfig()
    name: str = "sim"
    scale_events: int = 0
    history: list[tuple[float, int]] = field(default_factory=list)   # (time s, replicas)

    def __post_init__(self) -> None:
        lim = self.fleet.limit
        self._limit = self.cfg.initial_limit if self.cfg.initial_limit is not None else (
            None if lim >= NO_LIMIT else int(lim))

    def current_replicas(self, workload: WorkloadRef) -> int | None:
        return self.fleet.desired

    def apply(self, workload: WorkloadRef, decision: Decision, reason: str) -> Applied:
        """Apply ``decision``; the changes name each setting that moved, (old, new)."""
        if not decision.valid:
            return Applied(note="invalid")
        f = self.fleet
        changes: dict[str, tuple[object, object]] = {}
        wanted = {k: None if k in self.cfg.unapplied else getattr(decision, k) for k in KNOBS}
        if wanted["concurrency_limit"] is not None:
            asked = max(1, int(wanted["concurrency_limit"]))     # as the fleet clamps it
            if asked != self._limit:
                changes["concurrency_limit"] = (self._limit, asked)
            self._limit = asked
            cap = self.cfg.concurrency_cap
            f.set_concurrency_limit(asked if cap is None else min(asked, cap))
        if wanted["max_batch_size"] is not None and wanted["max_batch_size"] != f.max_batch:
            changes["max_batch_size"] = (f.max_batch, wanted["max_batch_size"])
            f.set_max_batch(wanted["max_batch_size"])
        if wanted["batch_timeout_ms"] is not None:
            f.set_batch_timeout_s(wanted["batch_timeout_ms"] / 1000.0)
        if wanted["queue_timeout_s"] is not None:
            f.set_queue_timeout_s(wanted["queue_timeout_s"])
        n = min(max(int(decision.replicas), self.bounds.min_replicas), self.bounds.max_replicas)
        if n != f.desired:
            changes["replicas"] = (f.desired, n)
            f.set_desired(n)
            self.scale_events += 1
            self.history.append((f.eng.now, n))
        return Applied(changes)

    @property
    def concurrency_limit(self) -> int | None:
        """The per-replica limit in force as a live source reads it back: the one asked."""
        return self._limit
