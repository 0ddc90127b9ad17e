"""The LLM fleet: a token-level engine (compiled or reference) behind the request-level
fleet's interface, so replay, SimSource, SimActuator and the report drive it unchanged.

Names other modules read (fixed; helper H5b's snapshot/report code relies on them):

- ``WindowStats.llm``: a ``trimtab.sim.llm.types.LlmWindow`` for the window (None for
  request-level fleets); ``merge_llm_windows(ws)`` merges consecutive ones (samples
  concatenated, counters and areas added, gauges and ``num_blocks`` from the last).
- ``RunResult.ticks`` of an llm scenario adds, per controller tick, the columns of
  ``LLM_TICK_COLUMNS``: ``ttft_p99_s`` and ``tpot_p99_s`` (seconds, of the requests that
  finished in the tick's window; NaN when none), ``kv_cache_usage`` (KV blocks in use over the
  blocks of the READY and DRAINING replicas, 0..1, at the tick: the fleet mean of vLLM's
  per-pod ``kv_cache_usage_perc``; NaN with none), ``running``
  and ``waiting`` (sequences on replicas at the tick, summed over replicas, as vLLM's
  ``num_requests_running`` / ``num_requests_waiting``; the router queue is not in ``waiting``).
- ``RunResult.summary`` of an llm scenario adds ``ttft_p50_s, ttft_p99_s, tpot_p50_s,
  tpot_p99_s, itl_p50_s, itl_p99_s, preemptions, prompt_tokens, output_tokens,
  output_tokens_per_s, throughput_rps, prefix_hit_rate``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from trimtab.sim.fleet.types import (DRAINING, NO_LIMIT, READY, SERVED, STARTING, STATE_NAMES,
                                     WindowStats)
from trimtab.sim.llm.types import ITL_BOUNDS_S, LlmRequests, LlmWindow, SchedulerConfig, StepModel

LLM_TICK_COLUMNS = ("ttft_p99_s", "tpot_p99_s", "kv_cache_usage", "running", "waiting")
ENGINES = ("compiled", "reference")
# Totals whose change over a window is the window's count or integral.
_DELTAS = ("arrived", "served", "shed", "timed_out", "failed", "steps", "prompt_tokens",
           "output_tokens", "preemptions", "prefix_queries", "prefix_hits", "itl_sum_s",
           "area_live", "area_ready", "area_busy", "area_system", "area_queue",
           "area_running", "area_waiting", "area_blocks")


def engine_class(name: str) -> type:
    """The engine implementation: ``compiled`` (trimtab.sim.llm.core, numba) or
    ``reference`` (trimtab.sim.llm.reference, plain Python); both follow SPEC.md."""
    if name == "compiled":
        from trimtab.sim.llm.core import CompiledFleet

        return CompiledFleet
    if name == "reference":
        from trimtab.sim.llm.reference import ReferenceFleet

        return ReferenceFleet
    raise ValueError(f"engine = {name!r}, must be one of {', '.join(ENGINES)}")


@dataclass(frozen=True)
class LlmFleetConfig:
    """Everything the LLM fleet needs, free of YAML (the replay builds it from a scenario).

    ``memory`` is None: an LLM replica's memory is its KV cache (``scheduler.num_blocks``),
    not the request-level fleet's per-item model.
    """

    scheduler: SchedulerConfig
    step: StepModel
    cold_start: Callable[[], float]
    initial_replicas: int = 1
    concurrency_limit: int | None = None
    max_queue: int | None = None
    queue_timeout_s: float | None = None
    router: str = "least_outstanding"          # | prefix_aware
    engine: str = "compiled"
    seed: int = 0
    memory: Any = None


class LlmClock:
    """The engine seen as the replay's event engine: ``now``, ``run(until_s)``, ``events``
    (engine steps so far) and ``arrivals_done``; ``SimClock`` runs on it unchanged."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    @property
    def now(self) -> float:
        return float(self.engine.now_s)

    def run(self, until_s: float) -> None:
        if until_s >= self.engine.now_s:
            self.engine.advance(float(until_s))

    @property
    def events(self) -> int:
        return int(self.engine.totals()["steps"])

    @property
    def arrivals_done(self) -> int:
        return int(self.engine.totals()["arrived"])


