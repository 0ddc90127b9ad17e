"""dynamo (NVIDIA Dynamo's SLA planner, aggregated, throughput-based) against Dynamo's own tests,
sources and defaults.

ai-dynamo/dynamo tests/planner/unit/test_load_predictors.py (TestConstantPredictor; the ARIMA
rules of core/load/predictors.py ARIMAPredictor), core/perf_model/agg.py
find_best_engine_agg_rps (the batch-size sweep, its caps and Little's law),
core/throughput_scaling.py _throughput_agg, config/defaults.py SLAPlannerDefaults.
"""
from __future__ import annotations

import math

import pytest

from trimtab.controllers.core.baselines import dynamo
from trimtab.controllers.core.types import FleetBounds, REASON_SCALE_UP
from tests.controllers.builders import snap

PROFILE = dict(profile_c0_ms=10.0, profile_c_decode_ms=1.0, max_num_batched_tokens=4096,
               max_num_seqs=128, max_kv_tokens=10**6)


def _cfg(**kw) -> dynamo.DynamoConfig:
    return dynamo.DynamoConfig(bounds=FleetBounds(max_replicas=100), **{**PROFILE, **kw})


def _series(values) -> dynamo.Series:
    s = dynamo.Series()
    for v in values:
        s = s.add(v)
    return s


# TestConstantPredictor: (test, points added, prediction, points kept)
CONSTANT = [
    ("test_returns_zero_with_no_data", [], 0.0, 0),
    ("test_returns_last_added_value", [10.0, 20.0, 30.0], 30.0, 3),
    ("test_skips_leading_zeros", [0, 0], 0.0, 0),
    ("test_does_not_skip_zeros_after_nonzero", [5.0, 0], 0.0, 2),
    ("test_nan_treated_as_zero", [10.0, math.nan], 0.0, 2),
]


@pytest.mark.parametrize("points,expected,kept", [c[1:] for c in CONSTANT],
                         ids=[c[0] for c in CONSTANT])
def test_constant_predictor(points, expected, kept):
    s = _series(points)
    assert dynamo.predict_next(s, "constant")[0] == expected and len(s.values) == kept


def test_arima_rules():
    # ARIMAPredictor: fewer than 5 points -> the last value; constant data -> that value
    # (pmdarima would predict 0); the forecast is never negative.
    assert dynamo.predict_next(_series([10.0, 20.0, 30.0]), "arima")[0] == 30.0
    assert dynamo.predict_next(_series([7.0] * 8), "arima")[0] == 7.0
    value, s = dynamo.predict_next(_series([40.0, 30.0, 20.0, 10.0, 5.0, 1.0, 0.5]), "arima")
    assert value >= 0.0 and s.order is not None
    # The order chosen on the first fit is kept (pmdarima updates, it does not reselect).
    again, s2 = dynamo.predict_next(s.add(0.2), "arima")
    assert s2.order == s.order


def test_arima_follows_a_trend():
    value, _ = dynamo.predict_next(_series([10.0 * i for i in range(1, 13)]), "arima")
    assert 110.0 < value < 140.0          # the next of 10, 20, ..., 120 is near 130


# find_best_engine_agg_rps: (name, profile and targets, isl, osl, expected rps)
ENGINE = [
    # ITL bound: wt = 10 + bs ms <= 20 up to bs = 10: 10 / (100 x 0.020 s) = 5 rps.
    ("ITL bound", dict(itl_ms=20.0), 100, 100, 5.0),
    # KV cap: 1,500 tokens / (100 + 50) = 10 sequences, whatever the ITL target allows.
    ("KV cap", dict(itl_ms=1000.0, max_kv_tokens=1500), 100, 100, 10 * 1000 / (100 * 20)),
    # max_num_seqs cap: 4 sequences: wt = 14 ms: 4 / (100 x 0.014) rps.
    ("max_num_seqs cap", dict(itl_ms=1000.0, max_num_seqs=4), 100, 100, 4 * 1000 / (100 * 14)),
    # bs = 1 already over the ITL target: "Agg SLA unreachable", still 1 / (osl x wt).
    ("unreachable at bs 1", dict(itl_ms=5.0), 100, 100, 1000 / (100 * 11)),
    # Prefill/decode balance: isl / (200 - bs) <= osl up to bs = 100 (budget 200, isl
    # 1,000, osl 10), then wt = 10 + 100 + prefill tokens x 0 = 110 ms: 100 / (10 x 0.110).
    ("prefill balance", dict(itl_ms=1000.0, ttft_ms=10**6, max_num_batched_tokens=200),
     1000, 10, 100 * 1000 / (10 * 110)),
]


