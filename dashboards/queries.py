"""Named PromQL queries for every dashboard panel, apart from layout; Grafana variables in ``$x``.

Each function takes the shared MonitoringConfig (alerts/config.py) and returns PromQL using
the series names of collectors/names.py and the recorded series that alerts/promql.py names.
"""
from __future__ import annotations

from trimtab.alerts import promql as q
from trimtab.alerts.config import MonitoringConfig
from trimtab.collectors import names as n

RATE = "$__rate_interval"
NS = 'namespace=~"$namespace"'
MODEL = 'model=~"$model"'
POD_LEVEL = ("namespace", "model", "pod")


def scoped(cfg: MonitoringConfig, *extra: str) -> MonitoringConfig:
    """The config with the dashboard's namespace/model variables added to the sidecar selector."""
    selector = ", ".join(m for m in (cfg.sidecar_selector, *extra) if m)
    return cfg.model_copy(update={"sidecar_selector": selector})


def sidecar_matchers(cfg: MonitoringConfig, *extra: str) -> str:
    """Matchers (no braces) for the sidecar's series in the dashboard's namespace."""
    return ", ".join(m for m in (cfg.sidecar_selector, NS, *extra) if m)


def sidecar(cfg: MonitoringConfig, *extra: str) -> str:
    return "{" + sidecar_matchers(cfg, *extra) + "}"


def controller(cfg: MonitoringConfig, *extra: str) -> str:
    return q.sel(cfg.controller_selector, NS, MODEL, *extra)


def model_filter(record: str) -> str:
    return f"{record}{{{NS}, {MODEL}}}"


# --- requests and latency -------------------------------------------------------------------
def request_rate(cfg: MonitoringConfig) -> str:
    return q.requests_rate(scoped(cfg, NS, MODEL), RATE)


def request_rate_by_outcome(cfg: MonitoringConfig) -> str:
    return q.requests_rate(scoped(cfg, NS, MODEL), RATE, labels=("model", "outcome"))


def latency_quantile(cfg: MonitoringConfig, quantile: float,
                     metric: str = n.REQUEST_DURATION) -> str:
    buckets = q.latency_bucket_rate(scoped(cfg, NS, MODEL), metric, RATE)
    return f"histogram_quantile({quantile:g}, {buckets})"


def latency_heatmap(cfg: MonitoringConfig) -> str:
    return q.sum_rate(q.series(n.REQUEST_DURATION, "_bucket"), (sidecar_matchers(cfg, MODEL),),
                      RATE, ("le",))


def batch_size_heatmap(cfg: MonitoringConfig) -> str:
    return q.sum_rate(q.series(n.BATCH_SIZE, "_bucket"), (sidecar_matchers(cfg, MODEL),), RATE,
                      ("le",))


def slo_error_ratio_range(cfg: MonitoringConfig) -> str:
    """Fraction of requests that missed the SLO over the dashboard's time range."""
    return q.slo_error_ratio(scoped(cfg, NS, MODEL), "$__range")


def error_budget_remaining(cfg: MonitoringConfig) -> str:
    """1 = untouched, 0 = spent, negative = overspent, over the dashboard's time range."""
    return f"1 - ({slo_error_ratio_range(cfg)}) / {cfg.error_budget:g}"


def burn_rate(cfg: MonitoringConfig, window: str) -> str:
    """How many times faster than sustainable the budget burns over ``window``."""
    return f"{model_filter(q.slo_error_ratio_name(window))} / {cfg.error_budget:g}"


def shed_rate(cfg: MonitoringConfig) -> str:
    outcomes = "|".join(q.SHED_OUTCOMES)
    total = q.requests_rate(scoped(cfg, NS, MODEL), RATE, labels=("model",))
    shed = q.requests_rate(scoped(cfg, NS, MODEL), RATE, (f'outcome=~"{outcomes}"',),
                           labels=("model", "outcome"))
    return shed + f" or on (model) (0 * {total})"


def proxy_rejections(cfg: MonitoringConfig) -> str:
    return q.sum_rate(q.series(n.PROXY_REJECTED), (sidecar_matchers(cfg, MODEL),), RATE,
                      ("model", "reason"))


# --- queue, concurrency, batching ---------------------------------------------------------
def queue_depth(cfg: MonitoringConfig) -> str:
    return f"sum by (model) ({n.QUEUE_DEPTH}{sidecar(cfg, MODEL)})"


