"""Recording rules: the expressions behind the recorded series that promql.py names."""
from __future__ import annotations

from dataclasses import dataclass

from trimtab.alerts import promql as q
from trimtab.alerts.config import MonitoringConfig
from trimtab.collectors import names as n


@dataclass(frozen=True)
class RecordingRule:
    record: str
    expr: str


def request_rules(cfg: MonitoringConfig) -> list[RecordingRule]:
    """Rate, latency histogram, p99, shed ratio and queue depth per (namespace, model)."""
    return [
        RecordingRule(q.REQUESTS_RATE, q.requests_rate(cfg, q.RATE_WINDOW)),
        # Reads raw buckets, not another rule, so `promtool tsdb create-blocks-from rules`
        # can backfill it in one pass (it evaluates each rule on its own).
        RecordingRule(q.LATENCY_P99, "histogram_quantile(0.99, "
                      f"{q.latency_bucket_rate(cfg, n.REQUEST_DURATION, q.RATE_WINDOW)})"),
        RecordingRule(q.SHED_RATIO, q.shed_ratio(cfg, q.RATE_WINDOW)),
        RecordingRule(q.QUEUE_DEPTH,
                      f"sum {q.by(*q.MODEL_LEVEL)} ({n.QUEUE_DEPTH}{q.sel(cfg.sidecar_selector)})"),
    ]


def slo_rules(cfg: MonitoringConfig) -> list[RecordingRule]:
    """SLO error ratio over every burn-rate window."""
    return [RecordingRule(q.slo_error_ratio_name(w), q.slo_error_ratio(cfg, w))
            for w in q.slo_windows(cfg)]


def gpu_rules(cfg: MonitoringConfig) -> list[RecordingRule]:
    used = q.series(n.GPU_MEMORY_USED) + q.sel(cfg.sidecar_selector)
    total = q.series(n.GPU_MEMORY_TOTAL) + q.sel(cfg.sidecar_selector)
    return [RecordingRule(q.GPU_MEMORY_RATIO, f"{used} / {total}")]


def llm_rules(cfg: MonitoringConfig) -> list[RecordingRule]:
    """TTFT and TPOT p99 and error ratios over every burn-rate window, the KV-cache usage of
    the fullest pod and the preemption rate, per (namespace, model)."""
    out = []
    for slo, metric in q.LLM_SLOS.items():
        out.append(RecordingRule(q.llm_p99_name(slo), "histogram_quantile(0.99, "
                                 f"{q.latency_bucket_rate(cfg, metric, q.RATE_WINDOW)})"))
        out += [RecordingRule(q.llm_slo_error_ratio_name(slo, w),
                              q.llm_slo_error_ratio(cfg, slo, w)) for w in q.slo_windows(cfg)]
    out.append(RecordingRule(q.KV_CACHE_USAGE_MAX, f"max {q.by(*q.MODEL_LEVEL)} "
                             f"({n.KV_CACHE_USAGE}{q.sel(cfg.sidecar_selector)})"))
    out.append(RecordingRule(q.PREEMPTIONS_RATE, q.sum_rate(
        q.series(n.LLM_PREEMPTIONS), (cfg.sidecar_selector,), q.RATE_WINDOW)))
    return out


def recording_groups(cfg: MonitoringConfig) -> dict[str, list[RecordingRule]]:
    return {
        "trimtab.requests.rules": request_rules(cfg),
        "trimtab.slo.rules": slo_rules(cfg),
        "trimtab.gpu.rules": gpu_rules(cfg),
        "trimtab.llm.rules": llm_rules(cfg),
    }
