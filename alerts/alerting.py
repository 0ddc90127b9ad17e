"""Alerting rules: expression, ``for:``, severity, annotations and the runbook text of every alert."""
from __future__ import annotations

from dataclasses import dataclass, field

from trimtab.alerts import promql as q
from trimtab.alerts.config import MonitoringConfig
from trimtab.collectors import names as n

SEVERITIES = ("critical", "warning", "info")
NOT_WARMUP = 'reason!="warmup"'  # a hold while windows fill after a restart is normal


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule plus its runbook section (meaning, what to check, what to do).

    Annotations may use ``{{ $labels.x }}`` only (not ``$value``), so promtool tests can
    state them exactly.
    """

    alert: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    meaning: str
    check: str
    action: str
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert {self.alert}: severity {self.severity!r} must be one of"
                             f" {SEVERITIES}")
        q.duration_s(self.for_)

    @property
    def rule_id(self) -> str:
        """Unique per rule (several rules may share an alert name, e.g. the burn-rate pairs)."""
        extra = "".join(f"/{k}={v}" for k, v in sorted(self.labels.items()))
        return self.alert + extra


def _pct(ratio: float) -> str:
    return f"{ratio * 100:g} %"


def burn_rate_alerts(cfg: MonitoringConfig) -> list[AlertRule]:
    """Multi-window multi-burn-rate alerts: both windows above factor x budget."""
    out = []
    for w in cfg.burn_windows:
        threshold = round(w.factor * cfg.error_budget, 12)
        expr = (f"{q.slo_error_ratio_name(w.long)} > {threshold:g}\n"
                f"and\n{q.slo_error_ratio_name(w.short)} > {threshold:g}")
        out.append(AlertRule(
            alert="TrimtabErrorBudgetBurn", expr=expr, for_=w.for_, severity=w.severity,
            labels={"long_window": w.long, "short_window": w.short},
            summary="{{ $labels.model }} in {{ $labels.namespace }} burns its error budget"
                    f" {w.factor:g}x too fast",
            description=(f"Over the last {w.long} and {w.short}, more than {_pct(threshold)} of"
                         " requests to {{ $labels.model }} failed or took longer than"
                         f" {cfg.slo_latency_s:g} s (objective {_pct(cfg.slo_target)})."),
            meaning="Requests fail or are slower than the SLO threshold fast enough to spend"
                    " the 30-day error budget early: a page for the fast pairs, a ticket for"
                    " the slow ones.",
            check="SLO dashboard (which window burns); model detail dashboard: outcomes, p99,"
                  " queue depth, replicas desired vs current, controller reasons.",
            action="If replicas are at max, raise the bound or shed load; if errors come from"
                   " the model server, roll back the last change; if the controller holds,"
                   " see TrimtabControllerStalled."))
    return out


_LLM_SLO_TEXT = {"ttft": ("TTFT", "time to first token"),
                 "tpot": ("TPOT", "time per output token")}


def llm_burn_rate_alerts(cfg: MonitoringConfig) -> list[AlertRule]:
    """The same window pairs for the TTFT and TPOT objectives, each on its own budget."""
    out = []
    for slo in q.LLM_SLOS:
        short_name, long_name = _LLM_SLO_TEXT[slo]
        bound_s, target = q.llm_slo_bound_s(cfg, slo), q.llm_slo_target(cfg, slo)
        for w in cfg.burn_windows:
            threshold = round(w.factor * cfg.budget_of(target), 12)
            expr = (f"{q.llm_slo_error_ratio_name(slo, w.long)} > {threshold:g}\n"
                    f"and\n{q.llm_slo_error_ratio_name(slo, w.short)} > {threshold:g}")
            out.append(AlertRule(
                alert=f"Trimtab{short_name}BudgetBurn", expr=expr, for_=w.for_,
                severity=w.severity, labels={"long_window": w.long, "short_window": w.short},
                summary=f"{short_name} of {{{{ $labels.model }}}} in {{{{ $labels.namespace }}}}"
                        f" burns its error budget {w.factor:g}x too fast",
                description=(f"Over the last {w.long} and {w.short}, more than"
                             f" {_pct(threshold)} of requests to {{{{ $labels.model }}}} had a"
                             f" {long_name} over {bound_s:g} s (objective {_pct(target)})."),
                meaning=f"The LLM engine's {long_name} misses its bound often enough to spend"
                        " the 30-day budget early. "
                        + ("TTFT grows with the waiting queue and prefill load: too few"
                           " replicas, or long prompts." if slo == "ttft" else
                           "TPOT grows with the decode batch and the KV tokens it reads:"
                           " replicas run too many sequences at once."),
                check="LLM dashboard: waiting vs running sequences, KV-cache usage,"
                      " preemptions, prompt and generation token rates; replicas desired vs"
                      " current.",
                action="Scale out (or raise the max replicas); if TPOT burns while TTFT does"
                       " not, lower the per-replica concurrency (max_num_seqs or the sidecar's"
                       " limit) so fewer sequences share a step."))
    return out


def llm_alerts(cfg: MonitoringConfig) -> list[AlertRule]:
    return [
        AlertRule(
            alert="TrimtabKVCachePressure", for_="10m", severity="warning",
            expr=f"{q.KV_CACHE_USAGE_MAX} > {cfg.kv_cache_usage_ratio:g}",
            summary="KV cache of {{ $labels.model }} is nearly full",
            description="A replica of {{ $labels.model }} in {{ $labels.namespace }} has used"
                        f" more than {_pct(cfg.kv_cache_usage_ratio)} of its KV-cache blocks"
                        " for 10 minutes.",
            meaning="New sequences wait for blocks and running ones get preempted and"
                    " recomputed: TTFT and TPOT follow.",
            check="LLM dashboard: KV-cache usage per model, preemptions, waiting sequences.",
            action="Scale out, or lower the concurrency the door admits so excess load waits"
                   " outside the engine instead of being preempted inside it."),
        AlertRule(
            alert="TrimtabLLMPreempting", for_="10m", severity="warning",
            expr=f"{q.PREEMPTIONS_RATE} > {cfg.preemptions_per_s:g}",
            summary="{{ $labels.model }} preempts sequences",
            description="The engines of {{ $labels.model }} in {{ $labels.namespace }} have"
                        f" preempted more than {cfg.preemptions_per_s:g} sequences a second for"
                        " 10 minutes.",
            meaning="The KV cache ran out: preempted sequences lose their blocks and are"
                    " recomputed, wasting GPU time and delaying their tokens.",
            check="LLM dashboard: KV-cache usage, running sequences, generation token rate.",
            action="Scale out or admit fewer sequences per replica (the sidecar's"
                   " concurrency limit, vLLM's max_num_seqs)."),
    ]


def service_alerts(cfg: MonitoringConfig) -> list[AlertRule]:
    slo = f"{cfg.slo_latency_s:g}"
    return [
        AlertRule(
            alert="TrimtabLatencyP99OverSLO", for_="10m", severity="warning",
            expr=f"{q.LATENCY_P99} > {slo}",
            summary="p99 latency of {{ $labels.model }} is over the SLO",
            description="p99 request latency of {{ $labels.model }} in {{ $labels.namespace }}"
                        f" has been above {slo} s for 10 minutes.",
            meaning="The slowest 1 % of requests miss the latency SLO threshold.",
            check="Model detail: queue duration vs batch duration, batch size, in-flight,"
                  " GPU utilisation.",
            action="Queueing: scale out or lower the concurrency limit; long batches: lower"
                   " max batch size or batch timeout."),
        AlertRule(
            alert="TrimtabQueueBacklogGrowing", for_="10m", severity="warning",
            expr=(f"deriv({q.QUEUE_DEPTH}[10m]) > 0\nand\n"
                  f"{q.QUEUE_DEPTH} > {cfg.queue_backlog_requests:g}"),
            summary="Queue of {{ $labels.model }} keeps growing",
            description="More than"
                        f" {cfg.queue_backlog_requests:g} requests of {{{{ $labels.model }}}} wait in"
                        " {{ $labels.namespace }} and the queue has grown for 10 minutes.",
            meaning="Arrivals exceed what the replicas complete; latency will follow.",
            check="Replicas desired vs current (are new replicas starting?), controller"
                  " decisions and reasons, forecast vs actual load.",
            action="Scale out by hand if the controller does not; check for stuck replicas."),
        AlertRule(
            alert="TrimtabRequestsShed", for_="5m", severity="warning",
            expr=f"{q.SHED_RATIO} > {cfg.shed_ratio:g}",
            summary="{{ $labels.model }} sheds or times out requests",
            description="More than"
                        f" {_pct(cfg.shed_ratio)} of requests to {{{{ $labels.model }}}} in"
                        " {{ $labels.namespace }} were shed or timed out over 5 minutes.",
            meaning="The admission proxy rejects load (queue full or queue timeout).",
            check="Model detail: shed and timed-out requests, concurrency limit, queue depth.",
            action="Add capacity or raise the queue limit if latency allows."),
    ]


def gpu_alerts(cfg: MonitoringConfig) -> list[AlertRule]:
    return [
        AlertRule(
            alert="TrimtabGPUMemoryNearFull", for_="5m", severity="warning",
            expr=f"{q.GPU_MEMORY_RATIO} > {cfg.gpu_memory_ratio:g}",
            summary="GPU {{ $labels.gpu }} of {{ $labels.pod }} is almost out of memory",
            description="GPU {{ $labels.gpu }} ({{ $labels.uuid }}) of pod {{ $labels.pod }} in"
                        " {{ $labels.namespace }} has used more than"
                        f" {_pct(cfg.gpu_memory_ratio)} of its memory for 5 minutes.",
            meaning="The next larger batch or KV-cache growth may fail with out-of-memory.",
            check="GPU dashboard: per-process memory, batch size, KV-cache usage.",
            action="Lower max batch size or concurrency for this model, or move it to a"
                   " larger GPU."),
        AlertRule(
            alert="TrimtabGPULost", for_="1m", severity="critical",
            expr=f"{q.series(n.GPU_UP)}{q.sel(cfg.sidecar_selector)} == 0",
            summary="GPU {{ $labels.gpu }} of {{ $labels.pod }} stopped answering NVML",
            description="NVML reports GPU {{ $labels.gpu }} ({{ $labels.uuid }}) of pod"
                        " {{ $labels.pod }} in {{ $labels.namespace }} as lost.",
            meaning="The GPU fell off the bus or the driver lost it; its replica cannot serve.",
            check="Node kernel log for Xid errors; GPU dashboard errors panel.",
            action="Cordon and drain the node; the replica will be rescheduled."),
        AlertRule(
            alert="TrimtabCollectorFailing", for_="5m", severity="warning",
            expr=f"{q.series(n.COLLECTOR_SUCCESS)}{q.sel(cfg.sidecar_selector)} == 0",
            summary="Collector {{ $labels.collector }} of {{ $labels.pod }} fails",
            description="The {{ $labels.collector }} collector of pod {{ $labels.pod }} in"
                        " {{ $labels.namespace }} has failed every poll for 5 minutes.",
            meaning="Metrics from that source are stale; the controller may hold.",
            check="trimtab_collector_errors_total by error; the sidecar's log.",
            action="Fix the source (NVML, model-server metrics URL); restart the sidecar."),
        AlertRule(
            alert="TrimtabTargetDown", for_="2m", severity="critical",
            expr=f"up{q.sel(cfg.sidecar_selector)} == 0",
            summary="Prometheus cannot scrape {{ $labels.pod }}",
            description="Target {{ $labels.instance }} (job {{ $labels.job }}, pod"
                        " {{ $labels.pod }} in {{ $labels.namespace }}) has been down for 2"
                        " minutes.",
            meaning="No metrics from this pod: its latency and GPU alerts are blind (and"
                    " inhibited).",
            check="Pod status and restarts; the sidecar's metrics port.",
            action="Restart the pod; if the node is gone, the controller replaces it."),
    ]


def controller_alerts(cfg: MonitoringConfig) -> list[AlertRule]:
    target = q.by("namespace", "workload", "model")
    return [
        AlertRule(
            alert="TrimtabControllerStalled", for_="2m", severity="critical",
            expr=(f"time() - {q.series(n.CTRL_LAST_SUCCESS)}{q.sel(cfg.controller_selector)}"
                  f" > {cfg.controller_stall_s:g}"),
            summary="trimtab controller {{ $labels.pod }} has not finished a loop",
            description="The controller {{ $labels.instance }} last finished a loop without"
                        f" error more than {cfg.controller_stall_s:g} s ago.",
            meaning="Replicas are frozen at their last values while load changes.",
            check="Controller dashboard: loop duration, source errors, leader.",
            action="Check the metrics source (Prometheus) and the controller's log; restart"
                   " it."),
        AlertRule(
            alert="TrimtabControllerActuationFailing", for_="10m", severity="warning",
            expr=(f"sum {target} (rate({q.series(n.CTRL_ACTUATION_ERRORS)}"
                  f"{q.sel(cfg.controller_selector)}[5m])) > 0"),
            summary="trimtab cannot apply decisions to {{ $labels.workload }}",
            description="Actuations for {{ $labels.workload }} ({{ $labels.model }}) in"
                        " {{ $labels.namespace }} have failed for 10 minutes.",
            meaning="The controller decides but the Kubernetes API or the sidecar refuses.",
            check="trimtab_controller_actuation_errors_total by actuator and error; RBAC.",
            action="Fix permissions or the workload; the controller retries on its own."),
        AlertRule(
            alert="TrimtabCapacityExhausted", for_="5m", severity="critical",
            expr=(f"max {target} ({q.series(n.CTRL_DESIRED_REPLICAS)}"
                  f"{q.sel(cfg.controller_selector)})\n>= on (namespace, workload, model)\n"
                  f"max {target} ({q.series(n.CTRL_MAX_REPLICAS)}"
                  f"{q.sel(cfg.controller_selector)})\n"
                  f"and on (namespace, model)\n"
                  f"{q.slo_error_ratio_name('1h')} > {cfg.error_budget:g}"),
            summary="{{ $labels.workload }} is at max replicas while its SLO burns",
            description="The controller wants the maximum replicas for {{ $labels.workload }}"
                        " ({{ $labels.model }}) in {{ $labels.namespace }} and the SLO still"
                        " burns: autoscaling has no room left.",
            meaning="Capacity is exhausted; only a higher bound or less load helps.",
            check="Fleet overview: replicas vs max, request rate, GPU quota.",
            action="Raise the max replicas (if GPUs are free) or shed lower-priority load."),
        AlertRule(
            alert="TrimtabForecastErrorHigh", for_="30m", severity="warning",
            expr=(f"{q.series(n.CTRL_FORECAST_ERROR)}{q.sel(cfg.controller_selector)}"
                  f" > {cfg.forecast_error_ratio:g}"),
            summary="Forecast for {{ $labels.model }} is off",
            description="The load forecast for {{ $labels.workload }} in"
                        " {{ $labels.namespace }} has been off by more than"
                        f" {_pct(cfg.forecast_error_ratio)} for 30 minutes.",
            meaning="Predictive scaling plans for the wrong load; expect late scale-ups.",
            check="Model detail: forecast vs actual load.",
            action="Check for a traffic pattern change; fall back to a reactive policy."),
        AlertRule(
            alert="TrimtabControllerHolding", for_="15m", severity="info",
            expr=(f"{q.series(n.CTRL_HOLDING)}"
                  f"{q.sel(cfg.controller_selector, NOT_WARMUP)}"
                  " == 1"),
            summary="Controller holds {{ $labels.workload }} ({{ $labels.reason }})",
            description="The controller has held the last values of {{ $labels.workload }} in"
                        " {{ $labels.namespace }} for 15 minutes because of"
                        " {{ $labels.reason }}.",
            meaning="Informational: a safe hold; it goes nowhere (dashboards only).",
            check="Controller dashboard: holding reason and source errors.",
            action="None needed unless it lasts; then fix the missing metrics."),
    ]


def all_alerts(cfg: MonitoringConfig) -> list[AlertRule]:
    return [*burn_rate_alerts(cfg), *service_alerts(cfg), *gpu_alerts(cfg),
            *controller_alerts(cfg), *llm_burn_rate_alerts(cfg), *llm_alerts(cfg)]


def alert_groups(cfg: MonitoringConfig) -> dict[str, list[AlertRule]]:
    return {
        "trimtab.slo.alerts": burn_rate_alerts(cfg),
        "trimtab.service.alerts": service_alerts(cfg),
        "trimtab.gpu.alerts": gpu_alerts(cfg),
        "trimtab.controller.alerts": controller_alerts(cfg),
        "trimtab.llm.slo.alerts": llm_burn_rate_alerts(cfg),
        "trimtab.llm.alerts": llm_alerts(cfg),
    }
