"""The discrete-event kernel: a heap keyed by (time, sequence) plus a merged arrival stream.

Events are ``(time_s, seq, fn, arg)`` tuples; ``seq`` comes from a counter, so two events at
the same time run in the order they were scheduled and a run is deterministic for a given
seed. Arrivals from a trace are not pushed onto the heap one by one: they are read from a
sorted array in order and merged with the heap (on a tie the heap event runs first), which
saves a push and a pop per request. ``run(until_s)`` can be called again to go on.
"""
from __future__ import annotations

import heapq
import itertools
import math
from typing import Any, Callable

import numpy as np

_CHUNK = 65536   # arrivals converted to a Python list this many at a time (fast to index)


class SimulationError(RuntimeError):
    """An event scheduled in the past, or another misuse of the engine."""


class Engine:
    """Event heap with a read-only clock ``now``; seeded RNG in ``rng``.

    Example::

        eng = Engine(seed=1)
        eng.schedule(2.0, print, "hello")   # at t = 2 s
        eng.run(until_s=10.0)               # now == 10.0
    """

    __slots__ = ("_now", "_heap", "_seq", "rng", "_stream", "_stream_fn", "_stream_pos",
                 "_chunk", "_chunk_base", "events")

    def __init__(self, seed: int = 0) -> None:
        self._now = 0.0
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = itertools.count()
        self.rng = np.random.default_rng(seed)
        self._stream: np.ndarray | None = None
        self._stream_fn: Callable[[int], None] | None = None
        self._stream_pos = 0
        self._chunk: list[float] = []
        self._chunk_base = 0
        self.events = 0          # events processed, arrivals included

    @property
    def now(self) -> float:
        """Simulated seconds; moves only inside ``run``."""
        return self._now

    def schedule(self, at_s: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Run ``fn(arg)`` at simulated time ``at_s`` (>= now)."""
        if at_s < self._now:
            raise SimulationError(f"schedule at_s = {at_s}, must be >= now = {self._now}")
        heapq.heappush(self._heap, (at_s, next(self._seq), fn, arg))

    def schedule_in(self, delay_s: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Run ``fn(arg)`` after ``delay_s`` (>= 0) simulated seconds."""
        if delay_s < 0:
            raise SimulationError(f"schedule_in delay_s = {delay_s}, must be >= 0")
        heapq.heappush(self._heap, (self._now + delay_s, next(self._seq), fn, arg))

    def set_arrivals(self, arrival_s: np.ndarray, fn: Callable[[int], None]) -> None:
        """Merge a sorted array of arrival times: ``fn(i)`` runs at ``arrival_s[i]``."""
        arr = np.asarray(arrival_s, dtype=np.float64)
        if arr.size and (np.any(np.diff(arr) < 0) or arr[0] < self._now):
            raise SimulationError("set_arrivals: times must be sorted and >= now")
        self._stream, self._stream_fn = arr, fn
        self._stream_pos = 0
        self._load_chunk(0)

    def _load_chunk(self, base: int) -> None:
        assert self._stream is not None
        self._chunk_base = base
        self._chunk = self._stream[base:base + _CHUNK].tolist()
        self._chunk.append(math.inf)   # sentinel: end of chunk

    @property
    def arrivals_done(self) -> int:
        """How many stream arrivals have run."""
        return self._stream_pos

    def peek_s(self) -> float:
        """Time of the next event or arrival (inf if none)."""
        t_heap = self._heap[0][0] if self._heap else math.inf
        if self._stream is not None and self._stream_pos < len(self._stream):
            return min(t_heap, float(self._stream[self._stream_pos]))
        return t_heap

    def run(self, until_s: float) -> None:
        """Process every event and arrival with time <= ``until_s``, then set now = until_s."""
        if until_s < self._now:
            raise SimulationError(f"run until_s = {until_s}, must be >= now = {self._now}")
        heap = self._heap
        pop = heapq.heappop
        fn_arr = self._stream_fn
        n_stream = len(self._stream) if self._stream is not None else 0
        chunk = self._chunk if self._stream is not None else [math.inf]
        base = self._chunk_base
        pos = self._stream_pos - base     # index inside the chunk
        inf = math.inf
        events = 0
        try:
            while True:
                t_arr = chunk[pos]
                if t_arr == inf and base + pos < n_stream:   # chunk used up: load the next
                    self._load_chunk(base + pos)
                    chunk, base, pos = self._chunk, self._chunk_base, 0
                    continue
                if heap and heap[0][0] <= t_arr:
                    item = heap[0]
                    if item[0] > until_s:
                        break
                    pop(heap)
                    self._now = item[0]
                    item[2](item[3])
                else:
                    if t_arr > until_s:
                        break
                    self._now = t_arr
                    pos += 1
                    fn_arr(base + pos - 1)  # type: ignore[misc]
                events += 1
        finally:
            if self._stream is not None:
                self._stream_pos = base + pos
            self.events += events
        self._now = until_s

    def pending(self) -> int:
        """Heap events not yet run (arrivals not counted)."""
        return len(self._heap)
