"""Read a ``timestamp,value`` CSV series; errors name the file, the line, the column and the rule.

The pieces (``read_text``, ``csv_rows``, ``header_columns``, ``timestamp_parts``,
``nonneg_float``) serve the simulator's other CSV trace readers too.
"""
from __future__ import annotations

import csv
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("timestamp", "value")
UTF8_BOM = b"\xef\xbb\xbf"     # Excel and others start a UTF-8 CSV with one: accepted
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class SeriesError(ValueError):
    """A series file that cannot be read; the message names the file, line, column and rule."""


def where(path: Path, line: int, col: int, name: str) -> str:
    """``path line 3, column 2 (value)``: the place an error message starts with."""
    return f"{path} line {line}, column {col} ({name})"


def read_bytes(path: Path) -> bytes:
    """The file's bytes without a UTF-8 byte-order mark; a directory or unreadable file is said."""
    try:
        return Path(path).read_bytes().removeprefix(UTF8_BOM)
    except FileNotFoundError:
        raise SeriesError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SeriesError(f"{path}: is a directory, expected a trace file") from None
    except OSError as exc:
        raise SeriesError(f"{path}: cannot read ({exc.strerror})") from None


def read_text(path: Path) -> str:
    """``read_bytes`` decoded as UTF-8 (the first bad byte is named)."""
    try:
        return read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SeriesError(f"{path}: byte {exc.start} is not UTF-8 ({exc.reason})") from None


def timestamp_parts(text: str, at: str) -> tuple[int, float]:
    """An ISO date-time (naive ones are UTC) or a number of seconds, as Unix seconds split into
    whole seconds and a fraction (a float64 of ~1.7e9 s would only keep ~0.2 us)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise SeriesError(f"{at}: {text!r} is not a timestamp (ISO date-time like "
                              "'2023-11-16 18:15:46.6805900' or seconds)") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        delta = dt - _EPOCH
        return delta.days * 86400 + delta.seconds, delta.microseconds / 1e6
    if not math.isfinite(value) or value < 0:
        raise SeriesError(f"{at}: {text!r} must be a finite, non-negative number of seconds")
    return int(value), value - int(value)


def timestamp_s(text: str, at: str) -> float:
    """``timestamp_parts`` as one float of Unix seconds."""
    whole_s, frac_s = timestamp_parts(text, at)
    return whole_s + frac_s


def nonneg_float(text: Any, at: str) -> float:
    """A finite number >= 0, or SeriesError naming ``at`` and the text."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SeriesError(f"{at}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SeriesError(f"{at}: {text!r} must be a finite number >= 0")
    return value


def header_columns(path: Path, header: list[str], required: tuple[str, ...]) -> dict[str, int]:
    """Index of each ``required`` column in ``header`` (any case, any order, others allowed)."""
    index = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [r for r in required if r.lower() not in index]
    if missing:
        raise SeriesError(f"{path} line 1: header {header} lacks column(s) {missing}; "
                          f"expected {list(required)}")
    return {r: index[r.lower()] for r in required}


def csv_rows(path: Path, text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of a CSV text; blank lines are not rows, and every row
    has as many fields as the header."""
    reader = csv.reader(io.StringIO(text))
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:         # a stray carriage return or NUL inside a field, say
        raise SeriesError(f"{path} line {reader.line_num + 1}: not CSV: {exc}") from None
    if not rows:
        raise SeriesError(f"{path}: empty file, expected a CSV header")
    header = rows[0][1]
    body = [(n, r) for n, r in rows[1:] if r]
    if not body:
        raise SeriesError(f"{path}: header but no rows")
    for line, row in body:
        if len(row) != len(header):
            raise SeriesError(f"{path} line {line}: {len(row)} fields, the header has "
                              f"{len(header)} ({','.join(header)})")
    return header, body


def read_series(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(Unix seconds, values >= 0) of each row of a ``timestamp,value`` CSV, in file order."""
    path = Path(path)
    header, body = csv_rows(path, read_text(path))
    cols = header_columns(path, header, COLUMNS)
    c_ts, c_val = cols["timestamp"], cols["value"]
    times_s = np.empty(len(body))
    values = np.empty(len(body))
    for i, (line, row) in enumerate(body):
        times_s[i] = timestamp_s(row[c_ts], where(path, line, c_ts + 1, header[c_ts]))
        values[i] = nonneg_float(row[c_val], where(path, line, c_val + 1, header[c_val]))
    return times_s, values
