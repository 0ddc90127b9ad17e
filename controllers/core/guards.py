"""Guards: small pure stages (hold, tolerance, stabilisation, rate limits, bounds, warm-up).

Each stage takes the proposed replica count and returns ``(replicas, reason or None)`` plus,
where it keeps history, the new history. Policies chain the stages the real system has; a
stage that changed nothing returns ``None`` as its reason so the policy's own reason stands.
The semantics follow Kubernetes HPA (horizontal.go) where HPA has the same stage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from trimtab.controllers.core.types import (
    REASON_AT_MAX, REASON_AT_MIN, REASON_HOLD_MISSING,
    REASON_HOLD_STALE, REASON_HOLD_WARMUP, REASON_SCALE_UP_LIMITED, REASON_STABILIZING,
    REASON_WITHIN_TOLERANCE, Decision, FieldGroup, Snapshot,
)

REASON_SCALE_DOWN_LIMITED = "scale_down_limited"
REASON_SCALE_UP_STABILIZED = "scale_up_stabilized"

# (time_s, replicas): a recommendation, or a scale event (signed change).
Stamped = tuple[float, int]


@dataclass(frozen=True)
class RatePolicy:
    """One HPA scaling policy: ``kind`` 'pods' or 'percent', ``value`` per ``period_s``."""

    kind: str
    value: float
    period_s: float

    def __post_init__(self) -> None:
        if self.kind not in ("pods", "percent"):
            raise ValueError(f"rate policy kind = {self.kind!r}, must be 'pods' or 'percent'")
        if self.value <= 0 or self.period_s <= 0:
            raise ValueError(f"rate policy {self}: value and period_s must be > 0")


@dataclass(frozen=True)
class RateRules:
    """HPA ``behavior.scaleUp`` / ``scaleDown``: window, policies and selectPolicy."""

    window_s: float
    policies: tuple[RatePolicy, ...]
    select: str = "max"     # 'max' (most change), 'min' (least change) or 'disabled'


HPA_SCALE_UP = RateRules(0.0, (RatePolicy("percent", 100, 15), RatePolicy("pods", 4, 15)))
HPA_SCALE_DOWN = RateRules(300.0, (RatePolicy("percent", 100, 15),))


# What a policy needs read: a whole group (``FieldGroup.IN_FLIGHT``), or one Snapshot
# attribute (``"gpu_busy_ratio"``) when it needs that value and not the rest of its group.
Need = FieldGroup | str


def _unreadable(snapshot: Snapshot, need: Need, named: frozenset[FieldGroup]) -> bool:
    """``need`` cannot be used: its group is in ``named``, or its value is None (a group:
    every attribute it covers is None). ValueError for a name that is no attribute."""
    if isinstance(need, FieldGroup):
        return need in named or all(getattr(snapshot, a) is None for a in need.attributes)
    group = FieldGroup.of(need)
    return group in named or getattr(snapshot, need) is None


def hold_on_unreadable(snapshot: Snapshot, required: Iterable[Need]) -> Decision | None:
    """Hold (apply nothing) when something the policy needs is missing or stale.

    The replica count is always needed. Holding keeps the current count, so missing data
    never causes a scale-down.
    """
    need = list(required)
    missing = {n for n in need if _unreadable(snapshot, n, snapshot.missing)}
    if FieldGroup.REPLICAS in snapshot.missing or (
            snapshot.ready_replicas is None and snapshot.desired_replicas is None):
        missing.add(FieldGroup.REPLICAS)
    if missing:
        return Decision(replicas=snapshot.current_replicas, reason=REASON_HOLD_MISSING,
                        valid=False, details={"missing_fields": float(len(missing))})
    stale = {n for n in need if (n if isinstance(n, FieldGroup) else FieldGroup.of(n))
             in snapshot.stale}
    if stale:
        return Decision(replicas=snapshot.current_replicas, reason=REASON_HOLD_STALE,
                        valid=False, details={"stale_fields": float(len(stale))})
    return None


def value_missing(snapshot: Snapshot, need: Need) -> bool:
    """True when ``need`` cannot be used (its group named missing or stale, or no value)."""
    return _unreadable(snapshot, need, snapshot.missing | snapshot.stale)


def within_tolerance(current: int, desired: int, tolerance: float) -> tuple[int, str | None]:
    """Keep ``current`` when the relative change is at most ``tolerance`` (a band)."""
    if current > 0 and desired != current and abs(desired - current) / current <= tolerance:
        return current, REASON_WITHIN_TOLERANCE
    return desired, None


def prune(history: tuple[Stamped, ...], now_s: float, keep_s: float) -> tuple[Stamped, ...]:
    """Drop entries older than ``keep_s`` (history is bounded, so state stays small)."""
    cutoff_s = now_s - keep_s
    return tuple(h for h in history if h[0] > cutoff_s)


def stabilize(current: int, desired: int, history: tuple[Stamped, ...], now_s: float,
              up_window_s: float, down_window_s: float
              ) -> tuple[int, str | None, tuple[Stamped, ...]]:
    """HPA stabilisation: up = min of recent recommendations, down = max of recent ones.

    Example: current 10, recommendations in the last 300 s were 10, 8, 6 and now 5: the
    scale-down stays at max(10, 8, 6, 5) = 10 until the 10 ages out of the window.
    """
    up_rec = down_rec = desired
    for t_s, rec in history:
        if t_s > now_s - up_window_s:
            up_rec = min(up_rec, rec)
        if t_s > now_s - down_window_s:
            down_rec = max(down_rec, rec)
    result = max(current, up_rec)
    reason = None
    if result > down_rec:
        result = down_rec
    if result != desired:
        reason = REASON_STABILIZING if desired < result else REASON_SCALE_UP_STABILIZED
    keep_s = max(up_window_s, down_window_s)
    new_history = prune(history, now_s, keep_s) + ((now_s, desired),)
    return result, reason, new_history


def _change_in_period(events: tuple[Stamped, ...], now_s: float, period_s: float,
                      sign: int) -> int:
    return sum(abs(d) for t_s, d in events if t_s > now_s - period_s and d * sign > 0)


def rate_limit(current: int, desired: int, events: tuple[Stamped, ...], now_s: float,
               up: RateRules, down: RateRules, min_replicas: int, max_replicas: int
               ) -> tuple[int, str | None]:
    """HPA rate policies plus bounds, measured from the count at each period's start.

    Example (defaults): 10 replicas, none added in the last 15 s, desired 40: up limit is
    max(ceil(10 * 2), 10 + 4) = 20, so the result is 20 with reason scale_up_limited.
    """
    if desired > current:
        limit = _scale_up_limit(current, events, now_s, up)
        limit = max(limit, current)
        if max_replicas > limit:
            top, why = limit, REASON_SCALE_UP_LIMITED
        else:
            top, why = max_replicas, REASON_AT_MAX
        return (top, why) if desired > top else (desired, None)
    if desired < current:
        limit = min(_scale_down_limit(current, events, now_s, down), current)
        if min_replicas < limit:
            bottom, why = limit, REASON_SCALE_DOWN_LIMITED
        else:
            bottom, why = min_replicas, REASON_AT_MIN
        return (bottom, why) if desired < bottom else (desired, None)
    return desired, None


def _count_at_period_start(current: int, events: tuple[Stamped, ...], now_s: float,
                           period_s: float) -> int:
    """The replica count at the start of the rate policy's period (HPA measures from there)."""
    return (current - _change_in_period(events, now_s, period_s, +1)
            + _change_in_period(events, now_s, period_s, -1))


