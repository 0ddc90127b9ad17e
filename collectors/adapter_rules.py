"""The Triton, vLLM and SGLang mappings onto trimtab's names, and Triton's statistics API.

What Triton gives and what it does not: request counts, inference and execution counts (their
ratio is the mean batch size), pending requests (queue depth) and cumulative microsecond sums
per phase. There are no latency histograms by default, so trimtab exports the sums as
``trimtab_upstream_request_duration_seconds_total{phase}`` (means are derivable, percentiles
are not) and leaves ``trimtab_request_duration_seconds`` to the admission proxy. The statistics
API counts executions per batch size, which is an exact batch-size histogram.
vLLM gives real histograms; they are re-exported with vLLM's own bucket bounds, so an SLO
threshold that is not one of vLLM's bounds cannot be read exactly from them.
"""
from __future__ import annotations

from collections.abc import Callable

import aiohttp
from prometheus_client.core import HistogramMetricFamily, Metric

from trimtab.collectors import names
from trimtab.collectors.adapters import OTHER_MODEL, Rule

_US = 1e-6

TRITON_RULES: list[Rule] = [
    Rule(source="nv_inference_pending_request_count", target=names.QUEUE_DEPTH),
    Rule(source="nv_inference_request_success", target=names.REQUESTS, labels={"outcome": "ok"}),
    Rule(source="nv_inference_request_failure", target=names.REQUESTS,
         labels={"outcome": "error"}),
    Rule(source="nv_inference_count", target=names.INFERENCE_COUNT),
    Rule(source="nv_inference_exec_count", target=names.EXECUTION_COUNT),
    *[Rule(source=f"nv_inference_{phase}_duration_us", target=names.REQUEST_DURATION_SUM,
           scale=_US, labels={"phase": phase})
      for phase in ("request", "queue", "compute_input", "compute_infer", "compute_output")],
    # Only with --metrics-config histogram_latencies=true (decoupled / streaming models).
    Rule(source="nv_inference_first_response_histogram_ms", target=names.TIME_TO_FIRST_BYTE,
         scale=1e-3),
]

VLLM_RULES: list[Rule] = [
    Rule(source="vllm:num_requests_waiting", target=names.QUEUE_DEPTH, model_label="model_name"),
    Rule(source="vllm:num_requests_running", target=names.IN_FLIGHT, model_label="model_name"),
    # A ratio: of several engines (label ``engine``, data parallel) the fullest counts.
    Rule(source="vllm:kv_cache_usage_perc", target=names.KV_CACHE_USAGE,
         model_label="model_name", combine="max"),
    # vLLM before 0.10 called it gpu_cache_usage_perc; never count both.
    Rule(source="vllm:gpu_cache_usage_perc", target=names.KV_CACHE_USAGE,
         model_label="model_name", unless_present="vllm:kv_cache_usage_perc", combine="max"),
    # finished_reason stop/length (and 0.32's repetition) are answers; abort is a request the
    # engine gave up on, error (0.32) one it failed.
    *[Rule(source="vllm:request_success", target=names.REQUESTS, model_label="model_name",
           labels={"outcome": outcome}, match={"finished_reason": reason})
      for reason, outcome in (("stop", "ok"), ("length", "ok"), ("repetition", "ok"),
                              ("abort", "error"), ("error", "error"))],
    Rule(source="vllm:e2e_request_latency_seconds", target=names.REQUEST_DURATION,
         model_label="model_name"),
    Rule(source="vllm:request_queue_time_seconds", target=names.QUEUE_DURATION,
         model_label="model_name"),
    Rule(source="vllm:time_to_first_token_seconds", target=names.TIME_TO_FIRST_BYTE,
         model_label="model_name"),
    # The engine's own signals under trimtab_llm_* (FieldGroup.LLM), whatever the proxy owns.
    *[Rule(source=f"vllm:{source}", target=target, model_label="model_name")
      for source, target in (
          ("num_requests_running", names.LLM_RUNNING),
          ("num_requests_waiting", names.LLM_WAITING),
          ("prompt_tokens", names.LLM_PROMPT_TOKENS),
          ("generation_tokens", names.LLM_GENERATION_TOKENS),
          ("num_preemptions", names.LLM_PREEMPTIONS),
          ("prefix_cache_queries", names.LLM_PREFIX_CACHE_QUERIES),
          ("prefix_cache_hits", names.LLM_PREFIX_CACHE_HITS),
          ("time_to_first_token_seconds", names.LLM_TTFT),
          ("inter_token_latency_seconds", names.LLM_ITL),
          ("request_time_per_output_token_seconds", names.LLM_TPOT))],
    # vLLM before V1 named the inter-token histogram time_per_output_token_seconds.
    Rule(source="vllm:time_per_output_token_seconds", target=names.LLM_ITL,
         model_label="model_name", unless_present="vllm:inter_token_latency_seconds"),
]

