"""The peer-simulator configuration, reduced to 200 requests: its figures hang together."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from trimtab.sim.llm import peer
from trimtab.sim.llm.cli import register
from trimtab.sim.llm.profile import load_step_model
from trimtab.sim.llm.types import ITL_BOUNDS_S

N = 200
LATENCIES = ("ttft", "itl", "e2e", "tpot")


@pytest.fixture(scope="module")
def figures() -> dict:
    return peer.run_peer(n_requests=N, seed=7)


def test_every_request_is_served_and_below_saturation_throughput_follows_the_offered_rate(
        figures):
    assert [r["rate_rps"] for r in figures["rates"]] == list(peer.RATES_RPS)
    light = [r for r in figures["rates"] if r["load_vs_saturation"] < 0.6]
    assert light, "the lowest rate should load the replica well under its saturation"
    for r in figures["rates"]:
        assert r["served"] == N and r["failed"] == 0
        assert r["output_tokens"] == N * figures["config"]["output_tokens_mean"]
        assert r["throughput_rps"] <= r["offered_rps"] * 1.001
        assert r["load_vs_saturation"] == pytest.approx(
            r["offered_rps"] / figures["saturation"]["throughput_rps"])
    for r in light:     # the span runs to the last finish: a drain tail of tens of seconds
        assert r["throughput_rps"] >= 0.85 * r["offered_rps"]
    thr = [r["throughput_rps"] for r in figures["rates"]]
    assert thr == sorted(thr)       # more offered, more served per second, up to saturation


def test_percentiles_are_ordered_and_latency_grows_with_load(figures):
    step = load_step_model(peer.PROFILE)
    for r in figures["rates"]:
        for m in LATENCIES:
            assert 0 < r[f"{m}_p50_s"] <= r[f"{m}_p99_s"], (r["rate_rps"], m)
        # a decode step costs at least c0 (noise cv well under 5 %)
        assert r["itl_p50_s"] >= 0.95 * step.c0_ms / 1000.0
        assert r["ttft_p50_s"] <= r["e2e_p50_s"]
    low, high = figures["rates"][0], figures["rates"][-1]
    assert high["e2e_p99_s"] >= low["e2e_p99_s"] and high["itl_p99_s"] >= low["itl_p99_s"]


def test_saturation_throughput_bounds_every_rate_and_fills_the_batch(figures):
    sat = figures["saturation"]
    low = figures["rates"][0]
    assert sat["throughput_rps"] > low["throughput_rps"]
    assert sat["output_tokens_per_s"] > low["output_tokens_per_s"]
    for r in figures["rates"]:  # no run sustains more (5 %: the window's mix is not the run's)
        assert r["throughput_rps"] <= 1.05 * sat["throughput_rps"]
    t0, t1 = sat["window_s"]
    assert 0 < t0 < t1
    # with the queue long, the batch is held by the KV blocks or the sequence cap
    assert sat["mean_running"] > 10
    # tokens per second and requests per second agree through the mean output length
    ratio = sat["output_tokens_per_s"] / sat["throughput_rps"]
    assert 0.5 * figures["config"]["output_tokens_mean"] < ratio \
        < 2.0 * figures["config"]["output_tokens_mean"]


def test_lengths_are_capped_and_fixed_by_the_seed():
    p, o = peer.peer_lengths(500, seed=3)
    assert (p + o).max() <= peer.MAX_TOTAL_TOKENS and p.min() >= 1 and o.min() >= 1
    p2, o2 = peer.peer_lengths(500, seed=3)
    assert np.array_equal(p, p2) and np.array_equal(o, o2)
    assert not np.array_equal(p, peer.peer_lengths(500, seed=4)[0])


@pytest.mark.parametrize("scale_s", [0.003, 0.05, 1.7], ids=["3ms", "50ms", "1.7s"])
def test_histogram_quantiles_land_within_one_bucket_of_the_exact_ones(scale_s):
    x = np.random.default_rng(1).lognormal(np.log(scale_s), 0.4, 20_000)
    bounds = np.asarray(ITL_BOUNDS_S)
    counts = np.bincount(np.searchsorted(bounds, x, side="left"), minlength=len(bounds) + 1)
    step = bounds[1] / bounds[0]
    for q in (0.5, 0.9, 0.99):
        est, exact = peer.histogram_quantile(counts, q), float(np.quantile(x, q))
        assert exact / step <= est <= exact * step, q
    assert math.isnan(peer.histogram_quantile(np.zeros(len(bounds) + 1), 0.5))


def test_cli_prints_the_table_and_writes_json(tmp_path):
    app = typer.Typer()
    register(app)
    out = tmp_path / "peer.json"
    res = CliRunner().invoke(app, ["llm", "peer", "--requests", "40", "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["config"]["scheduler"]["num_blocks"] == 3328 and len(doc["rates"]) == 3
    assert "saturation" in res.output and "requests/s" in res.output
