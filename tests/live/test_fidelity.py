"""Fitting the service model from live batch metrics, and the sim-vs-live comparison."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from trimtab.up.fidelity import ServiceFit, cold_start_s, compare, fit_service, replay
from trimtab.sim.replay import RunResult


@pytest.mark.parametrize("samples, base_ms, per_item_ms", [
    ([(1, 0.075, 40), (3, 0.125, 10)], 50.0, 25.0),
    ([(1, 0.100, 5), (2, 0.160, 5), (4, 0.280, 5)], 40.0, 60.0),
    ([(2, 0.2, 10), (2, 0.2, 3)], 200.0, 0.0),        # one batch size: flat model
], ids=["two-points", "three-points", "single-size"])
def test_fit_recovers_an_affine_batch_time(samples, base_ms, per_item_ms):
    fit = fit_service(samples)
    assert fit.base_ms == pytest.approx(base_ms, abs=1e-6)
    assert fit.per_item_ms == pytest.approx(per_item_ms, abs=1e-6)


def test_fit_without_batches_says_so():
    with pytest.raises(ValueError, match="no batch samples"):
        fit_service([(1, 0.1, 0)])


@settings(max_examples=40, deadline=None)
@given(base=st.floats(5, 200), slope=st.floats(0.5, 100), seed=st.integers(0, 10**6))
def test_fit_is_close_under_noise(base, slope, seed):
    rng = np.random.default_rng(seed)
    b = rng.uniform(1, 8, size=60)
    t_ms = (base + slope * b) * rng.normal(1.0, 0.01, size=60)
    fit = fit_service([(bi, ti / 1000, 10) for bi, ti in zip(b, t_ms)])
    predicted = fit.base_ms + fit.per_item_ms * 4.0
    assert predicted == pytest.approx(base + slope * 4.0, rel=0.03)
    assert fit.per_item_ms >= 0 and fit.base_ms >= 0


@dataclass
class Applied:
    at_s: float
    changes: dict


def test_cold_start_is_time_from_scale_up_to_running():
    applied = [Applied(10.0, {"replicas": (1, 3)}), Applied(30.0, {"replicas": (3, 2)}),
               Applied(40.0, {"max_batch_size": (2, 4)})]
    samples = [(t, 1 if t < 12.5 else 3, 0) for t in np.arange(0, 50, 0.5)]
    # First seen running at 12.5, not yet at 12.0: up at 12.25 on average.
    assert cold_start_s(applied, samples) == pytest.approx(2.25)
    assert cold_start_s([], samples) == 2.0      # nothing scaled up: the default


def _sim(ready: list[float], latencies: list[float], attainment: float) -> RunResult:
    n = len(ready)
    ticks = {"time_s": np.arange(1, n + 1, dtype=float), "ready_replicas": np.asarray(ready, float),
             "starting_replicas": np.zeros(n)}
    lat = np.asarray(latencies)
    req = {"arrival_s": np.zeros(len(lat)), "finish_s": lat, "outcome": np.zeros(len(lat))}
    return RunResult(summary={"slo_attainment": attainment}, ticks=ticks, accounting={},
                     requests=req)


def test_compare_reports_relative_errors():
    live_lat = np.linspace(0.1, 1.0, 101)
    sim = _sim([1, 1, 2, 2, 2, 2, 1, 1, 1, 1], list(live_lat * 1.1), 0.95)
    live_replicas = [(float(t), 1 if t < 2 or t >= 6 else 2, 0) for t in range(10)]
    fid = compare({"slo_attainment": 0.97}, live_lat, live_replicas, sim, duration_s=10.0,
                  slo_latency_s=1.0)
    assert fid["p99_rel_error"] == pytest.approx(0.1, abs=1e-3)
    assert fid["p50_rel_error"] == pytest.approx(0.1, abs=1e-3)
    # live: 1,1,2,2,2,2,1,1,1,1 = 14 replica-s; the sim's ticks are shifted by one second.
    assert fid["live"]["replica_seconds"] == 14.0
    assert fid["replica_seconds_rel_error"] == pytest.approx(0.0, abs=1e-9)
    assert fid["replicas_mean_abs_error"] == pytest.approx(0.2)
    assert fid["slo_attainment_abs_error"] == pytest.approx(0.02)


def test_replaying_the_fitted_model_runs_the_same_policy_through_the_simulator():
    from trimtab.up.load import RampProfile, arrivals
    from trimtab.up.run import LiveConfig

    cfg = LiveConfig(duration_s=60)
    t = arrivals(RampProfile(60.0, cfg.base_rps, cfg.surge_factor), seed=3)
    result = replay(cfg, t, ServiceFit(40.0, 60.0, 0.05, 10), cold_s=2.0)
    assert result.summary["requests"] == len(t)
    assert result.summary["served"] + result.summary["shed"] + result.summary[
        "timed_out"] + result.summary["still_queued"] + result.summary["failed"] == len(t)
    # The surge needs more than one replica of this model (one holds at most ~15 rps).
    assert result.ticks["desired_replicas"].max() >= 2
    assert result.ticks["desired_replicas"].min() >= cfg.min_replicas


def test_scripted_policy_replays_the_live_decisions_at_their_times():
    from trimtab.up.fidelity import ScriptedPolicy

    applied = [Applied(10.0, {"max_batch_size": (2, 6)}),
               Applied(20.0, {"replicas": (1, 3), "concurrency_limit": (16, 30)}),
               Applied(40.0, {"replicas": (3, 2)})]
    p = ScriptedPolicy(applied, min_replicas=1)
    got = [p.decide(None, None, t)[0] for t in (5.0, 10.0, 25.0, 45.0)]
    assert [d.replicas for d in got] == [1, 1, 3, 2]
    assert [d.max_batch_size for d in got] == [None, 6, 6, 6]
    assert got[2].concurrency_limit == 30


def test_replaying_live_decisions_follows_their_replica_counts():
    from trimtab.up.fidelity import replay_decisions
    from trimtab.up.load import RampProfile, arrivals
    from trimtab.up.run import LiveConfig

    cfg = LiveConfig(duration_s=60)
    t = arrivals(RampProfile(60.0, cfg.base_rps, cfg.surge_factor), seed=3)
    applied = [Applied(15.0, {"replicas": (1, 3)}), Applied(45.0, {"replicas": (3, 1)})]
    r = replay_decisions(cfg, t, ServiceFit(40.0, 60.0, 0.0, 10), 2.0, applied)
    desired = dict(zip(r.ticks["time_s"], r.ticks["desired_replicas"]))
    assert desired[10.0] == 1 and desired[30.0] == 3 and desired[50.0] == 1


@pytest.mark.parametrize("offset_s, times", [(0.0, [58.8, 64.4]), (1.1, [57.7, 63.3])],
                         ids=["same-clock", "controller-started-earlier"])
def test_applied_changes_move_to_the_loads_clock(offset_s, times):
    from trimtab.up.fidelity import on_load_clock

    applied = [Applied(58.8, {"replicas": (1, 2)}), Applied(64.4, {"replicas": (2, 3)})]
    moved = on_load_clock(applied, offset_s)
    assert [a.at_s for a in moved] == pytest.approx(times)
    assert [a.changes for a in moved] == [a.changes for a in applied]


def test_evaluate_fits_replays_four_ways_and_reports_the_model(monkeypatch):
    """Without Ray or Prometheus: the two Prometheus reads replaced by synthetic rows."""
    from types import SimpleNamespace

    from trimtab.up import fidelity, results
    from trimtab.up.fit import ReplicaWindow
    from trimtab.up.load import RampProfile, arrivals
    from trimtab.up.run import LiveConfig

    cfg = LiveConfig(duration_s=60)
    t = arrivals(RampProfile(60.0, cfg.base_rps, cfg.surge_factor), seed=3)
    monkeypatch.setattr(results, "batch_samples", lambda run: [(1.0, 0.1, 30), (2.0, 0.16, 10)])
    monkeypatch.setattr(results, "replica_windows", lambda run: [
        ReplicaWindow(44, 53, 4.95, 5.0), ReplicaWindow(20, 20, 2.0, 5.0)])
    log = SimpleNamespace(outcome=["ok"] * len(t), latency_s=[0.125] * len(t))
    run = SimpleNamespace(
        config=cfg, arrival_s=t, request_log=log, load_offset_s=1.0,
        applied=[Applied(17.0, {"replicas": (1, 2)}), Applied(46.0, {"replicas": (2, 1)})],
        replica_samples=[(float(s), 2 if 18 <= s < 45 else 1, 0) for s in range(60)])
    out = fidelity.evaluate(run, {"slo_attainment": 0.99})
    fid, model = out["fidelity"], out["model"]
    # Applied at 17.0 on the controller's clock = 16.0 on the load's; up between 17 and 18.
    assert model.saturation.concurrency == 2 and model.cold_start_s == pytest.approx(1.5)
    assert model.hop_s == pytest.approx(0.020, abs=1e-6)
    assert fid["model"]["saturated_concurrency"] == 2
    for part in (fid, fid["open_loop"], fid["before"]["closed_loop"], fid["before"]["open_loop"]):
        assert part["p99_rel_error"] is not None and part["replica_seconds_rel_error"] is not None
    # Open loop replays the live replica counts (shifted onto the load's clock): the
    # replica-seconds agree; the fleet ran at the fitted concurrency.
    assert fid["open_loop"]["replica_seconds_rel_error"] <= 0.05
    assert out["sim"].ticks["concurrency_limit"].max() == 2
    # The hop is added to every simulated latency: nothing is faster than hop + s(1).
    assert fid["sim"]["latency_p50_s"] >= 0.020 + 0.100
