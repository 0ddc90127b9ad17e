"""Readers for trace files: Azure LLM CSV, Mooncake JSONL, counts CSV, Prometheus query_range.

Each reader returns raw, unsorted data in the file's own time base: ``Events`` (one row, one
request) or a ``RateCurve`` (a rate to sample from). Errors name the file, line, column and rule.
"""
from __future__ import annotations

import csv
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from trimtab.common.series import SeriesError
from trimtab.common.series import csv_rows as _rows
from trimtab.common.series import header_columns as _header
from trimtab.common.series import nonneg_float as _nonneg_float
from trimtab.common.series import read_bytes as _read_bytes
from trimtab.common.series import read_series
from trimtab.common.series import read_text as _read_text
from trimtab.common.series import timestamp_parts as _timestamp_parts
from trimtab.common.series import where as _where
from trimtab.sim.traces import csvfast
from trimtab.sim.traces.config import TraceError
from trimtab.sim.traces.rates import RateCurve, constant_pieces

_INT32_MAX = 2**31 - 1


@dataclass
class Events:
    """One arrival per row: times in seconds (any origin), token counts when the file has them."""

    time_s: np.ndarray
    prompt_tokens: np.ndarray | None = None
    output_tokens: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    origin_s: float | None = None     # the trace's start; None: its earliest arrival
    hash_ids: list[list[int]] | None = None   # Mooncake: prefix block hashes per row


_F = TypeVar("_F", bound=Callable)


def _trace_errors(reader: _F) -> _F:
    """The shared CSV pieces raise SeriesError; a trace reader says TraceError (same text)."""
    @functools.wraps(reader)
    def wrapped(*args, **kwargs):
        try:
            return reader(*args, **kwargs)
        except SeriesError as exc:
            raise TraceError(str(exc)) from None
    return wrapped  # type: ignore[return-value]


def _count(text: str, where: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise TraceError(f"{where}: {text!r} must be a non-negative integer")
    value = int(text)
    if value > _INT32_MAX:
        raise TraceError(f"{where}: {value} exceeds the int32 limit {_INT32_MAX}")
    return value


AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@_trace_errors
def read_azure(path: Path) -> Events:
    """Azure LLM inference trace CSV: one request per row (vectorised, with a careful fallback)."""
    data = _read_bytes(path)
    if not data.strip():
        raise TraceError(f"{path}: empty file, expected a CSV header")
    first_line = data.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
    try:
        header = next(csv.reader([first_line]), [])
    except csv.Error as exc:         # a stray carriage return or NUL in the header line
        raise TraceError(f"{path} line 1: not a CSV header: {exc}") from None
    cols = _header(path, header, AZURE_COLUMNS)
    fast = _azure_fast(data, len(header), cols)
    return fast if fast is not None else _azure_slow(path)


def _azure_fast(data: bytes, ncols: int, cols: dict[str, int]) -> Events | None:
    split = csvfast.split_fields(data, ncols)
    if split is None:
        return None
    buf, starts, ends = split
    c_ts, c_in, c_out = (cols[c] for c in AZURE_COLUMNS)
    stamp = csvfast.parse_datetimes(buf, starts[:, c_ts], ends[:, c_ts])
    prompt = csvfast.parse_uints(buf, starts[:, c_in], ends[:, c_in])
    output = csvfast.parse_uints(buf, starts[:, c_out], ends[:, c_out])
    if stamp is None or prompt is None or output is None:
        return None
    if len(prompt) and max(prompt.max(), output.max()) > _INT32_MAX:
        return None
    whole_s, frac_s = stamp
    # Subtract the first whole second before converting, so float64 keeps sub-microseconds.
    time_s = (whole_s - whole_s.min()).astype(np.float64) + frac_s
    return Events(time_s, prompt.astype(np.int32), output.astype(np.int32))


@_trace_errors
def _azure_slow(path: Path) -> Events:
    header, body = _rows(path, _read_text(path))
    cols = _header(path, header, AZURE_COLUMNS)
    c_ts, c_in, c_out = (cols[c] for c in AZURE_COLUMNS)
    whole_s = np.empty(len(body), np.int64)
    frac_s = np.empty(len(body))
    prompt = np.empty(len(body), np.int32)
    output = np.empty(len(body), np.int32)
    for i, (line, row) in enumerate(body):
        whole_s[i], frac_s[i] = _timestamp_parts(row[c_ts],
                                                 _where(path, line, c_ts + 1, header[c_ts]))
        prompt[i] = _count(row[c_in], _where(path, line, c_in + 1, header[c_in]))
        output[i] = _count(row[c_out], _where(path, line, c_out + 1, header[c_out]))
    return Events((whole_s - whole_s.min()).astype(np.float64) + frac_s, prompt, output)


@_trace_errors
def read_mooncake(path: Path, bucket_s: float | None, rng: np.random.Generator) -> Events:
    """Mooncake JSONL; timestamps (ms) are quantised, so arrivals are spread uniformly inside
    each bucket ``[t, t + bucket_s)``; the bucket is the smallest gap between distinct
    timestamps unless given."""
    stamps_ms: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    hashes: list[list[int]] = []
    any_hashes = False
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{path} line {line_no}, column {exc.colno}: not JSON ({exc.msg})"
                             ) from None
        if not isinstance(record, dict):
            raise TraceError(f"{path} line {line_no}, column 1: expected a JSON object")
        for key in ("timestamp", "input_length", "output_length"):
            if key not in record:
                raise TraceError(f"{path} line {line_no}, column {key}: key missing")
        where = f"{path} line {line_no}, column timestamp"
        if isinstance(record["timestamp"], bool):
            raise TraceError(f"{where}: {record['timestamp']!r} is not a number")
        stamps_ms.append(_nonneg_float(record["timestamp"], where))
        for key, out in (("input_length", prompt), ("output_length", output)):
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TraceError(f"{path} line {line_no}, column {key}: {value!r} must be a "
                                 "non-negative integer")
            if value > _INT32_MAX:
                raise TraceError(f"{path} line {line_no}, column {key}: {value} exceeds "
                                 f"the int32 limit {_INT32_MAX}")
            out.append(value)
        if "hash_ids" in record:
            any_hashes = True
            hashes.append(_hash_ids(record["hash_ids"], f"{path} line {line_no}, column "
                                                        "hash_ids"))
        else:
            hashes.append([])
    if not stamps_ms:
        raise TraceError(f"{path}: no records")
    time_s = np.asarray(stamps_ms) / 1000.0
    warnings = []
    if (np.diff(time_s) < 0).any():
        warnings.append(f"{path}: {int(np.sum(np.diff(time_s) < 0))} record(s) out of time "
                        "order; sorted by timestamp")
    if bucket_s is None:
        gaps = np.diff(np.unique(time_s))
        bucket_s = float(gaps.min()) if len(gaps) else 0.0
    origin_s = float(time_s.min())
    time_s = time_s + rng.random(len(time_s)) * bucket_s
    order = np.argsort(time_s, kind="stable")
    return Events(time_s[order], np.asarray(prompt, np.int32)[order],
                  np.asarray(output, np.int32)[order], warnings, origin_s,
                  [hashes[i] for i in order.tolist()] if any_hashes else None)


