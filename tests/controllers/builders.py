"""Builders with defaults for controller tests: snapshots and a fake control loop."""
from __future__ import annotations

from typing import Any

from trimtab.controllers.core.types import Decision, FleetBounds, Policy, Snapshot


def snap(t_s: float = 15.0, window_s: float = 15.0, ready: int = 4, starting: int = 0,
         desired: int | None = None, **kw: Any) -> Snapshot:
    """A healthy snapshot: 4 ready replicas, quiet load, unless told otherwise."""
    base: dict[str, Any] = dict(arrival_rate_rps=10.0, completion_rate_rps=10.0,
                                queue_depth=0.0, in_flight=8.0, gpu_busy_ratio=0.5)
    base.update(kw)
    return Snapshot(time_s=t_s, window_s=window_s, ready_replicas=ready,
                    starting_replicas=starting,
                    desired_replicas=ready + starting if desired is None else desired, **base)


def step_scenario(name: str = "oracle-step") -> Any:
    """A small scenario: 50 req/s for 300 s, then 150 (a step), 60 s cold start, SLO 0.5 s."""
    from trimtab.sim.scenario import scenario_from_dict

    return scenario_from_dict({
        "name": name, "trace": {"format": "step", "steps": [[0, 50], [300, 150]],
                                "duration_s": 600, "seed": 2},
        "service": {"model": "affine", "base_ms": 50, "per_item_ms": 10, "cv": 0.1,
                    "max_batch": 8, "batch_timeout_ms": 5},
        "replicas": {"initial": 2, "min": 1, "max": 30, "cold_start_s": 60,
                     "concurrency_limit": 32, "queue_timeout_s": 10},
        "slo": {"latency_s": 0.5, "target": 0.99}, "controller": {"interval_s": 15}})


def bounds(**kw: Any) -> FleetBounds:
    base: dict[str, Any] = dict(min_replicas=1, max_replicas=100, cold_start_s=60.0,
                                slo_latency_s=1.0, slo_target=0.99, initial_replicas=4,
                                concurrency_limit=32, max_batch_size=8, batch_timeout_ms=10.0)
    base.update(kw)
    return FleetBounds(**base)


class InstantFleet:
    """A fake fleet for loop tests: the desired count becomes ready at once (no cold start)."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.events = 0

    def apply(self, d: Decision) -> None:
        if d.valid and d.replicas != self.replicas:
            self.replicas = d.replicas
            self.events += 1


def run_loop(policy: Policy, snapshots: list[dict[str, Any]], start_replicas: int,
             t0_s: float = 0.0) -> tuple[list[Decision], InstantFleet]:
    """Feed ``snapshots`` (kwargs for ``snap`` minus replicas) one per interval."""
    fleet = InstantFleet(start_replicas)
    state = policy.initial_state()
    out = []
    for i, kw in enumerate(snapshots, start=1):
        t = t0_s + i * policy.interval_s
        s = snap(t_s=t, window_s=policy.interval_s, ready=fleet.replicas, **kw)
        d, state = policy.decide(s, state, t)
        out.append(d)
        fleet.apply(d)
    return out, fleet
