"""Fitting the simulator's model of the live serving stack from a live run's own metrics.

Three things the replica's batch metrics alone miss, each fitted from the same run:

- **Saturated intake.** Measured on this machine (Ray Serve 2.60, 2 cores): a replica kept
  busy by a backlog ran batches of about 1.2 and served about 10.5 rps, although 16 requests
  were in flight to it and the batch line ``40 + 60 b`` ms would serve 15 rps at batch 8.
  Ray's router hands a busy replica work slowly, so the replica holds about one or two
  requests, not ``max_ongoing_requests``. Fitted from the replica windows where the batch
  metrics say the replica was busy back to back (utilization >= 0.95): the requests it
  effectively holds (the mean batch, rounded up) and the rate it served.
- **The effective batch line** on [1, that concurrency]: through the batch metrics' own
  ``s(1)`` (a lone request at low load sees the batch time as measured) and through
  ``L / saturated rate`` at ``L`` (what a saturated replica really achieved).
- **The hop** (load generator -> sidecar -> Ray proxy -> replica and back): the low
  quantile of client latencies above ``s(1)`` plus the batch wait timeout; it adds latency
  but occupies no replica.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

DEFAULT_COLD_START_S = 2.0
SATURATED_UTILIZATION = 0.95   # busy fraction of a window that counts as saturated
BATCH_ROUND_SLACK = 0.1        # mean batch 1.08 -> holds 1; 1.2 -> holds 2
HOP_QUANTILE = 0.1


@dataclass(frozen=True)
class ServiceFit:
    base_ms: float
    per_item_ms: float
    cv: float
    windows: int

    def batch_ms(self, batch_size: float) -> float:
        return self.base_ms + self.per_item_ms * batch_size


def fit_service(samples: Sequence[tuple[float, float, float]]) -> ServiceFit:
    """Weighted least squares of batch time on batch size over (size, time_s, batches) rows.

    E.g. rows (1, 0.075, 40) and (3, 0.125, 10) give base 50 ms and 25 ms per item. With one
    distinct batch size the slope is unknown: it is taken as 0 and the mean is the base.
    """
    rows = np.asarray([s for s in samples if s[2] > 0 and s[1] > 0], dtype=float)
    if len(rows) == 0:
        raise ValueError("fit_service: no batch samples (size, time_s, batches) with batches > 0")
    b, t, w = rows[:, 0], rows[:, 1] * 1000.0, rows[:, 2]
    if np.ptp(b) < 1e-6:
        base, slope = float(np.average(t, weights=w)), 0.0
    else:
        x = np.column_stack([np.ones_like(b), b]) * np.sqrt(w)[:, None]
        (base, slope), *_ = np.linalg.lstsq(x, t * np.sqrt(w), rcond=None)
        base, slope = float(base), float(slope)
        if slope < 0:    # noise: fall back to a flat model through the mean
            base, slope = float(np.average(t, weights=w)), 0.0
        if base < 0:
            base, slope = 0.0, float(np.average(t / b, weights=w))
    resid = t - (base + slope * b)
    # A window mean of k batches has variance sigma^2 / k: scale back to one batch.
    sigma_ms = float(np.sqrt(np.average(resid ** 2 * w, weights=w))) if len(rows) > 2 else 0.0
    mean_ms = float(np.average(t, weights=w))
    cv = min(1.0, sigma_ms / mean_ms) if mean_ms > 0 else 0.0
    return ServiceFit(round(base, 3), round(slope, 3), round(cv, 4), len(rows))


def cold_start_s(applied: Sequence[Any], replica_samples: Sequence[tuple[float, int, int]]
                 ) -> float:
    """Mean time from a scale-up being applied to that many replicas RUNNING.

    The replicas are sampled about once a second: a replica first seen RUNNING at sample t
    came up between the sample before and t, so the midpoint is taken (never before the
    change). E.g. applied at 10.0, samples at 12.0 (1 running) and 13.0 (3): 2.5 s.
    """
    delays = []
    for a in applied:
        change = a.changes.get("replicas")
        if change is None or change[0] is None or change[1] <= change[0]:
            continue
        prev_s = a.at_s
        for t, running, _starting in replica_samples:
            if t >= a.at_s and running >= change[1]:
                delays.append((max(prev_s, a.at_s) + t) / 2.0 - a.at_s)
                break
            prev_s = t
    return float(np.mean(delays)) if delays else DEFAULT_COLD_START_S


@dataclass(frozen=True)
class ReplicaWindow:
    """One replica's batch counters over one window (increase of each counter)."""

    batches: float
    items: float
    busy_s: float
    window_s: float

    @property
    def utilization(self) -> float:
        return self.busy_s / self.window_s if self.window_s > 0 else 0.0


