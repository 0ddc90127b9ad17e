"""The closed-form checks on the reference engine: M/G/1 and M/D/1 against Pollaczek-Khinchine
and Lindley, a fixed decode batch against its step formula; and each check fails on an engine
whose step time is 5 % off."""
from __future__ import annotations

from dataclasses import replace

import pytest

from trimtab.sim.llm.closed_form import (fixed_decode_check, mg1_check,
                                         pollaczek_khinchine_s)
from trimtab.sim.llm.reference import ReferenceFleet
from trimtab.sim.llm.types import StepModel
from tests.sim.llm.builders import MG1_CASES


class SlowFleet(ReferenceFleet):
    """A wrong engine: every step ``factor`` longer than the model says (every term)."""

    factor = 1.05

    def __init__(self, requests, sched, step, **kw):
        slow = replace(step, **{k: getattr(step, k) * self.factor for k in (
            "c0_ms", "c_prefill_ms", "c_decode_ms", "c_kv_ms", "c_attn_ms")})
        super().__init__(requests, sched, slow, **kw)


@pytest.mark.parametrize("rate, mean, second, want", [
    (0.5, 1.0, 2.0, 2.0),                     # M/M/1: 1 / (mu - lambda)
    (0.5, 1.0, 1.0, 0.5 / (2 * 0.5) + 1.0),   # M/D/1: rho / (2 mu (1 - rho)) + 1 / mu
    (0.0, 0.3, 0.09, 0.3),                    # no load: the service time
], ids=["mm1", "md1", "idle"])
def test_pollaczek_khinchine_reduces_to_the_textbook_cases(rate, mean, second, want):
    assert pollaczek_khinchine_s(rate, mean, second) == pytest.approx(want, rel=1e-12)


def test_pollaczek_khinchine_rejects_an_unstable_queue():
    with pytest.raises(ValueError, match="rho = 1.0, must be < 1"):
        pollaczek_khinchine_s(2.0, 0.5, 1.0)




@pytest.mark.parametrize("kw", MG1_CASES.values(), ids=MG1_CASES.keys())
def test_one_token_no_batching_is_an_mg1_queue(kw):
    res = mg1_check(ReferenceFleet, n=12_000, **kw)
    assert res["served"] and res["ttft_is_sojourn"]
    assert res["lindley_max_err_s"] == 0.0 and res["step_max_err_s"] == 0.0
    assert 0.3 < res["rho"] < 0.8                          # a queue, not an idle server
    assert abs(res["mean_ttft_s"] - res["theory_s"]) <= res["z"] * res["std_error_s"]
    assert res["passed"] and all(c["passed"] for c in res["checks"])
    assert res["kind"] == ("M/D/1" if "prompt_values" in kw else "M/G/1")


def test_the_mg1_check_tells_md1_from_mm1():
    """Exponential service of the same mean would double the M/D/1 queueing delay: the
    estimate must be far from it, in standard errors."""
    res = mg1_check(ReferenceFleet, n=12_000, **MG1_CASES["md1"])
    mm1_s = pollaczek_khinchine_s(40.0, res["mean_service_s"], 2 * res["mean_service_s"] ** 2)
    assert abs(res["mean_ttft_s"] - mm1_s) > 10 * res["std_error_s"]


class SlowerFleet(SlowFleet):
    factor = 1.25


def test_the_mg1_check_fails_a_slow_engine():
    """5 % off: caught exactly (step times against the model); 25 % off: by the mean too."""
    res = mg1_check(SlowFleet, n=12_000)
    assert not res["passed"] and res["step_max_err_s"] > 0
    assert res["checks"][1]["passed"]                 # Lindley holds for any service times
    res = mg1_check(SlowerFleet, n=12_000)
    assert not res["checks"][0]["passed"]


@pytest.mark.parametrize("k, output, model", [
    (8, 200, StepModel(c0_ms=8.0, c_prefill_ms=0.3, c_decode_ms=0.5, c_kv_ms=0.01)),
    (5, 60, StepModel(c0_ms=8.0, c_decode_ms=0.5)),        # c_kv = 0: one fixed period
    (1, 40, StepModel(c0_ms=3.0, c_decode_ms=0.25, c_kv_ms=0.1)),
], ids=["growing-kv", "fixed-period", "one-sequence"])
def test_a_fixed_decode_batch_steps_at_the_formula_period(k, output, model):
    res = fixed_decode_check(ReferenceFleet, k=k, output=output, step=model)
    assert res["passed"], res["checks"]
    assert res["max_end_err_s"] == 0.0 and res["back_to_back"] and res["histogram_ok"]
    assert res["period_s"] == pytest.approx((model.c0_ms + model.c_decode_ms * k
                                             + model.c_kv_ms * k * 2) / 1000.0)
    if model.c_kv_ms == 0:
        assert res["step_s"][1:].min() == res["step_s"][1:].max()


def test_the_fixed_decode_check_fails_a_slow_engine():
    res = fixed_decode_check(SlowFleet)
    assert not res["passed"] and res["max_end_err_s"] > 0


def test_the_fixed_decode_check_needs_a_noiseless_model():
    with pytest.raises(ValueError, match="step.cv = 0.1, must be 0"):
        fixed_decode_check(ReferenceFleet, step=StepModel(c0_ms=1.0, cv=0.1))
