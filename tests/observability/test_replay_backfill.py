"""A simulated overload, backfilled into a real Prometheus: dashboards show it, alerts would have fired.

Pipeline, all real tools: ``trimtab replay --openmetrics`` -> ``promtool tsdb
create-blocks-from openmetrics`` -> Prometheus -> ``promtool tsdb create-blocks-from rules``
(the shipped recording rules) -> Prometheus restarted on both sets of blocks. The ground truth
for "when should the page have fired" is computed here from the simulator's own counters,
independently of PromQL.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from trimtab.alerts.alerting import all_alerts
from trimtab.alerts.config import DEFAULT_CONFIG
from trimtab.alerts.promql import duration_s
from trimtab.alerts.rulefile import dump_yaml, rule_file
from trimtab.dashboards import build as dash_build
from trimtab.dashboards.boards import ALL_BOARDS
from tests.conftest import REPO_ROOT, require_binary
from tests.observability.support import (TRIMTAB, PromAPI, Proc, raw_names, recorded_exprs,
                                         start_prometheus)

pytestmark = pytest.mark.slow

SCENARIO = Path(__file__).with_name("overload.yaml")
MODEL, NAMESPACE = "obs-overload", "sim"
STEP_S = 15.0
_SAMPLE = re.compile(r'^(\w+)\{(.*)\} (\S+) (\S+)$')


def _run(args: list[str], timeout_s: float = 180) -> None:
    out = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=timeout_s)
    assert out.returncode == 0, f"{' '.join(args)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"


class Backfilled:
    def __init__(self, work: Path) -> None:
        self.work, self.procs = work, []
        self.prom: PromAPI

    def start(self, name: str, args: list[str], log_path: Path) -> Proc:
        p = Proc(name, args, log_path)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()


def _series(om_path: Path) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(name, labels text) -> [(unix time, value)] from the OpenMetrics file."""
    out: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for line in om_path.read_text().splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[(m.group(1), m.group(2))].append((float(m.group(4)), float(m.group(3))))
    return out


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backfilled]:
    work = tmp_path_factory.mktemp("replay")
    b = Backfilled(work)
    om = work / "overload.om"
    # End two minutes ago: all samples are history, none in Prometheus' head block.
    end = math.floor(time.time() / STEP_S) * STEP_S - 120
    _run([*TRIMTAB, "replay", "--scenario", str(SCENARIO), "--policy", "static:replicas=2",
          "--openmetrics", str(om), "--openmetrics-end-unix", f"{end:.0f}",
          "--workers", "1", "--out", str(work / "report")])
    data = work / "data"
    promtool = require_binary("promtool")
    _run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)])
    b.om_path, b.series = om, _series(om)
    b.start_s = min(t for pts in b.series.values() for t, _ in pts)
    b.end_s = max(t for pts in b.series.values() for t, _ in pts)
    config = {"global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
              "scrape_configs": []}
    flags = ("--storage.tsdb.retention.time=3650d",)
    try:
        prom = start_prometheus(b.start, work, config, data, flags)
        rules = work / "rules.yaml"
        rules.write_text(dump_yaml(rule_file(DEFAULT_CONFIG)))
        rule_blocks = work / "rule-blocks"
        _run([promtool, "tsdb", "create-blocks-from", "rules", f"--url={prom.base}",
              f"--start={b.start_s:.0f}", f"--end={b.end_s:.0f}", f"--eval-interval={STEP_S:g}s",
              f"--output-dir={rule_blocks}", "--quiet", str(rules)])
        b.stop_all()
        for block in rule_blocks.iterdir():
            shutil.move(str(block), data / block.name)
        b.prom = start_prometheus(b.start, work, config, data, flags)
        yield b
    finally:
        b.stop_all()


def substitute(expr: str, b: Backfilled) -> str:
    span_s = int(b.end_s - b.start_s)
    values = {"$namespace": NAMESPACE, "$model": MODEL, "$__rate_interval": "1m",
              "$__range": f"{span_s}s", "$__interval": "15s"}
    for var, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    return expr


def _value(b: Backfilled, expr: str, at: float) -> float | None:
    res = b.prom.query(expr, at=at)
    assert res["status"] == "success", f"{res}\n{expr}"
    vals = [float(r["value"][1]) for r in res["data"]["result"]
            if r["metric"].get("model", MODEL) == MODEL]
    return max(vals) if vals else None


