"""One log line per kind of event per interval, with a count of those left out, never a traceback.

A hostile or broken client can make a server log as fast as it can send; each malformed
request or failed authentication is one line here, and at most one line per ``key`` every
``interval_s`` (the next one says how many were suppressed meanwhile).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """``warn(key, message)``: logs at WARNING unless ``key`` logged within ``interval_s``."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 64) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._clock = clock
        self._max_keys = max_keys
        self._last_s: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, message: str) -> bool:
        """Log ``message`` (one line) unless rate-limited; True when it was logged."""
        now = self._clock()
        last = self._last_s.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        if last is None and len(self._last_s) >= self._max_keys:   # bounded memory
            oldest = min(self._last_s, key=self._last_s.__getitem__)
            self._last_s.pop(oldest)
            self._suppressed.pop(oldest, None)
        self._last_s[key] = now
        skipped = self._suppressed.pop(key, 0)
        line = " ".join(message.split())            # one line, whatever the message holds
        if skipped:
            line += f" ({skipped} more like this in the last {self._interval_s:g} s)"
        self._log.warning("%s", line)
        return True
