"""The benchmark's parts: Poisson schedule, the load generator, and the JSON contract (quick run)."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from trimtab.collectors.bench import exposition_ms, run_bench
from trimtab.collectors.loadgen import closed_loop, open_loop
from trimtab.common.poisson import steady_arrivals_s
from tests.collectors.support import serve, upstream_app


@pytest.mark.parametrize("rate", [50.0, 500.0, 3000.0], ids=lambda r: f"{r:.0f}/s")
def test_poisson_schedule_has_the_rate_and_exponential_gaps(rate):
    arrivals = steady_arrivals_s(rate, 20.0, seed=3)
    # A Poisson count: within 5 sd of its mean (5 % was 1.6 sd at 50/s, passing by the seed).
    assert abs(len(arrivals) - rate * 20) < 5 * np.sqrt(rate * 20)
    gaps = np.diff(arrivals)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.08)   # CV of exponential
    assert np.all(gaps > 0)


def test_load_generator_open_and_closed_loop_against_loopback():
    async def scenario():
        async with serve(upstream_app()) as url:
            port = int(url.rsplit(":", 1)[1])
            opened = await open_loop("127.0.0.1", port, rate=200, duration_s=0.5, seed=1)
            closed = await closed_loop("127.0.0.1", port, conns=4, duration_s=0.3)
        assert opened["errors"] == 0
        assert len(opened["latencies_s"]) == opened["sent"] > 50
        assert closed["errors"] == 0 and closed["rps"] > 0
    asyncio.run(scenario())


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
                "max_rps"):
        assert key in result["proxy"]
    assert result["proxy"]["errors"] == 0
    assert result["proxy"]["max_rps"] > 0
    assert result["metrics"]["exposition_ms"] > 0
    assert 0 <= result["idle_cpu_ratio"] < 1
