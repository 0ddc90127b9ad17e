"""An LLM replay's report, table and OpenMetrics export: TTFT/TPOT/ITL columns, plots, vllm:*."""
from __future__ import annotations

import json
import math
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from trimtab.collectors.names import latency_buckets_s
from trimtab.sim.llm.fleet import LLM_TICK_COLUMNS
from trimtab.sim.llm.types import ITL_BOUNDS_S, LlmWindow, StepModel
from trimtab.sim.openmetrics import VLLM_TTFT_BUCKETS_S, llm_om_row, render
from trimtab.sim.replay import TICK_COLUMNS, RunResult, _om_row
from trimtab.sim.report import (LLM_TABLE_FIELDS, TABLE_FIELDS, results_json, slo_text,
                                table_fields, write_report)
from tests.conftest import REPO_ROOT, require_binary
from tests.sim.builders import window

SLO_TTFT_S, SLO_TPOT_S = 2.0, 0.2
BUCKETS = latency_buckets_s((27.8, SLO_TTFT_S, SLO_TPOT_S))
LLM_SUMMARY_KEYS = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "itl_p50_s",
                    "itl_p99_s", "preemptions", "prompt_tokens", "output_tokens",
                    "output_tokens_per_s", "throughput_rps", "prefix_hit_rate")


# --- builders -------------------------------------------------------------------------------
def llm_windows(n: int, seed: int, interval_s: float = 15.0) -> list:
    """``n`` consecutive fleet windows with an LlmWindow each, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        served = int(rng.integers(0, 12))
        w = window(k * interval_s, (k + 1) * interval_s, arrivals=served, ready=2,
                   latencies_s=rng.lognormal(2.0, 0.5, served))
        gaps = rng.lognormal(math.log(0.06), 0.6, int(rng.integers(0, 400)))
        idx = np.searchsorted(np.asarray(ITL_BOUNDS_S), gaps, side="left")
        w.llm = LlmWindow(
            ttft_s=rng.lognormal(0.0, 0.8, served), tpot_s=rng.lognormal(-3.0, 0.4, served),
            queue_wait_s=rng.exponential(0.5, served),
            itl_counts=np.bincount(idx, minlength=len(ITL_BOUNDS_S) + 1).astype(np.int64),
            itl_sum_s=float(gaps.sum()), prompt_tokens=int(rng.integers(0, 9000)),
            output_tokens=len(gaps) + served, preemptions=int(rng.integers(0, 3)),
            prefix_queries=1000, prefix_hits=int(rng.integers(0, 1000)), steps=100,
            running_area=40.0 * interval_s, waiting_area=3.0 * interval_s,
            blocks_area=2000.0 * interval_s, running_now=int(rng.integers(0, 128)),
            waiting_now=int(rng.integers(0, 9)), blocks_used_now=int(rng.integers(0, 6656)),
            num_blocks=3328)
        out.append(w)
    return out


def llm_result(policy: str, params: dict, seed: int, n: int = 40) -> RunResult:
    """A RunResult shaped as an LLM replay's, with the OpenMetrics rows the replay collects."""
    rng = np.random.default_rng(seed)
    ws = llm_windows(n, seed)
    t = np.arange(1, n + 1) * 15.0
    ticks = {c: rng.uniform(0.0, 5.0, n) for c in TICK_COLUMNS if c != "reason"}
    ticks.update(time_s=t, desired_replicas=np.full(n, 2.0), ready_replicas=np.full(n, 2.0),
                 reason=np.asarray(["steady"] * n, dtype=object),
                 ttft_p99_s=rng.lognormal(0.3, 0.5, n), tpot_p99_s=rng.lognormal(-2.0, 0.3, n),
                 kv_cache_usage=rng.uniform(0.0, 1.0, n),
                 running=rng.integers(0, 128, n).astype(float),
                 waiting=rng.integers(0, 10, n).astype(float))
    ticks["ttft_p99_s"][3] = math.nan                          # a window with no request
    om: dict = {}
    fleet = SimpleNamespace(cfg=SimpleNamespace(memory=None))
    for w in ws:
        _om_row(om, w, np.ones(3, dtype=np.int64), BUCKETS, fleet)
        llm_om_row(om, w, BUCKETS)
    summary = {"policy": policy, "params": params, "slo_attainment": 0.991, "meets_slo": True,
               "latency_p50_s": 7.1, "latency_p99_s": 22.4, "replica_hours": 1.2, "cost": 9.6,
               "cold_starts": 1, "scale_events": 2, "shed": 0, "timed_out": 0, "oom": 0,
               "ttft_p50_s": 0.41, "ttft_p99_s": 1.87, "tpot_p50_s": 0.061,
               "tpot_p99_s": 0.143, "itl_p50_s": 0.058, "itl_p99_s": 0.391,
               "preemptions": 17, "prompt_tokens": 1_234_567, "output_tokens": 98_765,
               "output_tokens_per_s": 164.6, "throughput_rps": 0.99, "prefix_hit_rate": None}
    result = RunResult(summary=summary, ticks=ticks, accounting={})
    result.extra.update(om={k: np.asarray(v) for k, v in om.items()}, latency_buckets_s=BUCKETS,
                        windows=ws)
    return result


