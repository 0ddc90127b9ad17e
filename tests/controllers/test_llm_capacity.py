"""The LLM capacity model: the step time recovered from an engine's own series, the fleet size
it implies for the TPOT and TTFT bounds, the door's limit from the KV cache, and the trimtab
policy planning an LLM fleet on it."""
from __future__ import annotations

import math

import pytest

from tests.controllers.builders import bounds, snap
from trimtab.controllers.core import llm_capacity as lc
from trimtab.controllers.core.policy import REASON_NO_MODEL
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.types import LatencyHistogram

C0_S, CD_S, CP_S = 0.055, 0.0003, 0.0003       # the shape of llama2-70b-a100-tp2
PROMPT, OUTPUT = 1000.0, 200.0
CFG = lc.LlmCapacityConfig()


def engine_snap(rps_per_replica: float, ready: int = 4, kv_per_seq: float = 0.004,
                preemptions_rps: float = 0.0, prompt: float = PROMPT, **kw):
    """A window of an engine that follows ``s = c0 + c_d D + c_p P s`` exactly."""
    util = rps_per_replica * (CD_S * OUTPUT + CP_S * prompt)
    step_s = C0_S / (1.0 - util)
    gen = rps_per_replica * OUTPUT
    running = gen * step_s
    return snap(ready=ready, arrival_rate_rps=rps_per_replica * ready,
                engine_running=running * ready, engine_waiting=0.0,
                generation_tokens_rps=gen * ready,
                prompt_tokens_rps=rps_per_replica * prompt * ready,
                kv_cache_usage_ratio=min(1.0, running * kv_per_seq),
                preemptions_rps=preemptions_rps, **kw)


def learned(rates=(0.3, 0.6, 0.9, 1.2, 0.5, 1.0), **kw) -> lc.LlmCapacityState:
    state = lc.LlmCapacityState()
    for r in rates:
        state = lc.observe(state, engine_snap(r, **kw), CFG)
    return state


def test_the_fit_recovers_the_engines_step_model():
    """With one prompt/output mix the decode and prefill terms are collinear: what sizing
    uses, the utilisation and the step time at every rate, is recovered all the same."""
    model = lc.fit(learned(), CFG)
    assert model is not None
    assert model.c0_s == pytest.approx(C0_S, rel=1e-3)
    for per in (0.2, 0.8, 1.5):
        util = per * (CD_S * OUTPUT + CP_S * PROMPT)
        assert model.utilisation(per) == pytest.approx(util, rel=1e-3)
        assert model.step_s(per) == pytest.approx(C0_S / (1 - util), rel=1e-3)
    assert model.prompt_per_request == pytest.approx(PROMPT)
    assert model.output_per_request == pytest.approx(OUTPUT)
    assert model.kv_per_seq == pytest.approx(0.004, rel=1e-6)


def test_a_changing_mix_separates_decode_from_prefill():
    state = lc.LlmCapacityState()
    for rps, prompt in [(0.3, 500), (0.6, 1500), (0.9, 800), (1.2, 300), (0.5, 2500),
                        (1.0, 1000)]:
        state = lc.observe(state, engine_snap(rps, prompt=prompt), CFG)
    model = lc.fit(state, CFG)
    assert (model.c0_s, model.c_d_s, model.c_p_s) == pytest.approx((C0_S, CD_S, CP_S),
                                                                   rel=1e-3)


def test_no_model_before_enough_windows_or_from_idle_ones():
    assert lc.fit(learned(rates=(0.5, 0.6)), CFG) is None
    idle = lc.LlmCapacityState()
    for _ in range(10):
        idle = lc.observe(idle, snap(engine_running=0.0, generation_tokens_rps=0.0,
                                     prompt_tokens_rps=0.0, arrival_rate_rps=0.0), CFG)
    assert idle.windows == 0 and lc.fit(idle, CFG) is None


@pytest.mark.parametrize("rps", [0.5, 2.0, 5.0, 12.0, 30.0])
def test_the_fleet_is_the_fewest_replicas_that_fit(rps):
    model = lc.fit(learned(), CFG)
    t = lc.targets(model, 0.2, 2.0, 0.99, 128, CFG)
    n = lc.replicas_for(model, rps, t, 100, CFG)
    assert lc.fits(model, rps, n, t, CFG)
    assert n == 1 or not lc.fits(model, rps, n - 1, t, CFG)
    # the planned step is within its share of the TPOT bound
    assert model.step_s(rps / n) <= CFG.tpot_share * 0.2


def test_more_load_never_needs_fewer_replicas():
    model = lc.fit(learned(), CFG)
    t = lc.targets(model, 0.2, 2.0, 0.99, 128, CFG)
    sizes = [lc.replicas_for(model, r / 4, t, 100, CFG) for r in range(1, 200)]
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("ttft_s, tighter", [(None, False), (5.0, False), (1.0, True)])
def test_a_tighter_first_token_bound_needs_more_replicas(ttft_s, tighter):
    model = lc.fit(learned(), CFG)
    loose = lc.replicas_for(model, 10.0, lc.targets(model, 0.2, None, 0.99, 128, CFG), 100, CFG)
    n = lc.replicas_for(model, 10.0, lc.targets(model, 0.2, ttft_s, 0.99, 128, CFG), 100, CFG)
    assert (n > loose) == tighter


def test_ttft_tail_is_the_mm1_waiting_tail_before_it_is_fitted():
    model = lc.fit(learned(), CFG)
    per = 0.5
    rho = model.utilisation(per)
    s = model.prefill_s()
    assert model.ttft_slope is None
    assert model.ttft_over(per, 2.0) == pytest.approx(rho * math.exp(-(1 - rho) * (2.0 - s) / s))
    assert model.ttft_over(per, s / 2) == 1.0        # the bound is shorter than the prefill


