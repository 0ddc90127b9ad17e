"""Replays end to end: snapshots and actuation, results JSON, report, OpenMetrics, the CLI."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from trimtab.controllers.core.types import Decision, Snapshot
from trimtab.sim.replay import TICK_COLUMNS, simulate
from trimtab.sim.scenario import scenario_from_dict
from trimtab.sim.traces import trace_from_arrays
from tests.conftest import REPO_ROOT, require_binary

RESULT_KEYS = {"policy", "params", "slo_attainment", "meets_slo", "latency_p50_s",
               "latency_p99_s", "replica_hours", "cost", "cold_starts", "scale_events", "shed",
               "timed_out", "oom"}


def scenario(**over: Any):
    doc = {"name": "t", "trace": {"format": "poisson", "rate_rps": 20, "duration_s": 120,
                                  "seed": 3},
           "service": {"base_ms": 30, "per_item_ms": 5, "max_batch": 8, "batch_timeout_ms": 5},
           "replicas": {"initial": 2, "min": 1, "max": 10, "cold_start_s": 30},
           "slo": {"latency_s": 0.5}, "cost": {"replica_hour": 2.0},
           "controller": {"interval_s": 10}}
    for k, v in over.items():
        doc[k] = {**doc.get(k, {}), **v} if isinstance(v, dict) else v
    return scenario_from_dict(doc)


@dataclass
class Scripted:
    """A test policy: returns the scripted decisions in turn and records what it saw."""

    script: list[Decision]
    interval_s: float = 10.0
    name: str = "scripted"
    params: dict = field(default_factory=dict)
    seen: list[tuple[Snapshot, float]] = field(default_factory=list)

    def initial_state(self) -> int:
        return 0

    def decide(self, snap: Snapshot, state: int, now_s: float):
        self.seen.append((snap, now_s))
        d = self.script[min(state, len(self.script) - 1)]
        return d, state + 1


def test_policy_sees_window_averages_at_its_own_interval():
    pol = Scripted([Decision(replicas=2, reason="steady")], interval_s=20.0)
    simulate(scenario(), pol)
    times = [t for _, t in pol.seen]
    assert times[:3] == [20.0, 40.0, 60.0]
    snap = pol.seen[2][0]
    assert snap.window_s == 20.0 and snap.time_s == 60.0
    assert snap.arrival_rate_rps == pytest.approx(20, rel=0.3)
    assert snap.ready_replicas == 2 and snap.starting_replicas == 0
    assert snap.latency.bounds_s[-1] == 60.0 and 0.5 in snap.latency.bounds_s
    assert snap.latency.total == pytest.approx(snap.completion_rate_rps * 20)
    assert 0 < snap.gpu_busy_ratio < 1 and snap.mean_batch_size >= 1
    assert all(b >= 1 and s > 0 for b, s in snap.batch_samples)
    assert len(snap.batch_samples) <= 256


def test_decisions_are_applied_and_invalid_ones_ignored():
    pol = Scripted([Decision(replicas=5, reason="scale_up", concurrency_limit=3, max_batch_size=4),
                    Decision(replicas=1, reason="hold_missing_metrics", valid=False),
                    Decision(replicas=5, reason="steady")])
    res = simulate(scenario(), pol)
    t = res.ticks
    assert t["desired_replicas"][0] == 5 and t["desired_replicas"][1] == 5
    assert t["concurrency_limit"][0] == 3 and t["max_batch_size"][0] == 4
    # New replicas become ready after the 30 s cold start.
    assert t["starting_replicas"][0] == 3 and t["ready_replicas"][3] == 5
    assert res.summary["scale_events"] == 1 and res.summary["cold_starts"] == 3
    assert res.summary["decisions_by_reason"]["hold_missing_metrics"] == 1


def test_replay_is_deterministic_and_accounts_for_every_request():
    a = simulate(scenario(), "static:replicas=2", record_requests=True)
    b = simulate(scenario(), "static:replicas=2", record_requests=True)
    assert a.summary == b.summary
    assert np.array_equal(a.requests["finish_s"], b.requests["finish_s"])
    acc = a.accounting
    assert acc["served"] + acc["shed"] + acc["timed_out"] + acc["failed"] + \
        acc["still_queued"] == acc["requests"] == a.summary["requests"]
    assert acc["n_integral_s"] == pytest.approx(acc["response_sum_s"], rel=1e-9)
    assert acc["busy_server_s"] == pytest.approx(acc["service_sum_s"], rel=1e-9)
    assert a.summary["replica_hours"] == pytest.approx(2 * acc["end_s"] / 3600, abs=1e-6)
    assert set(a.ticks) == set(TICK_COLUMNS)


def test_overload_misses_the_slo_with_sheds_and_timeouts():
    sc = scenario(replicas={"initial": 1, "min": 1, "max": 1, "concurrency_limit": 8,
                            "max_queue": 500, "queue_timeout_s": 2})
    tr = trace_from_arrays(np.sort(np.random.default_rng(1).uniform(0, 60, 20000)))
    res = simulate(sc, "static:replicas=1", tr)
    s = res.summary
    assert not s["meets_slo"] and s["shed"] > 0 and s["timed_out"] > 0
    assert s["slo_attainment"] < 0.5
    assert s["served"] + s["shed"] + s["timed_out"] + s["failed"] + s["still_queued"] == 20000


def test_seed_changes_service_draws():
    a = simulate(scenario(service={"cv": 0.5}), "static:replicas=2").summary
    b = simulate(scenario(service={"cv": 0.5}, seed=9), "static:replicas=2").summary
    assert a["latency_p99_s"] != b["latency_p99_s"]


# -------------------------------------------------------------------------------- CLI
def short_default(tmp_path, end_s: float = 120.0):
    """The default demo scenario cut to its first ``end_s`` seconds."""
    doc = yaml.safe_load((REPO_ROOT / "sim/data/scenarios/default.yaml").read_text())
    doc["trace"]["path"] = str(REPO_ROOT / "sim/data/traces/azure_llm_conv.csv")
    doc["trace"]["end_s"] = end_s
    p = tmp_path / "short.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def cli(*args: str):
    from trimtab.cli import app

    res = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return res


def test_cli_replay_writes_json_report_and_ticks(tmp_path):
    sc = short_default(tmp_path)
    out = tmp_path / "report"
    res = cli("replay", "--scenario", str(sc), "--policy", "static:replicas=20",
              "--policy", "static:replicas=10", "--out", str(out), "--json",
              str(tmp_path / "r.json"), "--workers", "1")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["scenario"] == "azure-conv-default" and doc["requests"] > 1000
    assert [r["params"] for r in doc["results"]] == [{"replicas": 20}, {"replicas": 10}]
    for r in doc["results"]:
        assert RESULT_KEYS <= set(r)
    assert json.loads((out / "results.json").read_text()) == doc
    for name in ("report.html", "load_replicas.png", "p99.png", "queue.png",
                 "ticks_static_replicas_20.csv", "ticks_static_replicas_10.csv"):
        assert (out / name).stat().st_size > 0, name
    header = (out / "ticks_static_replicas_20.csv").read_text().splitlines()[0]
    assert header.split(",") == list(TICK_COLUMNS)
    assert "static:replicas=20" in (out / "report.html").read_text()


def test_cli_default_policies_run_on_the_default_scenario(tmp_path):
    res = cli("replay", "--scenario", str(short_default(tmp_path, 60.0)), "--json",
              str(tmp_path / "r.json"))
    assert res.exit_code == 0, res.output
    names = [r["policy"] for r in json.loads((tmp_path / "r.json").read_text())["results"]]
    assert "static" in names


def test_cli_bad_scenario_exits_2_with_the_rule(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntrace: {format: poisson, rate_rps: 1, duration_s: 1}\n"
                 "replicas: {min: 3, max: 2, initial: 2}\n")
    res = CliRunner().invoke(__import__("trimtab.cli").cli.app,
                             ["replay", "--scenario", str(p)])
    assert res.exit_code == 2
    assert "min = 3 must be <= max = 2" in res.output


def test_openmetrics_is_accepted_by_promtool(tmp_path):
    promtool = require_binary("promtool")
    om = tmp_path / "sim.om"
    res = cli("replay", "--scenario", str(short_default(tmp_path, 300.0)), "--policy", "hpa",
              "--openmetrics", str(om), "--openmetrics-end-unix", "1700000000", "--workers", "1")
    assert res.exit_code == 0, res.output
    text = om.read_text()
    assert text.endswith("# EOF\n")
    for name in ("trimtab_requests_total", "trimtab_request_duration_seconds_bucket",
                 "trimtab_queue_depth", "trimtab_controller_desired_replicas",
                 "trimtab_controller_decisions_total", "trimtab_batch_size_bucket"):
        assert name in text
    last_ts = max(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line and not line.startswith("#"))
    assert last_ts == pytest.approx(1700000000.0)
    proc = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(om),
                           str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "BLOCK ULID" in proc.stdout


def test_sweep_adds_the_cheapest_slo_meeting_setting_and_the_oracle(tmp_path, monkeypatch):
    """With a sweep table and an oracle registered, results gain the sweep's best and
    cost_vs_oracle. A stand-in sweep table and a stand-in ``oracle`` in the registry keep this
    test about the replay's bookkeeping, not about those modules."""
    import sys
    import types

    from trimtab.controllers.core import registry
    from trimtab.controllers.core.static import StaticPolicy

    fake_sweep = types.ModuleType("trimtab.controllers.core.sweep")
    fake_sweep.SWEEPS = {"static": ["static:replicas=1", "static:replicas=3",
                                    "static:replicas=6"]}
    monkeypatch.setitem(sys.modules, "trimtab.controllers.core.sweep", fake_sweep)
    monkeypatch.setitem(registry.REPLAY_POLICIES, "oracle",
                        lambda params, bounds, interval_s, ctx: StaticPolicy(
                            replicas=2, bounds=bounds, interval_s=10.0, name="oracle"))
    sc = tmp_path / "sc.yaml"
    # No warm-up: with the loop's 300 s, static:replicas=1 would be held at the initial 6 for
    # the whole 120 s and meet the SLO.
    sc.write_text(yaml.safe_dump({
        "name": "sweep", "trace": {"format": "poisson", "rate_rps": 100, "duration_s": 120},
        "service": {"base_ms": 50, "per_item_ms": 10, "max_batch": 4, "batch_timeout_ms": 5},
        "replicas": {"initial": 6, "min": 1, "max": 10, "cold_start_s": 10},
        "slo": {"latency_s": 0.5, "target": 0.99}, "controller": {"warmup_s": 0}}))
    res = cli("replay", "--scenario", str(sc), "--policy", "static:replicas=8", "--sweep",
              "--json", str(tmp_path / "r.json"), "--workers", "1")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    main, best = doc["results"]
    assert main["tuning"] == "default" and main["params"] == {"replicas": 8}
    # 100 rps; a replica does at most 4 per 90 ms = 44 rps: 1 replica is overloaded,
    # 3 meet; 3 is cheaper than 6.
    assert best["tuning"] == "hindsight" and best["params"] == {"replicas": 3} and best["meets_slo"]
    assert doc["oracle"]["policy"] == "oracle"
    for r in doc["results"]:
        assert r["cost_vs_oracle"] == pytest.approx(r["cost"] / doc["oracle"]["cost"], rel=1e-3)


