"""The actuator protocol the live loop drives: apply a decision to one workload, or say why not."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from trimtab.controllers.core.types import Decision


@dataclass(frozen=True)
class WorkloadRef:
    """Which workload a target steers: a Kubernetes Deployment/StatefulSet or a Ray Serve app."""

    kind: str          # Deployment | StatefulSet | RayServeDeployment
    namespace: str     # Kubernetes namespace, or the Ray Serve application name
    name: str          # workload name, or the Ray Serve deployment name

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Applied:
    """What an actuator changed: field -> (old, new); empty when nothing needed changing."""

    changes: dict[str, tuple[object, object]] = field(default_factory=dict)
    note: str = ""


class ActuationError(Exception):
    """An actuation that failed; ``error`` is a short bounded code used as a metric label.

    ``retryable`` says whether the loop should try again next tick (409, 429, 5xx, timeouts)
    rather than report a configuration problem (403, 404, invalid value).
    """

    def __init__(self, error: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.error = error
        self.retryable = retryable


class Actuator(Protocol):
    """Applies the parts of a Decision it is responsible for; idempotent.

    Every actuator subclasses this (or declares the same members), so the loop reads each
    capability as an attribute instead of probing for it:

    - ``sets_replicas``: True for replica actuators (Kubernetes, Ray Serve, the simulator),
      False for pod-knob ones (the sidecar), whose ``current_replicas`` is always None;
    - ``resync(workload)``: while the loop holds (apply nothing new), bring late-started pods
      to what is in force; None (the default) when there is nothing to resync.
    """

    name: str
    sets_replicas: bool = True

    def apply(self, workload: WorkloadRef, decision: Decision, reason: str) -> Applied:
        """Make the workload match ``decision``; raise ActuationError on failure."""
        ...

    def current_replicas(self, workload: WorkloadRef) -> int | None:
        """The replica count the workload is asked for now (spec), or None if unknown."""
        ...

    def resync(self, workload: WorkloadRef) -> Applied | None:
        """Re-apply what is in force without a new decision; None: nothing to do."""
        return None
