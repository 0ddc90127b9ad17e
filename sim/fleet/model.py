"""The fleet: a router with an admission queue, replicas (starting/ready/draining/stopped) and
one dynamic batcher per replica, simulated on the event engine.

Hot path notes: per-request data live in numpy arrays indexed by request id (arrival, start,
finish, outcome, replica), filled a window at a time from a log of finished batches; replica
state lives in parallel Python lists indexed by replica id; least-outstanding routing keeps
replicas in buckets by outstanding count, so a pick is O(1) whatever the fleet size.
"""
from __future__ import annotations

import heapq
import math
from collections import deque

import numpy as np

from trimtab.sim.engine import Engine
from trimtab.sim.fleet.lifecycle import LifecycleMixin
from trimtab.sim.fleet.router import RouterMixin
from trimtab.sim.fleet.types import (DRAINING, FAILED, OUTCOME_NAMES, PARKED, PENDING, READY, SERVED,
                             SHED, STARTING, STATE_NAMES, STOPPED, TIMED_OUT, NO_LIMIT,
                             FleetConfig, MemoryModel, WindowStats)
from trimtab.sim.fleet.window import WindowMixin

__all__ = ["DRAINING", "FAILED", "OUTCOME_NAMES", "PARKED", "PENDING", "READY", "SERVED",
           "SHED", "STARTING", "STATE_NAMES", "STOPPED", "TIMED_OUT", "Fleet", "FleetConfig",
           "MemoryModel", "WindowStats", "NO_LIMIT"]


