"""The six dashboards (fleet, model detail, GPU, controller, SLO, LLM): layout only; PromQL is in queries.py."""
from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from trimtab.alerts import promql as q
from trimtab.alerts.config import MonitoringConfig
from trimtab.collectors import names as n
from trimtab.dashboards import queries as Q
from trimtab.dashboards.panels import (DATASOURCE, SchemaVariable, heatmap_panel, row, stat_panel,
                                      timeseries_panel)

TAGS = ["trimtab"]


def _variables(cfg: MonitoringConfig, with_model: bool = True) -> list[SchemaVariable]:
    requests = f"{q.series(n.REQUESTS)}{{{cfg.sidecar_selector}}}"
    out = [db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
           db.QueryVariable("namespace").label("Namespace").datasource(DATASOURCE)
           .query(f"label_values({requests}, namespace)").include_all(True).all_value(".*")
           .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)]
    if with_model:
        scoped = requests[:-1] + ', namespace=~"$namespace"}'
        out.append(db.QueryVariable("model").label("Model").datasource(DATASOURCE)
                   .query(f"label_values({scoped}, model)").include_all(True).all_value(".*")
                   .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED))
    return [SchemaVariable(v) for v in out]


def _board(uid: str, title: str, description: str, variables: list) -> db.Dashboard:
    return (db.Dashboard(title).uid(uid).description(description).tags(TAGS)
            .refresh("30s").time("now-3h", "now").timezone("utc")
            .tooltip(dm.DashboardCursorSync.CROSSHAIR).variables(variables)
            .link(db.DashboardLink("trimtab").type(dm.DashboardLinkType.DASHBOARDS)
                  .tags(TAGS).as_dropdown(True)))


def _slo_limit(cfg: MonitoringConfig) -> tuple[tuple[float, str], ...]:
    return ((cfg.slo_latency_s, "red"),)


def fleet_overview(cfg: MonitoringConfig) -> db.Dashboard:
    return (_board("trimtab-fleet", "trimtab / Fleet overview",
                   "Every model: load, p99 against the SLO, error budget, replicas, GPUs.",
                   _variables(cfg))
            .with_row(row("Service"))
            .with_panel(timeseries_panel("Request rate", "reqps",
                                         [(Q.fleet_request_rate(cfg), "{{namespace}}/{{model}}")],
                                         span=8, min_val=0))
            .with_panel(timeseries_panel("p99 latency vs SLO", "s",
                                         [(Q.fleet_p99(cfg), "{{namespace}}/{{model}}")],
                                         limits=_slo_limit(cfg), span=8, min_val=0))
            .with_panel(stat_panel("Error budget remaining (time range)", "percentunit",
                                   [(Q.error_budget_remaining(cfg), "{{model}}")],
                                   limits=((0.0, "orange"), (0.5, "green")), reverse=True,
                                   span=8))
            .with_row(row("Capacity"))
            .with_panel(timeseries_panel("Replicas desired / current / max", "short",
                                         [(Q.replicas_desired(cfg), "{{model}} desired"),
                                          (Q.replicas_current(cfg), "{{model}} current"),
                                          (Q.replicas_max(cfg), "{{model}} max")],
                                         span=12, min_val=0))
            .with_panel(timeseries_panel("GPU memory used (max) and busy (mean)", "percentunit",
                                         [(Q.gpu_memory_ratio_max(cfg), "{{namespace}} memory"),
                                          (Q.gpu_busy_mean(cfg), "{{namespace}} busy")],
                                         limits=((cfg.gpu_memory_ratio, "red"),), span=12,
                                         min_val=0)))


