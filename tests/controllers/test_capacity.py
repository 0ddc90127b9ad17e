"""Capacity model: robust fit of s(b) = a + c*b and the p99 queueing model."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from trimtab.controllers.core import capacity

FIT = capacity.BatchFit(0.12, 0.03, 0)


def _samples(a, c, sizes, rng, cv=0.1):
    return tuple((float(b), float((a + c * b) * rng.lognormal(0, cv))) for b in sizes)


def test_theil_sen_recovers_line_despite_outliers():
    rng = np.random.default_rng(1)
    state = capacity.CapacityState()
    for i in range(20):
        sizes = rng.integers(1, 17, 40)
        samples = list(_samples(0.05, 0.01, sizes, rng))
        if i % 4 == 0:      # now and then two stalls (GC, preemption): 20-50x slow
            samples += [(4.0, 5.0), (12.0, 3.0)]
        state = capacity.observe(state, tuple(samples))
    fit = capacity.fit(state)
    assert fit is not None
    assert fit.a_s == pytest.approx(0.05, rel=0.15)
    assert fit.c_s == pytest.approx(0.01, rel=0.15)
    assert fit.throughput_rps(16) == pytest.approx(16 / 0.21, rel=0.1)


def test_one_batch_size_gives_a_conservative_split():
    state = capacity.observe(capacity.CapacityState(), ((8.0, 0.4),) * 5)
    fit = capacity.fit(state)
    assert fit.batch_time_s(8) == pytest.approx(0.4)
    assert fit.a_s > 0 and fit.c_s > 0


def test_no_samples_no_fit_and_bad_samples_ignored():
    assert capacity.fit(capacity.CapacityState()) is None
    state = capacity.observe(capacity.CapacityState(), ((0.0, 1.0), (4.0, math.nan), (4, -1)))
    assert state.by_size == ()


@pytest.mark.parametrize("cv", [0.0, 0.1, 0.3], ids=["steady", "some-spread", "wide-spread"])
def test_spread_of_one_batch_is_learned(cv):
    """The fit's cv is how far single batches stray from their size's mean (lognormal sd)."""
    rng = np.random.default_rng(3)
    state = capacity.CapacityState()
    for _ in range(60):
        state = capacity.observe(state, _samples(0.06, 0.012, rng.integers(1, 17, 200), rng, cv))
    fit = capacity.fit(state)
    assert fit.cv == pytest.approx(cv, rel=0.15, abs=0.01)   # clipped: a little low when wide


def test_state_stays_bounded():
    state = capacity.CapacityState()
    rng = np.random.default_rng(2)
    for _ in range(50):
        state = capacity.observe(state, _samples(0.1, 0.01, rng.integers(1, 500, 50), rng),
                                 max_sizes=64)
    assert len(state.by_size) <= 64


def test_settled_batch_worked_example():
    # b = r * s(b): r = 100/s, a = 30 ms, c = 5 ms -> 100 * 0.03 / (1 - 0.5) = 6.
    assert capacity.settled_batch(capacity.BatchFit(0.03, 0.005, 0), 100.0) == pytest.approx(6)
    assert capacity.settled_batch(capacity.BatchFit(0.03, 0.005, 0), 250.0) == math.inf


@given(rate=st.floats(1, 2000), n=st.integers(1, 200))
@settings(max_examples=200, deadline=None)
def test_latency_falls_as_replicas_rise(rate, n):
    assert capacity.p_latency_s(FIT, rate, n + 1, 8, 0.99) <= \
        capacity.p_latency_s(FIT, rate, n, 8, 0.99)


@given(rate=st.floats(0.1, 3000), budget=st.floats(0.5, 3.0))
@settings(max_examples=200, deadline=None)
def test_replicas_for_is_the_fewest_that_fit(rate, budget):
    n = capacity.replicas_for(FIT, rate, budget, 8, 0.99, 500)
    assert 1 <= n <= 500
    if n < 500:
        assert capacity.p_latency_s(FIT, rate, n, 8, 0.99) <= budget
    if n > 1:
        cap_n = math.ceil(rate / (FIT.throughput_rps(8) * 0.9) - 1e-9)
        assert n == cap_n or capacity.p_latency_s(FIT, rate, n - 1, 8, 0.99) > budget


def test_best_max_batch_and_concurrency_limit():
    # 2 * s(b) <= 0.8 -> b <= (0.4 - 0.12) / 0.03 = 9.3: 9, capped by the configured 8.
    assert capacity.best_max_batch(FIT, 0.8, 16) == 9
    assert capacity.best_max_batch(FIT, 0.8, 8) == 8
    # s(8) = 0.36 s: half of a 1 s SLO holds one full batch, but never fewer than two (one
    # running, one forming): 16 in flight, through in about 0.72 s.
    assert capacity.concurrency_limit(FIT, 8, 1.0) == 16
    # A looser SLO holds more: 0.5 * 3 / 0.36 = 4.2 -> 4 batches, 32 in flight.
    assert capacity.concurrency_limit(FIT, 8, 3.0) == 32


@pytest.mark.parametrize("limit, slo_s, wait_s", [
    (16, 1.0, 1.0 - 2 * 0.36),      # two batches inside: 0.28 s left for the door
    (32, 3.0, 3.0 - 4 * 0.36),
    (12, 1.0, 1.0 - 2 * 0.36),      # a partial batch still takes a whole batch time
    (40, 1.0, 0.05),                # nothing left: at least 5 % of the SLO
], ids=["two-batches", "four-batches", "partial", "floor"])
def test_admission_wait_leaves_time_to_finish(limit, slo_s, wait_s):
    assert capacity.admission_wait_s(FIT, limit, 8, slo_s) == pytest.approx(wait_s)


@pytest.mark.parametrize("cv, q, wait_s", [
    (0.0, 0.99, 1.0 - 2 * 0.36),
    (0.1, 0.99, 1.0 - 2 * 0.36 - 2.3263 * math.sqrt(2) * 0.1 * 0.36),   # 0.2 s at the door
    (0.1, 0.9, 1.0 - 2 * 0.36 - 1.2816 * math.sqrt(2) * 0.1 * 0.36),
    (0.5, 0.99, 0.05),                                                  # floor: 5 % of it
], ids=["exact-batches", "spread-p99", "spread-p90", "floor"])
def test_admission_wait_keeps_room_for_slow_batches(cv, q, wait_s):
    """Batches that stray take the door's time: two batches of s(8) = 0.36 s inside."""
    fit = capacity.BatchFit(0.12, 0.03, 0, cv)
    assert capacity.admission_wait_s(fit, 16, 8, 1.0, q) == pytest.approx(wait_s, abs=1e-4)


@pytest.mark.slow
def test_model_matches_the_simulator_at_constant_load():
    """The p99 model against the real simulator (static fleet, Poisson load): within 15 %."""
    from trimtab.sim.replay import simulate
    from trimtab.sim.scenario import scenario_from_dict

    sc = scenario_from_dict({
        "name": "calib", "trace": {"format": "poisson", "rate_rps": 300, "duration_s": 300,
                                   "seed": 1},
        "service": {"model": "affine", "base_ms": 100, "per_item_ms": 20, "cv": 0.2,
                    "max_batch": 8, "batch_timeout_ms": 20},
        "replicas": {"initial": 12, "min": 1, "max": 20, "cold_start_s": 60,
                     "concurrency_limit": 64},
        "slo": {"latency_s": 1.0, "target": 0.99}})
    run = simulate(sc, "static:replicas=12", record_requests=True)
    lat = run.requests["finish_s"] - run.requests["arrival_s"]
    simulated = float(np.nanquantile(lat, 0.99))
    predicted = capacity.p_latency_s(capacity.BatchFit(0.1, 0.02, 0), 300, 12, 8, 0.99, 0.02)
    assert predicted == pytest.approx(simulated, rel=0.15)