@dataclass(frozen=True)
class Saturation:
    """How a replica behaved when busy back to back; ``concurrency`` None: never saturated."""

    concurrency: int | None
    rps: float | None                  # per replica
    mean_batch: float | None
    windows: int


def fit_saturation(windows: Sequence[ReplicaWindow],
                   min_utilization: float = SATURATED_UTILIZATION) -> Saturation:
    """Requests a saturated replica effectively holds, and the rate it serves.

    Over the windows busy at least ``min_utilization``: the batch-weighted mean batch size
    (total items / total batches), rounded up past a small slack, is the concurrency the
    simulator gives each replica; total items / total window time is the rate. E.g. windows
    (batches 44, items 53, 5 s) and (batches 43, items 54, 5 s), both 99 % busy: mean batch
    1.23 -> holds 2; 10.7 rps.
    """
    sat = [w for w in windows if w.batches >= 1 and w.window_s > 0
           and w.utilization >= min_utilization]
    if not sat:
        return Saturation(None, None, None, 0)
    batches = sum(w.batches for w in sat)
    items = sum(w.items for w in sat)
    span_s = sum(w.window_s for w in sat)
    mean_batch = items / batches
    concurrency = max(1, math.ceil(mean_batch - BATCH_ROUND_SLACK))
    return Saturation(concurrency, round(items / span_s, 4), round(mean_batch, 4), len(sat))


def effective_service(fit: ServiceFit, sat: Saturation, batch_timeout_ms: float = 0.0
                      ) -> ServiceFit:
    """The batch line the simulator runs: through ``s(1)`` and through ``L / rate`` at ``L``.

    E.g. the batch metrics say 40 + 60 b ms; saturated replicas held 2 and served 10.5 rps:
    a cycle of 2 takes 2 / 10.5 = 190.5 ms, of which the batch wait timeout (the batcher
    waits for a full batch that never comes; 0 here) is not service, so s(2) = 190.5 ms and
    the line is 9.5 + 90.5 b (s(1) still 100 ms). Never faster than the batch metrics (a
    stack cannot serve faster than its batches run); holding one, s(1) = max(s(1), cycle).
    """
    if sat.concurrency is None or not sat.rps:
        return fit
    n = sat.concurrency
    s1 = fit.batch_ms(1)
    target_ms = 1000.0 * n / sat.rps - batch_timeout_ms
    if n == 1:
        return ServiceFit(round(max(s1, target_ms) - fit.per_item_ms, 3), fit.per_item_ms,
                          fit.cv, fit.windows)
    slope = max(fit.per_item_ms, (target_ms - s1) / (n - 1))
    return ServiceFit(round(s1 - slope, 3), round(slope, 3), fit.cv, fit.windows)


def fit_hop_s(latencies_s: Sequence[float], fit: ServiceFit, batch_timeout_ms: float,
              quantile: float = HOP_QUANTILE) -> float:
    """Latency outside the replica: a low quantile of the client's latencies minus what a
    lone request spends in the replica (the batch wait timeout, then ``s(1)``).

    At low load most requests find their replica idle, so the fastest tenth of them is
    hop + timeout + s(1); e.g. a 10th percentile of 125 ms with 5 ms timeout and s(1) = 100
    ms gives a 20 ms hop. Never negative.
    """
    lat = np.asarray(latencies_s, dtype=float)
    lat = lat[np.isfinite(lat)]
    if len(lat) == 0:
        return 0.0
    floor_s = (batch_timeout_ms + fit.batch_ms(1)) / 1000.0
    return round(max(0.0, float(np.quantile(lat, quantile)) - floor_s), 5)


def lag_windows(window_s: float, interval_s: float, scrape_interval_s: float = 1.0) -> int:
    """Controller intervals the live controller's view spans: its rate window plus the
    scrape lag, in whole intervals (5 s window + 1 s scrape at 3 s ticks -> 2)."""
    return max(1, round((window_s + scrape_interval_s) / interval_s))