def model_detail(cfg: MonitoringConfig) -> db.Dashboard:
    quantiles = [(Q.latency_quantile(cfg, qq), f"p{int(qq * 100)} {{{{model}}}}")
                 for qq in (0.5, 0.9, 0.99)]
    return (_board("trimtab-model", "trimtab / Model detail",
                   "One model: latency, queueing, batching, shedding, replicas and the"
                   " controller's decisions.", _variables(cfg))
            .with_row(row("Latency"))
            .with_panel(heatmap_panel("Request latency", "s", Q.latency_heatmap(cfg)))
            .with_panel(timeseries_panel("Latency quantiles vs SLO", "s", quantiles,
                                         limits=_slo_limit(cfg), min_val=0))
            .with_panel(timeseries_panel(
                "Queue wait p99", "s", [(Q.latency_quantile(cfg, 0.99, n.QUEUE_DURATION),
                                         "{{model}}")], limits=_slo_limit(cfg), min_val=0))
            .with_panel(timeseries_panel("Requests by outcome", "reqps",
                                         [(Q.request_rate_by_outcome(cfg),
                                           "{{model}} {{outcome}}")], min_val=0))
            .with_row(row("Queue and batches"))
            .with_panel(timeseries_panel("Queue depth and in-flight", "short",
                                         [(Q.queue_depth(cfg), "{{model}} queued"),
                                          (Q.in_flight(cfg), "{{model}} in flight")],
                                         min_val=0))
            .with_panel(heatmap_panel("Batch size", "short", Q.batch_size_heatmap(cfg)))
            .with_panel(timeseries_panel("Shed and timed out", "reqps",
                                         [(Q.shed_rate(cfg), "{{model}} {{outcome}}"),
                                          (Q.proxy_rejections(cfg), "{{model}} {{reason}}")],
                                         min_val=0))
            .with_panel(timeseries_panel(
                "Concurrency limit and batch settings", "short",
                [(Q.concurrency_limit(cfg), "{{pod}} concurrency limit"),
                 (Q.max_batch_size(cfg), "{{model}} max batch size")], min_val=0))
            .with_panel(timeseries_panel("Batch timeout and admission wait", "s",
                                         [(Q.batch_timeout(cfg), "{{model}} batch timeout"),
                                          (Q.queue_timeout(cfg), "{{pod}} admission wait")],
                                         min_val=0))
            .with_row(row("Replicas and controller"))
            .with_panel(timeseries_panel("Replicas desired / current", "short",
                                         [(Q.replicas_desired(cfg), "{{model}} desired"),
                                          (Q.replicas_current(cfg), "{{model}} current")],
                                         min_val=0))
            .with_panel(timeseries_panel("Forecast vs actual load", "reqps",
                                         [(Q.forecast_rps(cfg), "{{model}} forecast"),
                                          (Q.observed_rps(cfg), "{{model}} observed")],
                                         min_val=0))
            .with_panel(timeseries_panel("Controller decisions by reason", "short",
                                         [(Q.decisions_by_reason(cfg),
                                           "{{model}} {{reason}}")], min_val=0)))


def gpu(cfg: MonitoringConfig) -> db.Dashboard:
    def g(metric: str) -> list[tuple[str, str]]:
        return [(Q.gpu_gauge(cfg, metric), "{{pod}} GPU {{gpu}}")]
    return (_board("trimtab-gpu", "trimtab / GPUs", "Per GPU, from the sidecar's NVML"
                   " collector.", _variables(cfg, with_model=False))
            .with_panel(timeseries_panel("Memory used", "percentunit",
                                         [(Q.gpu_memory_ratio(cfg), "{{pod}} GPU {{gpu}}")],
                                         limits=((cfg.gpu_memory_ratio, "red"),), min_val=0))
            .with_panel(timeseries_panel("Utilisation", "percentunit",
                                         g(n.GPU_UTILIZATION), min_val=0))
            .with_panel(timeseries_panel("Power", "watt", g(n.GPU_POWER), min_val=0))
            .with_panel(timeseries_panel("Temperature", "celsius", g(n.GPU_TEMPERATURE)))
            .with_panel(timeseries_panel("Memory per process", "bytes",
                                         [(Q.gpu_process_memory(cfg),
                                           "{{pod}} GPU {{gpu}} {{process}}")], min_val=0))
            .with_panel(timeseries_panel("Clock throttling", "short",
                                         [(Q.gpu_throttle(cfg), "{{pod}} {{gpu}} {{reason}}")]))
            .with_panel(timeseries_panel("GPU up (NVML answers)", "short", g(n.GPU_UP),
                                         limits=((1.0, "green"),), min_val=0))
            .with_panel(timeseries_panel("Collector success and errors", "short",
                                         [(Q.collector_success(cfg), "{{pod}} {{collector}} ok"),
                                          (Q.collector_errors(cfg),
                                           "{{pod}} {{collector}} {{error}}")], min_val=0)))


