"""Inputs for the generated promtool tests: one case per alert name and per recording-rule family.

Every alert case holds a firing target and a healthy twin that must never fire, and names the
first evaluation (``onset``) at which the expression becomes true; the generator then checks
each rule one interval before ``onset + for`` (silent) and one after (firing).

Numbers are chosen so PromQL arithmetic is exact in binary floating point (promtool 2.42
compares sample values exactly): e.g. a counter growing 60 per minute has rate 1.0, one growing
7.5 per minute has rate 0.125.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from trimtab.alerts import promql as q
from trimtab.alerts.config import MonitoringConfig
from trimtab.collectors import names as n

NS = "prod"
SIDECAR = {"job": "trimtab-sidecar", "namespace": NS}
CONTROLLER = {"job": "trimtab-controller", "instance": "10.0.0.9:9100",
              "pod": "trimtab-controller-0"}
LONG_STEPS = 3 * 1440 + 4 * 60  # enough 1m samples for the 3d window plus its 3h ``for:``


def s(metric: str, **labels: str) -> str:
    """A promtool series selector: ``s("up", job="x")`` -> ``up{job="x"}``."""
    body = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{metric}{{{body}}}"


def counter(per_minute: float, steps: int = LONG_STEPS, step_min: int = 1) -> str:
    """A counter sampled every ``step_min`` minutes, growing ``per_minute`` a minute."""
    return f"0+{per_minute * step_min:g}x{steps // step_min}"


_counter = counter


def gauge(value: float, steps: int = LONG_STEPS) -> str:
    return f"{value:g}x{steps}"


@dataclass(frozen=True)
class AlertCase:
    alert: str
    series: tuple[tuple[str, str], ...]
    onset_min: int
    labels: dict[str, str] = field(default_factory=dict)
    step_min: int = 1      # sample interval of the input series


@dataclass(frozen=True)
class RecordCase:
    name: str
    series: tuple[tuple[str, str], ...]
    eval_min: int
    expected: dict[str, list[tuple[dict[str, str], float]]]
    step_min: int = 1


def bucket_quantile(quantile: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile over cumulative (upper bound, count) pairs, same float steps."""
    total = buckets[-1][1]
    rank = quantile * total
    b = next(i for i, (_, c) in enumerate(buckets[:-1]) if c >= rank)
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


def _traffic(model: str, ok: float, bad: float = 0, fast: float | None = None,
             outcome: str = "error", pod: str = "p0", step_min: int = 1
             ) -> list[tuple[str, str]]:
    """Request counters per minute: ok ones, failed ones, and how many ok were within the SLO."""
    def counter(per_minute: float) -> str:
        return _counter(per_minute, step_min=step_min)

    labels = {**SIDECAR, "model": model, "pod": pod}
    le = q.le_label(0.5)
    out = [(s(q.series(n.REQUESTS), **labels, outcome="ok"), counter(ok)),
           (s(q.series(n.REQUEST_DURATION, "_count"), **labels), counter(ok)),
           (s(q.series(n.REQUEST_DURATION, "_bucket"), **labels, le=le),
            counter(ok if fast is None else fast)),
           # every ok request within 1 s, so p99 interpolates inside (0.5, 1] when slow
           (s(q.series(n.REQUEST_DURATION, "_bucket"), **labels, le=q.le_label(1.0)), counter(ok)),
           (s(q.series(n.REQUEST_DURATION, "_bucket"), **labels, le="+Inf"), counter(ok))]
    if bad:
        out.append((s(q.series(n.REQUESTS), **labels, outcome=outcome), counter(bad)))
    return out


def _llm_slo_traffic(cfg: MonitoringConfig, slo: str, model: str, count: float, fast: float,
                     step_min: int = 1) -> list[tuple[str, str]]:
    """An engine histogram's count and the bucket at the SLO bound, per minute."""
    metric = q.LLM_SLOS[slo]
    labels = {**SIDECAR, "model": model, "pod": "p0"}
    le = q.le_label(q.llm_slo_bound_s(cfg, slo))
    return [(s(q.series(metric, "_count"), **labels), counter(count, step_min=step_min)),
            (s(q.series(metric, "_bucket"), **labels, le=le), counter(fast, step_min=step_min))]


