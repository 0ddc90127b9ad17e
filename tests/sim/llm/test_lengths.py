"""trace.lengths: (prompt, output) pairs drawn from a trace file's rows, the total cap, Mooncake
hash ids carried through every trace transform, and errors naming file, line, field, rule."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from trimtab.sim.traces import TraceConfig, TraceError, load_trace
from trimtab.sim.traces.lengths import HASH_BLOCK_TOKENS, cap_total
from tests.conftest import TRACES_DIR

ROWS = [(374, 44), (396, 109), (879, 55), (91, 16), (6000, 2000), (15, 3)]


def azure_csv(tmp_path: Path, rows=ROWS, name: str = "len.csv") -> Path:
    path = tmp_path / name
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:15:{i % 60:02d}.0000000,{p},{o}\n" for i, (p, o) in enumerate(rows)))
    return path


def mooncake_jsonl(tmp_path: Path, rows, name: str = "m.jsonl") -> Path:
    """``rows``: (timestamp ms, input, output, hash ids)."""
    path = tmp_path / name
    path.write_text("".join(json.dumps({"timestamp": t, "input_length": p, "output_length": o,
                                        "hash_ids": h}) + "\n" for t, p, o, h in rows))
    return path


def poisson(lengths: dict | None, seed: int = 3, rate_rps: float = 5.0,
            duration_s: float = 60.0) -> TraceConfig:
    return TraceConfig(format="poisson", rate_rps=rate_rps, duration_s=duration_s, seed=seed,
                       lengths=lengths)


def pairs(trace) -> list[tuple[int, int]]:
    return list(zip(trace.prompt_tokens.tolist(), trace.output_tokens.tolist()))


# --- drawing ------------------------------------------------------------------------------

def test_every_pair_is_a_row_and_rows_are_reused_in_whole_shuffles(tmp_path):
    path = azure_csv(tmp_path)
    trace = load_trace(poisson({"path": str(path)}), tmp_path)
    got = pairs(trace)
    n, r = len(got), len(ROWS)
    assert n > 3 * r                                   # several rounds were needed
    for k in range(n // r):                            # each whole round uses each row once
        assert sorted(got[k * r:(k + 1) * r]) == sorted(ROWS)
    assert set(got[(n // r) * r:]) <= set(ROWS)
    rounds = [tuple(got[k * r:(k + 1) * r]) for k in range(n // r)]
    assert len(set(rounds)) > 1                        # a new shuffle each round


def test_the_same_seed_draws_the_same_lengths_and_leaves_arrivals_as_they_were(tmp_path):
    path = azure_csv(tmp_path)
    a = load_trace(poisson({"path": str(path)}, seed=3), tmp_path)
    b = load_trace(poisson({"path": str(path)}, seed=3), tmp_path)
    c = load_trace(poisson({"path": str(path)}, seed=4), tmp_path)
    bare = load_trace(poisson(None, seed=3), tmp_path)
    assert pairs(a) == pairs(b)
    assert pairs(a)[:len(ROWS)] != pairs(c)[:len(ROWS)]
    np.testing.assert_array_equal(a.arrival_s, bare.arrival_s)
    assert bare.prompt_tokens is None and a.hash_ids is None


def test_the_contract_path_resolves_to_the_bundled_azure_conversation_trace(tmp_path):
    """``traces/azure_llm_conv.csv`` is not in the scenario's folder: the bundled data is."""
    cfg = poisson({"path": "traces/azure_llm_conv.csv", "format": "azure-llm",
                   "max_total_tokens": 4096}, rate_rps=2.0, duration_s=600)
    trace = load_trace(cfg, tmp_path)
    raw = np.loadtxt(TRACES_DIR / "azure_llm_conv.csv", delimiter=",", skiprows=1,
                     usecols=(1, 2), dtype=np.int64)
    capped = set(zip(*(x.tolist() for x in cap_total(raw[:, 0], raw[:, 1], 4096))))
    assert set(pairs(trace)) <= capped
    assert int((trace.prompt_tokens + trace.output_tokens).max()) <= 4096
    assert any("scaled down" in w for w in trace.warnings)