def controller(cfg: MonitoringConfig) -> db.Dashboard:
    return (_board("trimtab-controller", "trimtab / Controller",
                   "The control loop: tick time, errors, freshness, actions and forecasts.",
                   _variables(cfg))
            .with_panel(timeseries_panel("Loop duration p99", "s",
                                         [(Q.loop_duration_p99(cfg), "{{pod}}")], min_val=0))
            .with_panel(timeseries_panel("Time since last successful loop", "s",
                                         [(Q.time_since_last_success(cfg), "{{pod}}")],
                                         limits=((cfg.controller_stall_s, "red"),), min_val=0))
            .with_panel(timeseries_panel("Source and actuation errors", "reqps",
                                         [(Q.source_errors(cfg), "{{source}} {{error}}"),
                                          (Q.actuation_errors(cfg),
                                           "{{model}} {{actuator}} {{error}}")], min_val=0))
            .with_panel(timeseries_panel("Actions by reason", "short",
                                         [(Q.decisions_by_reason(cfg),
                                           "{{model}} {{reason}}")], min_val=0))
            .with_panel(timeseries_panel("Forecast error", "percentunit",
                                         [(Q.forecast_error(cfg), "{{model}}")],
                                         limits=((cfg.forecast_error_ratio, "red"),),
                                         min_val=0))
            .with_panel(timeseries_panel("Holding (by reason) and leader", "short",
                                         [(Q.holding(cfg), "{{model}} {{reason}}"),
                                          (Q.is_leader(cfg), "{{pod}} leader")], min_val=0))
            .with_panel(timeseries_panel("Desired concurrency and batch", "short",
                                         [(Q.desired_concurrency(cfg), "{{model}} concurrency"),
                                          (Q.desired_max_batch(cfg), "{{model}} max batch")],
                                         min_val=0)))


def slo(cfg: MonitoringConfig) -> db.Dashboard:
    board = (_board("trimtab-slo", "trimtab / SLO",
                    f"{cfg.slo_target * 100:g} % of requests succeed within"
                    f" {cfg.slo_latency_s:g} s: burn rate per window and budget left.",
                    _variables(cfg))
             .with_panel(stat_panel("Error budget remaining (time range)", "percentunit",
                                    [(Q.error_budget_remaining(cfg), "{{model}}")],
                                    limits=((0.0, "orange"), (0.5, "green")), reverse=True))
             .with_panel(stat_panel("Requests missing the SLO (time range)", "percentunit",
                                    [(Q.slo_error_ratio_range(cfg), "{{model}}")],
                                    limits=((cfg.error_budget, "red"),), span=6)))
    factors = sorted({w.factor for w in cfg.burn_windows})
    limits = tuple((f, "orange" if f < max(factors) else "red") for f in factors)
    for window in q.slo_windows(cfg):
        board = board.with_panel(timeseries_panel(
            f"Burn rate over {window}", "x", [(Q.burn_rate(cfg, window), "{{model}}")],
            limits=limits, span=8, min_val=0))
    return board


