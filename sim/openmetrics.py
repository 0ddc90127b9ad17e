"""Write a replay's metrics as timestamped OpenMetrics text that promtool can backfill.

The series carry the names in collectors/names.py and the labels a real fleet would have
(``namespace="sim"``, ``model``, ``job``, ``pod``, ``instance``), so the shipped dashboards and
alert rules run on a simulated incident once it is loaded with
``promtool tsdb create-blocks-from openmetrics FILE DIR``. The fleet is exported as one pod
(``sim-fleet``) carrying fleet totals: sums over pods, as the dashboards take, are the same.

An LLM replay also exports what its vLLM engines would have (``vllm:*``, labelled
``model_name``, job ``vllm``): the running/waiting/KV-cache gauges, the token, preemption,
prefix-cache and success counters, and the TTFT, ITL, TPOT, e2e and queue-time histograms on
vLLM's own bounds plus the replay's latency buckets (so every SLO threshold is a bound), and
the sidecar's ``trimtab_kv_cache_usage_ratio`` and ``trimtab_time_to_first_byte_seconds``
read from them. The replay collects them per tick with ``llm_om_row``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from prometheus_client.utils import floatToGoString

from trimtab.collectors import names as N
from trimtab.collectors.names import BATCH_SIZE_BUCKETS, BY_NAME
from trimtab.sim.llm.types import ITL_BOUNDS_S
from trimtab.sim.snapshot import latency_histogram, rebucket

if TYPE_CHECKING:      # replay imports this module: no import cycle at run time
    from trimtab.sim.fleet.types import WindowStats
    from trimtab.sim.replay import RunResult

SIDECAR_JOB = "trimtab-sidecar"
CONTROLLER_JOB = "trimtab-controller"
VLLM_JOB = "vllm"
MAX_STEP_S = 15.0    # at most one sample per series every 15 s (a usual scrape interval)

# vLLM's own histogram bounds (vllm/v1/metrics/loggers.py, also in vLLM 0.10 to 0.11).
VLLM_TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
VLLM_ITL_BUCKETS_S: tuple[float, ...] = (          # inter-token and time per output token
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0)
VLLM_REQUEST_BUCKETS_S: tuple[float, ...] = (      # e2e and queue time
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0)
# (family, om key, vLLM's bounds, help); the om keys hold per-tick counts and sums.
VLLM_HISTOGRAMS: tuple[tuple[str, str, tuple[float, ...], str], ...] = (
    ("vllm:time_to_first_token_seconds", "vllm_ttft", VLLM_TTFT_BUCKETS_S,
     "Histogram of time to first token in seconds."),
    ("vllm:inter_token_latency_seconds", "vllm_itl", VLLM_ITL_BUCKETS_S,
     "Histogram of inter-token latency in seconds."),
    ("vllm:request_time_per_output_token_seconds", "vllm_tpot", VLLM_ITL_BUCKETS_S,
     "Histogram of time_per_output_token_seconds per request."),
    ("vllm:e2e_request_latency_seconds", "vllm_e2e", VLLM_REQUEST_BUCKETS_S,
     "Histogram of e2e request latency in seconds."),
    ("vllm:request_queue_time_seconds", "vllm_queue", VLLM_REQUEST_BUCKETS_S,
     "Histogram of time spent in WAITING phase for request."),
)
# (family, om key, help, extra labels) of vLLM's counters (exposed with _total).
VLLM_COUNTERS: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("vllm:prompt_tokens", "vllm_prompt_tokens", "Number of prefill tokens processed.", {}),
    ("vllm:generation_tokens", "vllm_generation_tokens",
     "Number of generation tokens processed.", {}),
    ("vllm:num_preemptions", "vllm_preemptions", "Cumulative number of preemption from the "
     "engine.", {}),
    ("vllm:prefix_cache_queries", "vllm_prefix_queries", "Prefix cache queries, in terms of "
     "number of queried tokens.", {}),
    ("vllm:prefix_cache_hits", "vllm_prefix_hits", "Prefix cache hits, in terms of number of "
     "cached tokens.", {}),
    # Every simulated request makes exactly its output length, as with ignore_eos.
    ("vllm:request_success", "vllm_success", "Count of successfully processed requests.",
     {"finished_reason": "length"}),
)
VLLM_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("vllm:num_requests_running", "vllm_running_now",
     "Number of requests in model execution batches."),
    ("vllm:num_requests_waiting", "vllm_waiting_now", "Number of requests waiting to be "
     "processed."),
    ("vllm:kv_cache_usage_perc", "vllm_kv_usage_now", "KV-cache usage. 1 means 100 percent "
     "usage."),
)


def vllm_bounds(own_s: tuple[float, ...], latency_buckets_s: tuple[float, ...]
                ) -> tuple[float, ...]:
    """vLLM's bounds of a histogram plus the replay's latency buckets, sorted and unique."""
    return tuple(sorted(set(own_s) | {float(b) for b in latency_buckets_s}))


def llm_om_row(om: dict[str, list[Any]], w: "WindowStats",
               buckets: tuple[float, ...]) -> None:
    """Append one tick's vLLM counts (``w.llm``) to the replay's OpenMetrics rows; nothing
    for a request-level window. ``buckets``: the replay's latency buckets, as ``render``
    gets them in ``result.extra["latency_buckets_s"]``."""
    llm = getattr(w, "llm", None)
    if llm is None:
        return
    samples = {"vllm_ttft": llm.ttft_s, "vllm_tpot": llm.tpot_s, "vllm_e2e": w.latencies_s,
               "vllm_queue": llm.queue_wait_s}
    for _, key, own, _ in VLLM_HISTOGRAMS:
        bounds = vllm_bounds(own, buckets)
        if key == "vllm_itl":
            counts = rebucket(llm.itl_counts, ITL_BOUNDS_S, bounds).counts
            total_s = float(llm.itl_sum_s)
        else:
            x = np.asarray(samples[key], dtype=float)
            counts = latency_histogram(x, bounds).counts
            total_s = float(x.sum())
        om.setdefault(key + "_counts", []).append(counts)
        om.setdefault(key + "_sum_s", []).append(total_s)
    capacity = llm.num_blocks * w.ready
    for key, val in (
            ("vllm_prompt_tokens", llm.prompt_tokens),
            ("vllm_generation_tokens", llm.output_tokens),
            ("vllm_preemptions", llm.preemptions), ("vllm_prefix_queries", llm.prefix_queries),
            ("vllm_prefix_hits", llm.prefix_hits), ("vllm_success", w.completions),
            ("vllm_running_now", llm.running_now), ("vllm_waiting_now", llm.waiting_now),
            ("vllm_kv_usage_now", min(1.0, llm.blocks_used_now / capacity) if capacity > 0
             else math.nan)):
        om.setdefault(key, []).append(val)


def _labels(d: dict[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return "{" + ",".join(f'{k}="{esc(str(v))}"' for k, v in d.items()) + "}"


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(float(x))


def _keep(time_s: np.ndarray) -> np.ndarray:
    """Indices of ticks to export: every tick, but no two closer than MAX_STEP_S."""
    keep, last = [], -math.inf
    for i, t in enumerate(time_s):
        if t - last >= MAX_STEP_S - 1e-9:
            keep.append(i)
            last = t
    return np.asarray(keep, dtype=np.int64)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str | None = None) -> None:
        if help_text is None:
            help_text = BY_NAME[name].help if name in BY_NAME else name
        self.lines.append(f"# TYPE {name} {kind}")
        self.lines.append(f"# HELP {name} {help_text}")

    def series(self, name: str, labels: dict[str, str], values: Iterable[float],
               ts: np.ndarray) -> None:
        lab = _labels(labels)
        for v, t in zip(values, ts):
            if not math.isnan(v):
                self.lines.append(f"{name}{lab} {_num(v)} {t:.3f}")

    def histogram(self, fam: str, labels: dict[str, str], counts: np.ndarray,
                  sums: np.ndarray, les: Iterable[float], ts: np.ndarray) -> None:
        """One histogram child: ``counts`` (ticks x buckets) and ``sums`` already cumulative
        over time; one MetricPoint (buckets, count, sum) per timestamp."""
        c = np.cumsum(counts, axis=1)                    # cumulative over le
        les_all = list(les) + [math.inf]
        lab = _labels(labels)[1:-1]
        for j in range(len(ts)):
            for i, le in enumerate(les_all):
                self.lines.append(f'{fam}_bucket{{{lab},le="{floatToGoString(float(le))}"}} '
                                  f"{int(c[j, i])} {ts[j]:.3f}")
            self.lines.append(f"{fam}_count{{{lab}}} {int(c[j, -1])} {ts[j]:.3f}")
            self.lines.append(f"{fam}_sum{{{lab}}} {_num(float(sums[j]))} {ts[j]:.3f}")


def render(result: RunResult, *, model: str, end_unix_s: float, max_replicas: int,
           gpu_memory_bytes: float | None = None) -> str:
    """The OpenMetrics text of one replay, shifted so its last sample is at ``end_unix_s``."""
    ticks, om = result.ticks, result.extra["om"]
    keep = _keep(ticks["time_s"])
    t = ticks["time_s"]
    ts = end_unix_s - (t[-1] - t[keep])
    side = {"namespace": "sim", "model": model, "job": SIDECAR_JOB, "pod": "sim-fleet",
            "instance": "sim-fleet:9400"}
    ctrl = {"namespace": "sim", "workload": model, "model": model, "job": CONTROLLER_JOB,
            "pod": "trimtab-controller-0", "instance": "trimtab-controller-0:9401"}
    policy = result.summary["policy"]
    w = _Writer()
    cum = {k: np.cumsum(om[k], axis=0)[keep] for k in
           ("served", "shed", "timed_out", "failed", "latency_counts", "latency_sum_s",
            "batch_counts", "batch_sum")}
    w.family(N.REQUESTS, "counter")
    for outcome, key in (("ok", "served"), ("shed", "shed"), ("timeout", "timed_out"),
                         ("error", "failed")):
        w.series(N.REQUESTS + "_total", dict(side, outcome=outcome), cum[key], ts)
    bounds = result.extra["latency_buckets_s"]
    for fam, counts_key, sum_key, les in (
            (N.REQUEST_DURATION, "latency_counts", "latency_sum_s", bounds),
            (N.BATCH_SIZE, "batch_counts", "batch_sum", BATCH_SIZE_BUCKETS)):
        w.family(fam, "histogram")
        w.histogram(fam, side, cum[counts_key], cum[sum_key], les, ts)
    pod = {k: v for k, v in side.items() if k != "model"}     # per-pod knobs: no model label
    gauges = [
        (N.QUEUE_DEPTH, side, om["queue_depth_now"][keep]),
        (N.IN_FLIGHT, side, om["in_flight_now"][keep]),
        (N.MAX_BATCH_SIZE, side, ticks["max_batch_size"][keep]),
        (N.CONCURRENCY_LIMIT, pod, ticks["concurrency_limit"][keep]),
        (N.QUEUE_TIMEOUT, pod, ticks["queue_timeout_s"][keep]),
        (N.GPU_UP, dict(side, gpu="0", uuid="GPU-sim-fleet"), np.ones(len(keep))),
        (N.GPU_UTILIZATION, dict(side, gpu="0", uuid="GPU-sim-fleet"),
         om["gpu_busy_ratio"][keep]),
        (N.CTRL_DESIRED_REPLICAS, dict(ctrl, policy=policy), ticks["desired_replicas"][keep]),
        (N.CTRL_CURRENT_REPLICAS, ctrl, ticks["ready_replicas"][keep]),
        (N.CTRL_MAX_REPLICAS, ctrl, np.full(len(keep), float(max_replicas))),
        (N.CTRL_OBSERVED_RPS, ctrl, ticks["arrival_rate_rps"][keep]),
        (N.CTRL_FORECAST_RPS, ctrl, ticks["forecast_rps"][keep]),
        (N.CTRL_APPLIED_REPLICAS, ctrl, ticks["desired_replicas"][keep]),
        # Every simulated tick succeeds: the loop's last success is the sample's own time.
        (N.CTRL_LAST_SUCCESS, {k: v for k, v in ctrl.items() if k not in ("workload", "model")},
         ts),
        (N.COLLECTOR_SUCCESS, dict(side, collector="proxy"), np.ones(len(keep))),
    ]
    if gpu_memory_bytes:
        ratio = om["gpu_memory_ratio"][keep]
        gpu = dict(side, gpu="0", uuid="GPU-sim-fleet")
        gauges += [(N.GPU_MEMORY_USED, gpu, ratio * gpu_memory_bytes),
                   (N.GPU_MEMORY_TOTAL, gpu, np.full(len(keep), float(gpu_memory_bytes)))]
    for name, labels, values in gauges:
        vals = np.asarray(values, dtype=float)
        if np.all(np.isnan(vals)):
            continue
        w.family(name, "gauge")
        w.series(name, labels, vals, ts)
    w.family(N.CTRL_DECISIONS, "counter")
    reasons = ticks["reason"]
    for reason in sorted(set(reasons.tolist())):
        cnt = np.cumsum(reasons == reason)[keep]
        w.series(N.CTRL_DECISIONS + "_total", dict(ctrl, policy=policy, reason=reason), cnt, ts)
    if "vllm_ttft_counts" in om:
        _vllm_series(w, om, keep, ts, side, model, bounds)
    w.lines.append("# EOF")
    return "\n".join(w.lines) + "\n"


def _vllm_series(w: _Writer, om: dict[str, np.ndarray], keep: np.ndarray, ts: np.ndarray,
                 side: dict[str, str], model: str, buckets: tuple[float, ...]) -> None:
    """The vLLM engines' series (one engine for the fleet, as the sidecar's one pod) and the
    sidecar's LLM series read from them."""
    eng = {"namespace": "sim", "job": VLLM_JOB, "pod": "sim-fleet",
           "instance": "sim-fleet:8000", "model_name": model, "engine": "0"}
    for fam, key, help_text, extra in VLLM_COUNTERS:
        w.family(fam, "counter", help_text)
        w.series(fam + "_total", dict(eng, **extra), np.cumsum(om[key])[keep], ts)
    cum = {}
    for fam, key, own, help_text in VLLM_HISTOGRAMS:
        cum[key] = (np.cumsum(np.asarray(om[key + "_counts"], dtype=np.int64), axis=0)[keep],
                    np.cumsum(np.asarray(om[key + "_sum_s"], dtype=float))[keep],
                    vllm_bounds(own, buckets))
        w.family(fam, "histogram", help_text)
        w.histogram(fam, eng, *cum[key], ts)
    for fam, key, help_text in VLLM_GAUGES:
        w.family(fam, "gauge", help_text)
        w.series(fam, eng, np.asarray(om[key], dtype=float)[keep], ts)
    w.family(N.KV_CACHE_USAGE, "gauge")
    w.series(N.KV_CACHE_USAGE, side, np.asarray(om["vllm_kv_usage_now"], dtype=float)[keep], ts)
    w.family(N.TIME_TO_FIRST_BYTE, "histogram")     # the sidecar re-exports vLLM's TTFT as is
    w.histogram(N.TIME_TO_FIRST_BYTE, side, *cum["vllm_ttft"], ts)


def write_openmetrics(path: Path, result: RunResult, **kwargs: object) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(result, **kwargs))  # type: ignore[arg-type]
    return path
