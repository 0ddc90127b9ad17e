"""Capacity model: a robust online fit of batch time s(b) = a + c*b and a p99 latency model.

The fit keeps, per batch size, a robust running mean batch time (clipped steps; bounded state
however many batches are seen) and runs Theil-Sen (scipy) over the sizes, so a few slow
batches or one odd size cannot drag the line. Per-replica throughput at batch b is b / s(b).

The latency model for n replicas at load lam (least-outstanding routing splits it evenly,
r = lam / n per replica) with a greedy batcher: the batch settles where b = r * s(b), i.e.
``b* = r a / (1 - r c)``. A request waits for the batch in service, then rides in the next
one, whose size is the arrivals during one batch at their q-quantile (Poisson); arrivals
beyond the max batch wait a pro-rated share of a full batch more. Example: a = 30 ms,
c = 5 ms, max batch 16, r = 100/s: b* = 100 * 0.03 / (1 - 0.5) = 6, s(6) = 60 ms; q99 of
Poisson(6) is 12, s(12) = 90 ms; p99 is about 60 + 90 = 150 ms plus the batch timeout. Checked
against the simulator at 60-80 % utilisation: within about 10 % of its p99.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, poisson, theilslopes

EW_WEIGHT = 0.2           # weight of a new window's mean time for its batch size
MAX_UTILISATION = 0.9     # of full-batch capacity: the quantile model ignores queue build-up
                          # close to saturation


@dataclass(frozen=True)
class BatchFit:
    a_s: float              # fixed cost per batch
    c_s: float              # cost per item
    samples: int
    cv: float = 0.0         # spread of one batch's time around the line (std / mean)

    def batch_time_s(self, b: float) -> float:
        return self.a_s + self.c_s * b

    def throughput_rps(self, b: float) -> float:
        """Per-replica requests per second at batch size ``b``."""
        return b / self.batch_time_s(b)


@dataclass(frozen=True)
class CapacityState:
    # (batch size, EW mean batch time s, samples seen) per observed size, sorted by size.
    by_size: tuple[tuple[float, float, int], ...] = ()
    # EW mean of (time / its size's mean - 1) ** 2 over single batches: how much one batch
    # strays, which is what a request admitted just in time has no room for.
    rel_var: float = 0.0


def observe(state: CapacityState, samples: tuple[tuple[float, float], ...],
            max_sizes: int = 64, ew_weight: float = EW_WEIGHT) -> CapacityState:
    """Fold this window's (batch size, batch time s) pairs into per-size means."""
    if not samples:
        return state
    table = {size: (t, n) for size, t, n in state.by_size}
    groups: dict[float, list[float]] = {}
    for size, time_s in samples:
        if size > 0 and time_s > 0 and math.isfinite(size) and math.isfinite(time_s):
            groups.setdefault(float(round(size)), []).append(float(time_s))
    rel_var = state.rel_var
    for size, times in groups.items():
        window_mean_s = float(np.median(times))
        old = table.get(size)
        if old is None:
            table[size] = (window_mean_s, len(times))
        else:
            dev2 = float(np.mean(np.minimum((np.asarray(times) / old[0] - 1.0) ** 2, 1.0)))
            rel_var += ew_weight * (dev2 - rel_var)
            # A clipped step (a Huber-like update): one stalled window moves the mean by at
            # most 5 %, while a real shift is followed within a few windows.
            step_s = min(max(window_mean_s - old[0], -0.25 * old[0]), 0.25 * old[0])
            table[size] = (old[0] + ew_weight * step_s, old[1] + len(times))
    ordered = sorted(table.items(), key=lambda kv: -kv[1][1])[:max_sizes]
    return CapacityState(tuple(sorted((s, t, n) for s, (t, n) in ordered)), rel_var)


def fit(state: CapacityState, prior: BatchFit | None = None) -> BatchFit | None:
    """Theil-Sen line through per-size means; one size alone gives a conservative split."""
    if not state.by_size:
        return prior
    sizes = np.array([s for s, _, _ in state.by_size])
    times = np.array([t for _, t, _ in state.by_size])
    total = int(sum(n for _, _, n in state.by_size))
    cv = math.sqrt(state.rel_var)
    if len(sizes) == 1:
        b, t = sizes[0], times[0]
        if prior is not None:          # keep the prior's shape, rescaled to the observation
            k = t / prior.batch_time_s(b)
            return BatchFit(prior.a_s * k, prior.c_s * k, total, cv)
        return BatchFit(0.5 * t, 0.5 * t / b, total, cv)
    slope, intercept, _, _ = theilslopes(times, sizes)
    slope = max(float(slope), 0.0)
    intercept = float(intercept)
    if intercept <= 0:                 # a batch always costs something: refit through sizes
        intercept = max(float(np.min(times - slope * sizes)), 1e-4)
    return BatchFit(intercept, slope, total, cv)


