"""Sweeps build valid policies; the oracle provisions early and meets the SLO in the simulator."""
from __future__ import annotations

import numpy as np
import pytest

from trimtab.controllers.core.registry import make_policy
from trimtab.controllers.core.spec import SpecError
from trimtab.controllers.core.sweep import SWEEPS
from trimtab.sim import oracle
from trimtab.sim.replay import replay_context
from tests.controllers.builders import bounds, step_scenario


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_every_sweep_spec_builds(name):
    import trimtab.sim.llm.dynamo_profile  # noqa: F401  (registers the replay policy dynamo)
    from trimtab.controllers.core.registry import REPLAY_POLICIES
    from trimtab.sim.data import scenario_path
    from trimtab.sim.scenario import load_scenario

    specs = SWEEPS[name]
    assert len(specs) >= 5
    # A replay-only baseline (dynamo) is built from an LLM scenario's replay context.
    context = (replay_context(load_scenario(scenario_path("llm-peer")), None)
               if name in REPLAY_POLICIES else None)
    for spec in specs:
        assert make_policy(spec, bounds(), 15.0, context=context).name == name


def test_schedule_provisions_a_cold_start_ahead():
    need = np.array([2, 2, 2, 2, 2, 8, 8, 2, 2, 2])
    sched = oracle.schedule_from_needs(need, bounds(cold_start_s=30, min_replicas=1), 15.0)
    # Ticks look cold start + one interval ahead (3 intervals): 8 is asked for from tick 3.
    assert list(sched[:3]) == [2, 2, 2]
    assert list(sched[3:7]) == [8, 8, 8, 8]
    assert list(sched[7:10]) == [2, 2, 2]


def test_interval_rates():
    rates = oracle.interval_rates(np.array([0.5, 1.0, 14.9, 15.0, 29.0]), 15.0, 2)
    assert rates.tolist() == [3 / 15, 2 / 15]


@pytest.mark.parametrize("spec, in_replay, needle", [
    ("oracle", False, "runs only in a replay"), ("causal:window=4", False, "runs only in a replay"),
    ("oracle:depth=2", True, "oracle: unknown parameter(s) ['depth']"),
    ("oracle:max_runs=1", True, "max_runs = 1, must be an integer >= 3"),
    ("causal:window=0", True, "window = 0 ticks, must be an integer >= 1"),
    ("causal:window=4,load_factor=-1", True, "load_factor = -1, must be a number > 0"),
], ids=["oracle-live", "causal-live", "oracle-unknown", "oracle-runs", "causal-window",
        "causal-factor"])
def test_replay_only_policies_are_refused_with_the_rule(spec, in_replay, needle):
    from trimtab.sim.traces import trace_from_arrays

    sc = step_scenario()
    ctx = replay_context(sc, trace_from_arrays([1.0, 2.0])) if in_replay else None
    with pytest.raises(SpecError) as err:
        make_policy(spec, sc.bounds(), 15.0, context=ctx)
    assert needle in str(err.value)


def test_the_oracle_is_a_registered_replay_policy_and_its_module_imports_no_replay():
    import subprocess
    import sys

    from trimtab.controllers.core import registry

    assert {"oracle", "causal"} <= set(registry.REPLAY_POLICIES)
    assert "oracle" in registry.known_policies()
    # The cycle sim.oracle <-> sim.replay is gone: importing the oracle loads no replay.
    code = ("import sys, trimtab.sim.oracle, trimtab.sim.causal; "
            "print('trimtab.sim.replay' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_the_pilot_is_pure_its_statistics_are_its_state():
    from trimtab.controllers.core import capacity
    from trimtab.controllers.core.types import Snapshot

    pilot = oracle.PilotPolicy(replicas=4, interval_s=15.0)
    snap = Snapshot(time_s=15.0, window_s=15.0, batch_samples=((2.0, 0.07), (4.0, 0.09)))
    s0 = pilot.initial_state()
    d1, s1 = pilot.decide(snap, s0, 15.0)
    d2, s2 = pilot.decide(snap, s0, 15.0)
    assert (d1, s1) == (d2, s2) and s0 == capacity.CapacityState()
    assert s1 != s0 and d1.replicas == 4


@pytest.mark.slow
def test_oracle_meets_the_slo_and_is_no_dearer_than_static_peak():
    from trimtab.sim.replay import simulate
    from trimtab.sim.traces import load_trace

    sc = step_scenario()
    trace = load_trace(sc.trace, sc.base_dir)
    pol = make_policy("oracle", sc.bounds(), sc.controller.interval_s,
                      context=replay_context(sc, trace))
    run = simulate(sc, pol, trace)
    assert run.summary["policy"] == "oracle" and simulate(sc, "oracle", trace).summary == \
        run.summary
    assert run.summary["meets_slo"], run.summary
    peak = max(pol.schedule)
    static = simulate(sc, f"static:replicas={peak}", trace).summary
    assert run.summary["replica_hours"] < static["replica_hours"]
    # The step at 300 s is provisioned before it arrives (cold start 60 s).
    k_step = int(300 / 15)
    assert pol.schedule[k_step - 4] == pol.schedule[k_step]


@pytest.mark.slow
def test_trimtab_on_a_small_diurnal_cycle():
    """The one small comparison in the suite: trimtab meets the SLO on a daily-like cycle
    and costs less than a static fleet sized for the peak."""
    from trimtab.sim.replay import simulate
    from trimtab.sim.scenario import scenario_from_dict
    from trimtab.sim.traces import load_trace

    sc = scenario_from_dict({
        "name": "small-diurnal", "trace": {"format": "diurnal", "peak_rps": 150,
                                           "trough_rps": 30, "period_s": 1800,
                                           "duration_s": 1800, "seed": 4},
        "service": {"model": "affine", "base_ms": 50, "per_item_ms": 10, "cv": 0.1,
                    "max_batch": 8, "batch_timeout_ms": 5},
        "replicas": {"initial": 3, "min": 1, "max": 30, "cold_start_s": 60,
                     "concurrency_limit": 32, "queue_timeout_s": 10},
        "slo": {"latency_s": 0.5, "target": 0.99}, "controller": {"interval_s": 15}})
    trace = load_trace(sc.trace, sc.base_dir)
    ours = simulate(sc, "trimtab", trace).summary
    assert ours["meets_slo"], ours
    peak = simulate(sc, "static:replicas=8", trace).summary
    assert peak["meets_slo"]
    assert ours["replica_hours"] < peak["replica_hours"]
