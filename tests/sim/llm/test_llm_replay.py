"""LLM scenarios through the production control loop: the issue's contract YAML, its JSON
fields and their consistency, the SLO's bounds, both engines alike, the fleet adaptor, and
malformed scenarios refused naming the field."""
from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from trimtab.sim.fleet.types import DRAINING, READY, SERVED, STARTING, STOPPED
from trimtab.sim.llm.fleet import (LLM_TICK_COLUMNS, LlmFleet, LlmFleetConfig,
                                   histogram_quantile, merge_llm_windows)
from trimtab.sim.llm.types import ITL_BOUNDS_S, LlmRequests, SchedulerConfig, StepModel
from trimtab.sim.replay import TICK_COLUMNS, simulate
from trimtab.sim.report import results_json
from trimtab.sim.scenario import ScenarioError, load_scenario
from trimtab.sim.snapshot import merge_windows
from trimtab.sim.traces import load_trace

# The contract, verbatim (a file without a name is named by its stem).
CONTRACT = """
service:
  model: llm
  profile: llama2-70b-a100-tp2          # a bundled name, or a path to a profile file
  scheduler: {max_num_seqs: 128, max_num_batched_tokens: 4096, chunked_prefill: false,
              block_size: 16, num_blocks: 3328, prefix_caching: false}
trace: {format: poisson, rate_rps: 1.0, duration_s: 2000, seed: 42,
        lengths: {path: traces/azure_llm_conv.csv, format: azure-llm, max_total_tokens: 4096}}
slo: {ttft_s: 2.0, tpot_s: 0.2, target: 0.99}
"""
LLM_KEYS = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "itl_p50_s", "itl_p99_s",
            "preemptions", "prompt_tokens", "output_tokens", "output_tokens_per_s",
            "throughput_rps", "prefix_hit_rate")
POLICIES = ("static:replicas=1", "hpa", "trimtab")


def write(dirpath: Path, text: str, name: str = "contract.yaml") -> Path:
    p = dirpath / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture(scope="module")
def contract(tmp_path_factory):
    """The contract scenario, its trace and one replay per policy (with per-request arrays)."""
    d = tmp_path_factory.mktemp("contract")
    sc = load_scenario(write(d, CONTRACT))
    trace = load_trace(sc.trace, sc.base_dir)
    runs = {p: simulate(sc, p, trace, record_requests=True) for p in POLICIES}
    return sc, trace, runs


def misses(req: dict, slo: dict) -> np.ndarray:
    """Served requests missing a given bound, computed here from the per-request arrays."""
    served = req["outcome"] == SERVED
    miss = np.zeros(int(served.sum()), dtype=bool)
    if "ttft_s" in slo:
        miss |= (req["first_token_s"] - req["arrival_s"])[served] > slo["ttft_s"]
    if "tpot_s" in slo:
        gen = req["generated"][served]
        tpot = np.where(gen > 1, (req["finish_s"] - req["first_token_s"])[served]
                        / np.maximum(gen - 1, 1), -np.inf)
        miss |= tpot > slo["tpot_s"]
    if "latency_s" in slo:
        miss |= (req["finish_s"] - req["arrival_s"])[served] > slo["latency_s"]
    return miss


# --- the contract -----------------------------------------------------------------------------

def test_the_contract_yaml_loads_with_its_values(contract):
    sc, trace, _ = contract
    assert sc.name == "contract" and sc.service.engine == "compiled"
    assert sc.service.scheduler_config() == SchedulerConfig(
        max_num_seqs=128, max_num_batched_tokens=4096, chunked_prefill=False, block_size=16,
        num_blocks=3328, prefix_caching=False)
    assert sc.step_model().name == "llama2-70b-a100-tp2"
    assert (sc.slo.ttft_s, sc.slo.tpot_s, sc.slo.latency_s, sc.slo.target) == \
        (2.0, 0.2, None, 0.99)
    assert int((trace.prompt_tokens + trace.output_tokens).max()) <= 4096
    assert 1900 < len(trace) < 2100                  # Poisson, 1 rps for 2000 s
    # The policies' end-to-end latency: ttft_s + tpot_s x the trace's median output tokens.
    assert sc.bounds(trace).slo_latency_s == pytest.approx(
        2.0 + 0.2 * float(np.median(trace.output_tokens)))
    assert sc.bounds().slo_latency_s == sc.bounds(trace).slo_latency_s