# --- the cap --------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt, output, cap, expected", [
    (6000, 2000, 4096, (3072, 1024)),       # 4096 / 8000 of each
    (4000, 96, 4096, (4000, 96)),           # exactly at the cap: unchanged
    (10_000, 1, 100, (99, 1)),              # the output keeps its one token
    (1, 10_000, 100, (1, 99)),
    (0, 7, None, (1, 7)),                   # a 0-token row counts as 1 token
    (5, 0, 4096, (5, 1)),
], ids=["proportional", "at-cap", "output-floor", "prompt-floor", "zero-prompt", "zero-out"])
def test_rows_over_the_cap_scale_down_in_proportion(prompt, output, cap, expected):
    p, o = cap_total(np.array([prompt]), np.array([output]), cap)
    assert (int(p[0]), int(o[0])) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50_000), st.integers(0, 5_000)), min_size=1,
                max_size=30), st.integers(2, 8192))
def test_capped_rows_fit_keep_one_token_each_and_rows_under_stay(rows, cap):
    prompt = np.array([p for p, _ in rows])
    output = np.array([o for _, o in rows])
    p, o = cap_total(prompt, output, cap)
    assert (p >= 1).all() and (o >= 1).all() and (p + o <= cap).all()
    under = np.maximum(prompt, 1) + np.maximum(output, 1) <= cap
    np.testing.assert_array_equal(p[under], np.maximum(prompt, 1)[under])
    np.testing.assert_array_equal(o[under], np.maximum(output, 1)[under])
    assert (p <= np.maximum(prompt, 1)).all() and (o <= np.maximum(output, 1)).all()


# --- Mooncake hash ids ----------------------------------------------------------------------

def test_mooncake_lengths_carry_hash_ids_cut_to_the_capped_prompt(tmp_path):
    rows = [(0, 1500, 100, [1, 2, 3]), (10, 600, 50, [1, 9]), (20, 3000, 1000, [4, 5, 6, 7, 8, 9])]
    path = mooncake_jsonl(tmp_path, rows)
    trace = load_trace(poisson({"path": str(path), "format": "mooncake",
                                "max_total_tokens": 2000}), tmp_path)
    assert trace.hash_ids is not None and trace.hash_block_tokens == HASH_BLOCK_TOKENS
    by_row = {(1500, 100): [1, 2, 3], (600, 50): [1, 9], (1500, 500): [4, 5, 6]}  # 3000+1000 halved
    for (p, o), ids in zip(pairs(trace), trace.hash_ids):
        assert ids == by_row[(p, o)]
        assert len(ids) == -(-p // HASH_BLOCK_TOKENS)


@pytest.mark.parametrize("extra", [{}, {"rate_scale": 2.5}, {"jitter_s": 3.0},
                                   {"start_s": 1.0, "end_s": 4.0}],
                         ids=["plain", "rate-scale", "jitter", "window"])
def test_a_mooncake_trace_keeps_each_arrivals_hash_ids_through_its_transforms(tmp_path, extra):
    """Each row's hash ids name its prompt length here, so a misaligned id is caught."""
    rows = [(t * 1000, 512 * (k + 1), 5, [k] * (k + 1)) for k, t in
            enumerate([3, 0, 2, 5, 1, 4, 6])]
    path = mooncake_jsonl(tmp_path, rows)
    trace = load_trace(TraceConfig(path=str(path), format="mooncake", seed=5, **extra),
                       tmp_path)
    assert len(trace.hash_ids) == len(trace) > 0
    for p, ids in zip(trace.prompt_tokens.tolist(), trace.hash_ids):
        k = p // 512 - 1
        assert ids == [k] * (k + 1)


def test_a_mooncake_trace_without_hash_ids_has_none(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"timestamp": 0, "input_length": 5, "output_length": 2}) + "\n")
    assert load_trace(TraceConfig(path=str(path), format="mooncake"), tmp_path).hash_ids is None


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body, needles", [
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n", ["GeneratedTokens"]),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3,x\n",
     ["line 2", "GeneratedTokens", "non-negative integer"]),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,-3,4\n",
     ["line 2", "ContextTokens", "non-negative integer"]),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n", ["no rows"]),
    ("", ["empty file"]),
], ids=["missing-column", "bad-output", "negative-prompt", "header-only", "empty"])
def test_bad_azure_lengths_files_name_file_line_and_field(tmp_path, body, needles):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(TraceError) as err:
        load_trace(poisson({"path": str(path)}), tmp_path)
    msg = str(err.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, msg


@pytest.mark.parametrize("line, needles", [
    ('{"timestamp": 1, "input_length": 5, "output_length": 2, "hash_ids": 7}',
     ["line 2", "hash_ids", "list of non-negative integers"]),
    ('{"timestamp": 1, "input_length": 5, "output_length": 2, "hash_ids": [1, -2]}',
     ["line 2", "hash_ids", "item 1 = -2"]),
    ('{"timestamp": 1, "input_length": 5, "output_length": 2, "hash_ids": [true]}',
     ["line 2", "hash_ids", "item 0 = True"]),
    ('{"timestamp": 1, "output_length": 2}', ["line 2", "input_length", "key missing"]),
], ids=["not-a-list", "negative-id", "bool-id", "missing-input"])
def test_bad_mooncake_rows_name_line_field_and_rule(tmp_path, line, needles):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"timestamp": 0, "input_length": 5, "output_length": 2,
                                "hash_ids": [1]}) + "\n" + line + "\n")
    for cfg in (poisson({"path": str(path), "format": "mooncake"}),
                TraceConfig(path=str(path), format="mooncake")):
        with pytest.raises(TraceError) as err:
            load_trace(cfg, tmp_path)
        msg = str(err.value)
        assert str(path) in msg
        for needle in needles:
            assert needle in msg, msg


