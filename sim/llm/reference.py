"""The LLM fleet engine in plain Python objects, written to be read: ``SPEC.md``, rule by rule.

Slow on purpose: it is the yardstick the compiled engine (``core.py``) is held equal to.
Classes, in the spec's order: ``Sequence`` (a request on a replica), ``BlockManager`` (the
paged KV cache and its prefix cache), ``ReplicaScheduler`` (one replica and vLLM V1's step
scheduler), ``Ledger`` (per-request results and counters) and ``ReferenceFleet`` (router,
events, lifecycle, time integrals).
"""
from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np

from trimtab.sim.fleet.types import (DRAINING, FAILED, PENDING, READY, SERVED, SHED, STARTING,
                                     STOPPED, TIMED_OUT)
from trimtab.sim.llm.types import (ITL_BOUNDS_S, LlmRequests, SchedulerConfig, StepModel,
                                   noise_factor)

__all__ = ["BlockManager", "Ledger", "ReferenceFleet", "ReplicaScheduler", "Sequence", "Step"]

ROUTERS = ("least_outstanding", "prefix_aware")
PREFIX_AWARE_SLACK = 4          # SPEC: candidates have outstanding <= min + 4
AREA_NAMES = ("area_live", "area_ready", "area_busy", "area_system", "area_queue",
              "area_running", "area_waiting", "area_blocks")
STEP_LOG_FIELDS = ("replica", "start_s", "end_s", "prefill_tokens", "decode_seqs", "kv_tokens",
                   "attn_pairs", "scheduled", "running", "waiting", "blocks_used")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Sequence:
    """A request on a replica: ``num_tokens = prompt + generated``, ``num_computed`` tokens of
    KV cached, the blocks it holds (ids, in token order)."""

    __slots__ = ("id", "prompt", "output", "keys", "num_tokens", "num_computed", "generated",
                 "blocks", "last_token_s")

    def __init__(self, i: int, prompt: int, output: int, keys: list[int]) -> None:
        self.id, self.prompt, self.output, self.keys = i, prompt, output, keys
        self.num_tokens, self.num_computed, self.generated = prompt, 0, 0
        self.blocks: list[int] = []
        self.last_token_s = float("nan")


class BlockManager:
    """``num_blocks`` KV blocks: free-uncached, free-cached (LRU, keyed) or in use.

    Without prefix caching no block ever gets a key, so the blocks behave as a count.
    """

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool) -> None:
        self.num_blocks, self.block_size, self.caching = num_blocks, block_size, prefix_caching
        self.ref = [0] * num_blocks
        self.key_of: list[int | None] = [None] * num_blocks
        self.uncached: list[int] = list(range(num_blocks - 1, -1, -1))   # a stack of free ids
        self.lru: OrderedDict[int, None] = OrderedDict()                 # head = evicted first
        self.by_key: dict[int, int] = {}          # key -> the block holding it (used or cached)

    @property
    def free(self) -> int:
        return len(self.uncached) + len(self.lru)

    @property
    def used(self) -> int:
        return self.num_blocks - self.free

    def lookup(self, keys: list[int]) -> int:
        """How many leading keys some block of this replica holds (LRU order untouched)."""
        if not self.caching:
            return 0
        n = 0
        for k in keys:
            if k not in self.by_key:
                break
            n += 1
        return n

    def hit_blocks(self, keys: list[int], hit: int) -> list[int]:
        return [self.by_key[k] for k in keys[:hit]]

    def cached_free(self, blocks: list[int]) -> int:
        """How many of ``blocks`` are free-cached (taking them lowers ``free``)."""
        return sum(1 for b in blocks if self.ref[b] == 0)

    def take_hits(self, blocks: list[int]) -> None:
        for b in blocks:
            if self.ref[b] == 0:
                del self.lru[b]           # the others keep their LRU order
            self.ref[b] += 1

    def allocate(self, n: int) -> list[int]:
        """``n`` blocks for new KV: free-uncached first, else evict the LRU head."""
        out = []
        for _ in range(n):
            if self.uncached:
                b = self.uncached.pop()
            else:
                b, _ = self.lru.popitem(last=False)
                del self.by_key[self.key_of[b]]
                self.key_of[b] = None
            self.ref[b] = 1
            out.append(b)
        return out

    def release(self, blocks: list[int]) -> None:
        """Free a request's blocks, last block first (so its prefix stays cached longest)."""
        for b in reversed(blocks):
            self.ref[b] -= 1
            if self.ref[b] == 0:
                if self.key_of[b] is not None:
                    self.lru[b] = None
                else:
                    self.uncached.append(b)

    def assign_key(self, block: int, key: int) -> None:
        """Key a newly full block, unless some block here holds that key already."""
        if self.caching and key not in self.by_key:
            self.by_key[key] = block
            self.key_of[block] = key


