"""The operator's comparison: defaults, carried over (leave one out), hindsight, past only."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from trimtab.sim.compare import carried_over, hindsight, scenario_paths
from trimtab.sim.scenario import ScenarioError

SETTINGS = ("static:replicas=1", "static:replicas=2", "static:replicas=3", "static:replicas=6")


class _Run:
    def __init__(self, meets: bool, cost: float) -> None:
        self.summary = {"meets_slo": meets, "cost": cost}


def table(rows: dict[str, list[tuple[bool, float]]]) -> dict[tuple[int, str], _Run]:
    """Results keyed as run_jobs keys them: setting -> one (meets, cost) per case."""
    return {(i, spec): _Run(m, c) for spec, runs in rows.items() for i, (m, c) in enumerate(runs)}


# setting: (meets, cost) on cases 0, 1, 2
CHOICES = table({"a": [(True, 1.0), (False, 1.0), (True, 1.0)],
                 "b": [(True, 2.0), (True, 2.0), (False, 2.0)],
                 "c": [(True, 5.0), (True, 3.0), (True, 9.0)],
                 "d": [(True, 4.0), (True, 4.0), (True, 4.0)]})


@pytest.mark.parametrize("case, carried, met", [
    (0, "d", 2),    # on 1 and 2: c and d meet both; d costs 8 there, c 12
    (1, "a", 2),    # on 0 and 2: a meets both and is the cheapest
    (2, "b", 2),    # on 0 and 1: b (4) is cheaper than d (8) and c (8, later in order)
])
def test_carried_over_is_the_cheapest_that_meets_on_all_the_others(case, carried, met):
    assert carried_over(CHOICES, case, 3, "abcd") == (carried, met)


def test_carried_over_falls_back_to_the_setting_meeting_on_most_others():
    res = table({"a": [(True, 1.0), (False, 1.0), (False, 1.0)],
                 "b": [(True, 2.0), (True, 2.0), (False, 2.0)]})
    assert carried_over(res, 0, 3, "ab") == ("b", 1)
    assert carried_over(res, 0, 1, "ab") is None     # one case: nothing to carry over


def test_hindsight_is_the_cheapest_meeting_here():
    assert hindsight(CHOICES, 1, "abcd") == "b"
    assert hindsight(CHOICES, 2, "abcd") == "a"
    assert hindsight(table({"a": [(False, 1.0)]}), 0, "a") is None


def test_a_folder_is_its_scenarios_sorted(tmp_path: Path):
    for name in ("b.yaml", "a.yaml", "notes.txt"):
        (tmp_path / name).write_text("{}")
    assert scenario_paths([tmp_path]) == [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    assert scenario_paths([]) == [None]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScenarioError, match="no scenario"):
        scenario_paths([empty])


def _scenario(name: str, rate_rps: float) -> dict[str, Any]:
    # A replica does at most 4 requests per 90 ms (44 rps); no warm-up, so a static setting
    # takes effect from the first tick.
    return {"name": name, "trace": {"format": "poisson", "rate_rps": rate_rps,
                                    "duration_s": 120, "seed": 4},
            "service": {"base_ms": 50, "per_item_ms": 10, "max_batch": 4, "batch_timeout_ms": 5},
            "replicas": {"initial": 6, "min": 1, "max": 10, "cold_start_s": 10},
            "slo": {"latency_s": 0.5, "target": 0.99}, "controller": {"warmup_s": 0}}


@pytest.fixture()
def fake_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = types.ModuleType("trimtab.controllers.core.sweep")
    sweep.SWEEPS = {"static": list(SETTINGS)}
    monkeypatch.setitem(sys.modules, "trimtab.controllers.core.sweep", sweep)


def _replay(tmp_path: Path, *args: str) -> dict[str, Any]:
    from trimtab.cli import app

    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["replay", *args, "--json", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


def test_several_scenarios_report_every_tuning(tmp_path: Path, fake_sweep: None):
    folder = tmp_path / "set"
    folder.mkdir()
    for name, rate in (("low", 30), ("mid", 60), ("high", 110)):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(_scenario(name, rate)))
    doc = _replay(tmp_path, "--scenario", str(folder), "--policy", "static:replicas=8",
                  "--sweep", "--workers", "2")
    assert [d["scenario"] for d in doc["scenarios"]] == ["high", "low", "mid"]
    by = {d["scenario"]: d for d in doc["scenarios"]}
    for d in doc["scenarios"]:
        tunings = {r["tuning"]: r for r in d["results"]}
        assert set(tunings) == {"default", "carried_over", "hindsight"}, d["results"]
        assert tunings["default"]["params"] == {"replicas": 8}
        carried = tunings["carried_over"]
        assert sorted(carried["carried_from"]) == sorted(set(by) - {d["scenario"]})
        assert carried["carried_met_slo_on"] == 2
        # Hindsight is never dearer than a carried-over setting that meets the SLO here.
        if carried["meets_slo"]:
            assert tunings["hindsight"]["cost"] <= carried["cost"]
        assert tunings["hindsight"]["meets_slo"]
        # The past-only bound has the oracle's fields, and neither is dearer than hindsight
        # by construction of the oracle; the past-only schedule meets the SLO.
        assert set(d["past_only"]) == set(d["oracle"]) | {"cost_vs_oracle"}
        assert d["past_only"]["meets_slo"] and d["past_only"]["policy"] == "causal"
    # 110 rps needs 3 replicas of 44 rps, 30 rps needs 1: what low and mid carry over from
    # the others includes high's need, so it is dearer than their own hindsight setting.
    assert by["low"]["results"][1]["params"]["replicas"] >= 3
    assert by["low"]["results"][2]["params"]["replicas"] < 3
    # ... and what high carries over from the quieter two does not meet its SLO.
    assert not by["high"]["results"][1]["meets_slo"]


def test_one_scenario_keeps_the_shape_without_a_carried_over_setting(tmp_path: Path,
                                                                    fake_sweep: None):
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(_scenario("one", 60)))
    doc = _replay(tmp_path, "--scenario", str(path), "--policy", "static:replicas=8", "--sweep",
                  "--workers", "1")
    assert "scenarios" not in doc and doc["scenario"] == "one"
    assert [r["tuning"] for r in doc["results"]] == ["default", "hindsight"]
    assert "oracle" in doc and "past_only" in doc


def test_repeated_names_are_refused(tmp_path: Path):
    from trimtab.cli import app

    for f in ("a.yaml", "b.yaml"):
        (tmp_path / f).write_text(yaml.safe_dump(_scenario("same", 10)))
    res = CliRunner().invoke(app, ["replay", "-s", str(tmp_path), "-p", "static:replicas=1"])
    assert res.exit_code == 2 and "names repeat" in res.output


def test_ray_tasks_give_the_results_local_processes_give(tmp_path: Path, fake_sweep: None):
    """The same replays as Ray tasks on a private local Ray: identical documents."""
    for name, rate in (("low", 30), ("high", 110)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(_scenario(name, rate)))
    args = ("-s", str(tmp_path / "low.yaml"), "-s", str(tmp_path / "high.yaml"),
            "-p", "static:replicas=8", "--sweep", "--workers", "2")
    local = _replay(tmp_path, *args)
    on_ray = _replay(tmp_path, *args, "--ray-address", "local")
    assert on_ray == local
    assert len(local["scenarios"]) == 2


def test_without_the_past_only_bound_the_oracle_stays(tmp_path: Path, fake_sweep: None):
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(_scenario("one", 60)))
    doc = _replay(tmp_path, "-s", str(path), "-p", "static:replicas=8", "--sweep",
                  "--no-past-only", "--workers", "1")
    assert "oracle" in doc and "past_only" not in doc


def test_the_summary_over_scenarios_counts_each_policy_and_tuning():
    from trimtab.sim.cli import summary_rows

    def r(policy: str, tuning: str, att: float, ratio: float) -> dict[str, Any]:
        return {"policy": policy, "tuning": tuning, "slo_attainment": att,
                "meets_slo": att >= 0.99, "cost_vs_oracle": ratio}

    docs = [{"results": [r("trimtab", "default", 0.995, 1.2), r("hpa", "hindsight", 0.99, 1.5)],
             "oracle": r("oracle", "", 0.991, 1.0)},
            {"results": [r("trimtab", "default", 0.97, 1.1), r("hpa", "hindsight", 0.999, 2.5)],
             "oracle": r("oracle", "", 0.992, 1.0)}]
    rows = {(x["policy"], x["tuning"]): x for x in summary_rows(docs)}
    assert rows[("trimtab", "default")]["met"] == 1
    assert rows[("trimtab", "default")]["worst_attainment"] == 0.97
    assert rows[("trimtab", "default")]["mean_attainment"] == pytest.approx(0.9825)
    assert rows[("hpa", "hindsight")]["worst_cost_vs_oracle"] == 2.5
    assert rows[("oracle", "-")]["met"] == 2


def test_the_markdown_table_names_the_cheapest_of_each_tuning():
    from trimtab.sim.report import comparison_markdown

    def r(policy: str, tuning: str, att: float, rh: float, params: dict | None = None):
        return {"policy": policy, "params": params or {}, "tuning": tuning,
                "slo_attainment": att, "meets_slo": att >= 0.99, "replica_hours": rh,
                "cost": rh * 2, "scale_events": 3}

    doc = {"scenario": "s", "results": [
        r("trimtab", "default", 0.995, 10.0), r("hpa", "default", 0.98, 5.0),
        r("keda", "default", 0.999, 12.0), r("hpa", "carried_over", 0.991, 11.0, {"target": 6}),
        r("hpa", "hindsight", 0.992, 9.0, {"target": 8})],
        "oracle": r("oracle", "", 0.99, 7.0), "past_only": r("causal", "", 0.993, 8.5)}
    row = comparison_markdown([doc]).splitlines()[2]
    assert row == ("| s | 10.00 (3) | keda 12.00 (3) | hpa:target=6 11.00 (3) | "
                   "hpa:target=8 9.00 (3) | 8.50 (3) | 7.00 |")
    doc["results"][0]["slo_attainment"], doc["results"][0]["meets_slo"] = 0.97, False
    doc["results"] = doc["results"][:3]
    row = comparison_markdown([doc]).splitlines()[2]
    assert "10.00 (3), misses: 0.9700" in row and row.count("none meets") == 2