def _itl_counts(engine: Any) -> np.ndarray:
    counts = getattr(engine, "itl_counts", None)
    if counts is None:
        counts = engine.totals()["itl_counts"]
    # A copy: an engine may fill its histogram in place.
    return np.array(counts() if callable(counts) else counts, dtype=np.int64)


class LlmFleet:
    """A token-level LLM fleet behind the request-level ``Fleet``'s interface.

    Drive it with ``eng.run(until_s)``; close windows with ``take_window``; steer it with
    ``set_desired``, ``set_concurrency_limit`` and ``set_queue_timeout_s``. The batch knobs
    (``set_max_batch``, ``set_batch_timeout_s``) are recorded and read back but change
    nothing: an LLM engine batches by its scheduler (``max_num_seqs``,
    ``max_num_batched_tokens``), which no policy sets.
    """

    def __init__(self, requests: LlmRequests, cfg: LlmFleetConfig, *,
                 record_steps: bool = False) -> None:
        self.cfg = cfg
        self.requests = requests
        self.engine = engine_class(cfg.engine)(
            requests, cfg.scheduler, cfg.step, seed=cfg.seed, router=cfg.router,
            max_queue=cfg.max_queue, queue_timeout_s=cfg.queue_timeout_s,
            limit=cfg.concurrency_limit, record_steps=record_steps)
        self.eng = LlmClock(self.engine)
        self.arrival_s = requests.arrival_s
        self.limit = cfg.concurrency_limit if cfg.concurrency_limit is not None else NO_LIMIT
        self._qto = cfg.queue_timeout_s
        self.max_batch = cfg.scheduler.max_num_seqs
        self.batch_timeout_s = 0.0
        self.desired = cfg.initial_replicas
        self.cold_starts = 0
        self.oom_events = 0
        self.last_batch_sizes = np.empty(0, dtype=np.int64)
        self.serving_now = 0            # READY + DRAINING replicas at the last window's end
        for _ in range(cfg.initial_replicas):
            self.engine.add_replica(0.0)
        self._w_t0 = 0.0
        self._w_tot = self._totals()
        self._w_itl = _itl_counts(self.engine)

    # ------------------------------------------------------------------ per request
    @property
    def start_s(self) -> np.ndarray:
        """When each request was first scheduled (its prefill began), NaN until then."""
        return np.asarray(self.engine.first_scheduled_s)

    @property
    def first_token_s(self) -> np.ndarray:
        return np.asarray(self.engine.first_token_s)

    @property
    def finish_s(self) -> np.ndarray:
        return np.asarray(self.engine.finish_s)

    @property
    def outcome(self) -> np.ndarray:
        return np.asarray(self.engine.outcome)

    @property
    def replica_of(self) -> np.ndarray:
        return np.asarray(self.engine.replica_of)

    @property
    def generated(self) -> np.ndarray:
        return np.asarray(self.engine.generated)

    @property
    def preemptions(self) -> np.ndarray:
        return np.asarray(self.engine.preemptions)

    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.arrival_s

    def tpot_s(self) -> np.ndarray:
        """Per request ``(finish - first token) / (generated - 1)``; NaN with one token."""
        gen = self.generated.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = (self.finish_s - self.first_token_s) / (gen - 1.0)
        tpot[~(gen > 1)] = np.nan
        return tpot

    # ------------------------------------------------------------------ counts and areas
    def _totals(self) -> dict[str, float]:
        t = self.engine.totals()
        return {k: t[k] for k in _DELTAS}

    def totals(self) -> dict[str, Any]:
        return self.engine.totals()

    def itl_counts(self) -> np.ndarray:
        """The engine's cumulative inter-token-gap histogram over ITL_BOUNDS_S (a copy)."""
        return _itl_counts(self.engine)

    @property
    def n_arrived(self) -> int:
        return self.eng.arrivals_done

    @property
    def in_system(self) -> int:
        t = self.engine.totals()
        return int(t["arrived"] - t["served"] - t["shed"] - t["timed_out"] - t["failed"])

    def _area(self, key: str) -> float:
        return float(self.engine.totals()[key])

    area_live = property(lambda self: self._area("area_live"))
    area_ready = property(lambda self: self._area("area_ready"))
    area_busy = property(lambda self: self._area("area_busy"))
    area_n = property(lambda self: self._area("area_system"))
    area_rq = property(lambda self: self._area("area_queue"))
    # One step at a time per replica: the busy replica-seconds are the steps' total time.
    service_sum_s = property(lambda self: self._area("area_busy"))
    batches = property(lambda self: int(self.engine.totals()["steps"]))

    # ------------------------------------------------------------------ replicas
    def _states(self) -> np.ndarray:
        return np.asarray(self.engine.replicas()["state"])

    @property
    def n_ready(self) -> int:
        return int(np.count_nonzero(self._states() == READY))

    @property
    def n_starting(self) -> int:
        return int(np.count_nonzero(self._states() == STARTING))

    @property
    def queue_timeout_s(self) -> float | None:
        """The admission queue's longest wait in force (None: no limit)."""
        return self._qto

    def replica_states(self) -> list[str]:
        return [STATE_NAMES[int(s)] for s in self._states()]

    def set_desired(self, n: int) -> None:
        """Reconcile to ``n`` replicas: start new ones (a cold start each, drawn from the
        scenario's sampler), or stop starting ones (newest first), then drain the least
        loaded ready ones (fewest running + waiting; ties: the newest)."""
        now = self.eng.now
        n = max(0, int(n))
        self.desired = n
        reps = self.engine.replicas()
        state = np.asarray(reps["state"])
        live = int(np.count_nonzero((state == READY) | (state == STARTING)))
        if n > live:
            for _ in range(n - live):
                self.engine.add_replica(now + float(self.cfg.cold_start()))
                self.cold_starts += 1
            return
        excess = live - n
        for r in np.flatnonzero(state == STARTING)[::-1][:excess].tolist():
            self.engine.remove_replica(int(r))
            excess -= 1
        if excess:
            load = np.asarray(reps["running"]) + np.asarray(reps["waiting"])
            ready = sorted((int(load[r]), -r, r) for r in np.flatnonzero(state == READY).tolist())
            for _, _, r in ready[:excess]:
                self.engine.remove_replica(int(r))

    def set_concurrency_limit(self, limit: int | None) -> None:
        """Outstanding requests per replica (None: unbounded); the router feeds at once."""
        self.limit = NO_LIMIT if limit is None else max(1, int(limit))
        self.engine.set_limit(None if limit is None else self.limit)

    def set_queue_timeout_s(self, t_s: float | None) -> None:
        """Longest wait in the router queue (None: no limit); the queue is purged at once."""
        self._qto = None if t_s is None else max(0.0, float(t_s))
        self.engine.set_queue_timeout_s(self._qto)

    def set_max_batch(self, b: int) -> None:
        """Recorded and read back, no effect: the engine's batch is its scheduler's."""
        self.max_batch = max(1, int(b))

    def set_batch_timeout_s(self, t_s: float) -> None:
        """Recorded and read back, no effect: an LLM engine steps without a batch timer."""
        self.batch_timeout_s = max(0.0, float(t_s))

    # ------------------------------------------------------------------ windows
    def take_window(self) -> WindowStats:
        """Close the window ending now and open the next (between engine runs).

        ``queue_area`` is the router queue plus the engines' waiting sequences (vLLM's
        ``num_requests_waiting`` is what the sidecar reports as queue depth), ``held_area``
        the running ones; latencies are end to end, of the requests served in the window.
        """
        eng = self.engine
        now = self.eng.now
        tot = self._totals()
        d = {k: tot[k] - self._w_tot[k] for k in _DELTAS}
        ids = np.asarray(eng.take_finished(), dtype=np.int64)
        served = ids[self.outcome[ids] == SERVED] if len(ids) else ids
        arr = self.arrival_s[served]
        first = self.first_token_s[served]
        fin = self.finish_s[served]
        gen = self.generated[served]
        multi = gen > 1
        tpot = (fin[multi] - first[multi]) / (gen[multi] - 1)
        reps = eng.replicas()
        state = np.asarray(reps["state"])
        running = int(np.sum(reps["running"]))
        waiting = int(np.sum(reps["waiting"]))
        blocks = int(np.sum(reps["blocks_used"]))
        in_sys = int(tot["arrived"] - tot["served"] - tot["shed"] - tot["timed_out"]
                     - tot["failed"])
        n_ready = int(np.count_nonzero(state == READY))
        self.serving_now = n_ready + int(np.count_nonzero(state == DRAINING))
        itl = _itl_counts(eng)
        llm = LlmWindow(
            ttft_s=first - arr, tpot_s=tpot, queue_wait_s=self.start_s[served] - arr,
            itl_counts=itl - self._w_itl, itl_sum_s=float(d["itl_sum_s"]),
            prompt_tokens=int(d["prompt_tokens"]), output_tokens=int(d["output_tokens"]),
            preemptions=int(d["preemptions"]), prefix_queries=int(d["prefix_queries"]),
            prefix_hits=int(d["prefix_hits"]), steps=int(d["steps"]),
            running_area=float(d["area_running"]), waiting_area=float(d["area_waiting"]),
            blocks_area=float(d["area_blocks"]), running_now=running, waiting_now=waiting,
            blocks_used_now=blocks, num_blocks=self.cfg.scheduler.num_blocks)
        w = WindowStats(
            t0_s=self._w_t0, t1_s=now, arrivals=int(d["arrived"]), completions=len(served),
            shed=int(d["shed"]), timed_out=int(d["timed_out"]), failed=int(d["failed"]),
            queue_area=float(d["area_queue"] + d["area_waiting"]),
            held_area=float(d["area_running"]), busy_area=float(d["area_busy"]),
            ready_area=float(d["area_ready"]), latencies_s=fin - arr,
            ready=n_ready, starting=int(np.count_nonzero(state == STARTING)),
            desired=self.desired, queue_depth_now=in_sys - running, held_now=running,
            llm=llm)
        self._w_t0, self._w_tot, self._w_itl = now, tot, itl
        return w

    def kv_cache_usage(self, w: WindowStats) -> float:
        """KV blocks in use at the window's end over the blocks of the replicas serving then
        (READY or DRAINING), 0..1, as the mean of vLLM's per-pod ``kv_cache_usage_perc``."""
        if w.llm is None or self.serving_now == 0:
            return math.nan
        return w.llm.blocks_used_now / (w.llm.num_blocks * self.serving_now)


