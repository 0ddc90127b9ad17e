"""RayFleet.start: a failed start (Serve's proxy missing its deadline) is torn down and retried once."""
from __future__ import annotations

import pytest

from trimtab.up.fleet import FleetConfig, RayFleet


class ProxyDied(Exception):
    """Stands for ray.exceptions.ActorDiedError (no Ray needed here)."""


def fleet_failing(times: int, calls: list[str]) -> RayFleet:
    fleet = RayFleet(FleetConfig(http_port=1, metrics_port=2))

    def start_once(timeout_s: float) -> RayFleet:
        calls.append("start")
        if calls.count("start") <= times:
            raise ProxyDied("proxy actor died before it started")
        return fleet

    fleet._start_once = start_once                       # type: ignore[method-assign]
    fleet.stop = lambda: calls.append("stop")            # type: ignore[method-assign]
    return fleet


@pytest.mark.parametrize("failures, calls_seen, raises", [
    (0, ["start"], False),
    (1, ["start", "stop", "start"], False),
    (2, ["start", "stop", "start"], True),
], ids=["first-try", "retried", "gives-up"])
def test_start_retries_once_after_tearing_down(failures, calls_seen, raises):
    calls: list[str] = []
    fleet = fleet_failing(failures, calls)
    if raises:
        with pytest.raises(ProxyDied):
            fleet.start()
    else:
        assert fleet.start() is fleet
    assert calls == calls_seen
