"""poisson: arrival times of a steady or a thinned Poisson process, reproducible by seed."""
from __future__ import annotations

import math

import numpy as np
import pytest

from trimtab.common.poisson import steady_arrivals_s, thinned_arrivals_s


@pytest.mark.parametrize("rate_rps, duration_s", [(0.5, 2000.0), (50.0, 40.0), (3000.0, 2.0)],
                         ids=["slow", "medium", "fast"])
def test_steady_rate_count_and_exponential_gaps(rate_rps, duration_s):
    t = steady_arrivals_s(rate_rps, duration_s, seed=3)
    mean = rate_rps * duration_s
    assert abs(len(t) - mean) < 5 * math.sqrt(mean)          # Poisson count: 5 sd
    gaps = np.diff(t)
    assert np.all(gaps >= 0) and t[0] >= 0 and t[-1] < duration_s
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.15)   # CV of exponential


def test_same_seed_same_arrivals_other_seed_others():
    assert np.array_equal(steady_arrivals_s(10, 50, 7), steady_arrivals_s(10, 50, 7))
    assert not np.array_equal(steady_arrivals_s(10, 50, 7), steady_arrivals_s(10, 50, 8))


def test_zero_rate_or_duration_gives_no_arrivals():
    assert len(steady_arrivals_s(0.0, 100, 1)) == 0
    assert len(steady_arrivals_s(5.0, 0.0, 1)) == 0


def test_thinning_follows_the_rate_curve_on_each_piece():
    rng = np.random.default_rng(1)
    # [0, 100) s at 4 rps bound, rate 1 rps before 50 s and 4 rps after: ~50 + ~200 arrivals.
    t = thinned_arrivals_s(rng, np.array([0.0]), np.array([100.0]), np.array([4.0]),
                           lambda x: np.where(x < 50, 1.0, 4.0))
    early, late = int(np.sum(t < 50)), int(np.sum(t >= 50))
    assert abs(early - 50) < 5 * math.sqrt(50) and abs(late - 200) < 5 * math.sqrt(200)
    assert np.all(np.diff(t) >= 0)


def test_pieces_without_a_rate_fn_are_constant_and_add_where_they_overlap():
    rng = np.random.default_rng(2)
    t = thinned_arrivals_s(rng, np.array([0.0, 0.0, 100.0]), np.array([100.0, 100.0, 200.0]),
                           np.array([2.0, 3.0, 1.0]))
    assert abs(np.sum(t < 100) - 500) < 5 * math.sqrt(500)     # 2 + 3 rps overlap
    assert abs(np.sum(t >= 100) - 100) < 5 * math.sqrt(100)


@pytest.mark.parametrize("call, fragment", [
    (lambda: steady_arrivals_s(-1.0, 10, 0), "rate_rps = -1.0: must be a finite number >= 0"),
    (lambda: steady_arrivals_s(math.inf, 10, 0), "rate_rps = inf"),
    (lambda: steady_arrivals_s(1.0, math.nan, 0), "duration_s = nan"),
    (lambda: thinned_arrivals_s(np.random.default_rng(0), np.array([0.0]), np.array([1.0, 2.0]),
                                np.array([1.0])), "must have one shape"),
    (lambda: thinned_arrivals_s(np.random.default_rng(0), np.array([5.0]), np.array([1.0]),
                                np.array([1.0])), "end_s >= start_s"),
], ids=["negative-rate", "infinite-rate", "nan-duration", "shapes", "backwards-piece"])
def test_bad_input_is_a_clear_error(call, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        call()