def in_flight(cfg: MonitoringConfig) -> str:
    return f"sum by (model) ({n.IN_FLIGHT}{sidecar(cfg, MODEL)})"


def concurrency_limit(cfg: MonitoringConfig) -> str:
    # The limit is per pod and carries no model label: the pod's scrape labels say whose it is.
    return f"max by (pod) ({n.CONCURRENCY_LIMIT}{sidecar(cfg)})"


def queue_timeout(cfg: MonitoringConfig) -> str:
    # Per pod, like the concurrency limit: the admission wait the proxy allows now.
    return f"max by (pod) ({n.QUEUE_TIMEOUT}{sidecar(cfg)})"


def max_batch_size(cfg: MonitoringConfig) -> str:
    return f"max by (model) ({n.MAX_BATCH_SIZE}{sidecar(cfg, MODEL)})"


def batch_timeout(cfg: MonitoringConfig) -> str:
    return f"max by (model) ({n.BATCH_TIMEOUT}{sidecar(cfg, MODEL)})"


# --- replicas and the controller ------------------------------------------------------------
def replicas_desired(cfg: MonitoringConfig) -> str:
    return f"max by (model) ({n.CTRL_DESIRED_REPLICAS}{controller(cfg)})"


def replicas_current(cfg: MonitoringConfig) -> str:
    return f"max by (model) ({n.CTRL_CURRENT_REPLICAS}{controller(cfg)})"


def replicas_max(cfg: MonitoringConfig) -> str:
    return f"max by (model) ({n.CTRL_MAX_REPLICAS}{controller(cfg)})"


def forecast_rps(cfg: MonitoringConfig) -> str:
    return f"max by (model) ({n.CTRL_FORECAST_RPS}{controller(cfg)})"


def observed_rps(cfg: MonitoringConfig) -> str:
    return f"max by (model) ({n.CTRL_OBSERVED_RPS}{controller(cfg)})"


def decisions_by_reason(cfg: MonitoringConfig) -> str:
    return (f"sum by (model, reason) (increase({q.series(n.CTRL_DECISIONS)}"
            f"{controller(cfg)}[{RATE}]))")


def desired_concurrency(cfg: MonitoringConfig) -> str:
    return f"max by (model) ({n.CTRL_DESIRED_CONCURRENCY}{controller(cfg)})"


def desired_max_batch(cfg: MonitoringConfig) -> str:
    return f"max by (model) ({n.CTRL_DESIRED_BATCH}{controller(cfg)})"


def forecast_error(cfg: MonitoringConfig) -> str:
    return f"max by (model) ({n.CTRL_FORECAST_ERROR}{controller(cfg)})"


def holding(cfg: MonitoringConfig) -> str:
    return f"max by (model, reason) ({n.CTRL_HOLDING}{controller(cfg)})"


def loop_duration_p99(cfg: MonitoringConfig) -> str:
    buckets = q.series(n.CTRL_LOOP_DURATION, "_bucket")
    return (f"histogram_quantile(0.99, sum by (pod, le) "
            f"(rate({buckets}{q.sel(cfg.controller_selector)}[{RATE}])))")


def source_errors(cfg: MonitoringConfig) -> str:
    return (f"sum by (source, error) (rate({q.series(n.CTRL_SOURCE_ERRORS)}"
            f"{q.sel(cfg.controller_selector)}[{RATE}]))")


def actuation_errors(cfg: MonitoringConfig) -> str:
    return (f"sum by (model, actuator, error) (rate({q.series(n.CTRL_ACTUATION_ERRORS)}"
            f"{controller(cfg)}[{RATE}]))")


def time_since_last_success(cfg: MonitoringConfig) -> str:
    return (f"time() - max by (pod) ({n.CTRL_LAST_SUCCESS}"
            f"{q.sel(cfg.controller_selector)})")


def is_leader(cfg: MonitoringConfig) -> str:
    return f"max by (pod) ({n.CTRL_IS_LEADER}{q.sel(cfg.controller_selector)})"


# --- GPU ------------------------------------------------------------------------------------
def gpu_gauge(cfg: MonitoringConfig, metric: str) -> str:
    return f"max by (pod, gpu) ({metric}{sidecar(cfg)})"