class Fleet(RouterMixin, LifecycleMixin, WindowMixin):
    """Router + replicas + batchers. Drive it with an Engine; steer it with ``set_*``."""

    def __init__(self, engine: Engine, cfg: FleetConfig, arrival_s: np.ndarray) -> None:
        self.eng, self.cfg = engine, cfg
        n = len(arrival_s)
        self.arrival_s = np.ascontiguousarray(arrival_s, dtype=np.float64)
        self.start_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.outcome = np.zeros(n, dtype=np.int8)
        self.replica_of = np.full(n, -1, dtype=np.int32)
        self._arr_list_cache: dict[int, float] = {}
        # Settings in force (all replicas at once).
        self.limit = cfg.concurrency_limit if cfg.concurrency_limit is not None else NO_LIMIT
        self.max_batch = cfg.max_batch
        self.batch_timeout_s = cfg.batch_timeout_s
        # Replica tables (index = replica id; ids are never reused).
        self.state: list[int] = []
        self.q: list[list[int]] = []          # ids held, waiting or in service
        self.qt: list[list[float]] = []       # time each entered the replica
        self.qh: list[int] = []               # head: first id not yet in a batch
        self.out: list[int] = []              # outstanding = held (waiting + in batch)
        self.busy: list[bool] = []
        self.gen: list[int] = []              # batch generation (stale timers are ignored)
        self.timer: list[bool] = []
        self.epoch: list[int] = []            # lifecycle generation (stale events ignored)
        self.b_ids: list[list[int]] = []
        self.b_start: list[float] = []
        self.idle_gen: list[int] = []
        # Least-outstanding buckets: bk[c] = ready replicas with c outstanding.
        self.bk: list[set[int]] = [set()]
        self.minc = NO_LIMIT
        self.rr_list: list[int] = []          # ready replicas, round-robin order
        self.rr_pos = 0
        self.lor = cfg.router == "least_outstanding"
        self.rq: deque[int] = deque()         # router (admission) queue
        # Counts and lazy integrals.
        self.n_ready = self.n_starting = self.n_draining = self.n_parked = self.n_busy = 0
        self.desired = 0
        self.n_sys = 0                        # requests in the system
        self.area_n = self.area_rq = 0.0
        self.t_n = self.t_rq = 0.0
        self.area_live = self.area_ready = self.area_busy = 0.0
        self.t_live = self.t_busy = 0.0
        self.w_area_n = self.w_area_rq = self.w_area_ready = self.w_area_busy = 0.0
        # Totals.
        self.served = self.shed = self.timed_out = self.failed = 0
        self.oom_events = self.cold_starts = self.batches = 0
        self.service_sum_s = 0.0
        # Window accumulators.
        self.w_t0 = 0.0
        self.w_arr0 = 0
        self.w_shed = self.w_to = self.w_failed = 0
        self.w_maxb = 0          # largest batch that failed for memory in the window
        self.done_log: list[tuple[float, float, int, list[int]]] = []
        self.last_batch_sizes = np.empty(0, dtype=np.int64)   # of the last flushed window
        self.last_samples: list[tuple[int, float]] = []        # of the last flushed window
        # Hot-path bindings.
        self._heap = engine._heap
        self._done_cb = self._on_done      # bound once, not once per batch
        self._max_fit = NO_LIMIT if cfg.memory is None else self._largest_fit(cfg.memory)
        self._timer_cb = self._on_timer
        self._seq = engine._seq
        self._svc = cfg.service.sample_s
        self._qto = cfg.queue_timeout_s if cfg.queue_timeout_s is not None else math.inf
        self._qto_since = 0.0       # when the admission wait in force was set
        self._arr = self.arrival_s
        self._max_queue = cfg.max_queue
        self._start_at_once = cfg.greedy or cfg.max_batch == 1 or cfg.batch_timeout_s == 0
        for _ in range(cfg.initial_replicas):
            self._new_replica(PARKED if cfg.scale_to_zero_idle_s is not None else READY)
        self.desired = cfg.initial_replicas
        engine.set_arrivals(self.arrival_s, self._on_arrival)

    # ----------------------------------------------------------------- accounting helpers
    def _sys_change(self, now: float, d: int) -> None:
        self.area_n += self.n_sys * (now - self.t_n)
        self.t_n = now
        self.n_sys += d

    def _rq_mark(self, now: float) -> None:
        self.area_rq += len(self.rq) * (now - self.t_rq)
        self.t_rq = now

    def _live_mark(self, now: float) -> None:
        dt = now - self.t_live
        self.area_live += (self.n_ready + self.n_starting + self.n_draining) * dt
        self.area_ready += self.n_ready * dt
        self.t_live = now

    def _busy_mark(self, now: float) -> None:
        self.area_busy += self.n_busy * (now - self.t_busy)
        self.t_busy = now

    # ----------------------------------------------------------------------- arrivals
    def _on_arrival(self, i: int) -> None:
        now = self.eng._now
        self.area_n += self.n_sys * (now - self.t_n)
        self.t_n = now
        self.n_sys += 1
        if not self.rq:
            if self.lor:          # _pick and _dispatch inlined: this runs once per request
                c = self.minc
                if c < self.limit:
                    bk = self.bk
                    b = bk[c]
                    r = b.pop()
                    if len(bk) <= c + 2:
                        bk.append(set())
                    bk[c + 1].add(r)
                    if not b:
                        self.minc = c + 1
                    self.out[r] = c + 1
                    q = self.q[r]
                    if not self.busy[r] and self._start_at_once and len(q) == self.qh[r]:
                        self._run_batch(r, now, [i])    # idle, nothing waiting: go alone
                        return
                    q.append(i)
                    self.qt[r].append(now)
                    if not self.busy[r]:
                        self._try_start(r, now)
                    return
            else:
                r = self._pick()
                if r >= 0:
                    self._dispatch(r, i, now)
                    return
        self._enqueue(i, now)

    def _enqueue(self, i: int, now: float) -> None:
        mq = self._max_queue
        rq = self.rq
        if mq is not None and len(rq) >= mq:
            self._purge_timeouts(now)
            if len(self.rq) >= mq:
                self._sys_change(now, -1)
                self.shed += 1
                self.w_shed += 1
                self.outcome[i] = SHED
                self.finish_s[i] = now
                return
        self.area_rq += len(rq) * (now - self.t_rq)
        self.t_rq = now
        rq.append(i)
        if self.n_ready + self.n_starting == 0:
            self._activate(now)

    def _activate(self, now: float) -> None:
        """Scale from zero: an arrival that finds nothing ready or starting starts one."""
        if self.n_parked > 0:
            r = next(r for r in range(len(self.state)) if self.state[r] == PARKED)
            self.n_parked -= 1
            self._live_mark(now)
            self._begin_cold_start(r, now)
        elif self.cfg.scale_to_zero_idle_s is not None and self.desired == 0 \
                and self.cfg.max_replicas >= 1:
            self.desired = 1
            self._new_replica(STARTING)

    def _dispatch(self, r: int, i: int, now: float) -> None:
        self.q[r].append(i)
        self.qt[r].append(now)
        if not self.busy[r]:
            self._try_start(r, now)

    def _purge_timeouts(self, now: float) -> None:
        """Drop router-queue requests whose deadline passed (FIFO: deadlines increase)."""
        rq, to, arr = self.rq, self._qto, self._arr
        if to == math.inf:
            return
        while rq and arr[rq[0]] + to <= now:
            i = rq[0]
            # It left at its deadline, or when a shorter wait took effect if that was later
            # (the time before was counted in its windows): take back the time since.
            deadline = max(float(arr[i]) + to, self._qto_since)
            self._rq_mark(now)
            rq.popleft()
            self.area_rq -= now - deadline
            self._sys_change(now, -1)
            self.area_n -= now - deadline
            self.timed_out += 1
            self.w_to += 1
            self.outcome[i] = TIMED_OUT
            self.finish_s[i] = deadline

    def _feed(self, now: float) -> None:
        """Move router-queue requests to replicas with room (after room appeared)."""
        if not self.rq:
            return
        if self._qto != math.inf:
            self._purge_timeouts(now)
        rq = self.rq
        pick = self._pick
        while rq:
            r = pick()
            if r < 0:
                return
            self.area_rq += len(rq) * (now - self.t_rq)
            self.t_rq = now
            i = rq.popleft()
            q = self.q[r]
            if not self.busy[r] and self._start_at_once and len(q) == self.qh[r]:
                self._run_batch(r, now, [i])
                continue
            q.append(i)
            self.qt[r].append(now)
            if not self.busy[r]:
                self._try_start(r, now)

    # ------------------------------------------------------------------------ batcher
    def _try_start(self, r: int, now: float) -> None:
        h = self.qh[r]
        waiting = len(self.q[r]) - h
        if waiting <= 0:
            return
        mb = self.max_batch
        if self.cfg.greedy or waiting >= mb or now >= self.qt[r][h] + self.batch_timeout_s:
            self._start_batch(r, now, waiting if waiting < mb else mb)
        elif not self.timer[r]:
            self.timer[r] = True
            heapq.heappush(self._heap, (self.qt[r][h] + self.batch_timeout_s, next(self._seq),
                                        self._timer_cb, (r, self.gen[r])))

    def _on_timer(self, arg: tuple[int, int]) -> None:
        r, g = arg
        if g != self.gen[r] or self.busy[r]:
            return
        self.timer[r] = False
        self._try_start(r, self.eng._now)

    def _start_batch(self, r: int, now: float, k: int) -> None:
        q = self.q[r]
        h = self.qh[r]
        ids = q[h:h + k]
        h += k
        if h > 512 and h * 2 > len(q):      # compact the consumed prefix now and then
            del q[:h]
            del self.qt[r][:h]
            h = 0
        self.qh[r] = h
        self._run_batch(r, now, ids)

    def _run_batch(self, r: int, now: float, ids: list[int]) -> None:
        k = len(ids)
        self.gen[r] += 1
        self.timer[r] = False
        if k > self._max_fit:
            self._oom(r, now, ids)
            return
        s = self._svc(k, ids)
        self.area_busy += self.n_busy * (now - self.t_busy)
        self.t_busy = now
        self.n_busy += 1
        self.busy[r] = True
        self.b_ids[r] = ids
        self.b_start[r] = now
        heapq.heappush(self._heap, (now + s, next(self._seq), self._done_cb,
                                    (r, self.epoch[r])))

    def _on_done(self, arg: tuple[int, int]) -> None:
        # Per-batch statistics (sizes, times, counts) are derived from done_log when a
        # window closes, so this handler only moves state.
        r, ep = arg
        if ep != self.epoch[r]:
            return
        now = self.eng._now
        ids = self.b_ids[r]
        k = len(ids)
        self.area_busy += self.n_busy * (now - self.t_busy)
        self.t_busy = now
        self.n_busy -= 1
        self.busy[r] = False
        self.done_log.append((self.b_start[r], now, r, ids))
        self.area_n += self.n_sys * (now - self.t_n)
        self.t_n = now
        self.n_sys -= k
        out = self.out
        c = out[r]
        out[r] = c - k
        st = self.state[r]
        if st == READY:
            if self.lor:                 # _release inlined
                bk = self.bk
                bk[c].discard(r)
                bk[c - k].add(r)
                if c - k < self.minc:
                    self.minc = c - k
            if self.rq:
                self._feed(now)
        if not self.busy[r] and len(self.q[r]) > self.qh[r]:
            self._try_start(r, now)
        if out[r] == 0:
            if st == DRAINING:
                self._stop(r, now)
            elif st == READY and self.cfg.scale_to_zero_idle_s is not None and not self.rq:
                self._schedule_park(r, now)

    @staticmethod
    def _largest_fit(mem: MemoryModel) -> int:
        if mem.per_item_bytes == 0:
            return NO_LIMIT if mem.fits(0) else -1
        k = int((mem.gpu_bytes - mem.weights_bytes) // mem.per_item_bytes)
        while k >= 0 and not mem.fits(k):
            k -= 1
        while mem.fits(k + 1):
            k += 1
        return k

    @property
    def n_arrived(self) -> int:
        """Arrivals processed so far (exact between engine runs, where windows are taken)."""
        return self.eng.arrivals_done

    @property
    def queue_depth(self) -> int:
        return len(self.rq)

    @property
    def in_system(self) -> int:
        return self.n_sys

    def replica_states(self) -> list[str]:
        return [STATE_NAMES[s] for s in self.state]
