"""The benchmark's parts: Poisson schedule, the load generator, and the JSON contract (quick run)."""
from __future__ import annotations

import asyncio
import json
import os

import numpy as np
import pytest

from trimtab.collectors.bench import WRK_SCRIPT, exposition_ms, run_bench, wrk
from trimtab.common.poisson import steady_arrivals_s
from tests.collectors.support import serve, upstream_app

ALL_CORES = set(os.sched_getaffinity(0))


@pytest.mark.parametrize("rate", [50.0, 500.0, 3000.0], ids=lambda r: f"{r:.0f}/s")
def test_poisson_schedule_has_the_rate_and_exponential_gaps(rate):
    arrivals = steady_arrivals_s(rate, 20.0, seed=3)
    # A Poisson count: within 5 sd of its mean (5 % was 1.6 sd at 50/s, passing by the seed).
    assert abs(len(arrivals) - rate * 20) < 5 * np.sqrt(rate * 20)
    gaps = np.diff(arrivals)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.08)   # CV of exponential
    assert np.all(gaps > 0)


def test_wrk_with_think_times_and_closed_loop_against_loopback(tmp_path):
    """wrk (the bench's load generator) through its script: counts, quantiles, errors."""
    script = tmp_path / "bench.lua"
    script.write_text(WRK_SCRIPT)
    results = {}

    async def scenario():
        async with serve(upstream_app()) as url:
            port = int(url.rsplit(":", 1)[1])
            loop = asyncio.get_running_loop()
            for name, kw in (("think", {"conns": 4, "think_ms": 20.0}), ("closed", {"conns": 4})):
                results[name] = await loop.run_in_executor(None, lambda kw=kw: wrk(
                    "wrk", script, port, ALL_CORES, 1.0, **kw))

    asyncio.run(scenario())
    think, closed = results["think"], results["closed"]
    assert think["errors"] == closed["errors"] == 0
    # 4 connections each waiting 20 ms on average: far fewer requests than the closed loop
    assert 0 < think["n"] < closed["n"]
    assert 0 < think["p50_ms"] <= think["p99_ms"]


def test_wrk_counts_non_2xx_answers_as_errors(tmp_path):
    script = tmp_path / "bench.lua"
    script.write_text(WRK_SCRIPT.replace("/v2/models/m1/infer", "/no-such-path"))
    out = {}

    async def scenario():
        async with serve(upstream_app()) as url:
            port = int(url.rsplit(":", 1)[1])
            out["r"] = await asyncio.get_running_loop().run_in_executor(
                None, lambda: wrk("wrk", script, port, ALL_CORES, 1.0, conns=2))

    asyncio.run(scenario())
    assert out["r"]["errors"] == out["r"]["n"] > 0


def test_exposition_page_has_eight_gpus_and_ten_models():
    ms, series = exposition_ms(repeats=2)
    assert ms > 0
    # 8 GPUs x (15 GPU series + 8 throttle reasons) and 11 model children of 3 histograms
    assert series > 8 * 15 + 11 * 3 * 14


@pytest.mark.slow
def test_quick_bench_writes_the_json_contract(tmp_path):
    path = tmp_path / "bench.json"
    run_bench(path, quick=True)
    result = json.loads(path.read_text())
    for key in ("added_p50_ms", "added_p99_ms", "nginx_added_p99_ms", "ratio_to_nginx",
                "max_rps", "run_wait_ms_per_s", "nginx_run_wait_ms_per_s", "cpu_bound_max_rps"):
        assert key in result["proxy"]
    assert result["proxy"]["errors"] == 0
    assert result["proxy"]["max_rps"] > 0
    assert result["metrics"]["exposition_ms"] > 0
    assert 0 <= result["idle_cpu_ratio"] < 1
