"""The load ramp: its rate curve, its Poisson arrivals and its config errors."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from trimtab.up.load import RampProfile, arrivals


def test_rate_curve_steady_surge_and_back():
    p = RampProfile(duration_s=100, base_rps=3, surge_factor=5, surge_start=0.25,
                    surge_end=0.55, ramp=0.05)
    assert p.rate_rps(10.0) == pytest.approx(3.0)
    assert p.rate_rps(27.5) == pytest.approx(9.0)      # half-way up the ramp: 3 + 12 / 2
    assert p.rate_rps(40.0) == pytest.approx(15.0)
    assert p.rate_rps(57.5) == pytest.approx(9.0)      # half-way down (from 55 s)
    assert p.rate_rps(90.0) == pytest.approx(3.0)
    assert p.peak_rps == 15.0


@pytest.mark.parametrize("kwargs, field", [
    ({"duration_s": 0}, "duration_s"),
    ({"duration_s": 10, "base_rps": -1}, "base_rps"),
    ({"duration_s": 10, "surge_factor": 0.5}, "surge_factor"),
    ({"duration_s": 10, "surge_start": 0.6, "surge_end": 0.5}, "surge_start"),
], ids=["zero-duration", "negative-rate", "surge-below-one", "surge-ends-first"])
def test_bad_profiles_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RampProfile(**kwargs)


def test_arrivals_follow_the_curve_in_each_phase():
    p = RampProfile(duration_s=400, base_rps=5, surge_factor=4)
    t = arrivals(p, seed=1)
    steady = np.count_nonzero(t < 100) / 100
    surge = np.count_nonzero((t >= 130) & (t < 210)) / 80
    # Poisson counts: 500 +- 4 sd (~90) and 1600 +- 4 sd (~160).
    assert 5 * 0.82 < steady < 5 * 1.18
    assert 20 * 0.91 < surge < 20 * 1.09


@settings(max_examples=30, deadline=None)
@given(duration_s=st.floats(1, 300), base=st.floats(0.1, 20), factor=st.floats(1, 6),
       seed=st.integers(0, 2**31))
def test_arrivals_are_sorted_inside_the_run_and_reproducible(duration_s, base, factor, seed):
    p = RampProfile(duration_s=duration_s, base_rps=base, surge_factor=factor)
    t = arrivals(p, seed)
    assert np.all(np.diff(t) >= 0)
    assert t.size == 0 or (t[0] >= 0 and t[-1] <= duration_s)
    assert np.array_equal(t, arrivals(p, seed))
