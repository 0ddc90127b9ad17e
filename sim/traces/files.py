"""Readers for trace files: Azure LLM CSV, Mooncake JSONL, counts CSV, Prometheus query_range.

Each reader returns raw, unsorted data in the file's own time base: ``Events`` (one row, one
request) or a ``RateCurve`` (a rate to sample from). Errors name the file, line, column and rule.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

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


UTF8_BOM = b"\xef\xbb\xbf"     # Excel and others start a UTF-8 CSV with one: accepted


def _read_bytes(path: Path) -> bytes:
    """The file's bytes without a UTF-8 byte-order mark; a directory or unreadable file is said."""
    try:
        return path.read_bytes().removeprefix(UTF8_BOM)
    except FileNotFoundError:
        raise TraceError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, expected a trace file") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read ({exc.strerror})") from None


def _read_text(path: Path) -> str:
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: byte {exc.start} is not UTF-8 ({exc.reason})") from None


def _where(path: Path, line: int, col: int, name: str) -> str:
    return f"{path} line {line}, column {col} ({name})"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _timestamp_parts(text: str, where: str) -> tuple[int, float]:
    """An ISO date-time (naive ones are UTC) or a number of seconds, as Unix seconds split into
    whole seconds and a fraction (a float64 of ~1.7e9 s would only keep ~0.2 us)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise TraceError(f"{where}: {text!r} is not a timestamp (ISO date-time like "
                             "'2023-11-16 18:15:46.6805900' or seconds)") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        delta = dt - _EPOCH
        return delta.days * 86400 + delta.seconds, delta.microseconds / 1e6
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{where}: {text!r} must be a finite, non-negative number of seconds")
    return int(value), value - int(value)


def _timestamp_s(text: str, where: str) -> float:
    whole_s, frac_s = _timestamp_parts(text, where)
    return whole_s + frac_s


def _count(text: str, where: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise TraceError(f"{where}: {text!r} must be a non-negative integer")
    value = int(text)
    if value > _INT32_MAX:
        raise TraceError(f"{where}: {value} exceeds the int32 limit {_INT32_MAX}")
    return value


def _nonneg_float(text: Any, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise TraceError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{where}: {text!r} must be a finite number >= 0")
    return value


def _header(path: Path, header: list[str], required: tuple[str, ...]) -> dict[str, int]:
    index = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [r for r in required if r.lower() not in index]
    if missing:
        raise TraceError(f"{path} line 1: header {header} lacks column(s) {missing}; "
                         f"expected {list(required)}")
    return {r: index[r.lower()] for r in required}


def _rows(path: Path, text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    reader = csv.reader(io.StringIO(text))
    rows = [(reader.line_num, row) for row in reader]
    if not rows:
        raise TraceError(f"{path}: empty file, expected a CSV header")
    header = rows[0][1]
    body = [(n, r) for n, r in rows[1:] if r]      # a blank line is not a row
    if not body:
        raise TraceError(f"{path}: header but no rows")
    for line, row in body:
        if len(row) != len(header):
            raise TraceError(f"{path} line {line}: {len(row)} fields, the header has "
                             f"{len(header)} ({','.join(header)})")
    return header, body


AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def read_azure(path: Path) -> Events:
    """Azure LLM inference trace CSV: one request per row (vectorised, with a careful fallback)."""
    data = _read_bytes(path)
    if not data.strip():
        raise TraceError(f"{path}: empty file, expected a CSV header")
    first_line = data.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
    header = next(csv.reader([first_line]), [])
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


def read_mooncake(path: Path, bucket_s: float | None, rng: np.random.Generator) -> Events:
    """Mooncake JSONL; timestamps (ms) are quantised, so arrivals are spread uniformly inside
    each bucket ``[t, t + bucket_s)``; the bucket is the smallest gap between distinct
    timestamps unless given."""
    stamps_ms: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
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
                  np.asarray(output, np.int32)[order], warnings, origin_s)


def read_counts(path: Path, interval_s: float | None) -> tuple[RateCurve, list[str]]:
    """``timestamp,value`` counts per fixed interval -> piecewise-constant rate value/interval.

    Each row covers ``[t, t + interval)``; the interval is ``interval_s`` if given, else the
    median gap between rows. Missing rows are gaps with rate zero (reported as a warning).
    """
    header, body = _rows(path, _read_text(path))
    cols = _header(path, header, ("timestamp", "value"))
    c_ts, c_val = cols["timestamp"], cols["value"]
    stamps = np.empty(len(body))
    values = np.empty(len(body))
    for i, (line, row) in enumerate(body):
        stamps[i] = _timestamp_s(row[c_ts], _where(path, line, c_ts + 1, header[c_ts]))
        values[i] = _nonneg_float(row[c_val], _where(path, line, c_val + 1, header[c_val]))
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
