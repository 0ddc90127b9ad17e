"""Write a replay's metrics as timestamped OpenMetrics text that promtool can backfill.

The series carry the names in collectors/names.py and the labels a real fleet would have
(``namespace="sim"``, ``model``, ``job``, ``pod``, ``instance``), so the shipped dashboards and
alert rules run on a simulated incident once it is loaded with
``promtool tsdb create-blocks-from openmetrics FILE DIR``. The fleet is exported as one pod
(``sim-fleet``) carrying fleet totals: sums over pods, as the dashboards take, are the same.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
from prometheus_client.utils import floatToGoString

from trimtab.collectors import names as N
from trimtab.collectors.names import BATCH_SIZE_BUCKETS, BY_NAME
from trimtab.sim.replay import RunResult

SIDECAR_JOB = "trimtab-sidecar"
CONTROLLER_JOB = "trimtab-controller"
MAX_STEP_S = 15.0    # at most one sample per series every 15 s (a usual scrape interval)


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

    def family(self, name: str, kind: str) -> None:
        help_text = BY_NAME[name].help if name in BY_NAME else name
        self.lines.append(f"# TYPE {name} {kind}")
        self.lines.append(f"# HELP {name} {help_text}")

    def series(self, name: str, labels: dict[str, str], values: Iterable[float],
               ts: np.ndarray) -> None:
        lab = _labels(labels)
        for v, t in zip(values, ts):
            if not math.isnan(v):
                self.lines.append(f"{name}{lab} {_num(v)} {t:.3f}")


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
        c = np.cumsum(cum[counts_key], axis=1)          # cumulative over le
        les_all = list(les) + [math.inf]
        lab = _labels(side)[1:-1]
        for j in range(len(keep)):                       # one MetricPoint per timestamp
            for i, le in enumerate(les_all):
                w.lines.append(f'{fam}_bucket{{{lab},le="{floatToGoString(float(le))}"}} '
                               f"{int(c[j, i])} {ts[j]:.3f}")
            w.lines.append(f"{fam}_count{{{lab}}} {int(c[j, -1])} {ts[j]:.3f}")
            w.lines.append(f"{fam}_sum{{{lab}}} {_num(float(cum[sum_key][j]))} {ts[j]:.3f}")
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
    w.lines.append("# EOF")
    return "\n".join(w.lines) + "\n"


def write_openmetrics(path: Path, result: RunResult, **kwargs: object) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(result, **kwargs))  # type: ignore[arg-type]
    return path
