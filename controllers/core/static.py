"""The static policy: a fixed replica count, the do-nothing baseline."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from trimtab.controllers.core.defaults import INTERVAL_S
from trimtab.controllers.core.types import REASON_STATIC, Decision, FleetBounds, Snapshot


@dataclass
class StaticPolicy:
    """Always ``replicas`` (clamped to the bounds); never touches pod-level settings."""

    replicas: int
    bounds: FleetBounds
    interval_s: float = INTERVAL_S
    name: str = "static"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ValueError(f"static: replicas = {self.replicas}, must be >= 0")
        self.params = {"replicas": self.replicas}

    def initial_state(self) -> None:
        return None

    def decide(self, snapshot: Snapshot, state: None, now_s: float) -> tuple[Decision, None]:
        n = min(max(self.replicas, self.bounds.min_replicas), self.bounds.max_replicas)
        return Decision(replicas=n, reason=REASON_STATIC), None
