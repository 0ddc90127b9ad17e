"""Fitting the serving stack from live metrics: saturation, the effective line, the hop, the lag."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from trimtab.up.fit import (ReplicaWindow, Saturation, ServiceFit, effective_service, fit_hop_s,
                          fit_saturation, lag_windows)
from trimtab.up.run import LiveConfig

MEASURED = ServiceFit(base_ms=40.0, per_item_ms=60.0, cv=0.0, windows=10)


def window(batches: float = 40.0, mean_batch: float = 1.0, utilization: float = 0.5,
           window_s: float = 5.0) -> ReplicaWindow:
    return ReplicaWindow(batches, batches * mean_batch, utilization * window_s, window_s)


def saturated_windows(p_two: float, fit: ServiceFit, seconds: int, seed: int,
                      idle_windows: int = 3) -> list[ReplicaWindow]:
    """A replica busy back to back that Ray's router feeds one request per batch, two with
    probability ``p_two`` (what the live runs showed), then a few quiet windows."""
    rng = np.random.default_rng(seed)
    t, rows = 0.0, []
    while t < seconds:
        b = 2 if rng.uniform() < p_two else 1
        rows.append((t, b, fit.batch_ms(b) / 1000.0))
        t += fit.batch_ms(b) / 1000.0
    out = []
    for w0 in range(0, seconds - 4, 5):
        sel = [(b, s) for t0, b, s in rows if w0 <= t0 < w0 + 5]
        out.append(ReplicaWindow(len(sel), sum(b for b, _ in sel), sum(s for _, s in sel), 5.0))
    return out + [window(12, 1.0, 0.25)] * idle_windows


@pytest.mark.parametrize("windows, concurrency, rps, n", [
    # Counterfactual: with all windows counted the rate would be (53+54+15)/15 = 8.1.
    ([window(44, 53 / 44, 0.99), window(43, 54 / 43, 0.99), window(15, 1.0, 0.30)], 2, 10.7, 2),
    ([window(50, 1.02, 0.98), window(49, 1.04, 0.97)], 1, 10.2, 2),
    ([window(10, 3.6, 0.96)], 4, 7.2, 1),
    ([window(20, 1.0, 0.5), window(30, 1.0, 0.94)], None, None, 0),
    ([], None, None, 0),
], ids=["batch-1.2-holds-2", "batch-1.03-holds-1", "batch-3.6-holds-4", "never-saturated",
        "no-windows"])
def test_saturation_from_busy_windows(windows, concurrency, rps, n):
    sat = fit_saturation(windows)
    assert sat.concurrency == concurrency
    assert sat.windows == n
    if rps is None:
        assert sat.rps is None
    else:
        assert sat.rps == pytest.approx(rps, abs=0.05)


@pytest.mark.parametrize("p_two, concurrency", [(0.2, 2), (0.5, 2), (0.02, 1)],
                         ids=["batch-1.2", "batch-1.5", "batch-1.02"])
def test_a_saturated_replica_gives_back_its_rate_and_holding(p_two, concurrency):
    windows = saturated_windows(p_two, MEASURED, seconds=60, seed=1)
    sat = fit_saturation(windows)
    true_rps = (1 + p_two) / (MEASURED.batch_ms(1 + p_two) / 1000.0)
    assert sat.windows == 12            # the three quiet windows are left out
    assert sat.rps == pytest.approx(true_rps, rel=0.03)
    assert sat.mean_batch == pytest.approx(1 + p_two, abs=0.08)
    assert sat.concurrency == concurrency


@pytest.mark.parametrize("sat, base_ms, per_item_ms", [
    (Saturation(2, 10.5, 1.2, 3), 9.524, 90.476),   # s(2) = 2 / 10.5 = 190.5 ms
    (Saturation(1, 8.0, 1.0, 3), 65.0, 60.0),       # s(1) = 1 / 8 = 125 ms
    (Saturation(1, 12.0, 1.0, 3), 40.0, 60.0),      # faster than the batches: unchanged
    (Saturation(3, 20.0, 2.9, 3), 40.0, 60.0),      # s(3) 150 < 220 ms: never faster
    (Saturation(None, None, None, 0), 40.0, 60.0),  # never saturated: the batch line
], ids=["holds-2", "holds-1-slower", "holds-1-faster", "never-faster", "unsaturated"])
def test_effective_line(sat, base_ms, per_item_ms):
    eff = effective_service(MEASURED, sat)
    assert eff.base_ms == pytest.approx(base_ms, abs=1e-3)
    assert eff.per_item_ms == pytest.approx(per_item_ms, abs=1e-3)
    assert eff.batch_ms(1) >= MEASURED.batch_ms(1) - 1e-9


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 6), rps=st.floats(2.0, 12.0))
def test_effective_line_meets_the_saturated_rate_and_keeps_s1(n, rps):
    eff = effective_service(MEASURED, Saturation(n, rps, n - 0.5, 4))
    assert eff.batch_ms(1) == pytest.approx(MEASURED.batch_ms(1), abs=2e-3)
    # A replica holding n serves n / s(n): the measured rate, or the batches' own if faster.
    assert n / (eff.batch_ms(n) / 1000.0) == pytest.approx(
        min(rps, n / (MEASURED.batch_ms(n) / 1000.0)), rel=1e-3)


def served_rps(service: ServiceFit, concurrency: int | None, offered_rps: float = 20.0,
               duration_s: float = 60.0) -> float:
    """What one simulated replica serves under a steady overload."""
    from trimtab.sim.replay import simulate
    from trimtab.sim.scenario import scenario_from_dict
    from trimtab.sim.traces import trace_from_arrays

    sc = scenario_from_dict({
        "name": "saturated",
        "trace": {"format": "poisson", "rate_rps": offered_rps, "duration_s": duration_s},
        "service": {"base_ms": service.base_ms, "per_item_ms": service.per_item_ms,
                    "max_batch": 8, "batch_timeout_ms": 5},
        "replicas": {"initial": 1, "min": 1, "max": 1, "concurrency_limit": concurrency},
        "controller": {"interval_s": 5}, "drain_s": 0})
    n = int(offered_rps * duration_s)
    arrivals = np.sort(np.random.default_rng(0).uniform(0, duration_s, n))
    r = simulate(sc, "static:replicas=1", trace_from_arrays(arrivals), record_requests=True)
    return float(np.count_nonzero(r.requests["finish_s"] <= duration_s)) / duration_s


@pytest.mark.parametrize("sat", [Saturation(2, 10.5, 1.2, 3), Saturation(1, 8.0, 1.0, 3),
                                 Saturation(3, 11.0, 2.3, 3)],
                         ids=["holds-2", "holds-1", "holds-3"])
def test_a_replayed_saturated_replica_serves_the_live_rate(sat):
    """The simulator with the effective line and concurrency serves what the live replica did."""
    eff = effective_service(MEASURED, sat, batch_timeout_ms=5.0)
    assert served_rps(eff, sat.concurrency) == pytest.approx(sat.rps, rel=0.05)


def test_the_batch_line_alone_overstates_a_saturated_replica():
    # Counterfactual of the test above: full batches of 8 at 40 + 60 b ms, ~15 rps.
    assert served_rps(MEASURED, None) > 14.0


def test_hop_is_the_low_quantile_above_a_lone_request():
    rng = np.random.default_rng(4)
    hop_s, timeout_ms = 0.018, 5.0
    lone = hop_s + (timeout_ms + MEASURED.batch_ms(1)) / 1000.0 + rng.exponential(0.002, 900)
    queued = lone[:100] + rng.exponential(0.3, 100)    # a tenth waited behind others
    lat = np.concatenate([lone, queued])
    assert fit_hop_s(lat, MEASURED, timeout_ms) == pytest.approx(hop_s, abs=0.002)


@pytest.mark.parametrize("latencies, hop", [([], 0.0), ([0.05, 0.06], 0.0),
                                            ([float("nan"), 0.2], 0.095)],
                         ids=["none", "faster-than-the-model", "nan-ignored"])
def test_hop_edges(latencies, hop):
    assert fit_hop_s(latencies, MEASURED, 5.0, quantile=0.0) == pytest.approx(hop, abs=1e-6)


@pytest.mark.parametrize("window_s, interval_s, lag", [(5, 3, 2), (5, 10, 1), (10, 2, 6),
                                                       (1, 15, 1)],
                         ids=["live-default", "slow-ticks", "long-window", "short"])
def test_lag_windows(window_s, interval_s, lag):
    assert lag_windows(window_s, interval_s) == lag


def test_fit_model_puts_the_terms_together():
    from trimtab.up.fidelity import fit_model

    cfg = LiveConfig(duration_s=60)
    samples = [(1.0, 0.100, 40), (2.0, 0.160, 20), (3.0, 0.220, 5)]
    windows = [window(44, 53 / 44, 0.99), window(43, 54 / 43, 0.99), window(10, 1.0, 0.2)]
    lat = np.full(200, 0.125)

    class Applied:
        at_s, changes = 10.0, {"replicas": (1, 2)}

    model = fit_model(cfg, samples, windows, lat, [Applied()], [(11.5, 1, 1), (12.5, 2, 0)])
    assert model.measured.base_ms == pytest.approx(40.0, abs=0.01)
    assert model.saturation.concurrency == 2
    # A cycle of 2 is 2 / rate, less the batch wait timeout the batcher spends waiting.
    assert model.service.batch_ms(2) == pytest.approx(
        2000 / model.saturation.rps - cfg.batch_timeout_ms, rel=1e-3)
    assert model.hop_s == pytest.approx(0.020, abs=1e-4)
    assert model.cold_start_s == pytest.approx(2.0)      # up between 11.5 and 12.5
    assert model.lag == 2
    summary = model.summary()
    assert summary["saturated_concurrency"] == 2 and summary["hop_ms"] == pytest.approx(20.0)


def test_replica_windows_from_a_recorded_prometheus_answer(monkeypatch):
    """A real answer (recorded from a live run's Prometheus, 25 s around its surge)."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from trimtab.common.prometheus import PromClient
    from trimtab.up import results

    rec = json.loads((Path(__file__).parent / "data" / "ray_batch_windows.json").read_text())
    asked = []

    def query_range(client, promql, start_s, end_s, step_s, timeout_s=None):
        asked.append((promql, step_s))
        return rec["queries"][promql]

    monkeypatch.setattr(PromClient, "range", query_range)
    run = SimpleNamespace(prom_url="http://127.0.0.1:1", load_start_unix_s=rec["start_unix_s"],
                          load_end_unix_s=rec["end_unix_s"], config=SimpleNamespace(settle_s=0))
    windows = results.replica_windows(run)
    assert len(asked) == 3 and all(step == 5.0 for _, step in asked)
    assert len(windows) == 13                     # 4 replicas, windows with batches
    busiest = max(windows, key=lambda w: w.utilization)
    assert busiest.utilization == pytest.approx(0.992, abs=1e-3)
    sat = fit_saturation(windows)
    # The one replica that ran through the surge: batches of 1.25, 10.6 rps, holds 2.
    assert (sat.concurrency, sat.windows) == (2, 2)
    assert sat.rps == pytest.approx(10.625, abs=1e-3)
    assert sat.mean_batch == pytest.approx(1.25, abs=1e-3)
    samples = results.batch_samples(run, window_s=5.0)
    assert len(samples) == len(windows)
    assert all(0.09 < s < 0.25 for _, s, _ in samples)    # 40 + 60 b ms at b in 1..2.5