def settled_batch(fit_: BatchFit, rate_rps: float) -> float:
    """b* solving b = r * s(b); inf when the replica cannot keep up at any batch size."""
    if rate_rps <= 0:
        return 1.0
    denom = 1.0 - rate_rps * fit_.c_s
    if denom <= 0:
        return math.inf
    return max(1.0, rate_rps * fit_.a_s / denom)


def p_latency_s(fit_: BatchFit, rate_rps: float, replicas: int, max_batch: int, q: float,
                batch_timeout_s: float = 0.0) -> float:
    """Predicted q-quantile latency with ``replicas`` at ``rate_rps`` (inf if overloaded)."""
    if replicas <= 0:
        return math.inf if rate_rps > 0 else 0.0
    r = rate_rps / replicas
    b = settled_batch(fit_, r)
    if b > max_batch:
        return math.inf
    s_b = fit_.batch_time_s(b)
    riders = float(poisson.ppf(q, max(r * s_b, 1e-9)))
    own = fit_.batch_time_s(min(max(riders, 1.0), max_batch))
    overflow_s = max(0.0, riders - max_batch) / max_batch * fit_.batch_time_s(max_batch)
    return s_b + own + overflow_s + batch_timeout_s


def replicas_for(fit_: BatchFit, rate_rps: float, budget_s: float, max_batch: int, q: float,
                 max_replicas: int, batch_timeout_s: float = 0.0,
                 max_utilisation: float = MAX_UTILISATION) -> int:
    """Fewest replicas (1..max) keeping the predicted quantile under ``budget_s``.

    Also keeps utilisation against full-batch capacity under ``max_utilisation``, since the
    quantile model ignores queue build-up close to saturation.
    """
    if rate_rps <= 0:
        return 1
    cap = fit_.throughput_rps(max_batch) * max_utilisation
    lo = max(1, math.ceil(rate_rps / cap - 1e-9))
    if lo > max_replicas:
        return max_replicas
    hi = max_replicas
    if p_latency_s(fit_, rate_rps, hi, max_batch, q, batch_timeout_s) > budget_s:
        return max_replicas
    while lo < hi:          # latency falls as replicas rise: binary search
        mid = (lo + hi) // 2
        if p_latency_s(fit_, rate_rps, mid, max_batch, q, batch_timeout_s) <= budget_s:
            hi = mid
        else:
            lo = mid + 1
    return lo


def best_max_batch(fit_: BatchFit, budget_s: float, configured: int) -> int:
    """Largest batch (<= configured, which fits GPU memory) whose wait plus time fits the budget.

    A request may wait for one batch in service and ride in the next: 2 * s(b) <= budget.
    """
    for b in range(configured, 0, -1):
        if 2 * fit_.batch_time_s(b) <= budget_s:
            return b
    return 1


def batches_admitted(fit_: BatchFit, max_batch: int, slo_latency_s: float) -> int:
    """Full batches a replica holds in flight: at least two (one running, one forming), and
    as many as fit in half the SLO, the other half being the wait for admission."""
    return max(2, int(0.5 * slo_latency_s / fit_.batch_time_s(max_batch)))


def concurrency_limit(fit_: BatchFit, max_batch: int, slo_latency_s: float) -> int:
    """In flight per replica so that what is admitted is done within its share of the SLO.

    Little's law at full batches: ``k`` batches in flight take ``k * s(b)`` to get through,
    so ``L = k * b`` with ``k = batches_admitted``. Example: s(8) = 0.26 s, SLO 1 s: k = 2,
    L = 16, and an admitted request is done within about 0.52 s.
    """
    return batches_admitted(fit_, max_batch, slo_latency_s) * max_batch


def admission_wait_s(fit_: BatchFit, limit: int, max_batch: int, slo_latency_s: float,
                     q: float = 0.99) -> float:
    """Longest wait for admission that still leaves a request time to finish within the SLO.

    Admitted behind ``limit`` others it needs ``k = ceil(limit / b)`` batch times, at their
    q-quantile: ``k * s(b) + z_q * sqrt(k) * cv * s(b)`` (independent batches whose times
    stray by ``cv``); what is left of the SLO is how long it may wait at the door. Shedding at
    that point is what keeps an overload from making every request late: a FIFO backlog
    otherwise delays all that come after it, while those that waited longer would have been
    late anyway. At least 5 % of it. Example: s(16) = 0.252 s, cv 0.2, k = 2, SLO 0.75 s:
    inside 0.504 + 2.33 * 1.41 * 0.05 = 0.67 s, 0.08 s at the door (0.25 s with cv 0, where
    under overload half of those served were late).
    """
    k = math.ceil(limit / max(max_batch, 1))
    s_b = fit_.batch_time_s(max_batch)
    inside_s = k * s_b + float(norm.ppf(q)) * math.sqrt(k) * fit_.cv * s_b
    return max(slo_latency_s - inside_s, 0.05 * slo_latency_s)