def _ctrl(metric: str, model: str, value: str, **extra: str) -> tuple[str, str]:
    return (s(metric, **CONTROLLER, namespace=NS, workload=model, model=model, **extra), value)


def alert_cases(cfg: MonitoringConfig) -> list[AlertCase]:
    gpu = {**SIDECAR, "pod": "p0", "instance": "10.0.0.1:9400"}
    model = {"namespace": NS, "model": "hot"}
    return [
        # 2m samples keep the 3-day evaluation cheap; the expression is first true at 2m.
        AlertCase("TrimtabErrorBudgetBurn", onset_min=2, labels=model, step_min=2, series=(
            *_traffic("hot", ok=45, bad=15, step_min=2),
            *_traffic("calm", ok=60, step_min=2))),
        AlertCase("TrimtabLatencyP99OverSLO", onset_min=1, labels=model, series=(
            *_traffic("hot", ok=60, fast=0), *_traffic("calm", ok=60))),
        AlertCase("TrimtabQueueBacklogGrowing", onset_min=6, labels=model, series=(
            # grows 2 a minute: 12 > 10 at minute 6; calm is deep but flat (deriv 0)
            (s(n.QUEUE_DEPTH, **SIDECAR, model="hot", pod="p0"), f"0+2x{60}"),
            (s(n.QUEUE_DEPTH, **SIDECAR, model="calm", pod="p0"), gauge(50, 60)))),
        AlertCase("TrimtabRequestsShed", onset_min=1, labels=model, series=(
            *_traffic("hot", ok=54, bad=6, outcome="shed"), *_traffic("calm", ok=60))),
        AlertCase("TrimtabGPUMemoryNearFull", onset_min=0,
                  labels={**gpu, "gpu": "0", "uuid": "GPU-0"}, series=(
            (s(n.GPU_MEMORY_USED, **gpu, gpu="0", uuid="GPU-0"), gauge(99, 60)),
            (s(n.GPU_MEMORY_TOTAL, **gpu, gpu="0", uuid="GPU-0"), gauge(100, 60)),
            (s(n.GPU_MEMORY_USED, **gpu, gpu="1", uuid="GPU-1"), gauge(50, 60)),
            (s(n.GPU_MEMORY_TOTAL, **gpu, gpu="1", uuid="GPU-1"), gauge(100, 60)))),
        AlertCase("TrimtabGPULost", onset_min=0, labels={**gpu, "gpu": "0", "uuid": "GPU-0"},
                  series=((s(n.GPU_UP, **gpu, gpu="0", uuid="GPU-0"), gauge(0, 60)),
                          (s(n.GPU_UP, **gpu, gpu="1", uuid="GPU-1"), gauge(1, 60)))),
        AlertCase("TrimtabCollectorFailing", onset_min=0, labels={**gpu, "collector": "nvml"},
                  series=((s(n.COLLECTOR_SUCCESS, **gpu, collector="nvml"), gauge(0, 60)),
                          (s(n.COLLECTOR_SUCCESS, **gpu, collector="proxy"), gauge(1, 60)))),
        AlertCase("TrimtabTargetDown", onset_min=0, labels={**gpu, "model": "hot"},
                  series=((s("up", **gpu, model="hot"), gauge(0, 60)),
                          (s("up", **SIDECAR, pod="p1", instance="10.0.0.2:9400",
                             model="calm"), gauge(1, 60)))),
        AlertCase("TrimtabControllerStalled", onset_min=3, labels=CONTROLLER, series=(
            # stuck at t=0: time() - 0 > 120 first at minute 3; the healthy one keeps up
            (s(n.CTRL_LAST_SUCCESS, **CONTROLLER), gauge(0, 60)),
            (s(n.CTRL_LAST_SUCCESS, **{**CONTROLLER, "pod": "ok"}), f"0+60x{60}"))),
        AlertCase("TrimtabControllerActuationFailing", onset_min=1,
                  labels={**model, "workload": "hot"}, series=(
            _ctrl(q.series(n.CTRL_ACTUATION_ERRORS), "hot", counter(1, 60),
                  actuator="k8s", error="forbidden"),
            _ctrl(q.series(n.CTRL_ACTUATION_ERRORS), "calm", gauge(3, 60),
                  actuator="k8s", error="forbidden"))),
        AlertCase("TrimtabCapacityExhausted", onset_min=1, labels={**model, "workload": "hot"},
                  series=(
            *_traffic("hot", ok=45, bad=15), *_traffic("calm", ok=60),
            _ctrl(n.CTRL_DESIRED_REPLICAS, "hot", gauge(8), policy="trimtab"),
            _ctrl(n.CTRL_MAX_REPLICAS, "hot", gauge(8)),
            # calm is at max too, but meets its SLO: no alert
            _ctrl(n.CTRL_DESIRED_REPLICAS, "calm", gauge(8), policy="trimtab"),
            _ctrl(n.CTRL_MAX_REPLICAS, "calm", gauge(8)))),
        AlertCase("TrimtabForecastErrorHigh", onset_min=0,
                  labels={**CONTROLLER, **model, "workload": "hot"}, series=(
            _ctrl(n.CTRL_FORECAST_ERROR, "hot", gauge(0.75, 60)),
            _ctrl(n.CTRL_FORECAST_ERROR, "calm", gauge(0.25, 60)))),
        # A quarter of first tokens (of tokens' times) over the bound: every pair burns.
        *[AlertCase(f"Trimtab{slo.upper()}BudgetBurn", onset_min=2, labels=model, step_min=2,
                    series=(*_llm_slo_traffic(cfg, slo, "hot", 60, 45, step_min=2),
                            *_llm_slo_traffic(cfg, slo, "calm", 60, 60, step_min=2)))
          for slo in q.LLM_SLOS],
        AlertCase("TrimtabKVCachePressure", onset_min=0, labels=model, series=(
            # the fullest pod counts: hot's p0 is over, its p1 and calm are not
            (s(n.KV_CACHE_USAGE, **SIDECAR, model="hot", pod="p0"), gauge(0.95, 60)),
            (s(n.KV_CACHE_USAGE, **SIDECAR, model="hot", pod="p1"), gauge(0.5, 60)),
            (s(n.KV_CACHE_USAGE, **SIDECAR, model="calm", pod="p0"), gauge(0.875, 60)))),
        AlertCase("TrimtabLLMPreempting", onset_min=1, labels=model, series=(
            (s(q.series(n.LLM_PREEMPTIONS), **SIDECAR, model="hot", pod="p0"), counter(1, 60)),
            # preempted once long ago, none since: rate 0
            (s(q.series(n.LLM_PREEMPTIONS), **SIDECAR, model="calm", pod="p0"),
             gauge(3, 60)))),
        AlertCase("TrimtabControllerHolding", onset_min=0,
                  labels={**CONTROLLER, **model, "workload": "hot", "reason": "missing"},
                  series=(
            _ctrl(n.CTRL_HOLDING, "hot", gauge(1, 60), reason="missing"),
            _ctrl(n.CTRL_HOLDING, "calm", gauge(1, 60), reason="warmup"))),
    ]


