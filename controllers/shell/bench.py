"""Controller scale benchmark: N targets against a real Prometheus holding backfilled series (promtool)."""
from __future__ import annotations

import resource
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from trimtab.collectors import names as n
from trimtab.common.prometheus import PrometheusServer, require_binary
from trimtab.controllers.shell.actuators.base import WorkloadRef
from trimtab.controllers.shell.clock import WallClock
from trimtab.controllers.shell.loop import ControlLoop, Target
from trimtab.controllers.shell.metrics import ControllerMetrics
from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.shell.sources.base import TargetSelector
from trimtab.controllers.shell.sources.prometheus import PrometheusSource
from trimtab.controllers.core.defaults import INTERVAL_S
from trimtab.controllers.core.types import FleetBounds

STEP_S = 15
HISTORY_S = 600        # ten minutes of history at the 15 s interval


def write_openmetrics(path: Path, targets: int, end_s: int, namespace: str = "bench") -> int:
    """Stream a plausible sidecar history for ``targets`` models (one pod each); returns lines."""
    steps = range(end_s - HISTORY_S, end_s + 1, STEP_S)
    bounds = n.DEFAULT_LATENCY_BUCKETS_S
    lines = 0
    with path.open("w") as f:
        def series(name: str, labels: str, values) -> None:
            nonlocal lines
            for t, v in zip(steps, values):
                f.write(f"{name}{{{labels}}} {v} {t}\n")
                lines += 1

        def lab(i: int, extra: str = "") -> str:
            return f'namespace="{namespace}",model="m{i:05d}",pod="m{i:05d}-0"' + extra

        rate = [1.0 + (i % 50) for i in range(targets)]   # requests/s per target
        f.write(f"# TYPE {n.REQUESTS} counter\n")
        for i in range(targets):
            series(n.REQUESTS + "_total", lab(i, ',outcome="ok"'),
                   [rate[i] * k * STEP_S for k in range(len(steps))])
        f.write(f"# TYPE {n.REQUEST_DURATION} histogram\n")
        for i in range(targets):
            total = [rate[i] * k * STEP_S for k in range(len(steps))]
            for b in bounds:
                frac = min(1.0, b / 0.25)   # a quarter second is the slowest request
                series(n.REQUEST_DURATION + "_bucket", lab(i, f',le="{b}"'),
                       [c * frac for c in total])
            series(n.REQUEST_DURATION + "_bucket", lab(i, ',le="+Inf"'), total)
            series(n.REQUEST_DURATION + "_count", lab(i), total)
            series(n.REQUEST_DURATION + "_sum", lab(i), [c * 0.12 for c in total])
        for name in (n.QUEUE_DEPTH, n.IN_FLIGHT):
            f.write(f"# TYPE {name} gauge\n")
            for i in range(targets):
                series(name, lab(i), [float(i % 7 + k % 3) for k in range(len(steps))])
        f.write(f"# TYPE {n.BATCH_SIZE} histogram\n")
        for i in range(targets):
            batches = [rate[i] / 4 * k * STEP_S for k in range(len(steps))]
            series(n.BATCH_SIZE + "_bucket", lab(i, ',le="+Inf"'), batches)
            series(n.BATCH_SIZE + "_count", lab(i), batches)
            series(n.BATCH_SIZE + "_sum", lab(i), [b * 4 for b in batches])
        f.write(f"# TYPE {n.BATCH_DURATION} histogram\n")
        for i in range(targets):
            batches = [rate[i] / 4 * k * STEP_S for k in range(len(steps))]
            series(n.BATCH_DURATION + "_bucket", lab(i, ',le="+Inf"'), batches)
            series(n.BATCH_DURATION + "_count", lab(i), batches)
            series(n.BATCH_DURATION + "_sum", lab(i), [b * 0.08 for b in batches])
        f.write("# EOF\n")
    return lines


class BackfilledPrometheus:
    """A real Prometheus on loopback whose TSDB was built by ``promtool tsdb create-blocks-from``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server = PrometheusServer(
            workdir, "global:\n  scrape_interval: 15s\nscrape_configs: []\n",
            data_dir=workdir / "data", extra_args=("--storage.tsdb.retention.time=30d",))
        self.url = ""

    def backfill(self, openmetrics: Path) -> None:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        subprocess.run([require_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics",
                        "--max-block-duration=24h", str(openmetrics), str(data)],
                       check=True, capture_output=True, timeout=600)

    def start(self, timeout_s: float = 60.0) -> str:
        self.url = self.server.start(timeout_s).url
        return self.url

    def stop(self) -> None:
        self.server.stop()


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_bench(targets: int = 1000, ticks: int = 5, policy: str = "hpa",
              interval_s: float = INTERVAL_S) -> dict[str, Any]:
    """Tick a dry-run loop ``ticks`` times over ``targets`` targets; figures as a dict."""
    clock = WallClock()
    end_s = int(WallClock.unix_s()) // STEP_S * STEP_S
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-") as tmp:
        work = Path(tmp)
        om = work / "series.om"
        lines = write_openmetrics(om, targets, end_s)
        prom = BackfilledPrometheus(work)
        t0 = clock.now_s()
        prom.backfill(om)
        backfill_s = clock.now_s() - t0
        om.unlink()
        url = prom.start()
        try:
            source = PrometheusSource(url, timeout_s=30.0, staleness_s=120.0,
                                      unix_time=lambda: float(end_s))
            bounds = FleetBounds(min_replicas=1, max_replicas=50)
            tlist = [Target(WorkloadRef("Deployment", "bench", f"m{i:05d}"),
                            TargetSelector(f"bench/m{i:05d}",
                                           {"namespace": "bench", "model": f"m{i:05d}"}),
                            make_policy(policy, bounds, interval_s), model=f"m{i:05d}",
                            bounds=bounds) for i in range(targets)]
            loop = ControlLoop(tlist, source, [], clock, ControllerMetrics(), dry_run=True,
                               interval_s=interval_s)
            durations, cpu = [], []
            complete = 0
            for k in range(ticks):
                c0, w0 = _cpu_s(), clock.now_s()
                records = loop.tick(k * interval_s)
                durations.append(clock.now_s() - w0)
                cpu.append(_cpu_s() - c0)
                complete = sum(1 for r in records if r.hold is None)
            requests_per_tick = source.requests_made / ticks
            # Baseline in the same run: one target, same Prometheus, same queries.
            base = ControlLoop(tlist[:1], source, [], clock, ControllerMetrics(), dry_run=True,
                               interval_s=interval_s)
            base_s = []
            for k in range(ticks):
                w0 = clock.now_s()
                base.tick(k * interval_s)
                base_s.append(clock.now_s() - w0)
        finally:
            prom.stop()
    durations.sort()
    base_s.sort()
    base_p50 = base_s[len(base_s) // 2]
    return {
        "targets": targets,
        "ticks": ticks,
        "policy": policy,
        "tick_seconds_p50": round(durations[len(durations) // 2], 4),
        "tick_seconds_max": round(durations[-1], 4),
        "cpu_seconds_per_tick": round(sum(cpu) / len(cpu), 4),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "baseline_one_target_tick_seconds_p50": round(base_p50, 4),
        "tick_p50_ratio_to_one_target": round(durations[len(durations) // 2] / base_p50, 1),
        "prometheus_requests_per_tick": requests_per_tick,
        "targets_with_full_metrics": complete,
        "backfill_lines": lines,
        "backfill_seconds": round(backfill_s, 2),
    }
