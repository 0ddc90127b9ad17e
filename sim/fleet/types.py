"""Plain types of the fleet model: states, outcomes, memory model, config, window stats."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

# Replica states.
STARTING, READY, DRAINING, STOPPED, PARKED = 0, 1, 2, 3, 4
STATE_NAMES = ("starting", "ready", "draining", "stopped", "parked")
# Request outcomes.
PENDING, SERVED, SHED, TIMED_OUT, FAILED = 0, 1, 2, 3, 4
OUTCOME_NAMES = ("pending", "served", "shed", "timed_out", "failed")
NO_LIMIT = 1 << 40


@dataclass(frozen=True)
class MemoryModel:
    """GPU memory of one replica: weights plus per-item memory times the batch size."""

    gpu_bytes: float
    weights_bytes: float
    per_item_bytes: float

    def ratio(self, batch_size: int) -> float:
        return (self.weights_bytes + self.per_item_bytes * batch_size) / self.gpu_bytes

    def fits(self, batch_size: int) -> bool:
        return self.weights_bytes + self.per_item_bytes * batch_size <= self.gpu_bytes


@dataclass
class FleetConfig:
    """Everything the fleet needs, free of YAML and pydantic (the scenario builds it)."""

    service: Any                                  # AffineService | ProfileService
    cold_start: Callable[[], float]               # draws one cold start, seconds
    initial_replicas: int = 1
    max_batch: int = 1
    batch_timeout_s: float = 0.0
    greedy: bool = False                          # greedy batcher instead of Triton's
    concurrency_limit: int | None = None          # per replica; None = unbounded
    max_queue: int | None = None                  # router queue capacity; None = unbounded
    queue_timeout_s: float | None = None
    router: str = "least_outstanding"             # | round_robin
    scale_to_zero_idle_s: float | None = None
    max_replicas: int = 1 << 30                   # the activator never exceeds it
    memory: MemoryModel | None = None


@dataclass
class WindowStats:
    """What happened in one window ``[t0_s, t1_s]``: the raw material of a Snapshot."""

    t0_s: float
    t1_s: float
    arrivals: int
    completions: int
    shed: int
    timed_out: int
    failed: int
    queue_area: float            # integral of router-queue depth dt
    held_area: float             # integral of requests held by replicas dt
    busy_area: float             # integral of busy replicas dt
    ready_area: float            # integral of ready replicas dt
    latencies_s: np.ndarray      # of requests served in the window
    batch_samples: list[tuple[int, float]] = field(default_factory=list)  # last <= 256
    batches: int = 0
    batch_items: int = 0
    max_batch_seen: int = 0
    ready: int = 0
    starting: int = 0
    desired: int = 0
    queue_depth_now: int = 0
    held_now: int = 0
    llm: Any = None              # an LLM fleet's trimtab.sim.llm.types.LlmWindow, else None