class Ledger:
    """Per-request results, counters and the order requests reached an outcome."""

    def __init__(self, req: LlmRequests, record_steps: bool, record_gaps: bool) -> None:
        n = len(req)
        self.arrival_s = req.arrival_s
        self.outcome = np.full(n, PENDING, dtype=np.int8)
        self.replica_of = np.full(n, -1, dtype=np.int32)
        self.first_scheduled_s = np.full(n, np.nan)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.preemptions = np.zeros(n, dtype=np.int32)
        self.generated = np.zeros(n, dtype=np.int32)
        self.itl_counts = np.zeros(len(ITL_BOUNDS_S) + 1, dtype=np.int64)
        self.gaps: list[list[float]] | None = [[] for _ in range(n)] if record_gaps else None
        self.step_log: list[tuple] | None = [] if record_steps else None   # in start order
        self.finished: list[int] = []
        self.in_system = 0                # arrived, no outcome yet
        self.c = dict(steps=0, prompt_tokens=0, output_tokens=0, preemptions=0,
                      prefix_queries=0, prefix_hits=0, itl_sum_s=0.0, itl_count=0, served=0,
                      shed=0, timed_out=0, failed=0, arrived=0)

    def arrive(self) -> None:
        self.c["arrived"] += 1
        self.in_system += 1

    def finish(self, i: int, outcome: int, t_s: float) -> None:
        self.outcome[i] = outcome
        self.finish_s[i] = t_s
        self.finished.append(i)
        self.in_system -= 1
        self.c[("", "served", "shed", "timed_out", "failed")[outcome]] += 1

    def token(self, q: Sequence, t_s: float) -> None:
        """``q`` makes one output token at ``t_s`` (a step end)."""
        if q.generated == 0:
            self.first_token_s[q.id] = t_s
            self.c["prompt_tokens"] += q.prompt
        else:
            gap = t_s - q.last_token_s
            self.itl_counts[bisect.bisect_left(ITL_BOUNDS_S, gap)] += 1     # le buckets
            self.c["itl_sum_s"] += gap
            self.c["itl_count"] += 1
            if self.gaps is not None:
                self.gaps[q.id].append(gap)
        q.generated += 1
        q.num_tokens += 1
        q.last_token_s = t_s
        self.generated[q.id] = q.generated
        self.c["output_tokens"] += 1


@dataclass
class Step:
    """One step in progress: what it carries and when it ends."""

    scheduled: list[tuple[Sequence, int]]       # (request, new tokens), in schedule order
    start_s: float
    end_s: float