def test_the_bundled_peer_scenario_is_the_contract_on_one_replica(contract):
    sc = contract[0]
    peer = load_scenario("llm-peer")
    for part in ("service", "trace", "slo"):
        assert getattr(peer, part).model_dump() == getattr(sc, part).model_dump(), part
    assert (peer.replicas.initial, peer.replicas.min, peer.replicas.max) == (1, 1, 1)


def test_the_bundled_azure_conversation_scenario_autoscales_on_the_traces_own_lengths():
    sc = load_scenario("llm-azure-conv")
    trace = load_trace(sc.trace, sc.base_dir)
    assert sc.trace.format == "azure-llm" and sc.trace.lengths is None
    assert trace.prompt_tokens is not None and len(trace) == 19_366
    assert (sc.replicas.min, sc.replicas.max, sc.replicas.cold_start_s) == (1, 16, 120)
    assert (sc.slo.ttft_s, sc.slo.tpot_s, sc.slo.target) == (2.0, 0.2, 0.99)
    assert sc.step_model().name == "llama2-70b-a100-tp2"


@pytest.mark.parametrize("policy", POLICIES)
def test_each_result_has_the_llm_fields_and_they_agree_with_the_requests(contract, policy):
    sc, trace, runs = contract
    run = runs[policy]
    doc = json.loads(json.dumps(results_json(sc.name, len(trace), [run.summary])))
    r = doc["results"][0]
    assert set(LLM_KEYS) <= set(r)
    req = run.requests
    served = req["outcome"] == SERVED
    n = len(trace)
    assert r["served"] + r["shed"] + r["timed_out"] + r["failed"] + r["still_queued"] == n
    assert r["still_queued"] == 0                     # drained: every token is counted
    slow = int(misses(req, {"ttft_s": 2.0, "tpot_s": 0.2}).sum())
    assert r["slow"] == slow
    assert r["slo_attainment"] == round(1 - (slow + n - r["served"]) / n, 6)
    assert r["meets_slo"] == (r["slo_attainment"] >= 0.99)
    assert r["output_tokens"] == int(req["output_tokens"][served].sum())
    assert r["prompt_tokens"] == int(req["prompt_tokens"][served].sum())
    np.testing.assert_array_equal(req["generated"][served], req["output_tokens"][served])
    assert r["preemptions"] == int(req["preemptions"].sum())
    ttft = (req["first_token_s"] - req["arrival_s"])[served]
    e2e = (req["finish_s"] - req["arrival_s"])[served]
    assert r["ttft_p99_s"] == round(float(np.quantile(ttft, 0.99)), 6)
    assert r["latency_p50_s"] == round(float(np.quantile(e2e, 0.5)), 6)   # still end to end
    end_s = float(req["finish_s"][served].max())
    assert r["throughput_rps"] == round(r["served"] / end_s, 6)
    assert r["output_tokens_per_s"] == round(r["output_tokens"] / end_s, 6)
    assert 0 < r["itl_p50_s"] <= r["itl_p99_s"] and 0 < r["tpot_p50_s"] <= r["tpot_p99_s"]
    assert r["prefix_hit_rate"] is None               # no prefix caching


@pytest.mark.parametrize("policy", POLICIES)
def test_the_ticks_carry_the_llm_columns(contract, policy):
    ticks = contract[2][policy].ticks
    assert set(ticks) == set(TICK_COLUMNS) | set(LLM_TICK_COLUMNS)
    k = len(ticks["time_s"])
    assert all(len(ticks[c]) == k for c in LLM_TICK_COLUMNS)
    kv = ticks["kv_cache_usage"]
    assert np.all((kv >= 0) & (kv <= 1)) and kv.max() > 0
    assert ticks["running"].max() > 0 and np.all(ticks["running"] <= 128 * 10)
    assert np.nanmax(ticks["ttft_p99_s"]) > 0 and np.all(ticks["waiting"] >= 0)


def test_a_request_level_replay_keeps_its_tick_columns(tmp_path):
    sc = load_scenario(write(tmp_path, """
        name: affine
        trace: {format: poisson, rate_rps: 5, duration_s: 60, seed: 1}
        service: {base_ms: 30, per_item_ms: 5}
        """))
    assert sc.slo.latency_s == 0.5 and sc.bounds().slo_latency_s == 0.5
    run = simulate(sc, "static:replicas=1")
    assert tuple(run.ticks) == TICK_COLUMNS and "ttft_p50_s" not in run.summary


