"""The demo's timeline of actuation: what was applied when, and which applies failed."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from trimtab.controllers.core.types import Decision
from trimtab.controllers.shell.actuators.base import ActuationError, Actuator, Applied, WorkloadRef
from trimtab.controllers.shell.actuators.ray_serve import RayServeActuator


@dataclass
class AppliedRecord:
    at_s: float
    changes: dict[str, tuple[object, object]]
    reason: str


@dataclass
class RecordingActuator(Actuator):
    """Delegates to ``inner`` and records every change applied, with run-relative time.

    The report and the JSON of ``trimtab up`` read ``history`` and ``errors``; the controller
    thread writes them, the main thread reads them, hence the lock.
    """

    inner: RayServeActuator
    clock_s: Callable[[], float]       # seconds since the run began
    history: list[AppliedRecord] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def sets_replicas(self) -> bool:
        return self.inner.sets_replicas

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

    def resync(self, workload: WorkloadRef) -> Applied | None:
        return self.inner.resync(workload)

    def batch_size_changes(self) -> int:
        with self.lock:
            return sum(1 for a in self.history if "max_batch_size" in a.changes)