def _scale_up_limit(current: int, events: tuple[Stamped, ...], now_s: float,
                    rules: RateRules) -> int:
    if rules.select == "disabled":
        return current
    proposals = []
    for p in rules.policies:
        start = _count_at_period_start(current, events, now_s, p.period_s)
        if p.kind == "pods":
            proposals.append(start + int(p.value))
        else:
            proposals.append(math.ceil(start * (1 + p.value / 100) - 1e-9))
    return max(proposals) if rules.select == "max" else min(proposals)


def _scale_down_limit(current: int, events: tuple[Stamped, ...], now_s: float,
                      rules: RateRules) -> int:
    if rules.select == "disabled":
        return current
    proposals = []
    for p in rules.policies:
        start = _count_at_period_start(current, events, now_s, p.period_s)
        if p.kind == "pods":
            proposals.append(start - int(p.value))
        else:
            proposals.append(int(start * (1 - p.value / 100)))
    # 'max' selects the policy allowing the biggest change, i.e. the lowest count.
    return min(proposals) if rules.select == "max" else max(proposals)


def record_scale_event(events: tuple[Stamped, ...], now_s: float, before: int, after: int,
                       keep_s: float) -> tuple[Stamped, ...]:
    """Append a signed change (if any) and drop events older than ``keep_s``."""
    kept = prune(events, now_s, keep_s)
    return kept + ((now_s, after - before),) if after != before else kept


def clamp(desired: int, min_replicas: int, max_replicas: int) -> tuple[int, str | None]:
    """Min/max bounds with a reason when a bound bit."""
    if desired < min_replicas:
        return min_replicas, REASON_AT_MIN
    if desired > max_replicas:
        return max_replicas, REASON_AT_MAX
    return desired, None


def warmup(current: int, desired: int, started_s: float, now_s: float,
           warmup_s: float) -> tuple[int, str | None]:
    """After a (re)start, no scale-down until the policy's windows have filled."""
    if desired < current and now_s - started_s < warmup_s:
        return current, REASON_HOLD_WARMUP
    return desired, None


def bounded_step_up(current: int, desired: int, max_step_ratio: float,
                    min_step: int) -> tuple[int, str | None]:
    """Bound one tick's scale-up to ``max(ceil(current * ratio), current + min_step)``."""
    limit = max(math.ceil(current * max_step_ratio), current + min_step)
    if desired > limit:
        return limit, REASON_SCALE_UP_LIMITED
    return desired, None


__all__ = [
    "HPA_SCALE_DOWN", "HPA_SCALE_UP", "RatePolicy", "RateRules",
    "bounded_step_up", "clamp", "hold_on_unreadable", "prune", "rate_limit",
    "record_scale_event", "stabilize", "value_missing", "warmup", "within_tolerance",
]
