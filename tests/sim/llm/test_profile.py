"""Step-time profiles: the splitwise fit, the bundled files, loading errors, fit_steps, CLI."""
from __future__ import annotations

import csv
import json
import math
import sys
import types

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from trimtab.sim.data import data_path
from trimtab.sim.llm import profile as prof
from trimtab.sim.llm.cli import register
from trimtab.sim.llm.types import StepModel, noise_factor

COMBOS = prof.splitwise_combos()
COLUMNS = ("model,hardware,prompt_size,batch_size,token_size,peak_power,average_power,"
           "prompt_time,token_time,e2e_time,tensor_parallel").split(",")


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def write_splitwise(path, step: StepModel, configs, *, repeats: int = 1, jitter: float = 0.0,
                    override: dict | None = None) -> None:
    """A splitwise-format CSV whose times come from ``step`` exactly (times ``1 + jitter``
    on alternate repeats); ``override`` maps (prompt, batch) to a prompt_time."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for p, b, t in configs:
            for k in range(repeats):
                f = 1.0 + (jitter if k % 2 else -jitter)
                pt = step.mean_ms(b * p, 0, b * p, b * p * p) * f
                pt = (override or {}).get((p, b), pt)
                tt = step.mean_ms(0, b, b * (p + t / 2.0), 0)
                w.writerow(["m", "gpu", p, b, t, 1.0, 0.7, pt, tt, pt + (t - 1) * tt, 2])


SYNTH_CONFIGS = [(p, 1, 128) for p in (128, 256, 512, 1024, 2048, 4096, 8192)] + \
    [(512, b, 128) for b in (2, 4, 8, 16, 32)] + [(512, 1, t) for t in (256, 1024, 4096)]
TRUE = StepModel(40.0, 0.2, 0.3, 5e-4, 8e-6)


# --------------------------------------------------------------------------- splitwise fit
@pytest.mark.parametrize("combo", COMBOS, ids=[prof.profile_name(*c) for c in COMBOS])
def test_fit_reproduces_every_kept_row_within_the_reported_error(combo):
    model, hardware, tp = combo
    r = prof.fit_splitwise(None, model, hardware, tp)
    rows = [x for x in prof.read_splitwise() if (x["model"], x["hardware"],
                                                 x["tensor_parallel"]) == combo]
    bad = {tuple(int(v) for v in e.split(":")[0].replace("prompt_size ", "")
                 .replace("batch_size ", "").split(", ")) for e in r.excluded}
    kept = [x for x in rows if (x["prompt_size"], x["batch_size"]) not in bad]
    assert r.rows == 2 * len(kept) and len(rows) - len(kept) == 5 * len(bad)
    rel = []
    for x in kept:          # recomputed from the CSV and the StepModel, not from the fit
        b, p, t = x["batch_size"], x["prompt_size"], x["token_size"]
        rel.append(r.step.mean_ms(b * p, 0, b * p, b * p * p) / x["prompt_time"] - 1)
        rel.append(r.step.mean_ms(0, b, b * (p + t / 2), 0) / x["token_time"] - 1)
    rel = np.abs(rel)
    assert rel.max() <= r.max_rel_error + 1e-12
    assert rel.mean() == pytest.approx(r.mape, rel=1e-9)
    assert r.mape < 0.12 and r.max_rel_error < 0.6
    assert r.mape <= min(r.mape_with_attn, r.mape_without_attn) + 1e-12 or not r.attn_used
    assert 0 < r.step.cv < 0.1


def test_tp2_batch64_rows_are_left_out_as_failed_measurements():
    r = prof.fit_splitwise(None, "llama2-70b", "a100-80gb", 2)
    assert len(r.excluded) == 1 and r.excluded[0].startswith("prompt_size 512, batch_size 64")
    assert prof.fit_splitwise(None, "llama2-70b", "a100-80gb", 4).excluded == []


@pytest.mark.parametrize("attn", [True, False], ids=["with-A", "without-A"])
def test_a_synthetic_splitwise_file_gives_back_its_coefficients(tmp_path, attn):
    true = TRUE if attn else StepModel(40.0, 0.2, 0.3, 5e-4, 0.0)
    path = tmp_path / "perf.csv"
    write_splitwise(path, true, SYNTH_CONFIGS, repeats=3, jitter=0.01,
                    override={(512, 64): 1.0})
    r = prof.fit_splitwise(path, "m", "gpu", 2)
    assert r.attn_used is attn
    assert len(r.excluded) == 0          # no batch-64 config was written: nothing to leave out
    for k in prof.COEFS:
        assert getattr(r.step, k) == pytest.approx(getattr(true, k), rel=0.03, abs=1e-12), k
    # three repeats at -1 %, +1 %, -1 %: sample cv of (0.99, 1.01, 0.99)
    assert r.step.cv == pytest.approx(np.std([0.99, 1.01, 0.99], ddof=1) / (1 - 0.01 / 3),
                                      rel=0.02)


def test_a_failed_measurement_in_a_synthetic_file_is_left_out(tmp_path):
    path = tmp_path / "perf.csv"
    write_splitwise(path, TRUE, SYNTH_CONFIGS + [(512, 64, 128)], override={(512, 64): 100.0})
    r = prof.fit_splitwise(path, "m", "gpu", 2)
    assert [e.split(":")[0] for e in r.excluded] == ["prompt_size 512, batch_size 64"]
    assert r.mape < 1e-4                 # the rest is the exact model


def test_no_rows_for_a_combination_lists_the_ones_there_are():
    with pytest.raises(prof.ProfileError, match="no rows for llama2-70b/b200/tp2.*a100-80gb"):
        prof.fit_splitwise(None, "llama2-70b", "b200", 2)


# --------------------------------------------------------------------------- bundled files
def test_every_splitwise_combination_is_bundled_and_nothing_else():
    assert prof.bundled_profiles() == sorted(prof.profile_name(*c) for c in COMBOS)
    assert "llama2-70b-a100-tp2" in prof.bundled_profiles()


@pytest.mark.parametrize("combo", COMBOS, ids=[prof.profile_name(*c) for c in COMBOS])
def test_bundled_profile_equals_a_fresh_fit(combo):
    fresh = prof.profile_dict(prof.fit_splitwise(None, *combo))
    name = prof.profile_name(*combo)
    stored = json.loads(data_path("profiles", f"{name}.json").read_text())
    assert set(stored) == set(fresh)
    for k in (*prof.COEFS, "cv"):
        assert stored[k] == pytest.approx(fresh[k], rel=1e-5, abs=1e-15), k
    for k, v in fresh["fit"].items():
        assert stored["fit"][k] == (pytest.approx(v, rel=1e-4) if isinstance(v, float)
                                    else v), k
    assert stored["source"] == fresh["source"] and stored["memory"] == fresh["memory"]
    step = prof.load_step_model(name)
    assert step.name == name and step.c0_ms == stored["c0_ms"] and step.cv == stored["cv"]


def test_bundled_llama_memory_gives_the_worked_example_block_count():
    p = prof.load_profile("llama2-70b-a100-tp2")
    assert p.memory["kv_bytes_per_token"] == 327_680
    assert prof.num_blocks_for(**p.memory, block_size=16, gpu_memory_utilization=0.9,
                               tensor_parallel=2) == 3178
    # TP4 has twice the memory for the same weights: far more blocks
    assert prof.num_blocks_for(**p.memory, tensor_parallel=4) > 3 * 3178


@pytest.mark.parametrize("kwargs, match", [
    ({"block_size": 0}, "block_size = 0, must be an integer >= 1"),
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization = 1.5"),
    ({"tensor_parallel": 1}, "leave no KV space"),
], ids=["block-size", "utilization", "weights-too-big"])
def test_num_blocks_for_rejects_impossible_settings(kwargs, match):
    base = {"gpu_bytes": 80 * 2**30, "weights_bytes": 137_953_296_384,
            "kv_bytes_per_token": 327_680, "tensor_parallel": 2}
    with pytest.raises(ValueError, match=match):
        prof.num_blocks_for(**{**base, **kwargs})


# --------------------------------------------------------------------------- loading
GOOD = {"name": "x", "c0_ms": 20.0, "c_prefill_ms": 0.1, "c_decode_ms": 0.2, "c_kv_ms": 1e-4}


@pytest.mark.parametrize("doc, match", [
    ({k: v for k, v in GOOD.items() if k != "c0_ms"}, "field 'c0_ms' is missing"),
    ({**GOOD, "c_kv_ms": -1e-4}, "field 'c_kv_ms' = -0.0001, must be a finite number >= 0"),
    ({**GOOD, "c_decode_ms": "0.2"}, "field 'c_decode_ms' = '0.2', must be a finite number"),
    ({**GOOD, "cv": True}, "field 'cv' = True, must be a finite number"),
    ({**GOOD, "c0": 1.0}, "unknown field 'c0'"),
    ({**GOOD, "name": 3}, "field 'name' = 3, must be a string"),
    ({**GOOD, "memory": {"gpu_bytes": 1.5}}, "field 'memory.gpu_bytes' = 1.5, must be an "
                                             "integer >= 1"),
    ({**GOOD, "memory": {"gpu_gb": 80}}, "unknown field 'memory.gpu_gb'"),
    ([1, 2], "must hold a JSON object, not list"),
], ids=["missing", "negative", "string", "bool", "unknown", "name", "memory-float",
        "memory-unknown", "list"])
def test_malformed_profile_files_are_rejected_naming_file_field_and_rule(tmp_path, doc, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(prof.ProfileError, match=match) as info:
        prof.load_step_model(str(path))
    assert str(path) in str(info.value)


def test_not_json_and_missing_files_and_unknown_names(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(prof.ProfileError, match=r"broken\.json: not valid JSON"):
        prof.load_step_model("broken.json", base_dir=tmp_path)
    with pytest.raises(prof.ProfileError, match=r"nope\.json: not found"):
        prof.load_step_model("nope.json", base_dir=tmp_path)
    with pytest.raises(prof.ProfileError, match="not a bundled profile.*llama2-70b-a100-tp2"):
        prof.load_step_model("llama2-70b-a100-tp3")


def test_a_relative_profile_path_resolves_against_base_dir_and_optional_fields_default(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mine.json").write_text(json.dumps(
        {k: v for k, v in GOOD.items() if k != "name"}))
    step = prof.load_step_model("profiles/mine.json", base_dir=tmp_path)
    assert step == StepModel(20.0, 0.1, 0.2, 1e-4, 0.0, cv=0.0, name="mine")


# --------------------------------------------------------------------------- fit_steps
def synthetic_steps(true: StepModel, n: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Steps like an engine's: decode batches of 1-128 sequences, some with a prefill of a
    few prompts; durations from ``true`` times the engine's own lognormal noise."""
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 129, n).astype(float)
    ctx = rng.uniform(100, 3000, n)
    n_prompts = np.where(rng.random(n) < 0.3, rng.integers(1, 4, n), 0)
    p_len = rng.integers(50, 4000, n).astype(float)
    p = n_prompts * p_len
    d[(d == 0) & (p == 0)] = 1
    a = n_prompts * p_len * p_len
    k = d * ctx + p
    dur = np.array([true.mean_ms(p[i], d[i], k[i], a[i]) / 1000.0
                    * noise_factor(seed, 0, i, true.cv) for i in range(n)])
    return {"prefill_tokens": p, "decode_seqs": d, "kv_tokens": k, "attn_pairs": a,
            "duration_s": dur}