def record_cases(cfg: MonitoringConfig) -> list[RecordCase]:
    hot = {"namespace": NS, "model": "hot"}
    calm = {"namespace": NS, "model": "calm"}
    bucket = q.series(n.REQUEST_DURATION, "_bucket")
    le_hist = {"0.25": (0, 60), "0.5": (30, 60), "1.0": (60, 60), "+Inf": (60, 60)}
    latency = [(s(bucket, **SIDECAR, model=m, pod="p0", le=le), counter(per[i], 10))
               for le, per in le_hist.items() for i, m in enumerate(("hot", "calm"))]
    requests = [
        (s(q.series(n.REQUESTS), **SIDECAR, model="hot", pod="p0", outcome=o), counter(c, 10))
        for o, c in (("ok", 45), ("shed", 7.5), ("timeout", 7.5))]
    requests.append((s(q.series(n.REQUESTS), **SIDECAR, model="calm", pod="p0", outcome="ok"),
                     counter(60, 10)))
    queue = [(s(n.QUEUE_DEPTH, **SIDECAR, model="hot", pod=p), gauge(v, 10))
             for p, v in (("p0", 3), ("p1", 4))]
    bounds = [0.25, 0.5, 1.0, float("inf")]
    hot_p99 = bucket_quantile(0.99, list(zip(bounds, [0.0, 0.5, 1.0, 1.0])))
    calm_p99 = bucket_quantile(0.99, list(zip(bounds, [1.0, 1.0, 1.0, 1.0])))
    slo_series = (*_traffic("hot", ok=45, bad=7.5, fast=37.5, step_min=5),
                  *_traffic("calm", ok=60, step_min=5))
    gpu = {**SIDECAR, "pod": "p0", "instance": "10.0.0.1:9400", "gpu": "0", "uuid": "GPU-0"}
    # The engine histograms on the latency case's shape (same p99s), bounds scaled to each.
    llm_hist = [(s(q.series(metric, "_bucket"), **SIDECAR, model=m, pod="p0", le=le),
                 counter(per[i], 10))
                for metric in q.LLM_SLOS.values()
                for le, per in le_hist.items() for i, m in enumerate(("hot", "calm"))]
    kv = [(s(n.KV_CACHE_USAGE, **SIDECAR, model="hot", pod=p), gauge(v, 10))
          for p, v in (("p0", 0.75), ("p1", 0.5))]
    preempt = [(s(q.series(n.LLM_PREEMPTIONS), **SIDECAR, model="hot", pod="p0"),
                counter(60, 10))]
    return [
        RecordCase("requests", (*latency, *requests, *queue), eval_min=10, expected={
            q.REQUESTS_RATE: [(hot, 1.0), (calm, 1.0)],
            q.LATENCY_P99: [(hot, hot_p99), (calm, calm_p99)],
            q.SHED_RATIO: [(hot, 0.25), (calm, 0.0)],
            q.QUEUE_DEPTH: [(hot, 7.0)],
        }),
        # hot per second: 0.875 requests, 0.125 failed, 0.75 ok of which 0.625 within the
        # SLO: bad = 0.125 + (0.75 - 0.625), ratio = bad / 0.875 (same float steps as PromQL).
        RecordCase("slo", slo_series, eval_min=3 * 1440, expected={
            q.slo_error_ratio_name(w): [(hot, (0.125 + (0.75 - 0.625)) / 0.875),
                                          (calm, 0.0)]
            for w in q.slo_windows(cfg)}, step_min=5),
        RecordCase("llm", (*llm_hist, *kv, *preempt), eval_min=10, expected={
            **{q.llm_p99_name(slo): [(hot, hot_p99), (calm, calm_p99)] for slo in q.LLM_SLOS},
            q.KV_CACHE_USAGE_MAX: [(hot, 0.75)],
            q.PREEMPTIONS_RATE: [(hot, 1.0)],
        }),
        # hot: 60 a minute, 45 within the bound: (1.0 - 0.75) / 1.0 on every window.
        RecordCase("llm slo", tuple(
            x for slo in q.LLM_SLOS for x in (*_llm_slo_traffic(cfg, slo, "hot", 60, 45, 5),
                                              *_llm_slo_traffic(cfg, slo, "calm", 60, 60, 5))),
            eval_min=3 * 1440, step_min=5, expected={
                q.llm_slo_error_ratio_name(slo, w): [(hot, 0.25), (calm, 0.0)]
                for slo in q.LLM_SLOS for w in q.slo_windows(cfg)}),
        RecordCase("gpu", ((s(n.GPU_MEMORY_USED, **gpu), gauge(3, 10)),
                           (s(n.GPU_MEMORY_TOTAL, **gpu), gauge(4, 10))), eval_min=5,
                   expected={q.GPU_MEMORY_RATIO: [(gpu, 0.75)]}),
    ]
