"""Mooncake JSONL, counts CSV, Prometheus query_range JSON and the synthetic generators."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from trimtab.sim.traces import TraceConfig, TraceError, load_trace
from tests.conftest import TRACES_DIR


def write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def within_poisson(count: int, mean: float, z: float = 5.0) -> bool:
    return abs(count - mean) <= z * math.sqrt(max(mean, 1.0))


# --- Mooncake -----------------------------------------------------------------------------

def mooncake_lines(stamps_ms: list[int]) -> str:
    return "\n".join(json.dumps({"timestamp": t, "input_length": 100 + i, "output_length": 7,
                                 "hash_ids": [1, 2]}) for i, t in enumerate(stamps_ms)) + "\n"


def test_mooncake_spreads_quantised_arrivals_inside_each_bucket(tmp_path):
    stamps = [0] * 50 + [3000] * 50 + [9000] * 20
    path = write(tmp_path, mooncake_lines(stamps), "m.jsonl")
    trace = load_trace(TraceConfig(path=str(path), format="mooncake", seed=2), tmp_path)
    assert len(trace) == 120
    assert np.sum(trace.arrival_s < 3) == 50 and np.sum(trace.arrival_s >= 9) == 20
    assert np.sum((trace.arrival_s >= 3) & (trace.arrival_s < 6)) == 50
    assert len(np.unique(trace.arrival_s)) == 120      # spread, not stacked
    assert sorted(trace.prompt_tokens.tolist()) == list(range(100, 220))


@pytest.mark.parametrize("line, fragment", [
    ('{"timestamp": 5, "input_length": 1', "line 2, column 35: not JSON"),
    ('{"timestamp": 5, "input_length": 1}', "line 2, column output_length: key missing"),
    ('{"timestamp": -5, "input_length": 1, "output_length": 1}', "column timestamp"),
    ('{"timestamp": 5, "input_length": 1.5, "output_length": 1}', "column input_length: 1.5"),
    ('[1, 2]', "line 2, column 1: expected a JSON object"),
], ids=["truncated", "missing-key", "negative-time", "float-tokens", "not-object"])
def test_mooncake_bad_lines_name_line_and_field(tmp_path, line, fragment):
    path = write(tmp_path, mooncake_lines([0]) + line + "\n", "m.jsonl")
    with pytest.raises(TraceError, match=str(path)) as info:
        load_trace(TraceConfig(path=str(path), format="mooncake"), tmp_path)
    assert fragment in str(info.value)


# --- counts -------------------------------------------------------------------------------

def test_counts_rate_follows_each_interval(tmp_path):
    rows = [("2020-01-01 00:00:00", 600), ("2020-01-01 00:10:00", 0),
            ("2020-01-01 00:20:00", 6000)]
    path = write(tmp_path, "timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in rows), "c.csv")
    trace = load_trace(TraceConfig(path=str(path), format="counts", seed=1), tmp_path)
    edges = [0, 600, 1200, 1800]
    per_interval = np.histogram(trace.arrival_s, bins=edges)[0]
    assert per_interval[1] == 0
    assert within_poisson(per_interval[0], 600) and within_poisson(per_interval[2], 6000)
    assert trace.duration_s == pytest.approx(1800)


def test_counts_bundled_series_mean_matches_the_sum_of_counts():
    cfg = TraceConfig(path="nab_twitter_volume_GOOG.csv", format="counts", end_s=86400 * 3)
    trace = load_trace(cfg, TRACES_DIR)
    rows = np.loadtxt(TRACES_DIR / "nab_twitter_volume_GOOG.csv", delimiter=",", skiprows=1,
                      usecols=1, dtype=float, converters={0: lambda s: 0})
    expected = rows[: 3 * 24 * 12].sum()     # 5-minute rows
    assert within_poisson(len(trace), expected)


def test_counts_time_scale_and_rate_scale_multiply_the_rate(tmp_path):
    path = write(tmp_path, "timestamp,value\n0,1000\n100,1000\n", "c.csv")
    trace = load_trace(TraceConfig(path=str(path), format="counts", time_scale=2,
                                   rate_scale=1.5), tmp_path)
    assert trace.duration_s == pytest.approx(100)
    assert within_poisson(len(trace), 3000)


@pytest.mark.parametrize("text, fragment", [
    ("timestamp,value\n0,5\n60,nan\n", "line 3, column 2 (value): 'nan' must be a finite"),
    ("timestamp,value\n0,5\n60,-1\n", "line 3, column 2 (value): '-1' must be a finite"),
    ("timestamp,value\n0,5\nlater,1\n", "line 3, column 1 (timestamp): 'later' is not a "),
    ("timestamp,value\n0,5\n", "interval is unknown; set trace.interval_s"),
    ("time,count\n0,5\n", "lacks column(s) ['timestamp', 'value']"),
], ids=["nan", "negative", "bad-timestamp", "one-row", "wrong-header"])
def test_counts_bad_input_names_line_and_column(tmp_path, text, fragment):
    path = write(tmp_path, text, "c.csv")
    with pytest.raises(TraceError) as info:
        load_trace(TraceConfig(path=str(path), format="counts"), tmp_path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_counts_gaps_are_zero_load_with_a_warning(tmp_path):
    path = write(tmp_path, "timestamp,value\n0,100\n60,100\n600,100\n660,100\n", "c.csv")
    trace = load_trace(TraceConfig(path=str(path), format="counts"), tmp_path)
    assert np.sum((trace.arrival_s > 120) & (trace.arrival_s < 600)) == 0
    assert any("gap" in w for w in trace.warnings)


@pytest.mark.parametrize("fmt, text, end_s, warned", [
    ("counts", "timestamp,value\n0,100\n60,100\n120,100\n", 600.0, True),
    ("counts", "timestamp,value\n0,100\n60,100\n120,100\n", 150.0, False),
    ("azure-llm", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                  "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:16:46.6805900,396,109\n",
     600.0, True),
], ids=["counts-past-end", "counts-inside", "events-past-end"])
def test_a_window_past_the_end_of_the_data_is_said(tmp_path, fmt, text, end_s, warned):
    """Asking for more than the file holds replays what it has, and says how much that is."""
    path = write(tmp_path, text, "t.csv")
    trace = load_trace(TraceConfig(path=str(path), format=fmt, start_s=0, end_s=end_s), tmp_path)
    said = [w for w in trace.warnings if "past the end of the data" in w]
    assert bool(said) == warned
    if warned:
        assert str(path) in said[0] and f"not {end_s:g} s" in said[0]


# --- Prometheus ---------------------------------------------------------------------------

def prom_doc(series: list[list[list]]) -> str:
    return json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"pod": f"p{i}"}, "values": v} for i, v in enumerate(series)]}})


def test_prometheus_sums_series_and_holds_each_rate_until_the_next_sample(tmp_path):
    a = [[1700000000, "10"], [1700000060, "0"], [1700000120, "40"]]
    b = [[1700000000, "10"], [1700000060, "0"], [1700000120, "0"]]
    path = write(tmp_path, prom_doc([a, b]), "p.json")
    trace = load_trace(TraceConfig(path=str(path), format="prometheus", seed=4), tmp_path)
    counts = np.histogram(trace.arrival_s, bins=[0, 60, 120, 180])[0]
    assert counts[1] == 0
    assert within_poisson(counts[0], 20 * 60) and within_poisson(counts[2], 40 * 60)


@pytest.mark.parametrize("doc, fragment", [
    ('{"status": "error", "error": "bad"}', "status = 'error'"),
    ('{"status": "success", "data": {"resultType": "vector", "result": []}}',
     "resultType = 'vector'"),
    (prom_doc([[[1, "1"], [2, "NaN"]]]), "data.result[0].values[1]"),
    (prom_doc([[[1, "1"], [2, "-3"]]]), "must be a finite number >= 0"),
    ('{"status": "success",\n "data": [}', "line 2, column 11: not JSON"),
], ids=["status-error", "vector", "nan", "negative", "syntax"])
def test_prometheus_bad_input_is_named(tmp_path, doc, fragment):
    path = write(tmp_path, doc, "p.json")
    with pytest.raises(TraceError) as info:
        load_trace(TraceConfig(path=str(path), format="prometheus"), tmp_path)
    assert fragment in str(info.value)


# --- generators ---------------------------------------------------------------------------

GENERATORS = {
    "poisson": dict(format="poisson", rate_rps=50, duration_s=200),
    "diurnal": dict(format="diurnal", peak_rps=90, trough_rps=10, period_s=100, duration_s=200),
    "step": dict(format="step", steps=[[0, 10], [100, 90]], duration_s=200),
    "flash-crowd": dict(format="flash-crowd", base_rps=10, peak_rps=110, at_s=50, ramp_s=20,
                        hold_s=40, duration_s=200),
}
# Integral of the rate over [0, 200) s: the expected number of arrivals.
EXPECTED = {"poisson": 10000, "diurnal": 10000, "step": 10000, "flash-crowd": 2000 + 100 * 60}


@pytest.mark.parametrize("name", list(GENERATORS), ids=list(GENERATORS))
def test_generator_mean_count_is_the_integral_of_its_rate(name):
    counts = [len(load_trace(TraceConfig(seed=s, **GENERATORS[name]), Path("."))) for s in range(4)]
    mean = EXPECTED[name]
    assert abs(np.mean(counts) - mean) <= 5 * math.sqrt(mean / 4)


def test_diurnal_shape_trough_then_peak():
    trace = load_trace(TraceConfig(seed=0, **GENERATORS["diurnal"]), Path("."))
    near_trough = np.sum(trace.arrival_s < 10)
    near_peak = np.sum((trace.arrival_s >= 45) & (trace.arrival_s < 55))
    assert near_peak > 4 * near_trough


def test_step_rate_changes_at_the_step():
    trace = load_trace(TraceConfig(seed=0, **GENERATORS["step"]), Path("."))
    assert within_poisson(int(np.sum(trace.arrival_s < 100)), 1000)
    assert within_poisson(int(np.sum(trace.arrival_s >= 100)), 9000)


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(list(GENERATORS)), seed=st.integers(0, 1000),
       time_scale=st.floats(0.5, 4), start_s=st.floats(0, 40))
def test_generated_traces_are_sorted_and_inside_their_window(name, seed, time_scale, start_s):
    cfg = TraceConfig(seed=seed, time_scale=time_scale, start_s=start_s, **GENERATORS[name])
    trace = load_trace(cfg, Path("."))
    span_s = 200 / time_scale - start_s
    assert trace.duration_s == pytest.approx(max(span_s, 0.0))
    assert np.all(np.diff(trace.arrival_s) >= 0)
    assert len(trace) == 0 or (trace.arrival_s[0] >= 0 and trace.arrival_s[-1] <= span_s)
    assert trace.prompt_tokens is None


def test_same_seed_same_trace_other_seed_differs():
    cfg = GENERATORS["poisson"]
    a = load_trace(TraceConfig(seed=7, **cfg), Path(".")).arrival_s
    b = load_trace(TraceConfig(seed=7, **cfg), Path(".")).arrival_s
    c = load_trace(TraceConfig(seed=8, **cfg), Path(".")).arrival_s
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("fmt, text, name", [
    ("counts", "timestamp,value\n60,100\n0,100\n120,100\n", "c.csv"),
    ("mooncake", mooncake_lines([3000, 0, 6000]), "m.jsonl"),
], ids=["counts", "mooncake"])
def test_unsorted_files_are_sorted_with_a_warning(tmp_path, caplog, fmt, text, name):
    path = write(tmp_path, text, name)
    trace = load_trace(TraceConfig(path=str(path), format=fmt), tmp_path)
    assert np.all(np.diff(trace.arrival_s) >= 0) and trace.arrival_s[0] >= 0
    assert any("out of time order" in w for w in trace.warnings)
    assert "out of time order" in caplog.text