@pytest.mark.parametrize("kw,isl,osl,expected", [c[1:] for c in ENGINE],
                         ids=[c[0] for c in ENGINE])
def test_find_best_engine_agg_rps(kw, isl, osl, expected):
    rps, _, _ = dynamo.engine_rps(isl, osl, _cfg(**kw))
    assert rps == pytest.approx(expected)


def test_ttft_bound_and_chunked_ttft():
    # estimate_next_ttft: queued + isl tokens in chunks of the step budget: 100 + 5,000
    # tokens at 4,096 a step are 2 iterations; with c_prefill 0.01 ms/token and no decode:
    # (10 + 40.96) + (10 + 10.04) = 71 ms.
    c = _cfg(profile_c_decode_ms=0.0, profile_c_prefill_ms=0.01)
    assert dynamo.next_ttft_ms(100.0, 0.0, 0, 5000.0, c) == pytest.approx(71.0)
    # A TTFT target below one prefill's time stops the sweep at bs = 1.
    rps, ttft_ms, _ = dynamo.engine_rps(5000, 100, _cfg(profile_c_prefill_ms=0.01, ttft_ms=50))
    assert ttft_ms > 50 and rps == pytest.approx(1000 / (100 * dynamo.wall_ms(
        50.0, 5050.0, 1, 5000.0, _cfg(profile_c_prefill_ms=0.01, ttft_ms=50))))


def test_defaults():
    # SLAPlannerDefaults: ttft 500 ms, itl 50 ms, arima, min_endpoint 1, throughput
    # adjustment interval 180 s.
    c = _cfg()
    assert (c.ttft_ms, c.itl_ms, c.load_predictor, c.min_endpoint, c.interval_s) == \
        (500.0, 50.0, "arima", 1, 180.0)


def _llm_snap(t, rate, isl, osl, ready=2):
    return snap(t_s=t, window_s=180, ready=ready, arrival_rate_rps=rate,
                completion_rate_rps=rate, prompt_tokens_rps=rate * isl, generation_tokens_rps=rate * osl,
                kv_cache_usage_ratio=0.5, engine_waiting=0.0)


def test_replicas_from_predicted_demand():
    # _throughput_agg: max(ceil(demand / engine_rps), min_endpoint); 5 rps per engine at
    # ITL 20 ms (above), 12 rps predicted (constant): 3 replicas.
    c = _cfg(itl_ms=20.0, load_predictor="constant")
    d, st = dynamo.decide(_llm_snap(180, 12.0, 100, 100), c, dynamo.initial_state(c), 180.0)
    assert (d.replicas, d.reason) == (3, REASON_SCALE_UP)
    assert d.details["engine_rps"] == pytest.approx(5.0)
    assert st.num_req.values == (12.0 * 180,)
    # No traffic yet: no ISL, the perf model is "not ready": nothing applied.
    d, _ = dynamo.decide(_llm_snap(180, 0.0, 100, 100), c, dynamo.initial_state(c), 180.0)
    assert not d.valid and d.reason == dynamo.REASON_NO_LOAD


def test_built_from_the_scenario():
    from trimtab.controllers.core.registry import make_policy, LLM_ONLY
    from trimtab.controllers.core.spec import SpecError
    from trimtab.sim.data import scenario_path
    from trimtab.sim.llm.dynamo_profile import profile_params
    from trimtab.sim.replay import replay_context
    from trimtab.sim.scenario import load_scenario

    sc = load_scenario(scenario_path("llm-azure-conv"))
    p = profile_params(sc)
    assert (p["ttft_ms"], p["itl_ms"]) == (2000.0, 200.0)
    assert p["max_kv_tokens"] == 3328 * 16 and p["max_num_batched_tokens"] == 4096
    assert p["profile_c0_ms"] == sc.step_model().c0_ms
    pol = make_policy("dynamo:itl_ms=100", sc.bounds(), 15.0,
                      context=replay_context(sc, None))
    assert pol.interval_s == 180.0 and pol.config.itl_ms == 100.0
    assert "dynamo" in LLM_ONLY
    with pytest.raises(SpecError, match="LLM fleet"):
        profile_params(load_scenario(scenario_path("default")))


def test_in_the_llm_defaults_and_swept():
    from trimtab.controllers.core.sweep import SWEEPS
    from trimtab.sim.cli import default_policies
    from trimtab.sim.data import scenario_path
    from trimtab.sim.scenario import load_scenario
    from trimtab.sim.traces import load_trace

    sc = load_scenario(scenario_path("llm-peer"))
    assert "dynamo" in default_policies(sc, load_trace(sc.trace, sc.base_dir))
    assert "dynamo:itl_ms=200" in SWEEPS["dynamo"]
