"""An open-loop load ramp (steady, a surge, back down) sent over loopback HTTP, bounded in count.

Arrival times are drawn up front (a non-homogeneous Poisson process, by thinning, seeded),
so the same arrivals can be replayed through the simulator. Open loop: a request is sent at
its time whether or not earlier ones have finished; at most ``max_outstanding`` are in flight
and any beyond that are counted as ``client_dropped`` rather than delayed.
"""
from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass, field

import numpy as np

from trimtab.common.poisson import thinned_arrivals_s
from trimtab.up import wall_clock

OK, ERROR, SHED, TIMEOUT, DROPPED = "ok", "error", "shed", "timeout", "client_dropped"


@dataclass(frozen=True)
class RampProfile:
    """Rate over time: ``base_rps``, then ``surge_factor`` times it, then ``base_rps`` again.

    Fractions of ``duration_s``: steady until ``surge_start``, a linear ramp of ``ramp`` up,
    the surge until ``surge_end``, a linear ramp down. E.g. 180 s, 3 rps x 5: 3 rps until
    45 s, 15 rps from 54 s to 99 s, 3 rps from 108 s.
    """

    duration_s: float
    base_rps: float = 3.0
    surge_factor: float = 5.0
    surge_start: float = 0.25
    surge_end: float = 0.55
    ramp: float = 0.05

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ValueError(f"duration_s = {self.duration_s}: must be > 0")
        if not self.base_rps > 0:
            raise ValueError(f"base_rps = {self.base_rps}: must be > 0")
        if not self.surge_factor >= 1:
            raise ValueError(f"surge_factor = {self.surge_factor}: must be >= 1")
        if not 0 <= self.surge_start < self.surge_start + self.ramp <= self.surge_end <= 1:
            raise ValueError(f"surge_start = {self.surge_start}, ramp = {self.ramp}, surge_end ="
                             f" {self.surge_end}: need 0 <= start < start + ramp <= end <= 1")

    def rate_rps(self, t_s: float | np.ndarray) -> np.ndarray:
        x = np.asarray(t_s, dtype=float) / self.duration_s
        up = np.clip((x - self.surge_start) / self.ramp, 0.0, 1.0)
        down = np.clip((x - self.surge_end) / self.ramp, 0.0, 1.0)
        level = up - down
        return self.base_rps * (1.0 + (self.surge_factor - 1.0) * level)

    @property
    def peak_rps(self) -> float:
        return self.base_rps * self.surge_factor


def arrivals(profile: RampProfile, seed: int = 0) -> np.ndarray:
    """Poisson arrival times (s) following ``profile.rate_rps``, by thinning."""
    return thinned_arrivals_s(np.random.default_rng(seed), np.array([0.0]),
                              np.array([profile.duration_s]), np.array([profile.peak_rps]),
                              profile.rate_rps)


@dataclass
class RequestLog:
    """What the client saw: per request its send offset (s), latency (s) and outcome."""

    sent_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    outcome: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sent_s: float, latency_s: float, outcome: str) -> None:
        with self.lock:
            self.sent_s.append(sent_s)
            self.latency_s.append(latency_s)
            self.outcome.append(outcome)

    def window(self, since_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(latencies of ok requests, all outcomes) of requests sent at or after ``since_s``."""
        with self.lock:
            sent = np.asarray(self.sent_s)
            lat = np.asarray(self.latency_s)
            out = np.asarray(self.outcome, dtype=object)
        mask = sent >= since_s
        return lat[mask & (out == OK)], out[mask]

    def counts(self) -> dict[str, int]:
        with self.lock:
            kinds = list(self.outcome)
        return {k: kinds.count(k) for k in (OK, ERROR, SHED, TIMEOUT, DROPPED)}


class LoadGenerator:
    """Sends ``arrival_s`` to ``url`` from a background thread; ``start()``, ``stop()``."""

    def __init__(self, url: str, arrival_s: np.ndarray, *, timeout_s: float = 10.0,
                 max_outstanding: int = 256) -> None:
        self.url = url
        self.arrival_s = np.asarray(arrival_s, dtype=float)
        self.timeout_s = timeout_s
        self.max_outstanding = max_outstanding
        self.log = RequestLog()
        self.started_mono_s: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.sent = 0

    def elapsed_s(self) -> float:
        return 0.0 if self.started_mono_s is None else wall_clock.now_s() - self.started_mono_s

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="trimtab-load", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        connector = aiohttp.TCPConnector(limit=self.max_outstanding)
        outstanding: set[asyncio.Task] = set()
        self.started_mono_s = wall_clock.now_s()
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            for i, at_s in enumerate(self.arrival_s):
                if self._stop.is_set():
                    break
                delay_s = at_s - self.elapsed_s()
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
                if len(outstanding) >= self.max_outstanding:
                    self.log.add(float(at_s), math.nan, DROPPED)
                    continue
                task = asyncio.create_task(self._one(session, float(at_s), i))
                outstanding.add(task)
                task.add_done_callback(outstanding.discard)
                self.sent += 1
            if outstanding:
                await asyncio.wait(outstanding, timeout=self.timeout_s + 1.0)

    async def _one(self, session, at_s: float, i: int) -> None:
        import aiohttp

        begin_s = wall_clock.now_s()
        outcome = OK
        try:
            async with session.post(self.url, json={"seed": i}) as resp:
                await resp.read()
                if resp.status == 503 or resp.status == 429:
                    outcome = SHED
                elif resp.status == 504:
                    outcome = TIMEOUT
                elif resp.status >= 400:
                    outcome = ERROR
        except asyncio.TimeoutError:
            outcome = TIMEOUT
        except (aiohttp.ClientError, OSError):
            outcome = ERROR
        self.log.add(at_s, wall_clock.now_s() - begin_s, outcome)