# SGLang, from its documented metrics (sgl-project/sglang docs/references/production_metrics.md,
# https://docs.sglang.io/references/production_metrics.html): gauges num_running_reqs,
# num_queue_reqs, token_usage (KV-cache tokens used / all), cache_hit_rate; counters
# prompt_tokens, generation_tokens; histograms time_to_first_token_seconds,
# e2e_request_latency_seconds, time_per_output_token_seconds; inter_token_latency_seconds
# appears in later releases. SGLang documents no preemption (retraction) counter, so that
# series stays absent. Later releases spell the prefix ``sglang_`` (multiprocess exposition);
# both are read, the colon first, never both.
_SGLANG_MAP: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("num_queue_reqs", names.QUEUE_DEPTH, {}),
    ("num_running_reqs", names.IN_FLIGHT, {}),
    ("num_running_reqs", names.LLM_RUNNING, {}),
    ("num_queue_reqs", names.LLM_WAITING, {}),
    ("token_usage", names.KV_CACHE_USAGE, {}),
    ("cache_hit_rate", names.LLM_PREFIX_CACHE_HIT_RATIO, {}),
    ("prompt_tokens", names.LLM_PROMPT_TOKENS, {}),
    ("generation_tokens", names.LLM_GENERATION_TOKENS, {}),
    ("e2e_request_latency_seconds", names.REQUEST_DURATION, {}),
    ("time_to_first_token_seconds", names.TIME_TO_FIRST_BYTE, {}),
    ("time_to_first_token_seconds", names.LLM_TTFT, {}),
    ("time_per_output_token_seconds", names.LLM_TPOT, {}),
    ("inter_token_latency_seconds", names.LLM_ITL, {}),
)
_RATIOS = frozenset({names.KV_CACHE_USAGE, names.LLM_PREFIX_CACHE_HIT_RATIO})
SGLANG_RULES: list[Rule] = [
    Rule(source=f"{prefix}{source}", target=target, labels=labels, model_label="model_name",
         unless_present=None if prefix == "sglang:" else f"sglang:{source}",
         combine="max" if target in _RATIOS else "sum")
    for prefix in ("sglang:", "sglang_") for source, target, labels in _SGLANG_MAP]


def batch_size_histogram(stats: dict, models: tuple[str, ...]) -> HistogramMetricFamily:
    """``trimtab_batch_size`` from Triton's ``GET /v2/models/stats`` answer.

    Each ``batch_stats`` entry says how many executions ran at one batch size, e.g.
    ``{"batch_size": 4, "compute_infer": {"count": 10, ...}}`` is ten executions of four:
    it lands in every bucket with ``le >= 4`` and adds 40 to the sum.
    """
    if not isinstance(stats, dict) or not isinstance(stats.get("model_stats"), list):
        raise ValueError("statistics answer has no model_stats list")
    model_set = frozenset(models)
    per_model: dict[str, dict[int, int]] = {}
    for entry in stats["model_stats"]:
        name = entry["name"]
        label = name if name in model_set else OTHER_MODEL
        counts = per_model.setdefault(label, {})
        for b in entry.get("batch_stats") or []:
            size = int(b["batch_size"])
            n = int(b["compute_infer"]["count"])
            if size < 1 or n < 0:
                raise ValueError(f"batch_stats of {name}: batch_size {size}, count {n}")
            counts[size] = counts.get(size, 0) + n
    fam = HistogramMetricFamily(names.BATCH_SIZE, names.BY_NAME[names.BATCH_SIZE].help,
                                labels=["model"])
    for label, counts in sorted(per_model.items()):
        buckets = [(repr(float(le)), float(sum(n for s, n in counts.items() if s <= le)))
                   for le in names.BATCH_SIZE_BUCKETS]
        buckets.append(("+Inf", float(sum(counts.values()))))
        fam.add_metric([label], buckets, float(sum(s * n for s, n in counts.items())))
    return fam


def triton_stats_fetcher(upstream: str, models: tuple[str, ...]
                         ) -> Callable[[aiohttp.ClientSession], object]:
    """An ``extra`` hook for ScrapeAdapter reading Triton's statistics extension."""
    url = upstream.rstrip("/") + "/v2/models/stats"

    async def fetch(session: aiohttp.ClientSession) -> list[Metric]:
        async with session.get(url) as resp:
            if resp.status != 200:
                raise ValueError(f"GET {url} -> {resp.status}")
            return [batch_size_histogram(await resp.json(content_type=None), models)]

    return fetch
