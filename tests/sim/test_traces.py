"""Trace config validation, the Azure CSV reader (fast and careful paths) and transformations."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from pydantic import ValidationError

from trimtab.sim.traces import FORMATS, TraceConfig, TraceError, load_trace
from trimtab.sim.traces import files
from tests.conftest import TRACES_DIR

AZURE = TRACES_DIR / "azure_llm_conv.csv"
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
GOOD_ROWS = ["2023-11-16 18:15:46.6805900,374,44", "2023-11-16 18:15:50.9951690,396,109",
             "2023-11-16 18:15:51.2224670,879,55", "2023-11-16 18:16:01,10,5"]


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def azure(path: Path, **kw) -> TraceConfig:
    return TraceConfig(path=str(path), format="azure-llm", **kw)


def bundled_rows() -> list[list[str]]:
    with AZURE.open() as f:
        return list(csv.reader(f))[1:]


# --- config -------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, fragment", [
    (dict(format="parquet", path="x"), "known: azure-llm, mooncake, counts"),
    (dict(path="x", jitter_s=-1), "jitter_s = -1.0, must be a finite number >= 0"),
    (dict(path="x", rate_scale=math.nan), "rate_scale = nan"),
    (dict(path="x", time_scale=0), "time_scale = 0.0, must be a finite number > 0"),
    (dict(path="x", start_s=10, end_s=5), "end_s = 5.0, must be greater than start_s = 10.0"),
    (dict(format="azure-llm"), "path is required"),
    (dict(format="poisson", rate_rps=5), "needs duration_s"),
    (dict(format="flash-crowd", duration_s=5), "needs base_rps, peak_rps, at_s, ramp_s, hold_s"),
    (dict(format="diurnal", peak_rps=1, trough_rps=2, period_s=10, duration_s=10),
     "trough_rps = 2.0, must be <= peak_rps"),
    (dict(format="step", steps=[[5, 1], [5, 2]], duration_s=10), "steps[1] t_s = 5.0"),
    (dict(format="step", steps=[[0, -1]], duration_s=10), "steps[0] rate_rps = -1.0"),
    (dict(path="x", colour="red"), "colour"),
], ids=["unknown-format", "negative-jitter", "nan-scale", "zero-time-scale", "end-before-start",
        "no-path", "poisson-no-duration", "flash-missing", "trough-over-peak", "steps-unsorted",
        "steps-negative", "unknown-key"])
def test_config_rejects_impossible_values_naming_the_field(kw, fragment):
    with pytest.raises(ValidationError) as info:
        TraceConfig(**kw)
    assert fragment in str(info.value)


def test_every_format_is_listed_once():
    assert len(set(FORMATS)) == len(FORMATS) == 9   # four files, five generators (family included)


# --- Azure CSV ----------------------------------------------------------------------------

def test_bundled_trace_every_row_becomes_an_arrival_in_order():
    rows = bundled_rows()
    trace = load_trace(azure(AZURE), TRACES_DIR)
    assert len(trace) == len(rows) == 19366
    assert trace.arrival_s[0] == 0.0
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert trace.prompt_tokens.dtype == np.int32
    # The file is in time order, so row i is arrival i with its own tokens.
    assert trace.prompt_tokens.tolist() == [int(r[1]) for r in rows]
    assert trace.output_tokens.tolist() == [int(r[2]) for r in rows]
    assert 57 * 60 < trace.duration_s < 59 * 60
    assert trace.warnings == []


def test_fast_and_careful_parsers_agree_on_the_bundled_trace():
    fast = files.read_azure(AZURE)
    slow = files._azure_slow(AZURE)
    # datetime keeps microseconds (the 7th digit is dropped): agree to 1e-6 s.
    np.testing.assert_allclose(fast.time_s, slow.time_s, atol=1e-6, rtol=0)
    assert np.array_equal(fast.prompt_tokens, slow.prompt_tokens)
    assert np.array_equal(fast.output_tokens, slow.output_tokens)


def test_fractional_digits_are_exact(tmp_path):
    path = write(tmp_path, HEADER + "2023-01-01 00:00:00.0000001,1,1\n"
                 "2023-01-01 00:00:01.5,1,1\n2024-02-29 00:00:00.123456789,1,1\n")
    trace = load_trace(azure(path), tmp_path)
    leap_s = (365 + 31 + 28) * 86400 + 0.123456789 - 1e-7
    np.testing.assert_allclose(trace.arrival_s, [0.0, 1.5 - 1e-7, leap_s], atol=1e-9, rtol=0)


def test_crlf_and_no_trailing_newline_parse_like_lf(tmp_path):
    lf = load_trace(azure(write(tmp_path, HEADER + "\n".join(GOOD_ROWS) + "\n", "a.csv")),
                    tmp_path)
    crlf = load_trace(azure(write(tmp_path, (HEADER + "\n".join(GOOD_ROWS)).replace("\n", "\r\n"),
                                  "b.csv")), tmp_path)
    assert np.array_equal(lf.arrival_s, crlf.arrival_s)
    assert np.array_equal(lf.prompt_tokens, crlf.prompt_tokens)


@pytest.mark.parametrize("bad_row, line, column, rule", [
    ("2023-11-16 18:15:52,abc,5", 4, 2, "must be a non-negative integer"),
    ("2023-11-16 18:15:52,10,-5", 4, 3, "must be a non-negative integer"),
    ("2023-11-16 18:15:52,NaN,5", 4, 2, "must be a non-negative integer"),
    ("2023-11-16 18:15:52,10,", 4, 3, "must be a non-negative integer"),
    ("2023-13-16 18:15:52,10,5", 4, 1, "is not a timestamp"),
    ("yesterday,10,5", 4, 1, "is not a timestamp"),
    ("2023-11-16 18:15:52,10,5,7", 4, None, "4 fields, the header has 3"),
    ("2023-11-16 18:15:52,99999999999,5", 4, 2, "exceeds the int32 limit"),
], ids=["non-numeric", "negative", "nan", "empty", "bad-month", "word-timestamp", "extra-field",
        "int32-overflow"])
def test_malformed_row_names_file_line_column_and_rule(tmp_path, bad_row, line, column, rule):
    path = write(tmp_path, HEADER + "\n".join(GOOD_ROWS[:2] + [bad_row] + GOOD_ROWS[2:]) + "\n")
    with pytest.raises(TraceError) as info:
        load_trace(azure(path), tmp_path)
    message = str(info.value)
    assert str(path) in message and f"line {line}" in message and rule in message
    if column is not None:
        assert f"column {column}" in message


def test_missing_column_lists_what_the_header_has(tmp_path):
    path = write(tmp_path, "TIMESTAMP,ContextTokens\n2023-11-16 18:15:52,10\n")
    with pytest.raises(TraceError, match=r"line 1: header .* lacks column\(s\) \['GeneratedTokens'\]"):
        load_trace(azure(path), tmp_path)


@pytest.mark.parametrize("text, rule", [("", "empty file"), (HEADER, "header but no rows")],
                         ids=["empty", "header-only"])
def test_empty_files_are_errors(tmp_path, text, rule):
    with pytest.raises(TraceError, match=rule):
        load_trace(azure(write(tmp_path, text)), tmp_path)


def test_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(TraceError, match="nope.csv: file not found"):
        load_trace(azure(Path("nope.csv")), tmp_path)


def test_unsorted_rows_are_sorted_with_a_warning_and_tokens_follow(tmp_path, caplog):
    rows = [GOOD_ROWS[2], GOOD_ROWS[0], GOOD_ROWS[1]]
    trace = load_trace(azure(write(tmp_path, HEADER + "\n".join(rows) + "\n")), tmp_path)
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert trace.prompt_tokens.tolist() == [374, 396, 879]
    assert len(trace.warnings) == 1 and "out of time order" in trace.warnings[0]
    assert "out of time order" in caplog.text


# --- transformations ----------------------------------------------------------------------

def test_integer_rate_scale_copies_every_row_exactly():
    trace = load_trace(azure(AZURE, rate_scale=3), TRACES_DIR)
    assert len(trace) == 3 * 19366
    assert np.bincount(trace.prompt_tokens).sum() == 3 * 19366


def test_fractional_rate_scale_is_right_on_average():
    n = 19366
    counts = [len(load_trace(azure(AZURE, rate_scale=2.3, seed=s), TRACES_DIR)) for s in range(5)]
    # Each row gives 2 or 3 copies, Bernoulli(0.3): sd of the total is sqrt(n * 0.21).
    for c in counts:
        assert 2 * n <= c <= 3 * n
    assert abs(np.mean(counts) - 2.3 * n) < 4 * math.sqrt(n * 0.21 / 5)


def test_time_scale_divides_timestamps():
    base = load_trace(azure(AZURE), TRACES_DIR)
    fast = load_trace(azure(AZURE, time_scale=4), TRACES_DIR)
    np.testing.assert_allclose(fast.arrival_s, base.arrival_s / 4)


def test_window_is_applied_after_time_scale_and_counts_from_its_start():
    base = load_trace(azure(AZURE), TRACES_DIR)
    win = load_trace(azure(AZURE, time_scale=2, start_s=100, end_s=400), TRACES_DIR)
    scaled = base.arrival_s / 2
    expect = scaled[(scaled >= 100) & (scaled < 400)] - 100
    np.testing.assert_allclose(win.arrival_s, expect)
    assert win.duration_s == 300


@settings(max_examples=25, deadline=None)
@given(k=st.floats(0.05, 4.0), jitter_s=st.floats(0.0, 5.0), seed=st.integers(0, 2**16))
def test_scaled_trace_invariants(k, jitter_s, seed):
    trace = load_trace(azure(AZURE, rate_scale=k, jitter_s=jitter_s, seed=seed, end_s=300),
                       TRACES_DIR)
    n_rows = int(np.sum(load_trace(azure(AZURE, end_s=300), TRACES_DIR).arrival_s < 300))
    assert math.floor(k) * n_rows <= len(trace) <= math.ceil(k) * n_rows
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert len(trace) == 0 or (trace.arrival_s[0] >= 0 and trace.arrival_s[-1] <= 300)
    assert len(trace.prompt_tokens) == len(trace)


def test_jitter_moves_copies_within_bounds():
    base = load_trace(azure(AZURE, end_s=600), TRACES_DIR)
    jittered = load_trace(azure(AZURE, end_s=600, jitter_s=0.5, seed=3), TRACES_DIR)
    assert len(base) == len(jittered)
    assert not np.array_equal(base.arrival_s, jittered.arrival_s)
    # Sorting can only pair each arrival with a neighbour within the jitter.
    assert np.max(np.abs(np.sort(jittered.arrival_s) - base.arrival_s)) <= 0.5 + 1e-12


def test_trace_from_arrays_sorts_and_keeps_tokens_aligned():
    from trimtab.sim.traces import trace_from_arrays

    trace = trace_from_arrays(np.array([2.0, 0.5, 1.0]), np.array([20, 5, 10]), np.array([2, 0, 1]))
    assert trace.arrival_s.tolist() == [0.5, 1.0, 2.0]
    assert trace.prompt_tokens.tolist() == [5, 10, 20] and trace.output_tokens.tolist() == [0, 1, 2]
    assert len(trace) == 3 and trace.duration_s == 2.0


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf], ids=["nan", "negative", "inf"])
def test_trace_from_arrays_rejects_impossible_times(bad):
    from trimtab.sim.traces import trace_from_arrays

    with pytest.raises(TraceError, match=r"arrival_s\[1\] = .*must be a finite number >= 0"):
        trace_from_arrays(np.array([0.0, bad, 2.0]))
