"""Assemble the trimtab.controllers.core.types.Snapshot the collectors would export from one sim window."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from trimtab.controllers.core.types import FIELD_GPU, LatencyHistogram, Snapshot
from trimtab.sim.fleet.model import MemoryModel, WindowStats

MAX_BATCH_SAMPLES = 256     # as the fleet keeps per window: the newest batches


def latency_histogram(latencies_s: np.ndarray, bounds_s: tuple[float, ...]) -> LatencyHistogram:
    """Non-cumulative bucket counts; a latency equal to a bound falls in that bound's bucket
    (Prometheus ``le``)."""
    idx = np.searchsorted(np.asarray(bounds_s), latencies_s, side="left")
    counts = np.bincount(idx, minlength=len(bounds_s) + 1)
    return LatencyHistogram(bounds_s=tuple(bounds_s), counts=tuple(counts.tolist()))


def build_snapshot(w: WindowStats, *, bounds_s: tuple[float, ...],
                   concurrency_limit: int | None, max_batch_size: int,
                   batch_timeout_ms: float, memory: MemoryModel | None) -> Snapshot:
    """Averages over the window ``[w.t0_s, w.t1_s]``; counts at its end."""
    window_s = w.t1_s - w.t0_s
    span = window_s if window_s > 0 else 1.0
    busy = w.busy_area / w.ready_area if w.ready_area > 0 else None
    mem_ratio = None
    if memory is not None:
        mem_ratio = memory.ratio(w.max_batch_seen)
    missing = frozenset({FIELD_GPU}) if busy is None and mem_ratio is None else frozenset()
    return Snapshot(
        time_s=w.t1_s, window_s=window_s,
        arrival_rate_rps=w.arrivals / span,
        completion_rate_rps=w.completions / span,
        queue_depth=w.queue_area / span,
        in_flight=w.held_area / span,
        latency=latency_histogram(w.latencies_s, bounds_s),
        batch_samples=tuple((float(b), float(s)) for b, s in w.batch_samples),
        mean_batch_size=(w.batch_items / w.batches) if w.batches else None,
        ready_replicas=w.ready, starting_replicas=w.starting, desired_replicas=w.desired,
        gpu_memory_used_ratio=mem_ratio, gpu_busy_ratio=busy,
        shed_rps=w.shed / span, timed_out_rps=w.timed_out / span,
        concurrency_limit=concurrency_limit, max_batch_size=max_batch_size,
        batch_timeout_ms=batch_timeout_ms, missing=missing)


def merge_windows(ws: Sequence[WindowStats]) -> WindowStats:
    """Consecutive windows as one: counts and integrals add, the end state is the last one's.

    E.g. two 5 s windows with 40 and 60 arrivals are one 10 s window with 100 (10 rps).
    """
    if not ws:
        raise ValueError("merge_windows: no windows")
    if len(ws) == 1:
        return ws[0]
    last = ws[-1]
    samples = [s for w in ws for s in w.batch_samples][-MAX_BATCH_SAMPLES:]
    return WindowStats(
        t0_s=ws[0].t0_s, t1_s=last.t1_s, arrivals=sum(w.arrivals for w in ws),
        completions=sum(w.completions for w in ws), shed=sum(w.shed for w in ws),
        timed_out=sum(w.timed_out for w in ws), failed=sum(w.failed for w in ws),
        queue_area=sum(w.queue_area for w in ws), held_area=sum(w.held_area for w in ws),
        busy_area=sum(w.busy_area for w in ws), ready_area=sum(w.ready_area for w in ws),
        latencies_s=np.concatenate([w.latencies_s for w in ws]), batch_samples=samples,
        batches=sum(w.batches for w in ws), batch_items=sum(w.batch_items for w in ws),
        max_batch_seen=max(w.max_batch_seen for w in ws), ready=last.ready,
        starting=last.starting, desired=last.desired, queue_depth_now=last.queue_depth_now,
        held_now=last.held_now)
