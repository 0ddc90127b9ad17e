"""RateLimitedLog: one line per key per interval, the suppressed count on the next one."""
from __future__ import annotations

import logging

from trimtab.collectors.ratelog import RateLimitedLog


def test_one_line_per_key_per_interval_with_the_suppressed_count(caplog):
    now = [0.0]
    rl = RateLimitedLog(logging.getLogger("t.ratelog"), interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="t.ratelog"):
        logged = [rl.warn("a", "first\nsecond line"), rl.warn("a", "x"), rl.warn("b", "other")]
        now[0] = 9.9
        logged.append(rl.warn("a", "y"))
        now[0] = 10.5
        logged.append(rl.warn("a", "again"))
    assert logged == [True, False, True, False, True]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["first second line", "other",
                        "again (2 more like this in the last 10 s)"]


def test_keys_are_bounded():
    rl = RateLimitedLog(logging.getLogger("t.ratelog2"), max_keys=4, clock=lambda: 0.0)
    for i in range(100):
        rl.warn(f"k{i}", "m")
    assert len(rl._last_s) <= 4
