"""The analytic formulas against queueing.md's worked examples and against each other."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from trimtab.sim import queueing as qt


@pytest.mark.parametrize("name, value, expected, abs_tol", [
    ("erlang_c_C", qt.MMc(3.2, 1.0, 4).wait_probability, 0.5964, 5e-5),
    ("erlang_c_Wq", qt.MMc(3.2, 1.0, 4).wq_s, 0.7455, 5e-5),
    ("erlang_c_p95", qt.MMc(3.2, 1.0, 4).wait_quantile_s(0.95), 3.0987, 5e-5),
    ("md1", qt.md1_wq_s(0.8, 1.0), 2.000, 1e-9),
    ("mm1", qt.mm1_wq_s(0.8, 1.0), 4.000, 1e-9),
    ("bulk_r", qt.bulk_mmk1(6.0, 1.0, 8).r, 0.93566, 5e-6),
    ("bulk_Wq", qt.bulk_mmk1(6.0, 1.0, 8).wq_s, 2.3980, 5e-5),
    ("bulk_W", qt.bulk_mmk1(6.0, 1.0, 8).w_s, 3.3980, 5e-5),
    ("bulk_idle", qt.bulk_mmk1(6.0, 1.0, 8).p_idle, 0.01061, 5e-6),
    ("ctmc_Wq", qt.batch_ctmc(4.0, 0.5, 0.1, 8).wq_s, 1.4711, 5e-5),
    ("ctmc_W", qt.batch_ctmc(4.0, 0.5, 0.1, 8).w_s, 2.5485, 5e-5),
    ("ctmc_idle", qt.batch_ctmc(4.0, 0.5, 0.1, 8).p_idle, 0.0564, 5e-5),
    ("setup_fixed_2", qt.setup_time_response_s(0.5, 1.0, 2.0, 2.0, 4.0), 3.500, 1e-9),
    ("setup_fixed_5", qt.setup_time_response_s(0.8, 1.0, 2.0, 5.0, 25.0), 8.000, 1e-9),
], ids=lambda x: x if isinstance(x, str) else "")
def test_worked_examples_from_queueing_md(name, value, expected, abs_tol):
    assert value == pytest.approx(expected, abs=abs_tol)


def test_erlang_b_recursion_matches_the_closed_form():
    for c, a in [(1, 0.5), (4, 3.2), (16, 12.0)]:
        closed = (a**c / math.factorial(c)) / sum(a**k / math.factorial(k) for k in range(c + 1))
        assert qt.erlang_b(c, a) == pytest.approx(closed, rel=1e-12)


def test_erlang_c_with_one_server_is_mm1():
    m = qt.MMc(0.7, 1.0, 1)
    assert m.wait_probability == pytest.approx(0.7)
    assert m.wq_s == pytest.approx(qt.mm1_wq_s(0.7, 1.0))


def test_wait_tail_and_quantile_are_inverse():
    m = qt.MMc(12.0, 1.0, 16)
    for p in (0.9, 0.95, 0.99):
        t = m.wait_quantile_s(p)
        assert m.wait_tail(t) == pytest.approx(1 - p)
    assert m.wait_quantile_s(0.1) == 0.0    # most customers do not wait at all


def test_mm1k_blocking_tends_to_zero_queue_and_to_erlang_b():
    # K = 1 is a loss system with one server: Erlang B with c = 1.
    assert qt.mm1k_blocking(0.8, 1.0, 1) == pytest.approx(qt.erlang_b(1, 0.8))
    assert qt.mm1k_blocking(0.5, 1.0, 30) < 1e-9


@pytest.mark.parametrize("lam, k", [(2.0, 4), (6.0, 8), (0.5, 1)], ids=["K4", "K8", "K1"])
def test_ctmc_with_constant_batch_time_reproduces_bulk_formula(lam, k):
    """beta = 0 makes s(b) = alpha: the CTMC is then exactly M/M^[K]/1 with mu = 1/alpha."""
    ctmc = qt.batch_ctmc(lam, 1.0, 0.0, k)
    bulk = qt.bulk_mmk1(lam, 1.0, k)
    assert ctmc.wq_s == pytest.approx(bulk.wq_s, rel=1e-8)
    assert ctmc.p_idle == pytest.approx(bulk.p_idle, rel=1e-8)


def test_ctmc_with_batch_one_is_mm1():
    ctmc = qt.batch_ctmc(0.6, 0.8, 0.2, 1)       # s(1) = 1 s
    assert ctmc.wq_s == pytest.approx(qt.mm1_wq_s(0.6, 1.0), rel=1e-8)


def test_setup_time_zero_is_plain_mg1():
    assert qt.setup_time_response_s(0.5, 1.0, 2.0, 0.0, 0.0) == pytest.approx(2.0)


@pytest.mark.parametrize("call", [
    lambda: qt.MMc(4.0, 1.0, 4), lambda: qt.md1_wq_s(1.2, 1.0),
    lambda: qt.bulk_mmk1(9.0, 1.0, 8), lambda: qt.batch_ctmc(10.0, 0.5, 0.1, 8)],
    ids=["mmc", "md1", "bulk", "ctmc"])
def test_unstable_systems_are_refused(call):
    with pytest.raises(ValueError, match="utilisation rho"):
        call()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), seed=st.integers(0, 10_000), load=st.floats(0.1, 1.5))
def test_kiefer_wolfowitz_with_one_server_is_lindley(n, seed, load):
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0, n))
    service = rng.exponential(load, n)
    assert np.allclose(qt.kiefer_wolfowitz_waits(arrival, service, 1),
                       qt.lindley_waits(arrival, service), atol=1e-12)


def test_kiefer_wolfowitz_hand_example():
    # Two servers; the third customer waits for the first to finish at t = 3.
    arrival = np.array([0.0, 0.5, 1.0, 4.0])
    service = np.array([3.0, 4.0, 1.0, 1.0])
    assert qt.kiefer_wolfowitz_waits(arrival, service, 2).tolist() == [0.0, 0.0, 2.0, 0.0]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 100), c=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_more_servers_never_wait_longer(n, c, seed):
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0, n))
    service = rng.exponential(2.0, n)
    w_c = qt.kiefer_wolfowitz_waits(arrival, service, c)
    w_c1 = qt.kiefer_wolfowitz_waits(arrival, service, c + 1)
    assert np.all(w_c1 <= w_c + 1e-12) and np.all(w_c >= 0)
