"""Run-level miss budget: how much of the SLO's error budget is spent, and what that changes.

The SLO is "``target`` of requests within the latency over the run", not "every window at p99".
The budget keeps running totals of requests and misses (slow, shed, timed out) and their ratio
to the misses allowed so far, ``burn = misses / ((1 - target) * requests)``: at or below 1
the run is within its SLO. Two things follow from it:

- the planning quantile: its tail follows the burn against ``target_burn`` both ways (narrower
  when overspending, at most ten-fold; wider with budget to spare, only as far as the evidence
  so far allows), see ``planning_quantile``;
- the headroom (a factor on the planned load, for model error): it rises after a window that
  missed outside a cold start (unless the run is calm: full evidence, burn far under target),
  eases quickly after clean windows while the budget has slack (burn < 0.7) and only slowly
  while it has not; with budget to spare it may fall below 1, down to ``headroom_min``.

The tuning is one ``BudgetConfig``; the trimtab policy binds it from its own config.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from trimtab.controllers.core.types import Snapshot


@dataclass(frozen=True)
class BudgetConfig:
    """The budget's tuning; the trimtab policy's config sets each by the same name."""

    burn_min_requests: float = 2000.0   # below this, the burn is not yet meaningful
    slo_window_s: float = 3600.0        # the shortest span the allowed misses are counted over
    evidence_s: float = 1200.0          # traffic seen before unused budget is spent in full
    headroom_raise: float = 1.2         # headroom step after a window over its share of misses
    headroom_ease: float = 0.98         # headroom step after a clean window with budget slack
    headroom_ease_over: float = 0.998   # ... and, slowly, after a clean window over budget
    headroom_max: float = 1.6           # cap of the headroom factor
    headroom_min: float = 0.85          # floor with budget to spare (below 1: under the load)
    target_burn: float = 0.6            # the share of the allowed misses the policy aims to spend
    quantile_tail_div: float = 10.0     # the planning tail shrinks at most ten-fold overspent
    quantile_tail_mul: float = 3.0      # under budget the planning tail may widen this much
    burn_power: float = 0.5             # how strongly the tail follows the burn
    raise_burn: float = 0.5             # below this share of target_burn, with full evidence,
                                        # one bad window does not raise the headroom


DEFAULT = BudgetConfig()


@dataclass(frozen=True)
class BudgetState:
    requests: float = 0.0
    misses: float = 0.0
    headroom: float = 1.0
    elapsed_s: float = 0.0       # time the counts cover

    def burn(self, target: float, cfg: BudgetConfig = DEFAULT) -> float:
        """Misses over the misses the SLO allows (0 until enough requests).

        What is allowed is counted over at least ``slo_window_s`` of traffic at the rate seen
        so far, so a bad first minute (a fleet started too small) is weighed against the
        hour it belongs to, not against itself, and does not set the policy's course for the
        rest of the run; past the window, it is the run's own ratio.
        """
        if self.requests < cfg.burn_min_requests:
            return 0.0
        window = self.requests / max(self.elapsed_s, 1e-9) * cfg.slo_window_s
        return self.misses / max((1.0 - target) * max(self.requests, window), 1e-9)


def confidence(state: "BudgetState", cfg: BudgetConfig = DEFAULT) -> float:
    """How much evidence the counts are (0..1 over ``evidence_s``): unused budget is spent
    only on evidence, so a calm first few minutes do not talk the policy out of headroom it
    may need for a spike it has not seen yet; the ramp ends early so that, under constant
    load, the fleet settles once and stays."""
    return min(1.0, state.elapsed_s / cfg.evidence_s)


def planning_quantile(quantile: float, burn: float, trust: float = 0.0,
                      cfg: BudgetConfig = DEFAULT) -> float:
    """The forecast quantile to plan on: its tail follows the burn against ``target_burn``.

    The tail ``1 - quantile`` is multiplied by ``(target_burn / burn) ** burn_power``: a run
    overspending (burn 2.4: factor 0.5) plans on half the tail (0.95 -> 0.975), at most ten-
    fold narrower; a run with budget to spare plans on a wider tail, up to ``quantile_tail_mul``
    scaled by ``trust`` (``confidence``): with no evidence yet, no wider than configured.
    """
    if burn <= 0:
        return quantile
    widest = 1.0 + (cfg.quantile_tail_mul - 1.0) * min(max(trust, 0.0), 1.0)
    factor = min(max((cfg.target_burn / burn) ** cfg.burn_power, 1.0 / cfg.quantile_tail_div),
                 widest)
    return 1.0 - (1.0 - quantile) * factor


def window_counts(snapshot: Snapshot, slo_s: float) -> tuple[float, float] | None:
    """(requests, misses) of the window, counting shed and timed out; None if unreadable."""
    hist = snapshot.latency
    if hist is None:
        return None
    lost = ((snapshot.shed_rps or 0.0) + (snapshot.timed_out_rps or 0.0)) * snapshot.window_s
    return hist.total + lost, hist.count_over(slo_s) + lost


def update(state: BudgetState, snapshot: Snapshot, slo_s: float, target: float,
           cfg: BudgetConfig = DEFAULT, counts: tuple[float, float] | None = None
           ) -> BudgetState:
    """Fold the window in; adjust the headroom on this window's and the run's miss rate.
    ``counts`` (requests, misses) replaces the end-to-end count (an LLM fleet's TTFT and TPOT
    misses)."""
    if counts is None:
        counts = window_counts(snapshot, slo_s)
    if counts is None or counts[0] < 20:
        return state
    total, misses = counts
    state = replace(state, requests=state.requests + total, misses=state.misses + misses,
                    elapsed_s=state.elapsed_s + snapshot.window_s)
    allowed = 1.0 - target
    rate = misses / total
    burn = state.burn(target, cfg)
    headroom = state.headroom
    if rate > allowed:
        calm = burn < cfg.raise_burn * cfg.target_burn and confidence(state, cfg) >= 1.0
        if not (snapshot.starting_replicas or 0) and not calm:   # cold start's own misses
            headroom = min(cfg.headroom_max, headroom * cfg.headroom_raise)
    elif rate < 0.25 * allowed:
        # Within budget: spend some, on evidence, in full up to half the target burn and
        # less and less up to the target (no step where a few misses would switch it off).
        slack = min(max((cfg.target_burn - burn) / (0.5 * cfg.target_burn), 0.0), 1.0)
        floor = 1.0 - (1.0 - cfg.headroom_min) * confidence(state, cfg) * slack
        headroom = max(min(floor, headroom), headroom * (cfg.headroom_ease if burn < 0.7
                                                         else cfg.headroom_ease_over))
    return replace(state, headroom=headroom)
