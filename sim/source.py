"""The simulated source: a Source building each Snapshot from the fleet as Prometheus would show it.

The fleet is cut into pieces (``take``): at every scrape and at every controller tick. A read
at ``now`` sees only what was scraped by ``now - scrape_delay_s``, over the loop's rate window
(``window_s``, as ``rate(...[1m])``); every setting is one field of ``SimSourceConfig``, and
the default, ``IDEAL``, is the simulator's exact view: the last controller interval, scraped
at the tick, arrivals counted as they arrive.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from trimtab.controllers.core.types import (FIELD_ARRIVAL_RATE, FIELD_IN_FLIGHT, FIELD_LATENCY,
                                            FIELD_LLM, FIELD_QUEUE_DEPTH, FIELD_REPLICAS,
                                            Snapshot)
from trimtab.controllers.shell.sources.base import Source, TargetSelector
from trimtab.sim.fleet.model import Fleet, WindowStats
from trimtab.sim.snapshot import build_snapshot, merge_windows

# What a read with no scrape yet (or only stale ones) cannot give: as the Prometheus source.
EXPECTED = (FIELD_ARRIVAL_RATE, FIELD_QUEUE_DEPTH, FIELD_IN_FLIGHT, FIELD_LATENCY,
            FIELD_REPLICAS)
# An LLM fleet's reads also expect the engine's fields (running, waiting, KV cache, TTFT...).
EXPECTED_LLM = EXPECTED + (FIELD_LLM,)
EPS_S = 1e-9


def _positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"SimSourceConfig: {name} = {value}, must be > 0 (or None)")


@dataclass(frozen=True)
class SimSourceConfig:
    """How the simulated source differs from the exact view; every default is the exact one.

    - ``rate_window_s``: the window rates and averages are taken over (the loop's
      ``window_s``, Prometheus ``rate(...[1m])``: 60); None: one controller interval.
    - ``scrape_interval_s``: how often the fleet is scraped; None: at every tick.
    - ``scrape_delay_s``: a read sees the newest scrape at least this old (the scrape and
      query lag).
    - ``staleness_s``: a newest scrape older than this marks every field stale (the loop
      then holds); None: never.
    - ``counted_at_completion``: the arrival rate is ``rate(trimtab_requests_total)``, which
      counts a request when it finishes (served, shed, timed out or failed), so what is in
      progress is not yet counted; False: arrivals counted as they arrive.
    - ``gate_per_replica``: the sidecar gate admits ``max(limit, batch) x replicas`` and
      counts all it admitted as in flight, also what waits in Ray's proxy; the rest is the
      sidecar's queue. None: the fleet's own split of queue and in flight.
    - ``measured_line_ms`` / ``effective_line_ms``: (base, per item) of the batch line the
      replicas' batch metrics time and of the line the simulator runs; batch samples are
      shown as the metrics would time them. None: as simulated.
    """

    rate_window_s: float | None = None
    scrape_interval_s: float | None = None
    scrape_delay_s: float = 0.0
    staleness_s: float | None = None
    counted_at_completion: bool = False
    gate_per_replica: int | None = None
    measured_line_ms: tuple[float, float] | None = None
    effective_line_ms: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _positive("rate_window_s", self.rate_window_s)
        _positive("scrape_interval_s", self.scrape_interval_s)
        _positive("staleness_s", self.staleness_s)
        if not self.scrape_delay_s >= 0:
            raise ValueError(f"SimSourceConfig: scrape_delay_s = {self.scrape_delay_s}, "
                             "must be >= 0")
        if self.gate_per_replica is not None and self.gate_per_replica < 1:
            raise ValueError(f"SimSourceConfig: gate_per_replica = {self.gate_per_replica}, "
                             "must be >= 1 (or None)")
        if (self.measured_line_ms is None) != (self.effective_line_ms is None):
            raise ValueError("SimSourceConfig: measured_line_ms and effective_line_ms go "
                             "together (both or neither)")


IDEAL = SimSourceConfig()
# The production stack's defaults: a 60 s rate window (the controller's prometheus.window_s),
# a 15 s scrape read one scrape late (ticks and scrapes share the 15 s grid, so a delay is
# whole scrapes), series stale after 60 s, arrivals counted at completion.
PROMETHEUS = SimSourceConfig(rate_window_s=60.0, scrape_interval_s=15.0, scrape_delay_s=15.0,
                             staleness_s=60.0, counted_at_completion=True)


@dataclass(frozen=True)
class Piece:
    """One cut of the fleet: its window, the sizes of the batches it finished, and whether it
    ends at a scrape (only those are visible to a read)."""

    w: WindowStats
    sizes: np.ndarray
    scraped: bool


def measured_batch_s(cfg: SimSourceConfig, size: float, sim_s: float) -> float:
    """A simulated batch time as the replica's batch metric would have timed it.

    E.g. measured line 40 + 60 b, effective 9.5 + 90.5 b: a simulated batch of 2 taking
    0.19 s shows as 0.19 * 160 / 190.5 = 0.16 s.
    """
    if cfg.measured_line_ms is None or cfg.effective_line_ms is None:
        return sim_s
    mb, mp = cfg.measured_line_ms
    eb, ep = cfg.effective_line_ms
    eff = eb + ep * size
    return sim_s * (mb + mp * size) / eff if eff > 0 else sim_s


def view_snapshot(cfg: SimSourceConfig, pieces: Sequence[Piece], now_s: float,
                  window_s: float, *, latency_bounds_s: tuple[float, ...],
                  concurrency_limit: int | None, max_batch_size: int, batch_timeout_ms: float,
                  memory: Any = None, expected: tuple = EXPECTED) -> Snapshot:
    """What a read at ``now_s`` over ``window_s`` sees of ``pieces`` (oldest first); the pod
    settings are read back as in force now (from the workload, not from the scrape)."""
    end = None
    for i in range(len(pieces) - 1, -1, -1):
        p = pieces[i]
        if p.scraped and p.w.t1_s <= now_s - cfg.scrape_delay_s + EPS_S:
            end = i
            break
    if end is None:
        # Nothing scraped yet: Prometheus answers with no series (Snapshot.empty), not an
        # error. Once a sidecar is scraped its series exist (it creates every child at zero),
        # so a window without requests reads 0, as the exact view does: no other "no series".
        return Snapshot(time_s=now_s, window_s=window_s, missing=frozenset(expected),
                        empty=frozenset(expected))
    newest_s = pieces[end].w.t1_s
    first = end
    while first > 0 and pieces[first - 1].w.t1_s > newest_s - window_s + EPS_S:
        first -= 1
    span = [pieces[i] for i in range(first, end + 1)]
    w = merge_windows([p.w for p in span])
    snap = build_snapshot(w, bounds_s=latency_bounds_s, concurrency_limit=concurrency_limit,
                          max_batch_size=max_batch_size, batch_timeout_ms=batch_timeout_ms,
                          memory=memory)
    changes: dict[str, Any] = {} if snap.time_s == now_s else {"time_s": now_s}
    seconds = w.t1_s - w.t0_s if w.t1_s > w.t0_s else 1.0
    if cfg.counted_at_completion:
        changes["arrival_rate_rps"] = (w.completions + w.shed + w.timed_out + w.failed) / seconds
    if cfg.gate_per_replica is not None:
        per_replica = max(concurrency_limit or cfg.gate_per_replica, max_batch_size or 1)
        gate = float(per_replica * max(1, w.desired))
        total = (snap.queue_depth or 0.0) + (snap.in_flight or 0.0)
        changes["in_flight"] = min(total, gate)
        changes["queue_depth"] = total - changes["in_flight"]
    if cfg.measured_line_ms is not None:
        changes["batch_samples"] = tuple((b, measured_batch_s(cfg, b, t))
                                         for b, t in snap.batch_samples)
    if cfg.staleness_s is not None and now_s - newest_s > cfg.staleness_s + EPS_S:
        changes["stale"] = frozenset(f for f in expected if f not in snap.missing)
    return snap.with_(**changes) if changes else snap


class SimSource(Source):
    """``SimSource(fleet, actuator, cfg, latency_bounds_s)``: a Source for the one simulated
    fleet (every target selector reads it); the replay calls ``take`` at every scrape and
    tick, between engine runs, and the loop calls ``read``. ``actuator`` (the SimActuator)
    answers the pod settings in force, as the live sources read them back."""

    name = "sim"

    def __init__(self, fleet: Fleet, actuator: Any, cfg: SimSourceConfig,
                 latency_bounds_s: tuple[float, ...]) -> None:
        from trimtab.sim.llm.fleet import LlmFleet   # here: it imports this package's modules

        self.fleet = fleet
        self.llm = isinstance(fleet, LlmFleet)
        self.actuator = actuator
        self.cfg = cfg
        self.latency_bounds_s = latency_bounds_s
        self.pieces: deque[Piece] = deque()
        self._last_scrape_s = 0.0
        self._gap_s = 0.0           # the longest time between two scrapes so far

    def take(self, scraped: bool) -> Piece:
        """Close the fleet's window now; ``scraped``: a scrape happens at this moment."""
        w = self.fleet.take_window()
        piece = Piece(w, self.fleet.last_batch_sizes, scraped)
        if scraped:
            self._gap_s = max(self._gap_s, w.t1_s - self._last_scrape_s)
            self._last_scrape_s = w.t1_s
        self.pieces.append(piece)
        return piece

    def read(self, targets: Sequence[TargetSelector], now_s: float,
             window_s: float) -> dict[str, Snapshot]:
        self._forget(now_s, window_s)
        f = self.fleet
        snap = view_snapshot(self.cfg, self.pieces, now_s, window_s,
                             latency_bounds_s=self.latency_bounds_s,
                             concurrency_limit=self.actuator.concurrency_limit,
                             max_batch_size=f.max_batch,
                             batch_timeout_ms=f.batch_timeout_s * 1000.0, memory=f.cfg.memory,
                             expected=EXPECTED_LLM if self.llm else EXPECTED)
        return {t.key: snap for t in targets}

    def _forget(self, now_s: float, window_s: float) -> None:
        """Drop pieces no read can reach any more: the newest visible scrape is at most one
        scrape gap older than ``now - delay``, and a read reaches one window behind it."""
        horizon_s = now_s - self.cfg.scrape_delay_s - self._gap_s - window_s - EPS_S
        while self.pieces and self.pieces[0].w.t1_s < horizon_s:
            self.pieces.popleft()