class ReplicaScheduler:
    """One replica: its state, waiting deque, running list, KV blocks, steps (SPEC: one step)."""

    def __init__(self, rid: int, sched: SchedulerConfig, step_model: StepModel, seed: int,
                 ledger: Ledger) -> None:
        self.id, self.cfg, self.step_model, self.seed = rid, sched, step_model, seed
        self.ledger = ledger
        self.state = STARTING
        self.ready_at_s: float | None = None    # the pending READY event, when STARTING
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.kv = BlockManager(sched.num_blocks, sched.block_size, sched.prefix_caching)
        self.steps = 0                          # steps started so far
        self.preemptions = 0
        self.step: Step | None = None

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running)

    def event_s(self) -> float | None:
        """The time of this replica's one pending event (step end or READY), if any."""
        return self.step.end_s if self.step is not None else self.ready_at_s

    # ------------------------------------------------------------------ scheduling
    def schedule(self, t: float) -> Step | None:
        """Start a step at ``t`` (SPEC "One step"): running first, then waiting; failures of
        a head that can never be admitted; None when there is nothing to do."""
        cfg, kv, bs = self.cfg, self.kv, self.cfg.block_size
        while True:
            budget = cfg.max_num_batched_tokens
            scheduled: list[tuple[Sequence, int]] = []
            preempted = False
            # 1. Running requests, oldest admitted first.
            idx = 0
            while idx < len(self.running):
                q = self.running[idx]
                new = q.num_tokens - q.num_computed
                if cfg.chunked_prefill:
                    new = min(new, budget)
                elif new > budget:
                    idx += 1
                    continue
                if new == 0:
                    idx += 1
                    continue
                need = ceil_div(q.num_computed + new, bs) - len(q.blocks)
                self_preempted = False
                while need > kv.free:
                    victim = self.running.pop()         # the most recently admitted
                    self._preempt(victim)
                    preempted = True
                    if victim is q:
                        self_preempted = True
                        break
                if self_preempted:
                    break
                q.blocks.extend(kv.allocate(need))
                scheduled.append((q, new))
                budget -= new
                idx += 1
            # 2. Waiting requests, first come first served, unless step 1 preempted.
            if not preempted:
                self._admit(t, budget, scheduled)
            if scheduled:
                return self._start(t, scheduled)
            # 3. Nothing scheduled: an idle replica, or a head that can never be admitted.
            if self.running or not self.waiting:
                return None
            w = self.waiting.popleft()
            self.ledger.finish(w.id, FAILED, t)
            if self.state == DRAINING and self.outstanding == 0:
                self.state = STOPPED
            # ... and step 1 starts again, from a fresh budget.

    def _preempt(self, q: Sequence) -> None:
        self.kv.release(q.blocks)
        q.blocks = []
        q.num_computed = 0
        self.waiting.appendleft(q)
        self.preemptions += 1
        self.ledger.preemptions[q.id] += 1
        self.ledger.c["preemptions"] += 1

    def _admit(self, t: float, budget: int, scheduled: list[tuple[Sequence, int]]) -> None:
        cfg, kv, bs = self.cfg, self.kv, self.cfg.block_size
        while self.waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
            w = self.waiting[0]
            hit = min(kv.lookup(w.keys), (w.num_tokens - 1) // bs) if cfg.prefix_caching else 0
            num_computed = hit * bs
            new = w.num_tokens - num_computed
            if not cfg.chunked_prefill and new > budget:
                break
            new = min(new, budget)
            hits = kv.hit_blocks(w.keys, hit)
            need = ceil_div(num_computed + new, bs) - hit
            if need > kv.free - kv.cached_free(hits):
                break
            self.waiting.popleft()
            w.num_computed = num_computed
            kv.take_hits(hits)
            w.blocks = hits + kv.allocate(need)
            self.running.append(w)
            scheduled.append((w, new))
            budget -= new
            if np.isnan(self.ledger.first_scheduled_s[w.id]):
                self.ledger.first_scheduled_s[w.id] = t
            if cfg.prefix_caching:
                self.ledger.c["prefix_queries"] += w.num_tokens
                self.ledger.c["prefix_hits"] += hit * bs

    def _start(self, t: float, scheduled: list[tuple[Sequence, int]]) -> Step:
        """SPEC step 4: the step's P, D, K, A (before the update) and its end time."""
        p = d = k = a = 0
        for q, new in scheduled:
            context = q.num_computed + new
            k += context
            if new == 1 and q.generated >= 1 and q.num_computed == q.num_tokens - 1:
                d += 1
            else:
                p += new
                a += new * context
        step_s = (self.step_model.mean_ms(p, d, k, a) / 1000.0
                  * noise_factor(self.seed, self.id, self.steps, self.step_model.cv))
        self.steps += 1
        self.ledger.c["steps"] += 1
        self.step = Step(scheduled, t, t + step_s)
        if self.ledger.step_log is not None:          # STEP_LOG_FIELDS, after scheduling
            self.ledger.step_log.append((self.id, t, self.step.end_s, p, d, k, a,
                                         len(scheduled), len(self.running), len(self.waiting),
                                         self.kv.used))
        return self.step

    def end_step(self) -> None:
        """The step in progress ends: KV computed, tokens made, finished requests leave."""
        step, self.step = self.step, None
        bs, t_end = self.cfg.block_size, step.end_s
        for q, new in step.scheduled:
            old = q.num_computed
            q.num_computed = old + new
            # Blocks that became full get the request's keys (prompt blocks only).
            for j in range(old // bs, min(q.num_computed // bs, len(q.keys))):
                self.kv.assign_key(q.blocks[j], q.keys[j])
            if q.num_computed == q.num_tokens:
                self.ledger.token(q, t_end)
                if q.generated == q.output:
                    self.ledger.finish(q.id, SERVED, t_end)
                    self.kv.release(q.blocks)
                    q.blocks = []
                    self.running.remove(q)


class ReferenceFleet:
    """Router + replicas + events over one ``LlmRequests`` stream (SPEC.md); see the module
    docstring. Drive it with ``advance(until_s)``; steer it with the lifecycle calls."""

    def __init__(self, requests: LlmRequests, sched: SchedulerConfig, step: StepModel, *,
                 seed: int = 0, router: str = "least_outstanding", limit: int | None = None,
                 max_queue: int | None = None, queue_timeout_s: float | None = None,
                 record_steps: bool = False, record_gaps: bool = False) -> None:
        if router not in ROUTERS:
            raise ValueError(f"ReferenceFleet: router = {router!r}, must be one of {ROUTERS}")
        if max_queue is not None and not (isinstance(max_queue, int) and max_queue >= 0):
            raise ValueError(f"ReferenceFleet: max_queue = {max_queue!r}, must be None or an "
                             "integer >= 0")
        self.req, self.sched, self.step_model, self.seed = requests, sched, step, seed
        self.router, self.max_queue = router, max_queue
        self._check_limit(limit)
        self._check_timeout(queue_timeout_s)
        self.limit: int | None = limit                  # per replica; None: unbounded
        self.queue_timeout_s: float | None = queue_timeout_s
        self.ledger = Ledger(requests, record_steps, record_gaps)
        led = self.ledger
        self.outcome, self.replica_of, self.finish_s = led.outcome, led.replica_of, led.finish_s
        self.first_scheduled_s, self.first_token_s = led.first_scheduled_s, led.first_token_s
        self.preemptions, self.generated = led.preemptions, led.generated
        self.itl_counts = led.itl_counts
        self.now_s = 0.0
        self._next = 0                              # the next arrival's id
        self._queue: deque[int] = deque()           # the router queue (request ids)
        self._reps: list[ReplicaScheduler] = []
        self._areas = dict.fromkeys(AREA_NAMES, 0.0)
        self._t_area = 0.0

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_limit(limit: int | None) -> None:
        if limit is not None and not (isinstance(limit, (int, np.integer)) and limit >= 0):
            raise ValueError(f"ReferenceFleet: limit = {limit!r}, must be None or an integer "
                             ">= 0")

    @staticmethod
    def _check_timeout(t_s: float | None) -> None:
        if t_s is not None and not (t_s >= 0 and np.isfinite(t_s)):
            raise ValueError(f"ReferenceFleet: queue_timeout_s = {t_s!r}, must be None or a "
                             "finite number >= 0")

    def _replica(self, r: int) -> ReplicaScheduler:
        if not (isinstance(r, (int, np.integer)) and 0 <= r < len(self._reps)):
            raise ValueError(f"ReferenceFleet: replica {r!r} does not exist "
                             f"({len(self._reps)} created)")
        return self._reps[r]

    # ------------------------------------------------------------------ time
    @property
    def arrivals_done(self) -> int:
        return self._next

    def advance(self, until_s: float) -> None:
        """Process every event with time <= ``until_s`` in time order, then ``now_s = until_s``.
        Replica events by (time, id) come before arrivals at the same time."""
        if not (np.isfinite(until_s) and until_s >= self.now_s):
            raise ValueError(f"ReferenceFleet.advance: until_s = {until_s!r}, must be finite "
                             f"and >= now_s = {self.now_s!r}")
        arrival_s, n = self.req.arrival_s, len(self.req)
        while True:
            rep, t_rep = None, float("inf")
            for r in self._reps:
                t = r.event_s()
                if t is not None and t < t_rep:        # ties: the lowest id, met first
                    rep, t_rep = r, t
            t_arr = float(arrival_s[self._next]) if self._next < n else float("inf")
            if rep is not None and t_rep <= t_arr and t_rep <= until_s:
                self._integrate(t_rep)
                if rep.step is not None:
                    self._step_end(rep, t_rep)
                else:
                    self._ready(rep, t_rep)
            elif t_arr <= until_s:
                self._integrate(t_arr)
                self._arrival(self._next, t_arr)
            else:
                break
        self._integrate(until_s)
        self._purge(until_s)
        self.now_s = float(until_s)

    def _integrate(self, t: float) -> None:
        """Add count x dt for every integral over (last time, t]. The counts are constant in
        between, except that router-queue requests leave the queue and the system at their
        timeout (their finish time) even though the purge that removes them comes later."""
        t0 = self._t_area
        if not t > t0:
            return
        live = ready = busy = running = waiting = blocks = 0
        for r in self._reps:
            if r.state != STOPPED:
                live += 1
            ready += r.state == READY
            busy += r.step is not None
            running += len(r.running)
            waiting += len(r.waiting)
            blocks += r.kv.used
        queue, system = len(self._queue), self.ledger.in_system
        a = self._areas

        def add(dt: float) -> None:
            a["area_live"] += live * dt
            a["area_ready"] += ready * dt
            a["area_busy"] += busy * dt
            a["area_system"] += system * dt
            a["area_queue"] += queue * dt
            a["area_running"] += running * dt
            a["area_waiting"] += waiting * dt
            a["area_blocks"] += blocks * dt

        if self.queue_timeout_s is not None:
            for i in self._queue:                  # deadlines rise along the queue
                deadline = float(self.req.arrival_s[i]) + self.queue_timeout_s
                if deadline >= t:
                    break
                if deadline > t0:
                    add(deadline - t0)
                    t0 = deadline
                queue -= 1
                system -= 1
        add(t - t0)
        self._t_area = t

    # ------------------------------------------------------------------ events
    def _arrival(self, i: int, t: float) -> None:
        self._next += 1
        self.ledger.arrive()
        self._purge(t)
        r = None if self._queue else self._route(i)
        if r is None:
            if self.max_queue is not None and len(self._queue) >= self.max_queue:
                self.ledger.finish(i, SHED, float(self.req.arrival_s[i]))
            else:
                self._queue.append(i)
            return
        self._give(r, i)
        if self._kick(r, t):
            self._feed(t)

    def _step_end(self, r: ReplicaScheduler, t: float) -> None:
        r.end_step()
        self._feed(t)
        if r.state == DRAINING and r.outstanding == 0:
            r.state = STOPPED
        elif self._kick(r, t):
            self._feed(t)

    def _ready(self, r: ReplicaScheduler, t: float) -> None:
        r.ready_at_s = None
        r.state = READY
        self._feed(t)

    def _purge(self, t: float) -> None:
        if self.queue_timeout_s is None:
            return
        while self._queue and float(self.req.arrival_s[self._queue[0]]) \
                + self.queue_timeout_s <= t:
            i = self._queue.popleft()
            self.ledger.finish(i, TIMED_OUT, float(self.req.arrival_s[i]) + self.queue_timeout_s)

    def _feed(self, t: float) -> None:
        """Purge, route the queue's head while some replica is eligible, kick the replicas
        fed in the order first fed; again while those kicks failed a request (a failure frees
        a slot that the SPEC's events would otherwise never fill)."""
        failed = True
        while failed:
            self._purge(t)
            fed: list[ReplicaScheduler] = []
            while self._queue:
                r = self._route(self._queue[0])
                if r is None:
                    break
                self._give(r, self._queue.popleft())
                if r not in fed:
                    fed.append(r)
            failed = False
            for r in fed:
                failed |= self._kick(r, t)

    def _kick(self, r: ReplicaScheduler, t: float) -> bool:
        """Start a step on ``r`` if it can take one; True when that failed a request."""
        if r.state in (READY, DRAINING) and r.step is None and (r.waiting or r.running):
            before = self.ledger.c["failed"]
            r.schedule(t)
            return self.ledger.c["failed"] > before
        return False

    # ------------------------------------------------------------------ routing
    def _eligible(self) -> list[ReplicaScheduler]:
        lim = self.limit
        return [r for r in self._reps
                if r.state == READY and (lim is None or r.outstanding < lim)]

    def _keys(self, i: int) -> list[int]:
        off = self.req.key_offsets
        return [int(k) for k in self.req.keys[off[i]:off[i + 1]]]

    def _route(self, i: int) -> ReplicaScheduler | None:
        cands = self._eligible()
        if not cands:
            return None
        least = min(r.outstanding for r in cands)
        if self.router == "least_outstanding":
            return next(r for r in cands if r.outstanding == least)   # ids ascend
        keys = self._keys(i)
        near = [r for r in cands if r.outstanding <= least + PREFIX_AWARE_SLACK]
        return min(near, key=lambda r: (-r.kv.lookup(keys), r.outstanding, r.id))

    def _give(self, r: ReplicaScheduler, i: int) -> None:
        req = self.req
        r.waiting.append(Sequence(i, int(req.prompt_tokens[i]), int(req.output_tokens[i]),
                                  self._keys(i)))
        self.ledger.replica_of[i] = r.id

    # ------------------------------------------------------------------ lifecycle
    def add_replica(self, ready_at_s: float) -> int:
        self._integrate(self.now_s)
        r = ReplicaScheduler(len(self._reps), self.sched, self.step_model, self.seed,
                             self.ledger)
        self._reps.append(r)
        if ready_at_s <= self.now_s:
            r.state = READY
            self._feed(self.now_s)
        else:
            r.ready_at_s = float(ready_at_s)
        return r.id

    def remove_replica(self, r: int) -> None:
        rep = self._replica(r)
        self._integrate(self.now_s)
        if rep.state == STARTING:
            rep.state, rep.ready_at_s = STOPPED, None
        elif rep.state == READY:
            rep.state = STOPPED if rep.outstanding == 0 else DRAINING

    def set_limit(self, limit: int | None) -> None:
        self._check_limit(limit)
        self._integrate(self.now_s)
        self.limit = limit
        self._feed(self.now_s)

    def set_queue_timeout_s(self, t_s: float | None) -> None:
        self._check_timeout(t_s)
        self._integrate(self.now_s)
        self.queue_timeout_s = t_s
        self._purge(self.now_s)

    # ------------------------------------------------------------------ results
    def take_finished(self) -> np.ndarray:
        out = np.asarray(self.ledger.finished, dtype=np.int64)
        self.ledger.finished = []
        return out

    def totals(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.ledger.c.items()}
        out.update(self._areas)
        return out

    def replicas(self) -> dict[str, np.ndarray]:
        reps = self._reps
        return {
            "state": np.asarray([r.state for r in reps], dtype=np.int8),
            "running": np.asarray([len(r.running) for r in reps], dtype=np.int64),
            "waiting": np.asarray([len(r.waiting) for r in reps], dtype=np.int64),
            "blocks_used": np.asarray([r.kv.used for r in reps], dtype=np.int64),
            "busy": np.asarray([r.step is not None for r in reps], dtype=np.bool_),
            "preemptions": np.asarray([r.preemptions for r in reps], dtype=np.int64),
            "steps": np.asarray([r.steps for r in reps], dtype=np.int64),
        }

    def step_log(self) -> dict[str, np.ndarray]:
        """Per step, in the order steps started (SPEC "Results")."""
        rows = self.ledger.step_log
        if rows is None:
            raise ValueError("ReferenceFleet.step_log: needs record_steps=True")
        cols = list(zip(*rows)) if rows else [()] * len(STEP_LOG_FIELDS)
        out = {}
        for name, col in zip(STEP_LOG_FIELDS, cols):
            dtype = np.float64 if name.endswith("_s") else np.int64
            out[name] = np.asarray(col, dtype=dtype)
        return out

    def gaps(self, i: int) -> np.ndarray:
        """Request ``i``'s inter-token gaps so far (``record_gaps=True`` only)."""
        if self.ledger.gaps is None:
            raise ValueError("ReferenceFleet.gaps: needs record_gaps=True")
        return np.asarray(self.ledger.gaps[i], dtype=np.float64)
