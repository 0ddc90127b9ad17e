"""PromQL shared by rules and dashboards: series, selectors, the SLI, the recorded series' names.

Dashboards may import this module and config.py of alerts, nothing else of it: what a panel and
an alert both read (what counts as a bad request, which windows are recorded, under which
names) is written here once.
"""
from __future__ import annotations

from prometheus_client.utils import floatToGoString

from trimtab.alerts.config import MonitoringConfig
from trimtab.collectors import names as n

MODEL_LEVEL = ("namespace", "model")
OK_OUTCOME = "ok"
SHED_OUTCOMES = ("shed", "timeout")


def series(metric: str, suffix: str = "") -> str:
    """Exposed series name of a names.py metric: ``series(REQUESTS)`` -> ``trimtab_requests_total``.

    ``suffix`` picks one of a histogram's series (``_bucket``, ``_sum``, ``_count``).
    """
    exposed = n.BY_NAME[metric].exposed
    if suffix:
        wanted = metric + suffix
        if wanted not in exposed:
            raise KeyError(f"{metric} has no series {wanted}; it exposes {exposed}")
        return wanted
    if len(exposed) != 1:
        raise KeyError(f"{metric} is a histogram; name a suffix from {exposed}")
    return exposed[0]


def sel(*matchers: str) -> str:
    """Join label matchers into a selector body, dropping empty ones."""
    return "{" + ", ".join(m for m in matchers if m) + "}"


def le_label(bound_s: float) -> str:
    """The ``le`` label value client_python writes for a bucket bound (0.5 -> "0.5", 1 -> "1.0")."""
    return floatToGoString(bound_s)


def by(*labels: str) -> str:
    return "by (" + ", ".join(labels) + ")"


def sum_rate(metric_series: str, matchers: tuple[str, ...], window: str,
             labels: tuple[str, ...] = MODEL_LEVEL) -> str:
    return f"sum {by(*labels)} (rate({metric_series}{sel(*matchers)}[{window}]))"


def or_zero(expr: str, like: str, labels: tuple[str, ...] = MODEL_LEVEL) -> str:
    """``expr``, or 0 for every group ``like`` has, so a counter child never seen reads as 0.

    Example: a model that never had an error has no ``outcome="error"`` series at all; without
    this, the error ratio would be absent instead of 0 and SLO panels would show no data.
    """
    return f"({expr} or on ({', '.join(labels)}) (0 * {like}))"


def requests_rate(cfg: MonitoringConfig, window: str, extra: tuple[str, ...] = (),
                  labels: tuple[str, ...] = MODEL_LEVEL) -> str:
    return sum_rate(series(n.REQUESTS), (cfg.sidecar_selector, *extra), window, labels)


def bad_requests_rate(cfg: MonitoringConfig, window: str,
                      labels: tuple[str, ...] = MODEL_LEVEL) -> str:
    """Requests that missed the SLO: not ``ok``, plus ``ok`` ones slower than the threshold.

    Slow = all observed durations minus those in the bucket at the SLO threshold (which must
    be a bucket bound; names.latency_buckets_s guarantees it for the sidecar).
    """
    total = requests_rate(cfg, window, labels=labels)
    failed = or_zero(requests_rate(cfg, window, (f'outcome!="{OK_OUTCOME}"',), labels),
                     total, labels)
    count = sum_rate(series(n.REQUEST_DURATION, "_count"), (cfg.sidecar_selector,), window,
                     labels)
    fast = sum_rate(series(n.REQUEST_DURATION, "_bucket"),
                    (cfg.sidecar_selector, f'le="{le_label(cfg.slo_latency_s)}"'), window, labels)
    return f"{failed} + ({count} - {fast})"


def slo_error_ratio(cfg: MonitoringConfig, window: str,
                    labels: tuple[str, ...] = MODEL_LEVEL) -> str:
    """Fraction of requests that missed the SLO over ``window``, 0 to 1."""
    return (f"clamp_max(({bad_requests_rate(cfg, window, labels)}) / "
            f"{requests_rate(cfg, window, labels=labels)}, 1)")


def shed_ratio(cfg: MonitoringConfig, window: str) -> str:
    total = requests_rate(cfg, window)
    outcomes = "|".join(SHED_OUTCOMES)
    shed = or_zero(requests_rate(cfg, window, (f'outcome=~"{outcomes}"',)), total)
    return f"{shed} / {total}"


def latency_bucket_rate(cfg: MonitoringConfig, metric: str, window: str,
                        labels: tuple[str, ...] = MODEL_LEVEL) -> str:
    return sum_rate(series(metric, "_bucket"), (cfg.sidecar_selector,), window, (*labels, "le"))


# --- Recorded series (``level:metric:operations``): recording.py records them, alerts and
# dashboards read them by these names.
RATE_WINDOW = "5m"


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


# --- LLM engines (trimtab_llm_*): the TTFT and TPOT SLIs, KV-cache pressure, preemptions -----
# Each per-request LLM SLO by its key: the engine histogram it is read from.
LLM_SLOS: dict[str, str] = {"ttft": n.LLM_TTFT, "tpot": n.LLM_TPOT}


def llm_slo_bound_s(cfg: MonitoringConfig, slo: str) -> float:
    return {"ttft": cfg.slo_ttft_s, "tpot": cfg.slo_tpot_s}[slo]


def llm_slo_target(cfg: MonitoringConfig, slo: str) -> float:
    return {"ttft": cfg.slo_ttft_target, "tpot": cfg.slo_tpot_target}[slo]


def llm_slo_error_ratio(cfg: MonitoringConfig, slo: str, window: str,
                        labels: tuple[str, ...] = MODEL_LEVEL) -> str:
    """Fraction of requests over ``window`` whose TTFT (or TPOT) exceeded its bound, 0 to 1.

    Slow = all observed minus those in the bucket at the bound (an engine bound, which the
    config checks). E.g. 60 first tokens a minute, 45 within 1 s: (1.0 - 0.75) / 1.0 = 0.25.
    The engine times TTFT from when it got the request: a wait at the sidecar's door before
    it is not in it (the end-to-end SLO, from the proxy's histogram, covers that wait).
    """
    metric = LLM_SLOS[slo]
    count = sum_rate(series(metric, "_count"), (cfg.sidecar_selector,), window, labels)
    fast = sum_rate(series(metric, "_bucket"), (
        cfg.sidecar_selector, f'le="{le_label(llm_slo_bound_s(cfg, slo))}"'), window, labels)
    return f"({count} - {fast}) / {count}"


def llm_slo_error_ratio_name(slo: str, window: str) -> str:
    return f"namespace_model:trimtab_{slo}_slo_errors:ratio_rate{window}"


def llm_p99_name(slo: str) -> str:
    return f"namespace_model:{LLM_SLOS[slo]}:p99_{RATE_WINDOW}"


KV_CACHE_USAGE_MAX = f"namespace_model:{n.KV_CACHE_USAGE}:max"
PREEMPTIONS_RATE = f"namespace_model:{n.LLM_PREEMPTIONS}:rate{RATE_WINDOW}"
