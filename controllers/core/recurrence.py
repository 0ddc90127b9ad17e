"""Idle-then-burst memory: how long quiet spells last before load comes back, and how many
replicas to keep through one once a return has found the fleet too small.

A spell is *quiet* while the need for the load seen now is at most ``quiet_ratio`` of the last
busy spell's largest (or one replica). Load has *returned* when that need is back over one
replica and to ``return_ratio`` of it (bursts differ in height: a low one after a high one
still counts); every quiet spell that ends in a return is recorded. A return is *costly* when its window (or the next:
a burst's misses may land after it) missed the SLO: a burst after idle found the fleet too
small, and with a cold start longer than a short burst, no scale-up answers it in time. After
``min_returns`` costly returns, the fleet keeps the busy spell's planned replicas through a
quiet spell for ``hold_factor`` times the ``hold_quantile`` of the recorded spells (plus one
interval; SLO first: quiet spells have long tails), at most ``max_hold_s``; longer quiet spells let it go. A smooth or slowly varying load, whose returns
find the fleet ready, never triggers the hold. Pure: time is a parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class RecurrenceConfig:
    """The memory's tuning; the trimtab policy's config sets each by the same name."""

    quiet_ratio: float = 0.15        # need at most this share of the busy spell's (or 1): quiet
    return_ratio: float = 0.2        # need back to this share of it (and over 1): returned
    min_returns: int = 1             # costly returns seen before the fleet is held
    hold_quantile: float = 1.0       # of the recorded quiet spells' lengths (1: the longest)
    hold_factor: float = 2.0         # ... times this: a tail longer than any seen yet is likely
    max_hold_s: float = 3600.0       # never hold a quiet fleet longer than this
    memory: int = 20                 # recorded spells kept (the most recent)


@dataclass(frozen=True)
class RecurrenceState:
    busy_need: int = 0                   # the busy spell's largest need for the load seen
    busy_planned: int = 0                # ... and its largest planned replicas
    quiet_since_s: float | None = None   # start of the current quiet spell
    quiet_s: tuple[float, ...] = ()      # lengths of the quiet spells that ended in a return
    costly: int = 0                      # returns that found the fleet too small
    judging: bool = False                # the last return is judged over two windows


def observe(state: RecurrenceState, need: int, planned: int, missed: bool, now_s: float,
            cfg: RecurrenceConfig) -> RecurrenceState:
    """Fold in this tick's need for the load seen now, the replicas planned, and whether its
    window missed the SLO."""
    if state.judging:                                  # the window after a return
        state = replace(state, judging=False, costly=state.costly + int(missed))
    if state.quiet_since_s is None:
        if state.busy_need > 1 and need <= max(1.0, cfg.quiet_ratio * state.busy_need):
            return replace(state, quiet_since_s=now_s)
        return replace(state, busy_need=max(state.busy_need, need),
                       busy_planned=max(state.busy_planned, planned))
    if need <= 1 or need < cfg.return_ratio * state.busy_need:
        return state                                   # still quiet
    spells = (state.quiet_s + (now_s - state.quiet_since_s,))[-cfg.memory:]
    return RecurrenceState(busy_need=need, busy_planned=planned, quiet_since_s=None,
                           quiet_s=spells, costly=state.costly + int(missed),
                           judging=not missed)


def hold_s(state: RecurrenceState, cfg: RecurrenceConfig, interval_s: float) -> float:
    """How long a quiet fleet is kept at the busy spell's replicas (0 until learned)."""
    if state.costly < cfg.min_returns or not state.quiet_s:
        return 0.0
    q = float(np.quantile(np.asarray(state.quiet_s), cfg.hold_quantile))
    return min(cfg.max_hold_s, cfg.hold_factor * q + interval_s)


def floor(state: RecurrenceState, cfg: RecurrenceConfig, interval_s: float, now_s: float
          ) -> int:
    """The replicas to keep now: the busy spell's inside a learned quiet spell, else 0."""
    if state.quiet_since_s is None:
        return 0
    held_s = hold_s(state, cfg, interval_s)
    if held_s > 0 and now_s - state.quiet_since_s <= held_s:
        return state.busy_planned
    return 0