def request_level(result: RunResult) -> RunResult:
    """The same result as a request-level replay's: no llm summary, tick columns or rows."""
    summary = {k: v for k, v in result.summary.items() if k not in LLM_SUMMARY_KEYS}
    ticks = {k: v for k, v in result.ticks.items() if k not in LLM_TICK_COLUMNS}
    om = {k: v for k, v in result.extra["om"].items() if not k.startswith("vllm_")}
    return RunResult(summary=summary, ticks=ticks, accounting={},
                     extra={"om": om, "latency_buckets_s": BUCKETS})


@pytest.fixture(scope="module")
def runs():
    return [("hpa", llm_result("hpa", {}, 1)),
            ("static:replicas=2", llm_result("static", {"replicas": 2}, 2))]


# --- the table ------------------------------------------------------------------------------
@pytest.mark.parametrize("oracle", [False, True])
def test_an_llm_table_adds_ttft_tpot_itl_after_the_e2e_p99_and_drops_oom(runs, oracle):
    rows = [r.summary for _, r in runs]
    fields = table_fields(rows, oracle)
    at = fields.index("latency_p99_s")
    assert tuple(fields[at + 1:at + 1 + len(LLM_TABLE_FIELDS)]) == LLM_TABLE_FIELDS
    assert LLM_TABLE_FIELDS[:3] == ("ttft_p99_s", "tpot_p99_s", "itl_p99_s")
    assert "oom" not in fields and ("cost_vs_oracle" in fields) == oracle
    plain = table_fields([request_level(r).summary for _, r in runs], oracle)
    assert plain == [f for f in TABLE_FIELDS if f != "cost_vs_oracle" or oracle]


@pytest.mark.parametrize("args, text", [
    ((0.5, 0.99), "latency \u2264 0.5 s for 99.00% of requests"),
    ((None, 0.99, 2.0, 0.2), "TTFT \u2264 2 s and TPOT \u2264 0.2 s for 99.00% of requests"),
    ((30.0, 0.95, None, 0.1), "TPOT \u2264 0.1 s and latency \u2264 30 s for 95.00% of requests"),
])
def test_the_slo_is_stated_with_every_bound_given(args, text):
    assert slo_text(*args) == text


# --- the page -------------------------------------------------------------------------------
def test_an_llm_report_has_the_columns_the_plots_and_the_tick_columns(tmp_path, runs):
    doc = results_json("llm-t", 2038, [r.summary for _, r in runs])
    files = write_report(tmp_path, doc, runs, None, 0.99, slo_ttft_s=SLO_TTFT_S,
                         slo_tpot_s=SLO_TPOT_S)
    page = files["html"].read_text()
    for heading in ("TTFT p99 (s)", "TPOT p99 (s)", "ITL p99 (s)", "preempted", "e2e p99 (s)"):
        assert f">{heading}</th>" in page, heading
    assert 'title="oom"' not in page
    assert "<td>1.87</td>" in page and "<td>0.143</td>" in page and "<td>0.391</td>" in page
    assert "TTFT \u2264 2 s and TPOT \u2264 0.2 s for 99.00% of requests" in page
    for name in ("ttft_p99.png", "tpot_p99.png", "kv_cache.png", "running_waiting.png"):
        assert (tmp_path / name).stat().st_size > 5000, name
        assert f'src="{name}"' in page
    assert "against the SLO of 2 s (red)" in page and "against the SLO of 0.2 s (red)" in page
    lines = (tmp_path / "ticks_hpa.csv").read_text().splitlines()
    assert lines[0].split(",") == list(TICK_COLUMNS) + list(LLM_TICK_COLUMNS)
    row = lines[1 + 3].split(",")                                   # the NaN window
    assert row[len(TICK_COLUMNS)] == ""
    assert float(row[-1]) == runs[0][1].ticks["waiting"][3]


