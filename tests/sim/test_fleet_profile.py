"""The token-aware service model read from the bundled splitwise profile CSV."""
from __future__ import annotations

import numpy as np
import pytest

from trimtab.sim.fleet.service import ProfileService, load_profile
from tests.conftest import TRACES_DIR

PROFILE = TRACES_DIR / "splitwise_sim_perf_model.csv"


@pytest.fixture(scope="module")
def table():
    return load_profile(PROFILE, "llama2-70b", "a100-80gb")


def test_grid_point_is_the_mean_of_its_rows(table):
    import csv

    rows = [r for r in csv.DictReader(open(PROFILE)) if r["model"] == "llama2-70b"
            and r["hardware"] == "a100-80gb" and r["prompt_size"] == "512"
            and r["batch_size"] == "1"]
    prompt = np.mean([float(r["prompt_time"]) for r in rows])
    token = np.mean([float(r["token_time"]) for r in rows])
    assert table.batch_ms(1, 512, 128) == pytest.approx(prompt + token * 127)


def test_batch_time_grows_with_batch_prompt_and_output(table):
    assert table.batch_ms(8, 512, 128) > table.batch_ms(1, 512, 128)
    assert table.batch_ms(8, 2048, 128) > table.batch_ms(8, 512, 128)
    assert table.batch_ms(8, 512, 256) > table.batch_ms(8, 512, 128)
    # Beyond the grid (64) it extrapolates linearly rather than flattening.
    assert table.batch_ms(128, 512, 128) > table.batch_ms(64, 512, 128)


def test_a_batch_is_padded_to_its_longest_prompt_and_output(table):
    prompt = np.array([100, 2000, 300])
    output = np.array([50, 10, 400])
    svc = ProfileService(table, prompt, output, np.random.default_rng(0))
    assert svc.sample_s(3, [0, 1, 2]) == pytest.approx(table.batch_ms(3, 2000, 400) / 1000)
    assert svc.sample_s(1, [0]) == pytest.approx(table.batch_ms(1, 100, 50) / 1000)


@pytest.mark.parametrize("kwargs,needle", [
    pytest.param({"model": "gpt-5"}, "known: bloom-176b/a100-80gb", id="unknown-model"),
    pytest.param({"hardware": "tpu"}, "profile_hardware = 'tpu'", id="unknown-hardware"),
])
def test_unknown_profile_lists_known_ones(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        load_profile(PROFILE, **kwargs)


def test_bad_profile_row_names_line_and_column(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("model,hardware,prompt_size,batch_size,prompt_time,token_time\n"
                 "m,h,512,1,10,2\nm,h,512,x,10,2\n")
    with pytest.raises(ValueError, match="line 3: column batch_size = 'x'"):
        load_profile(p)


def test_profile_scenario_replays_with_trace_tokens(tmp_path):
    from trimtab.sim.replay import simulate
    from trimtab.sim.scenario import scenario_from_dict
    from trimtab.sim.traces import trace_from_arrays

    sc = scenario_from_dict({
        "name": "llm", "trace": {"format": "poisson", "rate_rps": 1, "duration_s": 60},
        "service": {"model": "profile", "profile_path": str(PROFILE), "max_batch": 4,
                    "batch_timeout_ms": 100},
        "replicas": {"initial": 2, "min": 1, "max": 4}, "slo": {"latency_s": 30}})
    tr = trace_from_arrays(np.linspace(0, 60, 40), np.full(40, 512), np.full(40, 64))
    res = simulate(sc, "static:replicas=2", tr, record_requests=True)
    service_s = res.requests["service_s"]
    assert res.summary["served"] == 40
    # llama2-70b on a100 for 512 prompt tokens, 64 output: ~3.7 s per single batch.
    assert np.nanmin(service_s) == pytest.approx(
        load_profile(PROFILE).batch_ms(1, 512, 64) / 1000, rel=0.3)
