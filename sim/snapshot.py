"""Assemble the trimtab.controllers.core.types.Snapshot the collectors would export from one sim window."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from trimtab.controllers.core.types import FIELD_GPU, LatencyHistogram, Snapshot
from trimtab.sim.fleet.model import MemoryModel, WindowStats
from trimtab.sim.llm.fleet import merge_llm_windows
from trimtab.sim.llm.types import ITL_BOUNDS_S, LlmWindow

MAX_BATCH_SAMPLES = 256     # as the fleet keeps per window: the newest batches


def latency_histogram(latencies_s: np.ndarray, bounds_s: tuple[float, ...]) -> LatencyHistogram:
    """Non-cumulative bucket counts; a latency equal to a bound falls in that bound's bucket
    (Prometheus ``le``)."""
    idx = np.searchsorted(np.asarray(bounds_s), latencies_s, side="left")
    counts = np.bincount(idx, minlength=len(bounds_s) + 1)
    return LatencyHistogram(bounds_s=tuple(bounds_s), counts=tuple(counts.tolist()))


def rebucket(counts: np.ndarray, fine_bounds_s: tuple[float, ...],
             bounds_s: tuple[float, ...]) -> LatencyHistogram:
    """A fine ``le`` histogram (``len(fine_bounds_s) + 1`` counts) on coarser ``bounds_s``.

    Each fine bucket ``(b[k-1], b[k]]`` goes whole to the coarse bucket holding its upper bound
    ``b[k]``. Counts are kept; a coarse bound that is also a fine one (0.01, 0.1, 1 s on
    ``ITL_BOUNDS_S``) splits exactly; one that falls inside a fine bucket counts that bucket as
    above it, so ``count_over(bound)`` never misses a slow gap and overcounts by at most the
    gaps within one fine bucket (12 % wide on ``ITL_BOUNDS_S``) below the bound.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if len(counts) != len(fine_bounds_s) + 1:
        raise ValueError(f"rebucket: {len(counts)} counts for {len(fine_bounds_s)} fine bounds; "
                         "need one per bound plus one for +Inf")
    uppers = np.append(np.asarray(fine_bounds_s, dtype=float), np.inf)
    idx = np.searchsorted(np.asarray(bounds_s, dtype=float), uppers, side="left")
    out = np.bincount(idx, weights=counts, minlength=len(bounds_s) + 1).astype(np.int64)
    return LatencyHistogram(bounds_s=tuple(bounds_s), counts=tuple(out.tolist()))


def llm_fields(llm: LlmWindow, *, span_s: float, ready_area: float,
               ttft_bounds_s: tuple[float, ...], itl_bounds_s: tuple[float, ...]
               ) -> dict[str, Any]:
    """The Snapshot's ``FieldGroup.LLM`` values of one window, as vLLM's series would give
    them: gauges as means over the window (``*_area / span_s``), counters as rates,
    histograms of the requests (TTFT, TPOT) and tokens (ITL) finished in the window.

    KV-cache usage is blocks in use over the blocks of the ready replicas (None with none
    ready); the prefix-cache hit ratio is hits over queries (None with no query).
    """
    capacity = llm.num_blocks * ready_area
    return {
        "engine_running": llm.running_area / span_s,
        "engine_waiting": llm.waiting_area / span_s,
        "kv_cache_usage_ratio": min(1.0, llm.blocks_area / capacity) if capacity > 0 else None,
        "ttft": latency_histogram(llm.ttft_s, ttft_bounds_s),
        "tpot": latency_histogram(llm.tpot_s, itl_bounds_s),
        "itl": rebucket(llm.itl_counts, ITL_BOUNDS_S, itl_bounds_s),
        "prompt_tokens_rps": llm.prompt_tokens / span_s,
        "generation_tokens_rps": llm.output_tokens / span_s,
        "preemptions_rps": llm.preemptions / span_s,
        "prefix_cache_hit_ratio": (llm.prefix_hits / llm.prefix_queries
                                   if llm.prefix_queries else None),
    }


def build_snapshot(w: WindowStats, *, bounds_s: tuple[float, ...],
                   concurrency_limit: int | None, max_batch_size: int,
                   batch_timeout_ms: float, memory: MemoryModel | None,
                   ttft_bounds_s: tuple[float, ...] | None = None,
                   itl_bounds_s: tuple[float, ...] | None = None) -> Snapshot:
    """Averages over the window ``[w.t0_s, w.t1_s]``; counts at its end.

    An LLM window (``w.llm``) also fills the ``FieldGroup.LLM`` fields (``llm_fields``): TTFT
    on ``ttft_bounds_s``, TPOT and ITL on ``itl_bounds_s`` (both default to ``bounds_s``,
    which then should hold a bound at every SLO threshold, e.g.
    ``latency_buckets_s((latency_s, ttft_s, tpot_s))``). A request-level window leaves them None.
    """
    window_s = w.t1_s - w.t0_s
    span = window_s if window_s > 0 else 1.0
    busy = w.busy_area / w.ready_area if w.ready_area > 0 else None
    mem_ratio = None
    if memory is not None:
        mem_ratio = memory.ratio(w.max_batch_seen)
    missing = frozenset({FIELD_GPU}) if busy is None and mem_ratio is None else frozenset()
    llm = getattr(w, "llm", None)
    extra = {} if llm is None else llm_fields(
        llm, span_s=span, ready_area=w.ready_area,
        ttft_bounds_s=tuple(bounds_s if ttft_bounds_s is None else ttft_bounds_s),
        itl_bounds_s=tuple(bounds_s if itl_bounds_s is None else itl_bounds_s))
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
        batch_timeout_ms=batch_timeout_ms, missing=missing, **extra)


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
        held_now=last.held_now, llm=merge_llm_windows([w.llm for w in ws]))
