"""Builders for fleet tests: a small fleet on a fresh engine, with defaults for everything."""
from __future__ import annotations

from typing import Any

import numpy as np

from sim.engine import Engine
from sim.fleet.model import Fleet, FleetConfig
from sim.fleet.service import AffineService


def make_fleet(arrival_s: list[float] | np.ndarray, *, base_ms: float = 1000.0,
               per_item_ms: float = 0.0, dist: str = "deterministic", cv: float = 0.0,
               cold_start_s: float = 10.0, seed: int = 0, **cfg: Any) -> Fleet:
    eng = Engine(seed=seed)
    rng = np.random.default_rng(seed)
    svc = AffineService(base_ms, per_item_ms, rng, cv=cv, dist=dist)
    cfg.setdefault("initial_replicas", 1)
    conf = FleetConfig(service=svc, cold_start=lambda: cold_start_s, **cfg)
    return Fleet(eng, conf, np.asarray(arrival_s, dtype=float))


def run_all(fleet: Fleet, until_s: float = 1e6) -> Fleet:
    fleet.eng.run(until_s)
    fleet.take_window()
    return fleet
