"""A simulated clock implementing trimtab.controllers.shell.clock.Clock on top of the event engine."""
from __future__ import annotations

from trimtab.sim.engine import Engine


class SimClock:
    """Reads the engine's ``now``; ``sleep_until`` runs the simulation up to that moment.

    The live loop written against ``trimtab.controllers.shell.clock.Clock`` runs unchanged in simulated
    time: each ``sleep_until(t)`` processes every event due by ``t``.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def now_s(self) -> float:
        return self._engine.now

    def sleep_until(self, t_s: float) -> None:
        if t_s > self._engine.now:
            self._engine.run(until_s=t_s)


def wall_perf_s() -> float:
    """Wall-clock seconds for measuring how long a replay took (never used in decisions)."""
    import time

    return time.perf_counter()


def wall_unix_s() -> float:
    """Unix time now: the default end of an OpenMetrics export."""
    from trimtab.controllers.shell.clock import WallClock

    return WallClock.unix_s()
