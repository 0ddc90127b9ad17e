"""The source protocol the live loop reads: one Snapshot per target per tick."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from trimtab.controllers.core.types import Snapshot


@dataclass(frozen=True)
class TargetSelector:
    """How a source finds one target's series: its key and Prometheus label matchers."""

    key: str                       # unique target key, e.g. "ns/workload"
    matchers: Mapping[str, str]    # e.g. {"namespace": "prod", "model": "llama"}


class Source(Protocol):
    """Reads metrics for many targets at once (batched), never raising for one bad target.

    A target whose metrics could not be read gets a Snapshot with the fields set to None and
    named in ``missing`` (or ``stale``), so the policy's guards can hold. ``last_errors`` names
    the queries of the last ``read`` that failed without failing the read (counted by the loop
    as source errors) and ``last_causes`` their messages (logged by the loop when they
    change); every source subclasses this (or declares it), empty by default.
    """

    name: str
    last_errors: Sequence[str] = ()
    last_causes: Sequence[str] = ()

    def read(self, targets: Sequence[TargetSelector], now_s: float,
             window_s: float) -> dict[str, Snapshot]:
        ...
