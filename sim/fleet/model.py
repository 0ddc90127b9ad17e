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
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from sim.engine import Engine

# Replica states.
STARTING, READY, DRAINING, STOPPED, PARKED = 0, 1, 2, 3, 4
STATE_NAMES = ("starting", "ready", "draining", "stopped", "parked")
# Request outcomes.
PENDING, SERVED, SHED, TIMED_OUT, FAILED = 0, 1, 2, 3, 4
OUTCOME_NAMES = ("pending", "served", "shed", "timed_out", "failed")
_NO_LIMIT = 1 << 40


@dataclass(frozen=True)
class MemoryModel:
    """GPU memory of one replica: weights plus per-item memory times the batch size."""

    gpu_bytes: float
    weights_bytes: float
    per_item_bytes: float

    def ratio(self, batch_size: int) -> float:
        return (self.weights_bytes + self.per_item_bytes * batch_size) / self.gpu_bytes

    def fits(self, batch_size: int) -> bool:
        return self.weights_bytes + self.per_item_bytes * batch_size <= self.gpu_bytes


@dataclass
class FleetConfig:
    """Everything the fleet needs, free of YAML and pydantic (the scenario builds it)."""

    service: Any                                  # AffineService | ProfileService
    cold_start: Callable[[], float]               # draws one cold start, seconds
    initial_replicas: int = 1
    max_batch: int = 1
    batch_timeout_s: float = 0.0
    greedy: bool = False                          # greedy batcher instead of Triton's
    concurrency_limit: int | None = None          # per replica; None = unbounded
    max_queue: int | None = None                  # router queue capacity; None = unbounded
    queue_timeout_s: float | None = None
    router: str = "least_outstanding"             # | round_robin
    scale_to_zero_idle_s: float | None = None
    max_replicas: int = 1 << 30                   # the activator never exceeds it
    memory: MemoryModel | None = None


@dataclass
class WindowStats:
    """What happened in one window ``[t0_s, t1_s]``: the raw material of a Snapshot."""

    t0_s: float
    t1_s: float
    arrivals: int
    completions: int
    shed: int
    timed_out: int
    failed: int
    queue_area: float            # integral of router-queue depth dt
    held_area: float             # integral of requests held by replicas dt
    busy_area: float             # integral of busy replicas dt
    ready_area: float            # integral of ready replicas dt
    latencies_s: np.ndarray      # of requests served in the window
    batch_samples: list[tuple[int, float]] = field(default_factory=list)  # last <= 256
    batches: int = 0
    batch_items: int = 0
    max_batch_seen: int = 0
    ready: int = 0
    starting: int = 0
    desired: int = 0
    queue_depth_now: int = 0
    held_now: int = 0


