"""The clock protocol shared by the live loop (wall time) and the simulator (simulated time)."""
from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What a loop needs of time: read it, and wait until a later moment."""

    def now_s(self) -> float:
        """Seconds since an arbitrary epoch; monotonic."""
        ...

    def sleep_until(self, t_s: float) -> None:
        """Block (or, simulated, advance) until now_s() >= t_s."""
        ...


class WallClock:
    """Real time: monotonic for intervals, so a wall-clock step never skews a window."""

    def now_s(self) -> float:
        return time.monotonic()

    def sleep_until(self, t_s: float) -> None:
        delay_s = t_s - time.monotonic()
        if delay_s > 0:
            time.sleep(delay_s)

    @staticmethod
    def unix_s() -> float:
        """Wall-clock Unix time, for timestamps shown to people and Prometheus queries."""
        return time.time()


class ManualClock:
    """A fake clock for tests: time moves only when told to."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def now_s(self) -> float:
        return self._now_s

    def sleep_until(self, t_s: float) -> None:
        self._now_s = max(self._now_s, t_s)

    def advance(self, dt_s: float) -> None:
        if dt_s < 0:
            raise ValueError(f"advance dt_s = {dt_s}, must be >= 0")
        self._now_s += dt_s