@pytest.mark.parametrize("slo", [
    {"ttft_s": 1.0, "latency_s": 60.0}, {"tpot_s": 0.12}, {"latency_s": 30.0},
    {"ttft_s": 1.0, "tpot_s": 0.15},
    {"ttft_s": 0.5, "tpot_s": 0.12, "latency_s": 20.0},
], ids=["ttft+e2e", "tpot", "e2e", "ttft+tpot", "all-three"])
def test_attainment_counts_a_miss_of_every_bound_given(tmp_path, slo):
    """A static fleet runs the same whatever the SLO, so each set of bounds is judged on one
    trajectory; a bound not given is not checked."""
    doc = yaml.safe_load(CONTRACT)
    doc["trace"]["duration_s"] = 600
    doc["slo"] = {**slo, "target": 0.9}
    sc = load_scenario(write(tmp_path, yaml.safe_dump(doc)))
    run = simulate(sc, "static:replicas=1", record_requests=True)
    expected = misses(run.requests, slo)
    assert 0 < expected.sum() < len(expected)          # the bound matters here
    assert run.summary["slow"] == int(expected.sum())


def test_the_cli_writes_the_llm_fields(tmp_path):
    from trimtab.cli import app

    doc = yaml.safe_load(CONTRACT)
    doc["trace"]["duration_s"] = 300
    path = write(tmp_path, yaml.safe_dump(doc))
    res = CliRunner().invoke(app, ["replay", "--scenario", str(path), "--policy",
                                   "static:replicas=1", "--json", str(tmp_path / "r.json"),
                                   "--workers", "1"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (r,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert set(LLM_KEYS) <= set(r) and r["output_tokens"] > 0


# --- both engines ---------------------------------------------------------------------------

SMALL = """
name: small
trace: {{format: poisson, rate_rps: 2.0, duration_s: 240, seed: 5,
        lengths: {{path: lengths.jsonl, format: mooncake, max_total_tokens: 3000}}}}
service:
  model: llm
  profile: step.json
  engine: {engine}
  scheduler: {{max_num_seqs: 16, max_num_batched_tokens: 1024, chunked_prefill: true,
              block_size: 16, num_blocks: 600, prefix_caching: true}}
replicas: {{initial: 1, min: 1, max: 4, cold_start_s: 20, router: prefix_aware,
           queue_timeout_s: 30}}
slo: {{ttft_s: 1.0, tpot_s: 0.05, target: 0.95}}
controller: {{interval_s: 10, warmup_s: 30}}
seed: 3
"""


def small_dir(tmp_path: Path) -> Path:
    """A step profile and Mooncake lengths with shared prefixes (four groups of prompts)."""
    (tmp_path / "step.json").write_text(json.dumps(
        {"c0_ms": 30.0, "c_prefill_ms": 0.05, "c_decode_ms": 1.0, "c_kv_ms": 0.001,
         "cv": 0.1}))
    rng = np.random.default_rng(1)
    lines = []
    for k in range(60):
        prompt = int(rng.integers(100, 2500))
        group = int(rng.integers(0, 4))
        ids = [group * 100 + j if j < 2 else 10_000 + k * 10 + j
               for j in range(-(-prompt // 512))]
        lines.append(json.dumps({"timestamp": k * 100, "input_length": prompt,
                                 "output_length": int(rng.integers(1, 300)), "hash_ids": ids}))
    (tmp_path / "lengths.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_the_reference_and_compiled_engines_give_the_same_replay(tmp_path):
    d = small_dir(tmp_path)
    runs = {}
    for engine in ("reference", "compiled"):
        sc = load_scenario(write(d, SMALL.format(engine=engine), f"{engine}.yaml"))
        runs[engine] = simulate(sc, "hpa", record_requests=True)
    ref, comp = runs["reference"], runs["compiled"]
    s_ref = {k: v for k, v in ref.summary.items()}
    s_comp = {k: v for k, v in comp.summary.items()}
    assert s_ref == s_comp
    assert s_ref["preemptions"] > 0 and s_ref["prefix_hit_rate"] > 0
    assert s_ref["scale_events"] > 0                   # the fleet autoscaled
    for c in ref.ticks:
        if c == "reason":
            assert list(ref.ticks[c]) == list(comp.ticks[c])
        else:
            np.testing.assert_array_equal(ref.ticks[c], comp.ticks[c], err_msg=c)
    for k in ("finish_s", "first_token_s", "outcome", "replica", "preemptions"):
        np.testing.assert_array_equal(ref.requests[k], comp.requests[k], err_msg=k)


# --- the fleet adaptor ------------------------------------------------------------------------

def small_fleet(arrival_s, output: int = 400, replicas: int = 2, engine: str = "reference",
                **cfg) -> LlmFleet:
    n = len(arrival_s)
    req = LlmRequests(np.asarray(arrival_s, float), np.full(n, 64), np.full(n, output))
    c = LlmFleetConfig(scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=512,
                                                 block_size=16, num_blocks=400),
                       step=StepModel(c0_ms=10.0, c_decode_ms=0.5), cold_start=lambda: 30.0,
                       initial_replicas=replicas, engine=engine, **cfg)
    return LlmFleet(req, c)


def test_set_desired_starts_cold_stops_newest_starting_then_drains_the_least_loaded():
    f = small_fleet([0.0, 0.001, 0.002])
    f.eng.run(0.5)                      # replica 0 holds two requests, replica 1 one
    assert f.engine.replicas()["running"].tolist() == [2, 1]
    f.set_desired(4)
    assert (f.n_ready, f.n_starting, f.cold_starts, f.desired) == (2, 2, 2, 4)
    f.set_desired(3)
    assert f.engine.replicas()["state"].tolist() == [READY, READY, STARTING, STOPPED]
    f.set_desired(1)
    assert f.engine.replicas()["state"].tolist() == [READY, DRAINING, STOPPED, STOPPED]
    f.eng.run(400.0)
    assert f.engine.replicas()["state"].tolist() == [READY, STOPPED, STOPPED, STOPPED]
    assert (f.outcome == SERVED).all()


def test_windows_add_up_to_the_run_and_merge_like_one_window():
    rng = np.random.default_rng(2)
    f = small_fleet(np.sort(rng.uniform(0, 30, 60)), output=400, queue_timeout_s=5.0,
                    concurrency_limit=2)
    ws = []
    prev = f.totals()
    for t in np.arange(2.5, 200.0, 2.5):
        f.eng.run(float(t))
        w = f.take_window()
        tot = f.totals()
        # Every request in the system is queued, waiting or running.
        assert w.queue_area + w.held_area == pytest.approx(
            tot["area_system"] - prev["area_system"], abs=1e-9)
        assert w.queue_depth_now + w.held_now == f.in_system
        prev = tot
        ws.append(w)
    tot = f.totals()
    assert sum(w.arrivals for w in ws) == 60 == f.n_arrived
    assert sum(w.completions for w in ws) == tot["served"] > 0
    assert sum(w.timed_out for w in ws) == tot["timed_out"] > 0
    merged = merge_windows(ws)
    assert merged.llm.output_tokens == tot["output_tokens"]
    assert merged.llm.steps == tot["steps"]
    assert merged.llm.itl_counts.sum() == tot["itl_count"]
    assert len(merged.llm.ttft_s) == tot["served"] == len(merged.latencies_s)
    assert merged.llm.running_area == pytest.approx(tot["area_running"])
    assert merge_llm_windows([None, None]) is None
    assert merge_llm_windows([ws[3].llm]) is ws[3].llm


def test_batch_knobs_are_read_back_but_change_nothing():
    a, b = small_fleet([0.0, 1.0, 2.0]), small_fleet([0.0, 1.0, 2.0])
    b.set_max_batch(2)
    b.set_batch_timeout_s(0.5)
    assert (b.max_batch, b.batch_timeout_s) == (2, 0.5)
    for f in (a, b):
        f.eng.run(100.0)
    np.testing.assert_array_equal(a.finish_s, b.finish_s)


# --- the ITL histogram --------------------------------------------------------------------

def test_histogram_quantiles_interpolate_log_linearly_inside_a_bucket():
    counts = np.zeros(len(ITL_BOUNDS_S) + 1, dtype=np.int64)
    k = ITL_BOUNDS_S.index(next(b for b in ITL_BOUNDS_S if b >= 0.01))
    counts[k] = 10                                   # all in (bounds[k-1], bounds[k]]
    lo, hi = ITL_BOUNDS_S[k - 1], ITL_BOUNDS_S[k]
    assert histogram_quantile(counts, 0.5) == pytest.approx(math.sqrt(lo * hi))
    assert histogram_quantile(counts, 1.0) == pytest.approx(hi)
    counts[-1] = 90                                  # the +Inf bucket: the last bound
    assert histogram_quantile(counts, 0.99) == ITL_BOUNDS_S[-1]
    assert math.isnan(histogram_quantile(np.zeros_like(counts), 0.5))


def test_histogram_quantiles_are_within_a_bucket_of_the_exact_ones():
    x = np.random.default_rng(4).lognormal(np.log(0.05), 0.8, 20_000)
    idx = np.searchsorted(np.asarray(ITL_BOUNDS_S), x, side="left")
    counts = np.bincount(idx, minlength=len(ITL_BOUNDS_S) + 1)
    ratio = ITL_BOUNDS_S[1] / ITL_BOUNDS_S[0]
    for q in (0.1, 0.5, 0.9, 0.99):
        exact = float(np.quantile(x, q))
        assert exact / ratio < histogram_quantile(counts, q) < exact * ratio


# --- malformed scenarios --------------------------------------------------------------------

GOOD = {"name": "g", "trace": {"format": "poisson", "rate_rps": 1, "duration_s": 60,
                               "lengths": {"path": "traces/azure_llm_conv.csv"}},
        "service": {"model": "llm", "profile": "llama2-70b-a100-tp2",
                    "scheduler": {"num_blocks": 100}},
        "slo": {"ttft_s": 2.0, "tpot_s": 0.2}}


def with_(**parts) -> dict:
    doc = json.loads(json.dumps(GOOD))
    for key, val in parts.items():
        section, _, field = key.partition("__")
        if field:
            target = doc.setdefault(section, {})
            while "__" in field:
                head, _, field = field.partition("__")
                target = target.setdefault(head, {})
            if val is None:
                target.pop(field, None)
            else:
                target[field] = val
        else:
            doc[section] = val
    return doc


@pytest.mark.parametrize("doc, needles", [
    (with_(service__profile=None), ["service", "profile is required", "llama2-70b-a100-tp2"]),
    (with_(service__profile="no-such-gpu"), ["service.profile", "no-such-gpu", "bundled"]),
    (with_(service__profile="missing.json"), ["service.profile", "missing.json", "not found"]),
    (with_(service__scheduler={}), ["scheduler.num_blocks is required", "memory"]),
    (with_(service__scheduler__max_num_seqs=0), ["service.scheduler.max_num_seqs = 0"]),
    (with_(service__scheduler__block_sz=16), ["block_sz", "unknown key"]),
    (with_(service__engine="fast"), ["service.engine", "compiled", "reference"]),
    (with_(service__base_ms=30), ["base_ms does not apply to model 'llm'"]),
    (with_(service__max_batch=8), ["max_batch does not apply to model 'llm'"]),
    (with_(service__memory={"gpu_bytes": 1e11, "weights_bytes": 1e10}),
     ["memory.kv_bytes_per_token is required"]),
    (with_(service__memory={"gpu_bytes": 1e11, "weights_bytes": 1e10, "per_item_bytes": 5,
                            "kv_bytes_per_token": 10}), ["per_item_bytes does not apply"]),
    (with_(service__scheduler={}, service__memory={
        "gpu_bytes": 1e11, "weights_bytes": 9.5e10, "kv_bytes_per_token": 1000}),
     ["memory", "no KV blocks", "weights"]),
    (with_(replicas={"scale_to_zero_idle_s": 60, "min": 0, "initial": 0}),
     ["scale_to_zero_idle_s does not apply"]),
    (with_(replicas={"router": "round_robin"}), ["round_robin", "least_outstanding"]),
    (with_(replicas={"router": "prefix_aware"}), ["prefix_aware", "prefix_caching: true"]),
    (with_(trace__lengths=None), ["needs token counts", "trace.lengths"]),
    (with_(slo={"ttft_s": 2.0}), ["latency_s or tpot_s"]),
    (with_(slo={"ttft_s": -1, "tpot_s": 0.2}), ["slo.ttft_s = -1", "greater than 0"]),
    (with_(service={"model": "affine"}, slo={"ttft_s": 2.0}), ["slo.ttft_s applies to",
                                                              "'llm' only"]),
    (with_(service={"model": "affine"}, slo={"latency_s": 1.0},
           replicas={"router": "prefix_aware"}),
     ["prefix_aware", "needs service.model 'llm'"]),
    (with_(service={"model": "affine", "scheduler": {"num_blocks": 4}}),
     ["scheduler applies to model 'llm' only"]),
    (with_(service={"model": "affine", "memory": {"gpu_bytes": 10, "weights_bytes": 1}}),
     ["memory.per_item_bytes is required"]),
], ids=["no-profile", "unknown-profile", "missing-profile-file", "no-blocks-no-memory",
        "zero-seqs", "unknown-scheduler-key", "unknown-engine", "affine-key", "batch-key",
        "memory-without-kv", "memory-per-item", "weights-fill-the-gpu", "scale-to-zero",
        "round-robin", "prefix-aware-no-cache", "no-lengths", "ttft-only", "negative-ttft",
        "ttft-on-affine", "prefix-aware-on-affine", "scheduler-on-affine",
        "affine-memory-without-per-item"])
def test_malformed_llm_scenarios_name_the_field_and_rule(tmp_path, doc, needles):
    path = write(tmp_path, yaml.safe_dump(doc), "bad.yaml")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    msg = str(err.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, msg


def test_num_blocks_is_derived_from_memory_as_vllm_sizes_its_cache(tmp_path):
    """Llama-2-70B fp16 on two A100-80GB at 0.9: 3,178 blocks (num_blocks_for's example)."""
    doc = with_(service__scheduler={}, service__memory={
        "gpu_bytes": 2 * 80 * 2**30, "weights_bytes": 2 * 68_976_648_192,
        "kv_bytes_per_token": 2 * 80 * 8 * 128 * 2, "gpu_memory_utilization": 0.9})
    sc = load_scenario(write(tmp_path, yaml.safe_dump(doc)))
    assert sc.service.scheduler_config().num_blocks == 3178
    doc["service"]["scheduler"] = {"num_blocks": 1000}      # given: it overrides the memory
    sc = load_scenario(write(tmp_path, yaml.safe_dump(doc)))
    assert sc.service.scheduler_config().num_blocks == 1000
    assert sc.bounds().gpu_memory_bytes is None and sc.bounds().max_batch_size == 128


# --- the oracle -------------------------------------------------------------------------------

def test_the_oracle_plans_an_llm_fleet_and_its_plan_meets_the_slo(tmp_path):
    """The oracle sizes an LLM fleet from what one replica sustains (no batch line to fit),
    verifies by replaying, and counts a miss of every bound (TTFT and TPOT here)."""
    from trimtab.sim.oracle import _misses_by_interval

    d = small_dir(tmp_path)
    feasible = SMALL.format(engine="compiled").replace(   # 8 replicas meet this one
        "slo: {ttft_s: 1.0, tpot_s: 0.05", "slo: {ttft_s: 2.0, tpot_s: 0.2").replace(
        "initial: 1, min: 1, max: 4", "initial: 3, min: 1, max: 8")
    sc = load_scenario(write(d, feasible, "oracle.yaml"))
    run = simulate(sc, "oracle", record_requests=True)
    assert run.summary["meets_slo"], run.summary
    assert run.summary["params"]["replica_rps"] > 0 and run.summary["params"]["runs"] >= 1
    n_miss = int(_misses_by_interval(run, sc.slo, 10.0, 1000).sum())
    served = run.requests["outcome"] == SERVED
    assert run.summary["replica_hours"] < simulate(sc, "static:replicas=8").summary[
        "replica_hours"]
    assert n_miss == int(misses(run.requests, {"ttft_s": 2.0, "tpot_s": 0.2}).sum()) + \
        int((~served).sum())
    # The past-only schedule sizes from the same capacity model and meets it too (the
    # oracle's search is a heuristic, so no order of their costs is asserted).
    causal = simulate(sc, "causal").summary
    assert causal["meets_slo"] and causal["params"]["load_factor"] > 0