class Fleet:
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
        self.limit = cfg.concurrency_limit if cfg.concurrency_limit is not None else _NO_LIMIT
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
        self.b_svc: list[float] = []
        self.idle_gen: list[int] = []
        # Least-outstanding buckets: bk[c] = ready replicas with c outstanding.
        self.bk: list[set[int]] = [set()]
        self.minc = _NO_LIMIT
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
        self.n_arrived = 0
        self.w_shed = self.w_to = self.w_failed = self.w_batches = self.w_items = 0
        self.w_maxb = 0
        self.done_log: list[tuple[float, float, int, list[int]]] = []
        self.last_batch_sizes = np.empty(0, dtype=np.int64)   # of the last flushed window
        self.samples: deque[tuple[int, float]] = deque(maxlen=256)
        # Hot-path bindings.
        self._heap = engine._heap
        self._seq = engine._seq
        self._svc = cfg.service.sample_s
        self._qto = cfg.queue_timeout_s if cfg.queue_timeout_s is not None else math.inf
        self._arr = self.arrival_s
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

    # ------------------------------------------------------------------------ routing
    def _bk_add(self, r: int, c: int) -> None:
        bk = self.bk
        while len(bk) <= c + 1:
            bk.append(set())
        bk[c].add(r)
        if c < self.minc:
            self.minc = c

    def _bk_remove(self, r: int, c: int) -> None:
        b = self.bk[c]
        b.discard(r)
        if not b and c == self.minc:
            self._bk_rescan()

    def _bk_rescan(self) -> None:
        for c in range(self.minc if self.minc < _NO_LIMIT else 0, len(self.bk)):
            if self.bk[c]:
                self.minc = c
                return
        self.minc = _NO_LIMIT

    def _pick(self) -> int:
        """A ready replica with room (and count it as one more outstanding), or -1."""
        if self.lor:
            c = self.minc
            if c >= self.limit:
                return -1
            bk = self.bk
            b = bk[c]
            r = b.pop()
            if len(bk) <= c + 2:
                bk.append(set())
            bk[c + 1].add(r)
            if not b:
                self.minc = c + 1
            self.out[r] = c + 1
            return r
        lst = self.rr_list
        n = len(lst)
        for k in range(n):
            r = lst[(self.rr_pos + k) % n]
            if self.out[r] < self.limit:
                self.rr_pos = (self.rr_pos + k + 1) % n
                self.out[r] += 1
                return r
        return -1

    def _release(self, r: int, k: int) -> None:
        c = self.out[r]
        self.out[r] = c - k
        if self.lor and self.state[r] == READY:
            self.bk[c].discard(r)
            nc = c - k
            self.bk[nc].add(r)
            if nc < self.minc:
                self.minc = nc
            elif c == self.minc and not self.bk[c]:
                self._bk_rescan()

    # ----------------------------------------------------------------------- arrivals
    def _on_arrival(self, i: int) -> None:
        now = self.eng._now
        self.n_arrived = i + 1
        self.area_n += self.n_sys * (now - self.t_n)
        self.t_n = now
        self.n_sys += 1
        if not self.rq:
            r = self._pick()
            if r >= 0:
                self._dispatch(r, i, now)
                return
        self._enqueue(i, now)

    def _enqueue(self, i: int, now: float) -> None:
        mq = self.cfg.max_queue
        if mq is not None and len(self.rq) >= mq:
            self._purge_timeouts(now)
            if len(self.rq) >= mq:
                self._sys_change(now, -1)
                self.shed += 1
                self.w_shed += 1
                self.outcome[i] = SHED
                self.finish_s[i] = now
                return
        self._rq_mark(now)
        self.rq.append(i)
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
        self.idle_gen[r] += 1
        if not self.busy[r]:
            self._try_start(r, now)

    def _purge_timeouts(self, now: float) -> None:
        """Drop router-queue requests whose deadline passed (FIFO: deadlines increase)."""
        rq, to, arr = self.rq, self._qto, self._arr
        if to == math.inf:
            return
        while rq and arr[rq[0]] + to <= now:
            i = rq[0]
            deadline = float(arr[i]) + to
            self._rq_mark(now)
            rq.popleft()
            # It left at its deadline: take back the time counted since then.
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
        self._purge_timeouts(now)
        rq = self.rq
        while rq:
            r = self._pick()
            if r < 0:
                return
            self._rq_mark(now)
            self._dispatch(r, rq.popleft(), now)

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
                                        self._on_timer, (r, self.gen[r])))

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
        self.gen[r] += 1
        self.timer[r] = False
        mem = self.cfg.memory
        if mem is not None and not mem.fits(k):
            self._oom(r, now, ids)
            return
        s = self._svc(k, ids)
        self._busy_mark(now)
        self.n_busy += 1
        self.busy[r] = True
        self.b_ids[r] = ids
        self.b_start[r] = now
        self.b_svc[r] = s
        heapq.heappush(self._heap, (now + s, next(self._seq), self._on_done,
                                    (r, self.epoch[r])))

    def _on_done(self, arg: tuple[int, int]) -> None:
        r, ep = arg
        if ep != self.epoch[r]:
            return
        now = self.eng._now
        ids = self.b_ids[r]
        k = len(ids)
        self._busy_mark(now)
        self.n_busy -= 1
        self.busy[r] = False
        self.done_log.append((self.b_start[r], now, r, ids))
        s = self.b_svc[r]
        self.service_sum_s += s
        self.samples.append((k, s))
        self.batches += 1
        self.w_batches += 1
        self.w_items += k
        if k > self.w_maxb:
            self.w_maxb = k
        self.area_n += self.n_sys * (now - self.t_n)
        self.t_n = now
        self.n_sys -= k
        self.served += k
        self._release(r, k)
        st = self.state[r]
        if st == READY and self.rq:
            self._feed(now)
        if not self.busy[r]:
            self._try_start(r, now)
        if self.out[r] == 0:
            if st == DRAINING:
                self._stop(r, now)
            elif st == READY and self.cfg.scale_to_zero_idle_s is not None and not self.rq:
                self._schedule_park(r, now)

    # ---------------------------------------------------------------- replica lifecycle
    def _new_replica(self, st: int) -> int:
        r = len(self.state)
        for lst, v in ((self.q, []), (self.qt, []), (self.b_ids, [])):
            lst.append(v)
        self.state.append(STOPPED)
        self.qh.append(0)
        self.out.append(0)
        self.busy.append(False)
        self.gen.append(0)
        self.timer.append(False)
        self.epoch.append(0)
        self.b_start.append(0.0)
        self.b_svc.append(0.0)
        self.idle_gen.append(0)
        now = self.eng._now
        if st == READY:
            self._make_ready(r, now)
        elif st == PARKED:
            self.state[r] = PARKED
            self.n_parked += 1
        else:
            self._begin_cold_start(r, now)
        return r

    def _begin_cold_start(self, r: int, now: float) -> None:
        self._live_mark(now)
        self.state[r] = STARTING
        self.n_starting += 1
        self.cold_starts += 1
        self.epoch[r] += 1
        self.eng.schedule(now + self.cfg.cold_start(), self._on_ready, (r, self.epoch[r]))

    def _on_ready(self, arg: tuple[int, int]) -> None:
        r, ep = arg
        if ep != self.epoch[r] or self.state[r] != STARTING:
            return
        now = self.eng._now
        self._live_mark(now)
        self.n_starting -= 1
        self._make_ready(r, now)

    def _make_ready(self, r: int, now: float) -> None:
        self._live_mark(now)
        self.state[r] = READY
        self.n_ready += 1
        self.out[r] = 0
        if self.lor:
            self._bk_add(r, 0)
        else:
            self.rr_list.append(r)
        self._feed(now)
        if self.out[r] == 0 and self.cfg.scale_to_zero_idle_s is not None and not self.rq:
            self._schedule_park(r, now)

    def _leave_router(self, r: int) -> None:
        if self.lor:
            self._bk_remove(r, self.out[r])
        else:
            self.rr_list.remove(r)

    def _schedule_park(self, r: int, now: float) -> None:
        self.eng.schedule(now + self.cfg.scale_to_zero_idle_s, self._on_idle,  # type: ignore
                          (r, self.idle_gen[r]))

    def _on_idle(self, arg: tuple[int, int]) -> None:
        r, g = arg
        if g != self.idle_gen[r] or self.state[r] != READY or self.out[r] or self.rq:
            return
        now = self.eng._now
        self._live_mark(now)
        self._leave_router(r)
        self.n_ready -= 1
        self.state[r] = PARKED
        self.n_parked += 1

    def _stop(self, r: int, now: float) -> None:
        self._live_mark(now)
        st = self.state[r]
        if st == DRAINING:
            self.n_draining -= 1
        elif st == STARTING:
            self.n_starting -= 1
        elif st == PARKED:
            self.n_parked -= 1
        self.state[r] = STOPPED
        self.epoch[r] += 1

    def _drain(self, r: int, now: float) -> None:
        self._live_mark(now)
        self._leave_router(r)
        self.n_ready -= 1
        self.state[r] = DRAINING
        self.n_draining += 1
        if self.out[r] == 0:
            self._stop(r, now)

    def _oom(self, r: int, now: float, ids: list[int]) -> None:
        """A batch that does not fit: it fails, the replica restarts with a cold start and
        the requests it held go back to the front of the router queue."""
        self.oom_events += 1
        k = len(ids)
        idx = np.array(ids, dtype=np.int64)
        self.outcome[idx] = FAILED
        self.finish_s[idx] = now
        self.replica_of[idx] = r
        self._sys_change(now, -k)
        self.failed += k
        self.w_failed += k
        rest = self.q[r][self.qh[r]:]
        was_ready = self.state[r] == READY
        if was_ready:
            self._leave_router(r)
            self.n_ready -= 1
        self.out[r] = 0
        self.q[r], self.qt[r], self.qh[r] = [], [], 0
        if self.state[r] == DRAINING:
            self._stop(r, now)
        else:
            self._live_mark(now)
            self.state[r] = STOPPED
            self._begin_cold_start(r, now)
        self._rq_mark(now)
        self.rq.extendleft(reversed(rest))
        self._feed(now)

    # --------------------------------------------------------------------- actuation
    def set_desired(self, n: int) -> None:
        """Reconcile to ``n`` replicas: start new ones (cold), or remove parked ones first,
        then starting ones, then the least loaded ready ones (they drain)."""
        now = self.eng._now
        n = max(0, int(n))
        self.desired = n
        live = self.n_ready + self.n_starting + self.n_parked
        if n > live:
            for _ in range(n - live):
                self._new_replica(STARTING)
            return
        excess = live - n
        for wanted in (PARKED, STARTING):
            for r in range(len(self.state) - 1, -1, -1):
                if excess == 0:
                    return
                if self.state[r] == wanted:
                    self._stop(r, now)
                    excess -= 1
        if excess:
            ready = sorted((self.out[r], -r, r) for r in range(len(self.state))
                           if self.state[r] == READY)
            for _, _, r in ready[:excess]:
                self._drain(r, now)

    def set_concurrency_limit(self, limit: int | None) -> None:
        self.limit = _NO_LIMIT if limit is None else max(1, int(limit))
        self._feed(self.eng._now)

    def set_max_batch(self, b: int) -> None:
        self.max_batch = max(1, int(b))
        self._kick()

    def set_batch_timeout_s(self, t_s: float) -> None:
        self.batch_timeout_s = max(0.0, float(t_s))
        for r in range(len(self.state)):
            self.gen[r] += 1          # re-arm timers with the new timeout
            self.timer[r] = False
        self._kick()

    def _kick(self) -> None:
        now = self.eng._now
        for r in range(len(self.state)):
            if not self.busy[r] and self.state[r] in (READY, DRAINING):
                self._try_start(r, now)

    # ------------------------------------------------------------------------ windows
    def flush_log(self) -> np.ndarray:
        """Write finished batches into the per-request arrays; return their latencies."""
        log = self.done_log
        if not log:
            self.last_batch_sizes = np.empty(0, dtype=np.int64)
            return np.empty(0)
        lens = np.fromiter((len(x[3]) for x in log), dtype=np.int64, count=len(log))
        ids = np.fromiter((i for x in log for i in x[3]), dtype=np.int64, count=int(lens.sum()))
        meta = np.array([(x[0], x[1], x[2]) for x in log])
        self.start_s[ids] = np.repeat(meta[:, 0], lens)
        fin = np.repeat(meta[:, 1], lens)
        self.finish_s[ids] = fin
        self.replica_of[ids] = np.repeat(meta[:, 2], lens).astype(np.int32)
        self.outcome[ids] = SERVED
        self.done_log = []
        self.last_batch_sizes = lens
        return fin - self.arrival_s[ids]

    def take_window(self) -> WindowStats:
        """Close the window ending now and open the next one."""
        now = self.eng._now
        self._purge_timeouts(now)
        self._sys_change(now, 0)
        self._rq_mark(now)
        self._live_mark(now)
        self._busy_mark(now)
        lat = self.flush_log()
        arrivals = self.n_arrived
        held_area = (self.area_n - self.w_area_n) - (self.area_rq - self.w_area_rq)
        w = WindowStats(
            t0_s=self.w_t0, t1_s=now, arrivals=arrivals - self.w_arr0, completions=len(lat),
            shed=self.w_shed, timed_out=self.w_to, failed=self.w_failed,
            queue_area=self.area_rq - self.w_area_rq, held_area=held_area,
            busy_area=self.area_busy - self.w_area_busy,
            ready_area=self.area_ready - self.w_area_ready, latencies_s=lat,
            batch_samples=list(self.samples), batches=self.w_batches, batch_items=self.w_items,
            max_batch_seen=self.w_maxb, ready=self.n_ready, starting=self.n_starting,
            desired=self.desired, queue_depth_now=len(self.rq),
            held_now=self.n_sys - len(self.rq))
        self.w_t0, self.w_arr0 = now, arrivals
        self.w_area_n, self.w_area_rq = self.area_n, self.area_rq
        self.w_area_busy, self.w_area_ready = self.area_busy, self.area_ready
        self.w_shed = self.w_to = self.w_failed = self.w_batches = self.w_items = 0
        self.w_maxb = 0
        self.samples.clear()
        return w

    @property
    def queue_depth(self) -> int:
        return len(self.rq)

    @property
    def in_system(self) -> int:
        return self.n_sys

    def replica_states(self) -> list[str]:
        return [STATE_NAMES[s] for s in self.state]