def test_dashboard_panels_show_the_overload(backfilled: Backfilled) -> None:
    b = backfilled
    names_in_file = {name for name, _ in b.series}
    records = recorded_exprs()
    with_data = 0
    for board in ALL_BOARDS:
        for title, expr in dash_build.panel_queries(dash_build.board_dict(board)):
            res = b.prom.query_range(substitute(expr, b), b.start_s, b.end_s, 60)
            assert res["status"] == "success", f"{board}/{title}: {res}\n{expr}"
            if raw_names(expr, records) <= names_in_file:
                assert res["data"]["result"], f"{board}/{title}: no data\n{expr}"
                with_data += 1
    assert with_data >= 25
    # The incident is visible: p99 above the SLO, budget overspent, replicas pinned at max.
    fleet = {t: e for t, e in dash_build.panel_queries(dash_build.board_dict("fleet-overview"))}
    at = b.end_s
    assert _value(b, substitute(fleet["p99 latency vs SLO"], b), at) > DEFAULT_CONFIG.slo_latency_s
    assert _value(b, substitute(fleet["Error budget remaining (time range)"], b), at) < 0


def _truth(b: Backfilled) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per exported tick: time, cumulative requests, cumulative SLO misses (from the sim)."""
    total: dict[float, float] = defaultdict(float)
    bad: dict[float, float] = defaultdict(float)
    for (name, labels), pts in b.series.items():
        if name == "trimtab_requests_total":
            for t, v in pts:
                total[t] += v
                if 'outcome="ok"' not in labels:
                    bad[t] += v
        elif name == "trimtab_request_duration_seconds_count":
            for t, v in pts:
                bad[t] += v
        elif name == "trimtab_request_duration_seconds_bucket" and 'le="0.5"' in labels:
            for t, v in pts:
                bad[t] -= v
    ts = np.array(sorted(total))
    return ts, np.array([total[t] for t in ts]), np.array([bad[t] for t in ts])


def _window_ratio(ts, total, bad, t: float, window_s: float) -> float:
    i = int(np.searchsorted(ts, t, side="right")) - 1
    j = max(0, int(np.searchsorted(ts, t - window_s, side="left")))
    served = total[i] - total[j]
    return (bad[i] - bad[j]) / served if served > 0 else 0.0


def _page_rule():
    return next(a for a in all_alerts(DEFAULT_CONFIG)
                if a.alert == "TrimtabErrorBudgetBurn" and a.labels["long_window"] == "1h")


def _would_fire(b: Backfilled, expr: str, at: float, for_s: float) -> bool:
    """True if ``expr`` holds for MODEL at every evaluation over [at - for, at]."""
    res = b.prom.query_range(expr, at - for_s, at, STEP_S)
    assert res["status"] == "success", res
    steps = int(for_s // STEP_S) + 1
    return any(len(r["values"]) >= steps for r in res["data"]["result"]
               if r["metric"].get("model") == MODEL)


def test_the_page_would_have_fired_during_the_overload_and_not_in_the_lull(
        backfilled: Backfilled) -> None:
    b = backfilled
    rule = _page_rule()
    for_s = duration_s(rule.for_)
    ts, total, bad = _truth(b)
    threshold = 14.4 * DEFAULT_CONFIG.error_budget

    def burning(t: float, margin: float) -> bool:
        return all(_window_ratio(ts, total, bad, u, 300) > threshold * margin
                   and _window_ratio(ts, total, bad, u, 3600) > threshold * margin
                   for u in np.arange(t - for_s - 60, t + 1, STEP_S))

    start = b.start_s + 600     # leave the first 10 minutes: windows still filling
    candidates = [t for t in ts if t >= start]
    hot = [t for t in candidates if burning(t, 1.5)]
    calm = [t for t in candidates
            if all(_window_ratio(ts, total, bad, u, 300) < threshold / 3
                   for u in np.arange(t - 420, t + 1, STEP_S))]
    assert hot and calm, "the scenario must contain both an overload and a lull"
    for t in hot[:: max(1, len(hot) // 5)]:
        assert _would_fire(b, rule.expr, t, for_s), f"page not firing at {t - b.start_s:.0f} s"
    for t in calm[:: max(1, len(calm) // 5)]:
        assert not _would_fire(b, rule.expr, t, 0), f"page firing in the lull at {t - b.start_s:.0f} s"


@pytest.mark.parametrize("alert", ["TrimtabCapacityExhausted", "TrimtabLatencyP99OverSLO",
                                   "TrimtabRequestsShed"])
def test_capacity_latency_and_shed_alerts_would_have_fired(backfilled: Backfilled,
                                                          alert: str) -> None:
    b = backfilled
    rule = next(a for a in all_alerts(DEFAULT_CONFIG) if a.alert == alert)
    for_s = duration_s(rule.for_)
    times = np.arange(b.start_s + 600 + for_s, b.end_s + 1, 60)
    fired = [t for t in times if _would_fire(b, rule.expr, t, for_s)]
    assert fired, f"{alert} never would have fired during the simulated overload"
    assert len(fired) < len(times) or alert == "TrimtabCapacityExhausted"