def with_ttft(share_at, rates, total=400):
    """Windows whose share of first tokens over 2 s is ``share_at(model, rate)``."""
    model = lc.fit(learned(), CFG)
    state = learned()
    for r in rates:
        over = int(round(share_at(model, r) * total))
        hist = LatencyHistogram(bounds_s=(2.0,), counts=(total - over, over))
        state = lc.observe(state, engine_snap(r, ttft=hist), CFG, ttft_s=2.0)
    return lc.fit(state, CFG, 2.0)


def test_the_fitted_tail_recovers_a_floor_and_a_scaled_mm1_tail():
    floor, k = 0.004, 0.3
    fitted = with_ttft(lambda m, r: floor + k * m.prior_ttft_over(r, 2.0),
                       [0.2, 0.4, 0.6, 0.8, 1.0, 1.2] * 3, total=100_000)
    assert fitted.ttft_floor == pytest.approx(floor, abs=2e-5)
    assert fitted.ttft_slope == pytest.approx(k, rel=0.01)
    # the floor is spent first: what the load may add is the rest of the TTFT share
    t = lc.targets(fitted, 0.2, 2.0, 0.99, 128, CFG)
    assert t.ttft_over == pytest.approx(0.01 * CFG.ttft_share - fitted.ttft_floor)


def test_observed_tpot_misses_take_their_share_of_the_budget():
    state = learned()
    tpot = LatencyHistogram(bounds_s=(0.2,), counts=(98, 2))
    state = lc.observe(state, engine_snap(0.8, tpot=tpot), CFG, tpot_s=0.2)
    model = lc.fit(state, CFG)
    assert model.tpot_over == pytest.approx(0.02)
    # TPOT took more than the 1 % allowed: TTFT still plans on a fifth of it
    t = lc.targets(model, 0.2, 2.0, 0.99, 128, CFG)
    assert t.ttft_over == pytest.approx(0.2 * 0.01 * CFG.ttft_share)


def test_preemptions_lower_the_kv_limit_and_the_door_follows_the_kv_cache():
    calm = lc.fit(learned(kv_per_seq=0.01), CFG)
    assert calm.kv_limit == CFG.kv_limit
    assert lc.concurrency_limit(calm, 128) == int(CFG.kv_limit / 0.01)
    state = lc.observe(learned(kv_per_seq=0.01), engine_snap(1.2, kv_per_seq=0.01,
                                                              preemptions_rps=0.5), CFG)
    hot = lc.fit(state, CFG)
    seen_kv = engine_snap(1.2, kv_per_seq=0.01).kv_cache_usage_ratio
    assert hot.kv_limit == pytest.approx(min(CFG.kv_limit, 0.95 * seen_kv))
    assert lc.concurrency_limit(hot, 128) < lc.concurrency_limit(calm, 128)
    assert lc.concurrency_limit(calm, 16) == 16      # never above max_num_seqs


def test_window_counts_count_both_bounds_and_the_lost():
    ttft = LatencyHistogram(bounds_s=(1.0, 2.0), counts=(90, 5, 5))
    tpot = LatencyHistogram(bounds_s=(0.1, 0.2), counts=(80, 17, 3))
    s = snap(ttft=ttft, tpot=tpot, shed_rps=0.2, timed_out_rps=0.0)
    assert lc.window_counts(s, 2.0, 0.2) == pytest.approx((100 + 3.0, 5 + 3 + 3.0))
    assert lc.window_counts(s, None, 0.2) == pytest.approx((100 + 3.0, 3 + 3.0))
    assert lc.window_counts(snap(), 2.0, 0.2) is None


def llm_policy(**kw):
    return make_policy("trimtab", bounds(slo_latency_s=30.0, slo_ttft_s=2.0, slo_tpot_s=0.2,
                                         max_batch_size=128, batch_timeout_ms=0.0,
                                         concurrency_limit=None, **kw))


def test_the_policy_plans_an_llm_fleet_on_the_step_model():
    policy = llm_policy()
    state = policy.initial_state()
    decisions = []
    for i, rps in enumerate((0.3, 0.6, 0.9, 1.2, 0.5, 1.0, 1.0, 1.0)):
        d, state = policy.decide(engine_snap(rps, t_s=15.0 * (i + 1)), state, 15.0 * (i + 1))
        decisions.append(d)
    assert [d.reason for d in decisions[:3]] == [REASON_NO_MODEL] * 3
    assert not decisions[0].valid
    last = decisions[-1]
    assert last.valid and last.details["c0_s"] == pytest.approx(C0_S, rel=1e-2)
    model = lc.fit(state.llm, lc.LlmCapacityConfig(), 2.0)
    t = lc.targets(model, 0.2, 2.0, 0.99, 128, lc.LlmCapacityConfig())
    assert last.details["need_now"] == lc.replicas_for(model, 4.0, t, 100,
                                                       lc.LlmCapacityConfig())
    assert last.concurrency_limit == lc.concurrency_limit(model, 128)


def test_without_a_tpot_bound_the_policy_keeps_its_batch_model():
    policy = make_policy("trimtab", bounds())
    d, _ = policy.decide(engine_snap(1.0), policy.initial_state(), 15.0)
    assert d.reason == REASON_NO_MODEL and "c0_s" not in d.details


def test_the_tuning_is_settable_by_spec():
    policy = make_policy("trimtab:tpot_share=0.4,ttft_share=0.2", bounds(slo_tpot_s=0.2))
    cfg = policy.config.llm_config()
    assert (cfg.tpot_share, cfg.ttft_share) == (0.4, 0.2)
