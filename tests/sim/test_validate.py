"""``sim validate`` and ``sim bench`` through their CLI, and the validator's own failure paths."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from trimtab.sim import validate
from trimtab.sim.tools_cli import register
from trimtab.sim.validate_cases import CASES, Case, Metric

REQUIRED = ["M/M/1 Erlang C", "M/M/4 Erlang C", "M/M/16 Erlang C", "M/M/1 P-K", "M/D/1 P-K",
            "Erlang B deterministic", "Erlang B lognormal", "M/M/1/5", "bulk M/M^[8]/1",
            "CTMC s(b)=0.5+0.1b", "setup I=2", "setup I=5", "Little's law",
            "work conservation", "accounting", "Kiefer-Wolfowitz c=4", "Kiefer-Wolfowitz c=16",
            "Lindley c=1",
            # The LLM engine (compiled): degenerate cases with a closed form.
            "M/G/1 rho=0.43: mean TTFT", "M/D/1 rho=0.42: mean TTFT", "decode k=8: max |ITL"]


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.mark.slow
def test_quick_validation_passes_every_check_and_writes_json(tmp_path):
    out = tmp_path / "checks.json"
    result = CliRunner().invoke(cli(), ["sim", "validate", "--quick", "--json", str(out)])
    assert result.exit_code == 0, result.output
    checks = json.loads(out.read_text())["checks"]
    for c in checks:
        assert {"name", "theory", "simulated", "rel_error", "tolerance", "passed"} <= set(c)
        assert c["passed"], c
        assert c["rel_error"] <= c["tolerance"]
    names = " | ".join(c["name"] for c in checks)
    for fragment in REQUIRED:
        assert fragment in names, fragment
    assert "all" in result.output and "checks passed" in result.output


def test_a_wrong_theory_fails_and_the_cli_exits_non_zero(monkeypatch, tmp_path):
    mm1 = next(c for c in CASES if c.name.startswith("M/M/1 P-K"))
    wrong = replace(mm1, metrics=(Metric("wq", "Wq (s)", 6.0, "wait"),))  # true value: 4
    monkeypatch.setattr(validate, "CASES", [wrong])
    out = tmp_path / "checks.json"
    result = CliRunner().invoke(cli(), ["sim", "validate", "--quick", "--json", str(out)])
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(out.read_text())["checks"]}
    bad = checks["M/M/1 P-K rho=0.8: Wq (s)"]
    assert not bad["passed"] and bad["rel_error"] > bad["tolerance"]
    assert "FAIL" in result.output


def _records(waits: np.ndarray, service: np.ndarray, arrival: np.ndarray) -> dict:
    start = arrival + waits
    return {"arrival_s": arrival, "start_s": start, "finish_s": start + service,
            "service_s": service, "outcome": np.ones(len(arrival), np.int8)}


def test_recursion_check_catches_a_wait_off_by_a_microsecond():
    from trimtab.sim.queueing import lindley_waits

    rng = np.random.default_rng(0)
    arrival = np.cumsum(rng.exponential(1.0, 500))
    service = rng.exponential(0.8, 500)
    waits = lindley_waits(arrival, service)
    case = Case("x", 1.0, 1, {}, ())
    assert validate._recursion_check(case, _records(waits, service, arrival)).passed
    waits[250] += 1e-6
    check = validate._recursion_check(case, _records(waits, service, arrival))
    assert not check.passed and check.simulated == pytest.approx(1e-6)


@pytest.mark.parametrize("kind, threshold_s, expected", [
    ("wait", 0.0, [0.0, 0.5, 2.0]),
    ("waited", 0.0, [0.0, 1.0, 1.0]),
    ("wait_over", 1.0, [0.0, 0.0, 1.0]),
    ("response", 0.0, [1.0, 1.5, 3.0]),
    ("shed", 0.0, [0.0, 0.0, 1.0]),
], ids=["wait", "waited", "wait-over", "response", "shed"])
def test_metric_values_per_customer(kind, threshold_s, expected):
    arrival = np.array([0.0, 1.0, 2.0])
    req = {"arrival_s": arrival, "start_s": arrival + [0.0, 0.5, 2.0],
           "finish_s": arrival + [1.0, 1.5, 3.0], "outcome": np.array([1, 1, 2], np.int8)}
    assert Metric("m", "m", 1.0, kind, threshold_s).values(req).tolist() == expected


def test_quick_tolerance_comes_from_standard_errors():
    case = Case("c", 1.0, 1, {}, (Metric("m", "m", 10.0, "wait"),))
    runs = [validate.CaseRun({"m": np.array([9.0, 11.0] * 5)}) for _ in range(3)]
    (check,) = validate._combine(case, runs, validate.Plan(100, 3, quick=True))
    se = np.std([9.0, 11.0] * 15, ddof=1) / np.sqrt(30)
    assert check.simulated == 10.0 and check.std_error == pytest.approx(se)
    assert check.tolerance == pytest.approx(4 * se / 10.0) and check.passed
    (full,) = validate._combine(case, runs, validate.Plan(100, 3, quick=False))
    assert full.tolerance == validate.FULL_TOLERANCE


@pytest.mark.slow
def test_bench_quick_writes_the_documented_shape(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli(), ["sim", "bench", "--quick", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert {"engine_customers_per_s", "simpy_customers_per_s", "ratio"} <= set(figures["mmc"])
    assert {"requests_per_s", "events_per_s", "mean_batch", "peak_rss_bytes"} <= set(
        figures["fleet"])
    mmc = figures["mmc"]
    assert mmc["ratio"] == pytest.approx(mmc["engine_customers_per_s"]
                                         / mmc["simpy_customers_per_s"])
    # SimPy and the heapq loop replayed the engine's streams: the same waits, so a fair race.
    assert mmc["simpy_mean_wq_s"] == pytest.approx(mmc["engine_mean_wq_s"], rel=1e-9)
    assert mmc["heapq_mean_wq_s"] == pytest.approx(mmc["engine_mean_wq_s"], rel=1e-9)
    assert figures["fleet"]["mean_batch"] >= 1 and figures["fleet"]["peak_rss_bytes"] > 10**7
    assert figures["trace"]["azure_rows"] == 50_000
    llm = figures["llm"]       # the LLM engine's section: a simulated hour of 50 replicas
    assert llm["day_requests"] > 150_000 and llm["mem_requests"] == 200_000
    assert llm["day_requests_per_s"] == pytest.approx(llm["day_requests"] / llm["day_wall_s"])
    assert llm["day_vs_reference"] > 1 and llm["compile_warm_s"] > 0
