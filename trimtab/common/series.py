"""Read a ``timestamp,value`` CSV series; errors name the file, the line, the column and the rule."""
from __future__ import annotations

import csv
import io
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

COLUMNS = ("timestamp", "value")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class SeriesError(ValueError):
    """A series file that cannot be read; the message names the file, line, column and rule."""


def timestamp_parts(text: str, where: str) -> tuple[int, float]:
    """An ISO date-time (naive ones are UTC) or a number of seconds, as Unix seconds split into
    whole seconds and a fraction (a float64 of ~1.7e9 s would only keep ~0.2 us)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise SeriesError(f"{where}: {text!r} is not a timestamp (ISO date-time like "
                              "'2023-11-16 18:15:46.6805900' or seconds)") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        delta = dt - _EPOCH
        return delta.days * 86400 + delta.seconds, delta.microseconds / 1e6
    if not math.isfinite(value) or value < 0:
        raise SeriesError(f"{where}: {text!r} must be a finite, non-negative number of seconds")
    return int(value), value - int(value)


def timestamp_s(text: str, where: str) -> float:
    """``timestamp_parts`` as one float of Unix seconds."""
    whole_s, frac_s = timestamp_parts(text, where)
    return whole_s + frac_s


def _value(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SeriesError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SeriesError(f"{where}: {text!r} must be a finite number >= 0")
    return value


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SeriesError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise SeriesError(f"{path}: byte {exc.start} is not UTF-8 ({exc.reason})") from None
    except OSError as exc:
        raise SeriesError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_series(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(Unix seconds, values >= 0) of each row, in file order.

    The header names the columns ``timestamp`` and ``value`` (any case, any order, other
    columns allowed); blank lines are skipped; every row has as many fields as the header.
    """
    path = Path(path)
    reader = csv.reader(io.StringIO(_text(path)))
    rows = [(reader.line_num, row) for row in reader]
    if not rows:
        raise SeriesError(f"{path}: empty file, expected a CSV header "
                          f"'{','.join(COLUMNS)}'")
    header = rows[0][1]
    index = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [c for c in COLUMNS if c not in index]
    if missing:
        raise SeriesError(f"{path} line 1: header {header} lacks column(s) {missing}; "
                          f"expected {list(COLUMNS)}")
    body = [(n, r) for n, r in rows[1:] if r]      # a blank line is not a row
    if not body:
        raise SeriesError(f"{path}: header but no rows")
    c_ts, c_val = index["timestamp"], index["value"]
    times_s = np.empty(len(body))
    values = np.empty(len(body))
    for i, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise SeriesError(f"{path} line {line}: {len(row)} fields, the header has "
                              f"{len(header)} ({','.join(header)})")
        times_s[i] = timestamp_s(row[c_ts], f"{path} line {line}, column {c_ts + 1} "
                                            f"({header[c_ts]})")
        values[i] = _value(row[c_val], f"{path} line {line}, column {c_val + 1} "
                                        f"({header[c_val]})")
    return times_s, values
