"""The event kernel: (time, seq) ordering, merged arrivals, resumable runs, determinism."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import trimtab.sim.engine as engine_mod
from trimtab.sim.clock import SimClock
from trimtab.sim.engine import Engine, SimulationError


def test_events_run_in_time_order_and_ties_in_schedule_order():
    eng, seen = Engine(), []
    for t, tag in ((2.0, "c"), (1.0, "a"), (1.0, "b"), (0.5, "first")):
        eng.schedule(t, seen.append, tag)
    eng.run(10.0)
    assert seen == ["first", "a", "b", "c"]
    assert eng.now == 10.0


def test_heap_event_runs_before_an_arrival_at_the_same_time():
    eng, seen = Engine(), []
    eng.set_arrivals(np.array([1.0, 2.0]), lambda i: seen.append(f"arr{i}"))
    eng.schedule(1.0, seen.append, "event")
    eng.run(5.0)
    assert seen == ["event", "arr0", "arr1"]


def test_scheduling_in_the_past_is_an_error_naming_both_times():
    eng = Engine()
    eng.run(5.0)
    with pytest.raises(SimulationError, match="at_s = 1.0, must be >= now = 5.0"):
        eng.schedule(1.0, print)
    with pytest.raises(SimulationError, match="until_s"):
        eng.run(4.0)


def test_now_is_read_only():
    with pytest.raises(AttributeError):
        Engine().now = 3.0  # type: ignore[misc]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=60),
       st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=5))
def test_run_is_resumable_anywhere(times, cuts):
    """run(a); run(b) processes exactly what run(b) does, in the same order."""
    def trace(stops):
        eng, seen = Engine(), []
        arr = np.sort(np.array(times))
        eng.set_arrivals(arr, lambda i: (seen.append(("a", i)),
                                         eng.schedule_in(0.5, seen.append, ("e", i))))
        for stop in stops:
            eng.run(stop)
        return seen
    assert trace(sorted(cuts) + [200.0]) == trace([200.0])


def test_arrivals_cross_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(engine_mod, "_CHUNK", 3)
    eng, seen = Engine(), []
    eng.set_arrivals(np.arange(10, dtype=float), seen.append)
    eng.run(4.5)
    assert seen == [0, 1, 2, 3, 4] and eng.arrivals_done == 5
    eng.run(100)
    assert seen == list(range(10)) and eng.events == 10


def test_unsorted_arrivals_are_rejected():
    with pytest.raises(SimulationError, match="sorted"):
        Engine().set_arrivals(np.array([2.0, 1.0]), print)


def test_same_seed_same_draws_different_seed_different():
    a, b, c = Engine(seed=7), Engine(seed=7), Engine(seed=8)
    assert a.rng.random(5).tolist() == b.rng.random(5).tolist() != c.rng.random(5).tolist()


def test_sim_clock_implements_the_clock_protocol():
    eng = Engine()
    fired = []
    eng.schedule(3.0, fired.append, 1)
    clock = SimClock(eng)
    clock.sleep_until(5.0)
    assert clock.now_s() == 5.0 and fired == [1]
    clock.sleep_until(2.0)     # the past: no-op, time never goes back
    assert clock.now_s() == 5.0