def test_a_request_level_report_is_unchanged(tmp_path, runs):
    plain = [(label, request_level(r)) for label, r in runs]
    doc = results_json("t", 100, [r.summary for _, r in plain])
    files = write_report(tmp_path, doc, plain, 0.5, 0.99)
    page = files["html"].read_text()
    assert "TTFT" not in page and ">p99 (s)</th>" in page and 'title="oom"' in page
    assert "latency \u2264 0.5 s for 99.00% of requests" in page
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["load_replicas.png", "p99.png",
                                                              "queue.png"]
    header = (tmp_path / "ticks_hpa.csv").read_text().splitlines()[0]
    assert header.split(",") == list(TICK_COLUMNS)


# --- the OpenMetrics export -----------------------------------------------------------------
def _samples(text: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value, ts = line.rsplit(" ", 2)
            out.setdefault(key, []).append((float(ts), float(value)))
    return out


def _one(series: dict, prefix: str, *needles: str) -> list[tuple[float, float]]:
    keys = [k for k in series if k.startswith(prefix + "{") and all(n in k for n in needles)]
    assert len(keys) == 1, (prefix, needles, keys)
    return series[keys[0]]


def test_the_export_carries_vllm_series_that_add_up_to_the_windows(runs):
    res = runs[0][1]
    ws = res.extra["windows"]
    text = render(res, model="llama", end_unix_s=1_000_000.0, max_replicas=4)
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(families) == len(set(families))
    s = _samples(text)
    last = {k: v[-1][1] for k, v in s.items()}
    for fam, total in (("vllm:prompt_tokens_total", sum(w.llm.prompt_tokens for w in ws)),
                       ("vllm:generation_tokens_total", sum(w.llm.output_tokens for w in ws)),
                       ("vllm:num_preemptions_total", sum(w.llm.preemptions for w in ws)),
                       ("vllm:prefix_cache_hits_total", sum(w.llm.prefix_hits for w in ws)),
                       ("vllm:request_success_total", sum(w.completions for w in ws))):
        points = _one(s, fam, 'model_name="llama"')
        assert points[-1][1] == total, fam
        assert [v for _, v in points] == sorted(v for _, v in points), fam
    ttft_n = sum(len(w.llm.ttft_s) for w in ws)
    assert last[_key(s, "vllm:time_to_first_token_seconds_bucket", 'le="+Inf"')] == ttft_n
    assert last[_key(s, "vllm:time_to_first_token_seconds_count")] == ttft_n
    assert last[_key(s, "vllm:time_to_first_token_seconds_bucket", 'le="2.0"')] == sum(
        int(np.count_nonzero(w.llm.ttft_s <= 2.0)) for w in ws)       # the SLO bound
    for le in VLLM_TTFT_BUCKETS_S:                                    # vLLM's own bounds too
        _key(s, "vllm:time_to_first_token_seconds_bucket", f'le="{le!r}"')
    assert last[_key(s, "vllm:inter_token_latency_seconds_count")] == sum(
        int(w.llm.itl_counts.sum()) for w in ws)
    assert last[_key(s, "vllm:inter_token_latency_seconds_sum")] == pytest.approx(
        sum(w.llm.itl_sum_s for w in ws))
    assert last[_key(s, "trimtab_time_to_first_byte_seconds_count")] == ttft_n
    kv = [v for _, v in _one(s, "vllm:kv_cache_usage_perc")]
    assert kv and all(0.0 <= v <= 1.0 for v in kv)
    assert [v for _, v in _one(s, "trimtab_kv_cache_usage_ratio")] == kv
    running = [v for _, v in _one(s, "vllm:num_requests_running")]
    assert running[-1] == ws[-1].llm.running_now


def _key(series: dict, prefix: str, *needles: str) -> str:
    keys = [k for k in series if k.startswith(prefix + "{") and all(n in k for n in needles)]
    assert len(keys) == 1, (prefix, needles, keys)
    return keys[0]


def test_a_request_level_export_has_no_vllm_series(runs):
    text = render(request_level(runs[0][1]), model="m", end_unix_s=1_000_000.0, max_replicas=4)
    assert "vllm:" not in text and "trimtab_kv_cache_usage_ratio" not in text
    om: dict = {}
    plain = window(0.0, 15.0, arrivals=3)
    plain.llm = None
    llm_om_row(om, plain, BUCKETS)
    assert om == {}


def test_promtool_backfills_the_llm_export(tmp_path, runs):
    promtool = require_binary("promtool")
    om = tmp_path / "llm.om"
    om.write_text(render(runs[0][1], model="llama", end_unix_s=1_700_000_000.0, max_replicas=4))
    proc = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(om),
                           str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "BLOCK ULID" in proc.stdout


# --- the CLI --------------------------------------------------------------------------------
def llm_scenario(tmp_path, **over) -> str:
    doc = yaml.safe_load((REPO_ROOT / "sim/data/scenarios/llm-peer.yaml").read_text())
    doc["trace"]["duration_s"] = 60
    doc["trace"]["lengths"]["path"] = str(REPO_ROOT / "sim/data/traces/azure_llm_conv.csv")
    doc.update(over)
    path = tmp_path / "llm.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_the_cli_table_and_report_of_an_llm_scenario(tmp_path, monkeypatch):
    """The replay itself is stood in for (fabricated results), so this checks the table and
    page of the CLI path."""
    from trimtab.sim import compare
    from trimtab.cli import app

    made = {"hpa": llm_result("hpa", {}, 3), "keda": llm_result("keda", {}, 4)}
    monkeypatch.setattr(compare, "run_job", lambda sc, trace, spec: made[spec])
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["replay", "--scenario", llm_scenario(tmp_path), "--policy",
                                   "hpa", "--policy", "keda", "--workers", "1", "--out",
                                   str(out), "--json", str(tmp_path / "r.json")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    header = next(line for line in res.output.splitlines() if "policy" in line)
    for short in ("TTFT99 s", "TPOT99 s", "ITL99 s", "preempt", "e2e99 s"):
        assert short in header, short
    assert "TTFT \u2264 2 s and TPOT \u2264 0.2 s" in res.output
    assert "1.87" in res.output and "0.391" in res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert all(set(LLM_SUMMARY_KEYS) <= set(r) for r in doc["results"])
    page = (out / "report.html").read_text()
    assert "llm: step-time profile llama2-70b-a100-tp2" in page and "num_blocks=3328" in page
    assert "told an end-to-end bound of" in page
    assert (out / "ttft_p99.png").exists() and (out / "ticks_keda.csv").exists()


def test_an_llm_static_baseline_is_sized_from_the_step_model():
    """The docstring's example: (100 x 32.8 + 128 x 10) ms per 128 requests = 28.07 rps."""
    from trimtab.sim.cli import static_replicas
    from trimtab.sim.llm.fleet import llm_replica_rps
    from trimtab.sim.llm.types import SchedulerConfig

    model = StepModel(c0_ms=20.0, c_prefill_ms=0.1, c_decode_ms=0.1)
    sc = SimpleNamespace(step_model=lambda: model,
                         service=SimpleNamespace(model="llm",
                                                 scheduler_config=lambda: SchedulerConfig()),
                         replicas=SimpleNamespace(min=1, max=50))
    trace = SimpleNamespace(arrival_s=np.arange(6000) * 0.01,    # 100 rps for 60 s
                            prompt_tokens=np.full(6000, 100), output_tokens=np.full(6000, 100))
    assert llm_replica_rps(sc, trace) == pytest.approx(128 / 4.56)
    assert static_replicas(sc, trace) == math.ceil(100 / (0.7 * 128 / 4.56))


def test_an_llm_replay_end_to_end_through_the_cli(tmp_path):
    """The real replay of a one-minute llm-peer: results, table, page and export agree."""
    from trimtab.cli import app

    out, om = tmp_path / "report", tmp_path / "llm.om"
    res = CliRunner().invoke(app, ["replay", "--scenario", llm_scenario(tmp_path), "--policy",
                                   "static:replicas=1", "--policy", "hpa", "--workers", "1",
                                   "--out", str(out), "--json", str(tmp_path / "r.json"),
                                   "--openmetrics", str(om), "--openmetrics-end-unix",
                                   "1700000000"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    first = doc["results"][0]
    assert set(LLM_SUMMARY_KEYS) <= set(first) and first["served"] > 30
    assert f"{first['ttft_p99_s']:.4g}" in res.output and "TTFT99 s" in res.output
    for name in ("ttft_p99.png", "tpot_p99.png", "kv_cache.png", "running_waiting.png"):
        assert (out / name).stat().st_size > 5000, name
    header = (out / "ticks_hpa.csv").read_text().splitlines()[0].split(",")
    assert header[-len(LLM_TICK_COLUMNS):] == list(LLM_TICK_COLUMNS)
    s = _samples(om.read_text())
    assert _one(s, "vllm:prompt_tokens_total")[-1][1] == first["prompt_tokens"]
    assert _one(s, "vllm:generation_tokens_total")[-1][1] == first["output_tokens"]
    assert _one(s, "vllm:request_success_total")[-1][1] == first["served"]
    assert _one(s, "vllm:num_preemptions_total")[-1][1] == first["preemptions"]
    assert _one(s, "vllm:time_to_first_token_seconds_count")[-1][1] == first["served"]
