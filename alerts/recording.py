"""Recording rules (``level:metric:operations``) that alerts and dashboards read instead of raw series."""
from __future__ import annotations

from dataclasses import dataclass

from trimtab.alerts import promql as q
from trimtab.alerts.config import MonitoringConfig
from trimtab.collectors import names as n

RATE_WINDOW = "5m"


@dataclass(frozen=True)
class RecordingRule:
    record: str
    expr: str


def slo_error_ratio_name(window: str) -> str:
    return f"namespace_model:trimtab_slo_errors:ratio_rate{window}"


REQUESTS_RATE = f"namespace_model:{n.REQUESTS}:rate{RATE_WINDOW}"
LATENCY_P99 = f"namespace_model:{n.REQUEST_DURATION}:p99_{RATE_WINDOW}"
SHED_RATIO = f"namespace_model:trimtab_requests_shed:ratio_rate{RATE_WINDOW}"
QUEUE_DEPTH = f"namespace_model:{n.QUEUE_DEPTH}:sum"
GPU_MEMORY_RATIO = "namespace_pod_gpu:trimtab_gpu_memory_used:ratio"


def slo_windows(cfg: MonitoringConfig) -> tuple[str, ...]:
    """Every window a burn-rate alert reads, shortest first (5m, 30m, 1h, 2h, 6h, 1d, 3d)."""
    seen: dict[str, None] = {RATE_WINDOW: None}
    for w in cfg.burn_windows:
        seen[w.short] = None
        seen[w.long] = None
    return tuple(sorted(seen, key=duration_s))


def duration_s(text: str) -> float:
    """Seconds in a simple PromQL duration like ``90s``, ``5m``, ``6h``, ``3d`` or ``1w``."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    for suffix in ("ms", "s", "m", "h", "d", "w"):
        if text.endswith(suffix) and text[: -len(suffix)].isdigit():
            return int(text[: -len(suffix)]) * units[suffix]
    raise ValueError(f"duration {text!r}: must be digits and one unit of ms, s, m, h, d, w")


def request_rules(cfg: MonitoringConfig) -> list[RecordingRule]:
    """Rate, latency histogram, p99, shed ratio and queue depth per (namespace, model)."""
    return [
        RecordingRule(REQUESTS_RATE, q.requests_rate(cfg, RATE_WINDOW)),
        # Reads raw buckets, not another rule, so `promtool tsdb create-blocks-from rules`
        # can backfill it in one pass (it evaluates each rule on its own).
        RecordingRule(LATENCY_P99, "histogram_quantile(0.99, "
                      f"{q.latency_bucket_rate(cfg, n.REQUEST_DURATION, RATE_WINDOW)})"),
        RecordingRule(SHED_RATIO, q.shed_ratio(cfg, RATE_WINDOW)),
        RecordingRule(QUEUE_DEPTH,
                      f"sum {q.by(*q.MODEL_LEVEL)} ({n.QUEUE_DEPTH}{q.sel(cfg.sidecar_selector)})"),
    ]


def slo_rules(cfg: MonitoringConfig) -> list[RecordingRule]:
    """SLO error ratio over every burn-rate window."""
    return [RecordingRule(slo_error_ratio_name(w), q.slo_error_ratio(cfg, w))
            for w in slo_windows(cfg)]


def gpu_rules(cfg: MonitoringConfig) -> list[RecordingRule]:
    used = q.series(n.GPU_MEMORY_USED) + q.sel(cfg.sidecar_selector)
    total = q.series(n.GPU_MEMORY_TOTAL) + q.sel(cfg.sidecar_selector)
    return [RecordingRule(GPU_MEMORY_RATIO, f"{used} / {total}")]


def recording_groups(cfg: MonitoringConfig) -> dict[str, list[RecordingRule]]:
    return {
        "trimtab.requests.rules": request_rules(cfg),
        "trimtab.slo.rules": slo_rules(cfg),
        "trimtab.gpu.rules": gpu_rules(cfg),
    }
