"""The fleet model: batcher, router, concurrency limit, queue timeout, replica lifecycle, OOM."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from trimtab.sim.engine import Engine
from trimtab.sim.fleet.model import (DRAINING, FAILED, PARKED, READY, SERVED, SHED, STARTING, STOPPED,
                             TIMED_OUT, Fleet, FleetConfig, MemoryModel)
from trimtab.sim.fleet.service import AffineService


# ---------------------------------------------------------------------------- builders
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


# ----------------------------------------------------------------------------- batcher
def test_triton_batch_waits_for_the_timeout_when_not_full():
    # 3 requests, max batch 4, 10 ms timeout: the batch starts when the oldest has waited 10 ms.
    f = run_all(make_fleet([0.0, 0.001, 0.002], base_ms=50, max_batch=4, batch_timeout_s=0.010))
    assert f.start_s.tolist() == pytest.approx([0.010] * 3)
    assert f.finish_s.tolist() == pytest.approx([0.060] * 3)


def test_triton_batch_starts_at_once_when_max_batch_is_waiting():
    f = run_all(make_fleet([0.0, 0.001, 0.002, 0.003, 0.004], base_ms=50, max_batch=4,
                           batch_timeout_s=0.010))
    # First four fill a batch at 3 ms; the fifth starts after that batch, having waited > 10 ms.
    assert f.start_s[:4].tolist() == pytest.approx([0.003] * 4)
    assert f.start_s[4] == pytest.approx(0.053)


def test_greedy_batcher_takes_what_is_waiting_when_free():
    f = run_all(make_fleet([0.0, 0.001, 0.002, 0.003], base_ms=50, max_batch=4,
                           batch_timeout_s=0.010, greedy=True))
    # Starts alone at once, then takes the three that queued during its batch.
    assert f.start_s.tolist() == pytest.approx([0.0, 0.05, 0.05, 0.05])


def test_batch_time_is_affine_in_batch_size():
    f = run_all(make_fleet([0.0] * 3, base_ms=30, per_item_ms=5, max_batch=8, greedy=False,
                           batch_timeout_s=0.0))
    # Timeout 0: the first arrival goes alone (35 ms); the other two batch together (40 ms).
    assert sorted(set(np.round(f.finish_s - f.start_s, 6))) == [0.035, 0.04]


# ------------------------------------------------------------------------------ router
@pytest.mark.parametrize("router,expected", [
    pytest.param("least_outstanding", [0, 0, 0, 1, 1, 1], id="least-outstanding-fills-new"),
    pytest.param("round_robin", [0, 0, 0, 0, 1, 0], id="round-robin-ignores-load"),
])
def test_router_policy(router, expected):
    # r0 ready from the start holds three 10-s requests; r1 becomes ready at t=1; three more
    # arrive after that.
    f = make_fleet([0.1, 0.2, 0.3, 1.1, 1.2, 1.3], base_ms=10_000, cold_start_s=1.0,
                   router=router)
    f.eng.run(0.05)
    f.set_desired(2)
    run_all(f)
    assert f.replica_of.tolist() == expected


def test_concurrency_limit_and_no_queue_sheds_the_excess():
    f = run_all(make_fleet([0.0] * 5, concurrency_limit=2, max_queue=0))
    assert (f.outcome == SHED).sum() == 3 and (f.outcome == SERVED).sum() == 2


def test_concurrency_limit_holds_at_every_dispatch():
    # limit 2, service 1 s, 6 simultaneous arrivals: dispatch times 0,0,1,1,2,2 (batch of 1).
    f = run_all(make_fleet([0.0] * 6, concurrency_limit=2, max_batch=1))
    assert f.start_s.tolist() == pytest.approx([0, 1, 2, 3, 4, 5])
    assert f.finish_s.max() == pytest.approx(6.0)


def test_queue_timeout_times_out_at_the_deadline():
    f = run_all(make_fleet([0.0, 1.0, 2.0], base_ms=10_000, concurrency_limit=1,
                           queue_timeout_s=5.0))
    assert f.outcome.tolist() == [SERVED, TIMED_OUT, TIMED_OUT]
    assert f.finish_s[1:].tolist() == [6.0, 7.0]
    # Little's law holds with the timed-out requests leaving at their deadline.
    assert f.area_n == pytest.approx(10.0 + 5.0 + 5.0)


def test_queue_timeout_changed_at_runtime_sheds_waiters_past_the_new_deadline():
    # One slot busy for 10 s; waiters at 1, 2 and 8 s. At 4 s the wait is cut to 1.5 s:
    # those queued past it leave when the cut applies (4 s: until then the rule was 30 s),
    # the one arriving later waits its 1.5 s. A window closed at 3 s keeps the queue time
    # it counted: the next one is never negative (it was, when the cut was back-dated).
    f = make_fleet([0.0, 1.0, 2.0, 8.0], base_ms=10_000, concurrency_limit=1,
                   queue_timeout_s=30.0)
    f.eng.run(3.0)
    first = f.take_window()
    f.eng.run(4.0)
    f.set_queue_timeout_s(1.5)
    f.eng.run(5.0)
    second = f.take_window()
    run_all(f)
    assert f.outcome.tolist() == [SERVED, TIMED_OUT, TIMED_OUT, TIMED_OUT]
    assert f.finish_s[1:].tolist() == [4.0, 4.0, 9.5]
    assert first.queue_area == pytest.approx(2.0 + 1.0)      # waiters at 1 and 2 s, to 3 s
    assert second.queue_area == pytest.approx(2 * 1.0)       # both from 3 s to the cut at 4 s
    kept = run_all(make_fleet([0.0, 0.5], base_ms=1000, concurrency_limit=1,
                              queue_timeout_s=0.4))
    lifted = make_fleet([0.0, 0.5], base_ms=1000, concurrency_limit=1, queue_timeout_s=0.4)
    lifted.set_queue_timeout_s(None)                  # None lifts the limit
    run_all(lifted)
    assert kept.outcome.tolist() == [SERVED, TIMED_OUT]
    assert lifted.outcome.tolist() == [SERVED, SERVED]


# ---------------------------------------------------------------------- replica states
def test_cold_start_then_ready_then_serving():
    f = make_fleet([20.0], initial_replicas=0, cold_start_s=15.0)
    f.set_desired(1)
    assert f.replica_states() == ["starting"]
    f.eng.run(14.9)
    assert f.n_starting == 1 and f.n_ready == 0
    f.eng.run(15.0)
    assert f.replica_states() == ["ready"]
    run_all(f)
    assert f.start_s[0] == 20.0 and f.cold_starts == 1


def test_requests_wait_for_a_cold_start_when_nothing_is_ready():
    f = make_fleet([1.0], initial_replicas=0, cold_start_s=5.0)
    f.set_desired(1)
    run_all(f)
    assert f.start_s[0] == pytest.approx(5.0)


def test_scale_down_removes_starting_replicas_first():
    f = make_fleet([], initial_replicas=2)
    f.set_desired(4)          # two starting
    f.set_desired(2)
    assert f.replica_states() == ["ready", "ready", "stopped", "stopped"]
    assert f.n_starting == 0


def test_scale_down_drains_the_least_loaded_which_finishes_what_it_holds():
    f = make_fleet([0.0, 0.0, 0.0], initial_replicas=2, max_batch=1, base_ms=1000)
    f.eng.run(0.0)
    loads = list(f.out)
    f.set_desired(1)
    drained = int(np.argmin(loads))
    assert f.state[drained] == DRAINING
    f.eng.run(0.5)
    assert f.state[drained] == DRAINING      # still busy with its request
    run_all(f)
    assert f.state[drained] == STOPPED
    assert (f.outcome == SERVED).all()


def test_draining_replica_gets_no_new_requests():
    f = make_fleet([0.0, 0.5, 0.6], initial_replicas=2, max_batch=1, base_ms=1000)
    f.eng.run(0.1)
    busy = [r for r in range(2) if f.out[r]][0]
    f.set_desired(1)   # the idle one (least loaded) is removed at once
    run_all(f)
    assert set(f.replica_of.tolist()) == {busy}


def test_scale_to_zero_parks_idle_replicas_and_an_arrival_wakes_one():
    f = make_fleet([0.0, 50.0], initial_replicas=1, scale_to_zero_idle_s=0.0, cold_start_s=2.0)
    assert f.replica_states() == ["parked"]
    f.eng.run(10.0)
    assert f.replica_states() == ["parked"] and f.cold_starts == 1
    run_all(f)
    # Each arrival found the fleet at zero: it waited one cold start, then one service.
    assert (f.finish_s - f.arrival_s).tolist() == pytest.approx([3.0, 3.0])
    assert f.cold_starts == 2 and f.state[0] == PARKED
    assert f.area_live == pytest.approx(6.0)   # paid only while starting or serving


@pytest.mark.parametrize("dist", ["fixed", "lognormal"])
def test_cold_start_distributions(dist):
    from trimtab.sim.scenario import cold_start_sampler, scenario_from_dict

    sc = scenario_from_dict({"name": "x", "trace": {"format": "poisson", "rate_rps": 1,
                                                    "duration_s": 1},
                             "replicas": {"cold_start_s": 60, "cold_start_dist": dist,
                                          "cold_start_cv": 0.5}})
    draw = cold_start_sampler(sc, np.random.default_rng(1))
    xs = np.array([draw() for _ in range(20000)])
    assert xs.mean() == pytest.approx(60, rel=0.03)
    if dist == "fixed":
        assert xs.std() == 0
    else:
        assert xs.std() / xs.mean() == pytest.approx(0.5, rel=0.1)


def test_oom_fails_the_batch_and_restarts_the_replica():
    mem = MemoryModel(gpu_bytes=100, weights_bytes=60, per_item_bytes=10)
    assert mem.fits(4) and not mem.fits(5)
    f = make_fleet([0.0] * 5 + [30.0], max_batch=8, batch_timeout_s=0.0, memory=mem,
                   cold_start_s=10.0, base_ms=100)
    f.eng.run(0.0)
    f.set_max_batch(8)
    run_all(f)
    # First arrival went alone (timeout 0, fits); the next four fit; nothing failed.
    assert f.oom_events == 0
    g = make_fleet([0.0] * 6 + [30.0], max_batch=8, batch_timeout_s=0.05, memory=mem,
                   cold_start_s=10.0, base_ms=100)
    run_all(g)
    # Six wait for the timeout and form one batch of 6 > 4: it fails, the replica restarts
    # with a cold start, and the later request is served after it.
    assert g.oom_events == 1 and (g.outcome == FAILED).sum() == 6
    assert g.cold_starts == 1 and g.outcome[6] == SERVED
    assert g.start_s[6] == pytest.approx(30.05)   # alone: it waited the 50 ms timeout


# ---------------------------------------------------------------- accounting invariant
@settings(max_examples=60, deadline=None)
@given(arrivals=st.lists(st.floats(0, 30, allow_nan=False), min_size=1, max_size=80),
       limit=st.one_of(st.none(), st.integers(1, 5)),
       max_queue=st.one_of(st.none(), st.integers(0, 5)),
       timeout=st.one_of(st.none(), st.floats(0.1, 5)),
       max_batch=st.integers(1, 4), replicas=st.integers(1, 3), greedy=st.booleans(),
       scale_at=st.floats(0, 30), scale_to=st.integers(0, 4),
       router=st.sampled_from(["least_outstanding", "round_robin"]),
       idle_s=st.one_of(st.none(), st.floats(0, 2)))
def test_every_request_is_accounted_for_once(arrivals, limit, max_queue, timeout, max_batch,
                                              replicas, greedy, scale_at, scale_to, router,
                                              idle_s):
    f = make_fleet(sorted(arrivals), base_ms=300, per_item_ms=100, dist="exponential",
                   concurrency_limit=limit, max_queue=max_queue, queue_timeout_s=timeout,
                   max_batch=max_batch, initial_replicas=replicas, greedy=greedy,
                   batch_timeout_s=0.05, cold_start_s=3.0, router=router,
                   scale_to_zero_idle_s=idle_s, memory=MemoryModel(100, 60, 12))
    f.eng.run(scale_at)
    f.take_window()
    f.set_desired(scale_to)
    f.eng.run(scale_at + 40)
    f.take_window()
    f.set_desired(max(scale_to, 1))
    run_all(f, 10_000)
    n = len(arrivals)
    counts = [int((f.outcome == c).sum()) for c in (SERVED, SHED, TIMED_OUT, FAILED)]
    still = f.in_system
    assert sum(counts) + still == n
    assert still == 0
    # Little's law on a horizon that starts and ends empty, and work conservation.
    resp = np.nansum(f.finish_s - f.arrival_s)
    assert f.area_n == pytest.approx(resp, rel=1e-9, abs=1e-9)
    assert f.area_busy == pytest.approx(f.service_sum_s, rel=1e-9, abs=1e-9)
    assert not np.isnan(f.finish_s).any()


def test_states_are_named():
    f = make_fleet([], initial_replicas=1)
    assert (STARTING, READY) == (0, 1) and f.replica_states() == ["ready"]
