"""The LLM baselines through the production control loop on a small LLM fleet whose load
steps up: each runs, reads the engine's signals, scales up, and is refused nowhere."""
from __future__ import annotations

import pytest

import trimtab.sim.llm.dynamo_profile  # noqa: F401  (registers the replay policy dynamo)
from trimtab.sim.data import scenario_path
from trimtab.sim.replay import simulate
from trimtab.sim.scenario import scenario_from_dict
from trimtab.sim.traces import load_trace

LLM_BASELINES = ("trimtab", "keda-vllm", "aibrix-kpa:aggregate=sum", "aibrix-apa", "wva",
                 "dynamo:load_predictor=constant")


@pytest.fixture(scope="module")
def stepped():
    """Llama-2-70B on two A100s, 1 -> 8 replicas, 60 s cold start; 1 rps then 8 rps."""
    sc = scenario_from_dict({
        "name": "llm-step",
        "trace": {"format": "step", "steps": [[0, 1.0], [600, 8.0]], "duration_s": 1500,
                  "seed": 5, "lengths": {"path": "../traces/azure_llm_conv.csv",
                                         "format": "azure-llm", "max_total_tokens": 4096}},
        "service": {"model": "llm", "profile": "llama2-70b-a100-tp2",
                    "scheduler": {"max_num_seqs": 128, "max_num_batched_tokens": 4096,
                                  "chunked_prefill": True, "block_size": 16,
                                  "num_blocks": 3328}},
        "replicas": {"initial": 1, "min": 1, "max": 8, "cold_start_s": 60,
                     "queue_timeout_s": 60},
        "slo": {"ttft_s": 2.0, "tpot_s": 0.2, "target": 0.99},
        "controller": {"interval_s": 15}}, base_dir=scenario_path("llm-peer").parent)
    return sc, load_trace(sc.trace, sc.base_dir)


@pytest.mark.parametrize("spec", LLM_BASELINES)
def test_scales_up_on_the_step(stepped, spec):
    sc, trace = stepped
    run = simulate(sc, spec, trace)
    t, desired = run.ticks["time_s"], run.ticks["desired_replicas"]
    before, after = desired[t < 600].mean(), desired[(t >= 600) & (t < 1500)].mean()
    assert after > before, f"{spec}: {before} replicas asked before the step, {after} after"
    assert run.summary["served"] > 0.9 * run.summary["requests"]
    reasons = set(run.ticks["reason"].tolist())
    assert "hold_missing_metrics" not in reasons or len(reasons) > 1


def test_trimtab_sizes_the_llm_fleet_on_its_step_model(stepped):
    """trimtab plans the LLM fleet on the engine's learned step time: it leaves
    ``no_capacity_model`` within its first windows and, through the unforecastable step from
    1 to 8 requests per second (8 replicas all along reach 0.980), keeps more requests within
    the TTFT and TPOT bounds than HPA (0.67 at its defaults); it measured 0.858."""
    sc, trace = stepped
    run = simulate(sc, "trimtab", trace)
    reasons = run.ticks["reason"].tolist()
    assert reasons.count("no_capacity_model") <= 8, reasons[:10]
    hpa = simulate(sc, "hpa", trace).summary["slo_attainment"]
    assert run.summary["slo_attainment"] > max(hpa, 0.8), (run.summary["slo_attainment"], hpa)
