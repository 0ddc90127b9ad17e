"""Test builders for the simulator: fleet windows and source pieces with defaults."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from trimtab.sim.fleet.types import WindowStats
from trimtab.sim.source import Piece

BOUNDS_S = (0.1, 0.5, 1.0)


def window(t0_s: float, t1_s: float, *, arrivals: int = 0, completions: int | None = None,
           shed: int = 0, timed_out: int = 0, failed: int = 0, queue: float = 0.0,
           held: float = 1.0, ready: int = 1, starting: int = 0, desired: int | None = None,
           latencies_s: Sequence[float] | None = None,
           batches: Sequence[tuple[int, float]] = ((1, 0.1),)) -> WindowStats:
    """One fleet window; ``queue``/``held`` are means over it, ``completions`` default to the
    arrivals (all served at 0.05 s unless ``latencies_s`` says otherwise)."""
    span = t1_s - t0_s
    done = arrivals if completions is None else completions
    lat = np.full(done, 0.05) if latencies_s is None else np.asarray(latencies_s, float)
    return WindowStats(
        t0_s=t0_s, t1_s=t1_s, arrivals=arrivals, completions=len(lat), shed=shed,
        timed_out=timed_out, failed=failed, queue_area=queue * span, held_area=held * span,
        busy_area=0.5 * ready * span, ready_area=ready * span, latencies_s=lat,
        batch_samples=list(batches), batches=len(batches),
        batch_items=sum(b for b, _ in batches), max_batch_seen=max((b for b, _ in batches),
                                                                   default=0),
        ready=ready, starting=starting, desired=ready + starting if desired is None else desired)


def piece(t0_s: float, t1_s: float, scraped: bool = True, **kw) -> Piece:
    w = window(t0_s, t1_s, **kw)
    return Piece(w, np.asarray([b for b, _ in w.batch_samples], dtype=np.int64), scraped)


def step_pieces(step_s: float = 60.0, end_s: float = 120.0, every_s: float = 15.0,
                rps: float = 10.0) -> list[Piece]:
    """Arrivals at 0 rps until ``step_s``, then ``rps``: one piece per ``every_s``."""
    out = []
    t = 0.0
    while t < end_s - 1e-9:
        n = int(round(rps * every_s)) if t >= step_s - 1e-9 else 0
        out.append(piece(t, t + every_s, arrivals=n))
        t += every_s
    return out
