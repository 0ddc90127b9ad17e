"""Production safety stages run on every decision after the policy: hold on bad data, no unsafe scale-down."""
from __future__ import annotations

import math
from dataclasses import dataclass

from trimtab.controllers.core.types import (FIELD_ARRIVAL_RATE, REASON_HOLD_MISSING, REASON_HOLD_STALE,
                               REASON_HOLD_WARMUP, Decision, FleetBounds, Snapshot)

REASON_HOLD_SOURCE = "hold_source_error"


@dataclass(frozen=True)
class Hold:
    """Why a target holds: ``metric`` is the trimtab_controller_holding reason label."""

    metric: str     # missing | stale | warmup | paused | source_error | backoff
    why: str


def _hold_all(wanted: Decision, current: int | None, reason: str) -> Decision:
    # valid=False: apply nothing at all, so the last applied values stay in force.
    return wanted.with_(replicas=current if current is not None else wanted.replicas,
                        reason=reason, valid=False, concurrency_limit=None,
                        max_batch_size=None, batch_timeout_ms=None)


def _bad_number(value: float | None) -> bool:
    return value is not None and not math.isfinite(value)


def safety_stages(wanted: Decision, snap: Snapshot, current: int | None, bounds: FleetBounds,
                  warming: bool, source_failed: bool) -> tuple[Decision, Hold | None]:
    """Apply the production rules in order; the first that fires names the hold.

    1. the source failed, or the arrival rate is stale or missing -> apply nothing;
    2. other metrics missing (the policy saw imputed data) -> no scale-down;
    3. warming up after a (re)start -> no scale-down until the windows have filled;
    4. bounds always hold, whatever the policy said.
    """
    if source_failed:
        return _hold_all(wanted, current, REASON_HOLD_SOURCE), Hold(
            "source_error", "the metrics source failed this tick")
    if snap.stale:
        return _hold_all(wanted, current, REASON_HOLD_STALE), Hold(
            "stale", f"stale metrics: {sorted(map(str, snap.stale))}")
    if FIELD_ARRIVAL_RATE in snap.missing or snap.arrival_rate_rps is None or _bad_number(
            snap.arrival_rate_rps):
        return _hold_all(wanted, current, REASON_HOLD_MISSING), Hold(
            "missing", "no usable arrival rate")
    decision = wanted
    hold = None
    if not wanted.valid:
        return wanted, None
    if current is not None and decision.replicas < current:
        if snap.missing:
            decision = decision.with_(replicas=current, reason=REASON_HOLD_MISSING)
            hold = Hold("missing", "no scale-down on imputed data: missing "
                                   f"{sorted(map(str, snap.missing))}")
        elif warming:
            decision = decision.with_(replicas=current, reason=REASON_HOLD_WARMUP)
            hold = Hold("warmup", "no scale-down until the windows have filled")
    clamped = min(max(decision.replicas, bounds.min_replicas), bounds.max_replicas)
    if clamped != decision.replicas:
        decision = decision.with_(replicas=clamped)
    return decision, hold
