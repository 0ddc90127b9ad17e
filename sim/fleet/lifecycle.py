"""Replica lifecycle (starting, ready, draining, stopped, parked), OOM restarts, actuation."""
from __future__ import annotations

import math

import numpy as np

from trimtab.sim.fleet.types import (DRAINING, FAILED, PARKED, READY, STARTING, STOPPED, NO_LIMIT)


class LifecycleMixin:
    """Needs the Fleet's replica tables, counters and engine; see trimtab.sim.fleet.model.Fleet."""

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

    def _schedule_park(self, r: int, now: float) -> None:
        # A newer schedule makes older ones stale; a stale one finding the replica idle
        # again would park it early.
        self.idle_gen[r] += 1
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
        self.w_maxb = max(self.w_maxb, k)
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
        self.limit = NO_LIMIT if limit is None else max(1, int(limit))
        self._feed(self.eng._now)

    @property
    def queue_timeout_s(self) -> float | None:
        """The admission queue's longest wait in force (None: no limit)."""
        return None if self._qto == math.inf else self._qto

    def set_queue_timeout_s(self, t_s: float | None) -> None:
        """Longest wait in the admission queue (None: no limit); the queue is purged at once."""
        self._qto = math.inf if t_s is None else max(0.0, float(t_s))
        self._qto_since = self.eng._now     # no request leaves by the new rule before it holds
        self._feed(self.eng._now)

    def set_max_batch(self, b: int) -> None:
        self.max_batch = max(1, int(b))
        self._start_at_once = self.cfg.greedy or self.max_batch == 1 or self.batch_timeout_s == 0
        self._kick()

    def set_batch_timeout_s(self, t_s: float) -> None:
        self.batch_timeout_s = max(0.0, float(t_s))
        self._start_at_once = self.cfg.greedy or self.max_batch == 1 or self.batch_timeout_s == 0
        for r in range(len(self.state)):
            self.gen[r] += 1          # re-arm timers with the new timeout
            self.timer[r] = False
        self._kick()

    def _kick(self) -> None:
        now = self.eng._now
        for r in range(len(self.state)):
            if not self.busy[r] and self.state[r] in (READY, DRAINING):
                self._try_start(r, now)