def _hash_ids(value: object, where: str) -> list[int]:
    """A Mooncake record's ``hash_ids``: a list of non-negative integers (one per 512 tokens
    of the prompt)."""
    if not isinstance(value, list):
        raise TraceError(f"{where}: {value!r} must be a list of non-negative integers")
    for j, h in enumerate(value):
        if isinstance(h, bool) or not isinstance(h, int) or h < 0:
            raise TraceError(f"{where}: item {j} = {h!r} must be a non-negative integer")
    return value


@_trace_errors
def read_counts(path: Path, interval_s: float | None) -> tuple[RateCurve, list[str]]:
    """``timestamp,value`` counts per fixed interval -> piecewise-constant rate value/interval.

    Each row covers ``[t, t + interval)``; the interval is ``interval_s`` if given, else the
    median gap between rows. Missing rows are gaps with rate zero (reported as a warning).
    """
    stamps, values = read_series(path)
    warnings: list[str] = []
    if (np.diff(stamps) < 0).any():
        warnings.append(f"{path}: {int(np.sum(np.diff(stamps) < 0))} row(s) out of time "
                        "order; sorted by timestamp")
    if interval_s is None:
        gaps = np.diff(np.sort(stamps))
        gaps = gaps[gaps > 0]
        if not len(gaps):
            raise TraceError(f"{path}: one distinct timestamp, so the interval is unknown; "
                             "set trace.interval_s")
        interval_s = float(np.median(gaps))
    gaps = np.diff(np.sort(stamps))
    n_gaps = int(np.sum(gaps > 1.5 * interval_s))
    if n_gaps:
        warnings.append(f"{path}: {n_gaps} gap(s) longer than the {interval_s:g} s interval "
                        "replay with zero load")
    curve = constant_pieces(stamps, stamps + interval_s, values / interval_s)
    return curve, warnings


@_trace_errors
def read_prometheus(path: Path, interval_s: float | None) -> tuple[RateCurve, list[str]]:
    """A Prometheus ``query_range`` response of a request-rate query (per second). Series are
    summed; each sample's rate holds until the next sample (the last for one step)."""
    try:
        doc = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path} line {exc.lineno}, column {exc.colno}: not JSON ({exc.msg})"
                         ) from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise TraceError(f"{path}: status = {doc.get('status') if isinstance(doc, dict) else doc!r}"
                         ", must be 'success' (a query_range response)")
    data = doc.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        kind = data.get("resultType") if isinstance(data, dict) else None
        raise TraceError(f"{path}: data.resultType = {kind!r}, must be 'matrix' (query_range)")
    result = data.get("result")
    if not isinstance(result, list) or not result:
        raise TraceError(f"{path}: data.result is empty; the query returned no series")
    stamps: list[float] = []
    rates: list[float] = []
    for i, series in enumerate(result):
        values = series.get("values") if isinstance(series, dict) else None
        if not isinstance(values, list):
            raise TraceError(f"{path}: data.result[{i}].values missing or not a list")
        for j, pair in enumerate(values):
            where = f"{path}: data.result[{i}].values[{j}] (series {series.get('metric', {})})"
            if not isinstance(pair, list) or len(pair) != 2:
                raise TraceError(f"{where}: {pair!r} must be [timestamp, \"rate\"]")
            stamps.append(_nonneg_float(pair[0], where + " timestamp"))
            rates.append(_nonneg_float(pair[1], where + " rate"))
    unique_t, inverse = np.unique(np.asarray(stamps), return_inverse=True)
    total = np.zeros(len(unique_t))
    np.add.at(total, inverse, np.asarray(rates))
    gaps = np.diff(unique_t)
    if interval_s is None:
        if not len(gaps):
            raise TraceError(f"{path}: one sample, so the step is unknown; set trace.interval_s")
        interval_s = float(np.median(gaps))
    ends = np.append(unique_t[1:], unique_t[-1] + interval_s)
    return constant_pieces(unique_t, ends, total), []