def test_a_missing_lengths_file_names_the_field_and_where_it_looked(tmp_path):
    with pytest.raises(TraceError) as err:
        load_trace(poisson({"path": "nope.csv"}), tmp_path)
    msg = str(err.value)
    assert "trace.lengths.path" in msg and str(tmp_path / "nope.csv") in msg


@pytest.mark.parametrize("cfg, needles", [
    (dict(format="poisson", rate_rps=1, duration_s=10, lengths={"path": "x", "format": "csv"}),
     ["lengths.format", "azure-llm"]),
    (dict(format="poisson", rate_rps=1, duration_s=10,
          lengths={"path": "x", "max_total_tokens": 1}), ["max_total_tokens", "2"]),
    (dict(format="poisson", rate_rps=1, duration_s=10, lengths={"format": "azure-llm"}),
     ["lengths.path", "required"]),
    (dict(format="poisson", rate_rps=1, duration_s=10, lengths={"path": "x", "seed": 1}),
     ["lengths.seed", "xtra"]),
    (dict(format="azure-llm", path="t.csv", lengths={"path": "x"}),
     ["carries its own token counts"]),
], ids=["unknown-format", "cap-below-two", "no-path", "unknown-key", "lengths-on-azure"])
def test_bad_lengths_configs_are_refused_naming_the_field(cfg, needles):
    with pytest.raises(ValueError) as err:
        TraceConfig(**cfg)
    msg = str(err.value)
    for needle in needles:
        assert needle in msg, msg


def test_row_counts_of_a_long_draw_are_balanced(tmp_path):
    """Whole shuffles: over k rounds every row is drawn k or k + 1 times."""
    path = azure_csv(tmp_path)
    trace = load_trace(poisson({"path": str(path)}, rate_rps=20, duration_s=100), tmp_path)
    counts = Counter(pairs(trace))
    k = len(trace) // len(ROWS)
    assert set(counts) == set(ROWS)
    assert all(k <= c <= k + 1 for c in counts.values())
