"""Admission control: a concurrency limit changeable at runtime and a bounded FIFO queue with timeout."""
from __future__ import annotations

import asyncio
from collections import deque


class QueueFull(Exception):
    """The queue already holds its maximum number of waiting requests."""


class QueueTimeout(Exception):
    """A request waited longer than the queue timeout without being admitted."""


class Admission:
    """At most ``limit`` requests in flight; the rest wait in arrival order, or are shed.

    Lowering the limit never interrupts requests already in flight: new ones wait until
    enough finish. Raising it admits waiters at once.
    """

    def __init__(self, limit: int, max_queue: int, queue_timeout_s: float = 5.0) -> None:
        if limit < 1:
            raise ValueError(f"concurrency limit {limit} must be >= 1")
        if max_queue < 0:
            raise ValueError(f"max queue length {max_queue} must be >= 0")
        self._limit = limit
        self._max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s     # the wait the proxy allows (set_queue_timeout_s)
        self._in_flight = 0
        self._waiters: deque[asyncio.Future] = deque()
        # Each waiter's arrival (loop time) and expiry timer, so a new timeout reaches it.
        self._timers: dict[asyncio.Future, tuple[float, asyncio.TimerHandle]] = {}

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def set_limit(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"concurrency limit {limit} must be >= 1")
        self._limit = limit
        self._grant()

    def set_queue_timeout_s(self, timeout_s: float) -> None:
        """The longest wait, for those already waiting too (counted from their arrival).

        Those who have waited longer already are shed at once: when the controller shortens
        the wait because an overload would make them late, the backlog is exactly what must
        go (the simulator's fleet does the same).
        """
        if not timeout_s > 0:
            raise ValueError(f"queue timeout {timeout_s} s must be > 0")
        self.queue_timeout_s = float(timeout_s)
        for fut, (arrived, timer) in list(self._timers.items()):
            if fut.done():
                continue
            timer.cancel()
            deadline = fut.get_loop().call_at(arrived + self.queue_timeout_s, self._expire, fut)
            self._timers[fut] = (arrived, deadline)

    def try_acquire(self) -> bool:
        """Admit at once if a slot is free and nobody waits (the fast path, no future)."""
        if self._in_flight < self._limit and not self._waiters:
            self._in_flight += 1
            return True
        return False

    async def acquire(self, timeout_s: float) -> None:
        """Wait for a slot; raises QueueFull or QueueTimeout. Cancellation gives the slot back."""
        if self.try_acquire():
            return
        if len(self._waiters) >= self._max_queue:
            raise QueueFull()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.append(fut)
        self._timers[fut] = (loop.time(), loop.call_later(timeout_s, self._expire, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release()                   # granted, then the client went away
            else:
                self._discard(fut)
            raise
        finally:
            self._timers.pop(fut)[1].cancel()

    def release(self) -> None:
        self._in_flight -= 1
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._in_flight < self._limit:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self._in_flight += 1
            fut.set_result(None)

    def _expire(self, fut: asyncio.Future) -> None:
        if not fut.done():
            self._discard(fut)
            fut.set_exception(QueueTimeout())

    def _discard(self, fut: asyncio.Future) -> None:
        try:
            self._waiters.remove(fut)
        except ValueError:
            pass