@pytest.mark.parametrize("true", [
    StepModel(30.0, 0.15, 0.25, 4e-4, 2e-5, cv=0.05),
    StepModel(3.0, 0.01, 0.05, 2e-5, 0.0, cv=0.30),     # a noisy CPU engine, no A term
], ids=["gpu-like", "cpu-like-noisy"])
def test_fit_steps_recovers_known_coefficients_and_noise(true):
    r = prof.fit_steps(synthetic_steps(true, 4000), name="synth")
    assert r.name == "synth" and r.rows == 4000
    assert r.attn_used is (true.c_attn_ms > 0)
    for k in prof.COEFS:
        assert getattr(r.step, k) == pytest.approx(getattr(true, k), rel=0.08, abs=1e-12), k
    assert r.step.cv == pytest.approx(true.cv, rel=0.1)


def test_fit_steps_rejects_records_it_cannot_fit():
    recs = synthetic_steps(StepModel(30.0, 0.1, 0.2, 1e-4, cv=0.05), 20)
    with pytest.raises(prof.ProfileError, match="missing attn_pairs"):
        prof.fit_steps({k: v for k, v in recs.items() if k != "attn_pairs"})
    with pytest.raises(prof.ProfileError, match="duration_s must be finite and > 0"):
        prof.fit_steps({**recs, "duration_s": recs["duration_s"] * 0})
    with pytest.raises(prof.ProfileError, match="different lengths"):
        prof.fit_steps({**recs, "decode_seqs": recs["decode_seqs"][:5]})


