"""Real time for the live loop (the one place in trimtab/up that reads or waits on the clock)."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def now_s() -> float:
    """Monotonic seconds: intervals and deadlines."""
    return time.monotonic()


def perf_s() -> float:
    """The finest monotonic clock: timing one batch."""
    return time.perf_counter()


def unix_s() -> float:
    """Unix time: what Prometheus queries are keyed on."""
    return time.time()


def sleep_s(duration_s: float) -> None:
    if duration_s > 0:
        time.sleep(duration_s)


def poll_until(check: Callable[[], T], timeout_s: float, step_s: float = 0.2) -> T | None:
    """Call ``check`` every ``step_s`` until it returns something truthy or time runs out."""
    deadline_s = now_s() + timeout_s
    while True:
        value = check()
        if value or now_s() >= deadline_s:
            return value
        sleep_s(min(step_s, max(0.0, deadline_s - now_s())))
