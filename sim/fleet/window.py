"""Closing a window: per-request arrays filled from the finished-batch log, and WindowStats."""
from __future__ import annotations

from itertools import chain

import numpy as np

from trimtab.sim.fleet.types import SERVED, WindowStats


class WindowMixin:
    """Needs the Fleet's done_log, per-request arrays, lazy integrals and counters."""

    def flush_log(self) -> np.ndarray:
        """Write finished batches into the per-request arrays; return their latencies."""
        log = self.done_log
        if not log:
            self.last_batch_sizes = np.empty(0, dtype=np.int64)
            self.last_samples = []
            return np.empty(0)
        # Transpose with zip and flatten with chain: C loops, not a Python loop per batch.
        starts, fins, reps, id_lists = zip(*log)
        lens = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(log))
        ids = np.fromiter(chain.from_iterable(id_lists), dtype=np.int64, count=int(lens.sum()))
        meta = np.array((starts, fins, reps)).T
        dur = meta[:, 1] - meta[:, 0]
        self.service_sum_s += float(dur.sum())
        self.batches += len(log)
        self.served += int(lens.sum())
        tail = slice(max(0, len(log) - 256), len(log))
        self.last_samples = list(zip(lens[tail].tolist(), dur[tail].tolist()))
        self.start_s[ids] = np.repeat(meta[:, 0], lens)
        fin = np.repeat(meta[:, 1], lens)
        self.finish_s[ids] = fin
        self.replica_of[ids] = np.repeat(meta[:, 2], lens).astype(np.int32)
        self.outcome[ids] = SERVED
        self.done_log = []
        self.last_batch_sizes = lens
        return fin - self.arrival_s[ids]

    def take_window(self) -> WindowStats:
        """Close the window ending now and open the next one (call it between engine runs,
        not from inside an event: the arrival count is read from the engine)."""
        now = self.eng._now
        self._purge_timeouts(now)
        self._sys_change(now, 0)
        self._rq_mark(now)
        self._live_mark(now)
        self._busy_mark(now)
        lat = self.flush_log()
        sizes = self.last_batch_sizes
        arrivals = self.n_arrived
        held_area = (self.area_n - self.w_area_n) - (self.area_rq - self.w_area_rq)
        w = WindowStats(
            t0_s=self.w_t0, t1_s=now, arrivals=arrivals - self.w_arr0, completions=len(lat),
            shed=self.w_shed, timed_out=self.w_to, failed=self.w_failed,
            queue_area=self.area_rq - self.w_area_rq, held_area=held_area,
            busy_area=self.area_busy - self.w_area_busy,
            ready_area=self.area_ready - self.w_area_ready, latencies_s=lat,
            batch_samples=self.last_samples, batches=len(sizes),
            batch_items=int(sizes.sum()),
            max_batch_seen=max(int(sizes.max()) if len(sizes) else 0, self.w_maxb), ready=self.n_ready, starting=self.n_starting,
            desired=self.desired, queue_depth_now=len(self.rq),
            held_now=self.n_sys - len(self.rq))
        self.w_t0, self.w_arr0 = now, arrivals
        self.w_area_n, self.w_area_rq = self.area_n, self.area_rq
        self.w_area_busy, self.w_area_ready = self.area_busy, self.area_ready
        self.w_shed = self.w_to = self.w_failed = 0
        self.w_maxb = 0
        return w