def test_a_saved_fit_loads_back_as_the_same_step_model(tmp_path):
    r = prof.fit_steps(synthetic_steps(StepModel(30.0, 0.1, 0.2, 1e-4, cv=0.05), 500))
    path = prof.save_profile(r, tmp_path)
    assert path == tmp_path / "steps.json"
    assert prof.load_step_model(str(path)) == r.step
    assert json.loads(path.read_text())["fit"]["rows"] == 500


# --------------------------------------------------------------------------- CLI
def test_cli_fits_one_combination_and_writes_profile_and_json(tmp_path):
    out = tmp_path / "fits.json"
    res = CliRunner().invoke(cli(), ["llm", "fit", "--model", "llama2-70b", "--hardware",
                                     "a100-80gb", "--tp", "2", "--out", str(tmp_path),
                                     "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "llama2-70b-a100-tp2" in res.output and "batch_size 64" in res.output
    written = json.loads((tmp_path / "llama2-70b-a100-tp2.json").read_text())
    assert json.loads(out.read_text()) == [written]


def test_cli_fits_step_records_from_a_file(tmp_path):
    recs = synthetic_steps(StepModel(30.0, 0.1, 0.2, 1e-4, cv=0.05), 300)
    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps([{k: float(v[i]) for k, v in recs.items()}
                                 for i in range(300)]))
    res = CliRunner().invoke(cli(), ["llm", "fit", "--steps", str(steps), "--name", "cpu",
                                     "--out", str(tmp_path / "cpu.json")])
    assert res.exit_code == 0, res.output
    step = prof.load_step_model(str(tmp_path / "cpu.json"))
    assert step.name == "cpu" and step.c0_ms == pytest.approx(30.0, rel=0.05)
    assert math.isfinite(step.cv) and step.cv == pytest.approx(0.05, rel=0.3)


def test_cli_reports_an_unknown_combination_and_exits_2():
    res = CliRunner().invoke(cli(), ["llm", "fit", "--model", "gpt-5"])
    assert res.exit_code == 2 and "no combination matches model=gpt-5" in res.output


def test_validate_is_registered_when_its_module_exists(monkeypatch):
    fake = types.ModuleType("trimtab.sim.llm.validate_real")

    def validate_cmd() -> None:
        """Stand-in for helper H4's command."""
        typer.echo("validated")

    fake.validate_cmd = validate_cmd
    monkeypatch.setitem(sys.modules, "trimtab.sim.llm.validate_real", fake)
    res = CliRunner().invoke(cli(), ["llm", "validate"])
    assert res.exit_code == 0 and "validated" in res.output