def test_snapshot_reports_gpu_memory_of_the_largest_batch():
    sc = scenario(service={"memory": {"gpu_bytes": 80e9, "weights_bytes": 40e9,
                                      "per_item_bytes": 1e9}})
    pol = Scripted([Decision(replicas=2, reason="steady")])
    simulate(sc, pol)
    snaps = [s for s, _ in pol.seen if s.mean_batch_size]
    assert snaps
    for s in snaps:
        biggest = max(b for b, _ in s.batch_samples)
        assert s.gpu_memory_used_ratio == pytest.approx((40e9 + biggest * 1e9) / 80e9)


def test_a_policy_that_raises_the_batch_past_memory_causes_ooms():
    sc = scenario(service={"memory": {"gpu_bytes": 80e9, "weights_bytes": 40e9,
                                      "per_item_bytes": 10e9}},
                  trace={"rate_rps": 200})
    pol = Scripted([Decision(replicas=2, reason="steady", max_batch_size=8)])
    res = simulate(sc, pol)
    s = res.summary
    assert s["oom"] > 0 and s["failed"] > 0 and not s["meets_slo"]
    assert s["cold_starts"] >= s["oom"]


def test_openmetrics_series_are_cumulative_and_in_time_order(tmp_path):
    from trimtab.sim.openmetrics import render

    res = simulate(scenario(controller={"interval_s": 5}), "static:replicas=2")
    text = render(res, model="m", end_unix_s=1_000_000.0, max_replicas=10)
    series: dict[str, list[tuple[float, float]]] = {}
    families = []
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            families.append(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        key, value, ts = line.rsplit(" ", 2)
        series.setdefault(key, []).append((float(ts), float(value)))
    assert len(families) == len(set(families))       # every family once, grouped
    for key, points in series.items():
        times = [t for t, _ in points]
        assert times == sorted(times) and len(set(times)) == len(times), key
        if "_total" in key or "_bucket" in key or "_count" in key:
            vals = [v for _, v in points]
            assert vals == sorted(vals), key          # counters never go down
        # At most one sample per 15 s even though the policy ticks every 5 s.
        assert all(b - a >= 15 - 1e-6 for a, b in zip(times, times[1:])), key
    ok = [k for k in series if k.startswith("trimtab_requests_total") and 'outcome="ok"' in k]
    assert series[ok[0]][-1][1] == res.summary["served"]
    inf = [k for k in series if k.startswith("trimtab_request_duration_seconds_bucket")
           and 'le="+Inf"' in k]
    assert series[inf[0]][-1][1] == res.summary["served"]


def test_the_admission_wait_in_force_is_in_the_ticks_and_the_export():
    from trimtab.sim.openmetrics import render

    pol = Scripted([Decision(replicas=2, reason="steady")] * 3
                   + [Decision(replicas=2, reason="steady", queue_timeout_s=0.2)] * 20)
    res = simulate(scenario(replicas={"queue_timeout_s": 5.0}), pol)
    waits = res.ticks["queue_timeout_s"]
    assert list(waits[:3]) == [5.0] * 3 and set(waits[3:]) == {0.2}
    text = render(res, model="m", end_unix_s=1_000_000.0, max_replicas=10)
    values = [float(line.split()[1]) for line in text.splitlines()
              if line.startswith("trimtab_queue_timeout_seconds{")]
    assert values and values[-1] == 0.2 and max(values) == 5.0


def test_round_robin_router_scenario_replays():
    a = simulate(scenario(replicas={"router": "round_robin", "initial": 3}), "static:replicas=3",
                 record_requests=True)
    counts = np.bincount(a.requests["replica"][a.requests["replica"] >= 0])
    assert counts.max() - counts.min() <= 1 + 0.02 * counts.max()


def test_unknown_policy_exits_2_listing_known_ones(tmp_path):
    res = CliRunner().invoke(__import__("trimtab.cli").cli.app,
                             ["replay", "--scenario", str(short_default(tmp_path, 30.0)),
                              "--policy", "nosuch", "--workers", "1"])
    assert res.exit_code == 2 and "known:" in res.output