def llm(cfg: MonitoringConfig) -> db.Dashboard:
    ttft, tpot = f"{cfg.slo_ttft_s:g} s", f"{cfg.slo_tpot_s:g} s"
    e2e = [(Q.latency_quantile(cfg, qq), f"p{int(qq * 100)} {{{{model}}}}") for qq in (0.5, 0.99)]
    board = (_board("trimtab-llm", "trimtab / LLM serving",
                    f"LLM engines (vLLM, SGLang): {cfg.slo_ttft_target * 100:g} % of first"
                    f" tokens within {ttft}, {cfg.slo_tpot_target * 100:g} % of requests"
                    f" within {tpot} per output token; sequences, KV cache, preemptions,"
                    " tokens.", _variables(cfg))
             .with_row(row("Objectives")))
    for slo, name, bound_s, target in (("ttft", "TTFT", cfg.slo_ttft_s, cfg.slo_ttft_target),
                                       ("tpot", "TPOT", cfg.slo_tpot_s, cfg.slo_tpot_target)):
        board = board.with_panel(stat_panel(
            f"{name} attainment (time range)", "percentunit",
            [(Q.llm_attainment_range(cfg, slo), "{{model}}")],
            description=f"Share of requests within {bound_s:g} s; objective {target:g}.",
            limits=((target, "green"),), reverse=True))
    for slo, name, bound_s in (("ttft", "TTFT", cfg.slo_ttft_s), ("tpot", "TPOT", cfg.slo_tpot_s)):
        board = board.with_panel(timeseries_panel(
            f"{name} p99 vs bound", "s", [(Q.llm_p99(cfg, slo), "{{model}}")],
            limits=((bound_s, "red"),), span=6, min_val=0))
    board = board.with_panel(timeseries_panel(
        "Attainment over 5m", "percentunit",
        [(Q.llm_attainment(cfg, "ttft"), "{{model}} TTFT"),
         (Q.llm_attainment(cfg, "tpot"), "{{model}} TPOT")],
        limits=((min(cfg.slo_ttft_target, cfg.slo_tpot_target), "green"),), min_val=0))
    fast = max(cfg.burn_windows, key=lambda w: w.factor)
    board = board.with_panel(timeseries_panel(
        f"Burn rate over {fast.long} (page at {fast.factor:g}x)", "x",
        [(Q.llm_burn_rate(cfg, "ttft", fast.long), "{{model}} TTFT"),
         (Q.llm_burn_rate(cfg, "tpot", fast.long), "{{model}} TPOT")],
        limits=((fast.factor, "red"),), min_val=0))
    return (board
            .with_row(row("Engine"))
            .with_panel(timeseries_panel(
                "Sequences running and waiting", "short",
                [(Q.engine_sequences(cfg, n.LLM_RUNNING), "{{model}} running"),
                 (Q.engine_sequences(cfg, n.LLM_WAITING), "{{model}} waiting")], min_val=0))
            .with_panel(timeseries_panel(
                "KV-cache usage (fullest replica)", "percentunit",
                [(Q.kv_cache_usage_max(cfg), "{{model}}")],
                limits=((cfg.kv_cache_usage_ratio, "red"),), min_val=0))
            .with_panel(timeseries_panel(
                "Preemptions", "short", [(Q.preemptions_rate(cfg), "{{model}}")],
                description="Sequences preempted per second (KV cache full: recomputed later).",
                min_val=0))
            .with_panel(timeseries_panel(
                "Prompt and generation tokens", "short",
                [(Q.token_rate(cfg, n.LLM_PROMPT_TOKENS), "{{model}} prompt"),
                 (Q.token_rate(cfg, n.LLM_GENERATION_TOKENS), "{{model}} generation")],
                description="Tokens per second.", min_val=0))
            .with_panel(timeseries_panel(
                "Prefix-cache hit ratio", "percentunit",
                [(Q.prefix_cache_hit_ratio(cfg), "{{model}}")], min_val=0))
            .with_panel(heatmap_panel("Time to first token", "s", Q.ttft_heatmap(cfg)))
            .with_panel(timeseries_panel("End-to-end latency", "s", e2e, min_val=0)))


ALL_BOARDS = {
    "fleet-overview": fleet_overview,
    "model-detail": model_detail,
    "gpu": gpu,
    "controller": controller,
    "slo": slo,
    "llm": llm,
}