def gpu_memory_ratio(cfg: MonitoringConfig) -> str:
    return f"max by (pod, gpu) ({q.GPU_MEMORY_RATIO}{{{NS}}})"


def gpu_memory_ratio_max(cfg: MonitoringConfig) -> str:
    return f"max by (namespace) ({q.GPU_MEMORY_RATIO}{{{NS}}})"


def gpu_busy_mean(cfg: MonitoringConfig) -> str:
    return f"avg by (namespace) ({n.GPU_UTILIZATION}{sidecar(cfg)})"


def gpu_process_memory(cfg: MonitoringConfig) -> str:
    return f"max by (pod, gpu, process) ({n.GPU_PROCESS_MEMORY}{sidecar(cfg)})"


def gpu_throttle(cfg: MonitoringConfig) -> str:
    return f"max by (pod, gpu, reason) ({n.GPU_THROTTLE}{sidecar(cfg)})"


def collector_success(cfg: MonitoringConfig) -> str:
    return f"min by (pod, collector) ({n.COLLECTOR_SUCCESS}{sidecar(cfg)})"


def collector_errors(cfg: MonitoringConfig) -> str:
    return q.sum_rate(q.series(n.COLLECTOR_ERRORS), (sidecar_matchers(cfg),), RATE,
                      ("pod", "collector", "error"))


# --- fleet summaries (recording rules: cheap over many models) ---------------------------
def fleet_request_rate(cfg: MonitoringConfig) -> str:
    return model_filter(q.REQUESTS_RATE)


def fleet_p99(cfg: MonitoringConfig) -> str:
    return model_filter(q.LATENCY_P99)


def targets_up(cfg: MonitoringConfig) -> str:
    return f"sum by (job) (up{q.sel(cfg.sidecar_selector, NS)})"


# --- LLM engines: TTFT/TPOT objectives, sequences, KV cache, tokens ------------------------
def llm_attainment_range(cfg: MonitoringConfig, slo: str) -> str:
    """Share of requests within the TTFT (or TPOT) bound over the dashboard's time range."""
    return f"1 - ({q.llm_slo_error_ratio(scoped(cfg, NS, MODEL), slo, '$__range')})"


def llm_attainment(cfg: MonitoringConfig, slo: str) -> str:
    """Share within the bound over the recorded 5-minute window."""
    return f"1 - {model_filter(q.llm_slo_error_ratio_name(slo, q.RATE_WINDOW))}"


def llm_burn_rate(cfg: MonitoringConfig, slo: str, window: str) -> str:
    budget = cfg.budget_of(q.llm_slo_target(cfg, slo))
    return f"{model_filter(q.llm_slo_error_ratio_name(slo, window))} / {budget:g}"


def llm_p99(cfg: MonitoringConfig, slo: str) -> str:
    return model_filter(q.llm_p99_name(slo))


def ttft_heatmap(cfg: MonitoringConfig) -> str:
    return q.sum_rate(q.series(n.LLM_TTFT, "_bucket"), (sidecar_matchers(cfg, MODEL),), RATE,
                      ("le",))


def engine_sequences(cfg: MonitoringConfig, metric: str) -> str:
    return f"sum by (model) ({metric}{sidecar(cfg, MODEL)})"


def kv_cache_usage_max(cfg: MonitoringConfig) -> str:
    return model_filter(q.KV_CACHE_USAGE_MAX)


def preemptions_rate(cfg: MonitoringConfig) -> str:
    return model_filter(q.PREEMPTIONS_RATE)


def token_rate(cfg: MonitoringConfig, metric: str) -> str:
    return q.sum_rate(q.series(metric), (sidecar_matchers(cfg, MODEL),), RATE, ("model",))


def prefix_cache_hit_ratio(cfg: MonitoringConfig) -> str:
    """Hits / queries where the engine counts both (vLLM), else the ratio it reports (SGLang)."""
    hits, queries = (token_rate(cfg, m) for m in (n.LLM_PREFIX_CACHE_HITS,
                                                  n.LLM_PREFIX_CACHE_QUERIES))
    reported = f"avg by (model) ({n.LLM_PREFIX_CACHE_HIT_RATIO}{sidecar(cfg, MODEL)})"
    return f"({hits} / {queries}) or {reported}"
