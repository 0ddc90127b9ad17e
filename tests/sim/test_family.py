"""The generated held-out family: each kind has the character it claims, per seed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trimtab.sim.heldout import REPLICA_RPS, write_family
from trimtab.sim.scenario import ScenarioError, load_scenario
from trimtab.sim.traces import TraceError, load_trace
from trimtab.sim.traces.config import TraceConfig
from trimtab.sim.traces.family import KINDS

MEAN_RPS = 40.0


def arrivals(kind: str, seed: int, duration_s: float = 7200.0) -> np.ndarray:
    cfg = TraceConfig(format="family", family={"kind": kind, "mean_rps": MEAN_RPS},
                      duration_s=duration_s, seed=seed)
    return load_trace(cfg, Path(".")).arrival_s


def per_minute(arr: np.ndarray) -> np.ndarray:
    return np.bincount((arr // 60).astype(np.int64), minlength=120) / 60.0


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_its_mean_and_each_seed_its_own_curve(kind: str):
    a, b = arrivals(kind, 1), arrivals(kind, 2)
    for arr in (a, b):
        # Poisson noise on ~288k arrivals is 0.2 %; the curve is scaled to the mean exactly.
        assert len(arr) / 7200.0 == pytest.approx(MEAN_RPS, rel=0.02)
    assert np.array_equal(a, arrivals(kind, 1)), "a seed must give the same trace"
    assert not np.allclose(per_minute(a)[:120], per_minute(b)[:120], rtol=0.2)


# kind: (lowest peak-minute / mean over seeds, highest), share of idle minutes (< 10 % of mean)
CHARACTER = {"step": ((1.3, 6.0), (0.0, 0.05)), "flash-crowd": ((3.0, 16.0), (0.0, 0.05)),
             "diurnal-noise": ((1.3, 4.0), (0.0, 0.05)), "heavy-tail": ((1.5, 51.0), (0.0, 0.05)),
             "idle-burst": ((10.0, 60.0), (0.6, 1.0))}


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_has_its_character(kind: str):
    (peak_lo, peak_hi), (idle_lo, idle_hi) = CHARACTER[kind]
    for seed in (1, 2, 3):
        m = per_minute(arrivals(kind, seed))[:120]
        assert peak_lo <= m.max() / m.mean() <= peak_hi, (seed, m.max() / m.mean())
        assert idle_lo <= float(np.mean(m < 0.1 * m.mean())) <= idle_hi, seed


def test_the_written_scenarios_load_and_their_ceiling_covers_the_peak(tmp_path: Path):
    paths = write_family(tmp_path, ("idle-burst", "step"), (1, 2), MEAN_RPS, 3600.0, 45.0)
    assert [p.name for p in paths] == ["idle-burst-s1-c45.yaml", "idle-burst-s2-c45.yaml",
                                       "step-s1-c45.yaml", "step-s2-c45.yaml"]
    for p in paths:
        sc = load_scenario(p)
        arr = load_trace(sc.trace, sc.base_dir).arrival_s
        peak_rps = np.bincount((arr // 10).astype(np.int64)).max() / 10.0
        assert sc.replicas.max * REPLICA_RPS >= 1.5 * peak_rps * 0.999
        assert sc.replicas.cold_start_s == 45.0


def test_bad_family_input_is_a_named_error(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown"):
        write_family(tmp_path, ("bursty",))
    with pytest.raises(TraceError, match="duration_s"):
        load_trace(TraceConfig(format="family", family={"kind": "step", "mean_rps": 1},
                               duration_s=1e12), Path("."))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrace: {format: family, duration_s: 60, "
                   "family: {kind: step, mean_rps: .inf}}\nslo: {latency_s: 1}\n")
    with pytest.raises(ScenarioError, match="mean_rps"):
        load_scenario(bad)
    bad.write_text("name: x\ntrace: {format: family, duration_s: 60}\nslo: {latency_s: 1}\n")
    with pytest.raises(ScenarioError, match="family"):
        load_scenario(bad)


def test_the_command_writes_every_kind(tmp_path: Path):
    from typer.testing import CliRunner

    from trimtab.cli import app

    res = CliRunner().invoke(app, ["sim", "family", "--out", str(tmp_path), "--seeds", "1",
                                   "--duration-s", "600"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == sorted(
        f"{k}-s1-c60.yaml" for k in KINDS)
    res = CliRunner().invoke(app, ["sim", "family", "--out", str(tmp_path), "--kind", "nope"])
    assert res.exit_code == 2 and "unknown" in res.output


def test_trimtab_makes_no_scale_event_under_constant_load():
    """Issue 17's target: none under constant load (the burst memory must not fire)."""
    from trimtab.sim.replay import simulate
    from trimtab.sim.scenario import scenario_from_dict

    sc = scenario_from_dict({
        "name": "constant", "trace": {"format": "poisson", "rate_rps": 300, "duration_s": 1800,
                                      "seed": 2},
        "service": {"model": "affine", "base_ms": 60, "per_item_ms": 12, "cv": 0.2,
                    "max_batch": 16, "batch_timeout_ms": 10},
        "replicas": {"initial": 8, "min": 1, "max": 40, "cold_start_s": 60,
                     "concurrency_limit": 64, "queue_timeout_s": 10},
        "slo": {"latency_s": 0.75, "target": 0.99}, "controller": {"interval_s": 15}})
    res = simulate(sc, "trimtab")
    assert res.summary["meets_slo"] and res.summary["scale_events"] == 0, res.summary