def merge_llm_windows(ws: Sequence[LlmWindow | None]) -> LlmWindow | None:
    """Consecutive LlmWindows as one: samples concatenated, counters and areas added,
    gauges and ``num_blocks`` the last one's; None when none has one."""
    ws = [w for w in ws if w is not None]
    if not ws:
        return None
    if len(ws) == 1:
        return ws[0]
    last = ws[-1]
    return LlmWindow(
        ttft_s=np.concatenate([w.ttft_s for w in ws]),
        tpot_s=np.concatenate([w.tpot_s for w in ws]),
        queue_wait_s=np.concatenate([w.queue_wait_s for w in ws]),
        itl_counts=np.sum([w.itl_counts for w in ws], axis=0).astype(np.int64),
        **{k: sum(getattr(w, k) for w in ws) for k in (
            "itl_sum_s", "prompt_tokens", "output_tokens", "preemptions", "prefix_queries",
            "prefix_hits", "steps", "running_area", "waiting_area", "blocks_area")},
        running_now=last.running_now, waiting_now=last.waiting_now,
        blocks_used_now=last.blocks_used_now, num_blocks=last.num_blocks)


def histogram_quantile(counts: np.ndarray, q: float,
                       bounds_s: tuple[float, ...] = ITL_BOUNDS_S) -> float:
    """The ``q`` quantile of ``le`` bucket counts (``len(bounds) + 1``, the last +Inf),
    interpolated log-linearly inside its bucket, as the bounds are log-spaced: with rank
    ``q * total`` a fraction ``f`` into bucket ``(lo, hi]``, ``lo * (hi / lo) ** f``. The first
    bucket's lower edge is taken one bucket ratio below its bound; a rank in the +Inf bucket
    gives the last bound. NaN when empty. E.g. 10 gaps in (10 ms, 11.2 ms]: p50 = 10.6 ms."""
    c = np.asarray(counts, dtype=np.float64)
    total = float(c.sum())
    if total <= 0:
        return math.nan
    rank = q * total
    cum = np.cumsum(c)
    k = int(np.searchsorted(cum, rank, side="left"))
    if k >= len(bounds_s):
        return float(bounds_s[-1])
    hi = bounds_s[k]
    lo = bounds_s[k - 1] if k > 0 else bounds_s[0] * bounds_s[0] / bounds_s[1]
    before = float(cum[k - 1]) if k > 0 else 0.0
    f = (rank - before) / c[k] if c[k] > 0 else 1.0
    return float(lo * (hi / lo) ** min(max(f, 0.0), 1.0))


def llm_requests(trace: Any, scheduler: SchedulerConfig) -> LlmRequests:
    """The engine's request stream from a trace with token counts (each at least 1 token);
    with prefix caching and Mooncake hash ids, one key per full prompt block."""
    from trimtab.sim.llm.types import block_keys

    if trace.prompt_tokens is None or trace.output_tokens is None:
        raise ValueError(f"{trace.source}: the trace has no token counts; an llm fleet needs "
                         "them (trace.lengths, or an azure-llm or mooncake trace)")
    prompt = np.maximum(np.asarray(trace.prompt_tokens, np.int64), 1)
    output = np.maximum(np.asarray(trace.output_tokens, np.int64), 1)
    offsets = keys = None
    if scheduler.prefix_caching and getattr(trace, "hash_ids", None) is not None:
        offsets, keys = block_keys(trace.hash_ids, prompt, scheduler.block_size,
                                   trace.hash_block_tokens)
    return LlmRequests(trace.arrival_s, prompt, output, offsets, keys)


def llm_replica_rps(sc: Any, trace: Any) -> float:
    """Requests per second one LLM replica sustains, roughly, on the trace's mean lengths:
    ``b`` sequences decoding together (``max_num_seqs``, fewer when their KV at full length
    exceeds the blocks) take ``output`` steps, and each one's prefill adds its own cost.

    E.g. c0 = 20 ms, c_decode = 0.1 ms, c_prefill = 0.1 ms, 128 sequences of 100 + 100
    tokens and no KV or attention terms: (100 x 32.8 + 128 x 10) ms per 128 requests: 28 rps.
    """
    model = sc.step_model()
    sch = sc.service.scheduler_config()
    n = len(trace.arrival_s)
    prompt = float(np.mean(trace.prompt_tokens)) if trace.prompt_tokens is not None and n \
        else float(sc.service.default_prompt_tokens)
    output = float(np.mean(trace.output_tokens)) if trace.output_tokens is not None and n \
        else float(sc.service.default_output_tokens)
    fits = sch.num_blocks * sch.block_size // max(1, math.ceil(prompt + output))
    b = max(1, min(sch.max_num_seqs, fits))
    decode_ms = model.mean_ms(0.0, b, b * (prompt + output / 2.0), 0.0)
    prefill_ms = model.mean_ms(prompt, 0.0, prompt, prompt * prompt) - model.c0_ms
    cycle_s = (output * decode_ms + b * prefill_ms) / 1000.0
    return b / cycle_s if cycle_s > 0 else math.inf
