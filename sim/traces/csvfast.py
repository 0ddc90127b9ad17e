"""Vectorised CSV parsing of timestamps and integers straight from the file's bytes.

The fast path reads ``YYYY-MM-DD HH:MM:SS[.fffffff]`` timestamps and non-negative integers with
numpy arithmetic on byte offsets (a million rows in about a tenth of a second). It never
reports errors itself: on anything it does not recognise it returns None and the caller runs the
careful row-by-row parser, which names the line and column.
"""
from __future__ import annotations

import numpy as np

_NL, _CR, _COMMA, _QUOTE, _ZERO = 10, 13, 44, 34, 48
_DAYS_IN_MONTH = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def split_fields(data: bytes, ncols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Byte buffer and field (start, end) offsets, shape (rows, ncols), of every row after the
    header; None if the layout is irregular (quotes, a wrong comma count, blank lines)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if (buf == _QUOTE).any():
        return None
    newlines = np.flatnonzero(buf == _NL)
    if len(newlines) == 0:
        return None
    line_starts = newlines + 1
    line_ends = np.append(newlines[1:], len(buf))
    if line_ends[-1] == line_starts[-1]:        # file ends with a newline
        line_starts, line_ends = line_starts[:-1], line_ends[:-1]
    n = len(line_starts)
    if n == 0:
        return None
    line_ends = line_ends.copy()
    cr = buf[np.maximum(line_ends - 1, 0)] == _CR
    line_ends[cr] -= 1
    commas = np.flatnonzero(buf[line_starts[0]:] == _COMMA) + line_starts[0]
    if len(commas) != n * (ncols - 1):
        return None
    commas = commas.reshape(n, ncols - 1)
    # Every row's commas must lie inside that row.
    if ncols > 1 and ((commas[:, 0] < line_starts).any() or (commas[:, -1] >= line_ends).any()):
        return None
    starts = np.concatenate([line_starts[:, None], commas + 1], axis=1)
    ends = np.concatenate([commas, line_ends[:, None]], axis=1)
    return buf, starts, ends


def parse_uints(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """Non-negative decimal integers (at most 18 digits) in ``buf[starts:ends]``, or None."""
    lengths = ends - starts
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.int64)
    if lengths.min() < 1 or lengths.max() > 18:
        return None
    values = np.zeros(len(starts), dtype=np.int64)
    for j in range(int(lengths.max())):
        active = lengths > j
        digit = buf[np.where(active, starts + j, 0)].astype(np.int64) - _ZERO
        if ((digit < 0) | (digit > 9))[active].any():
            return None
        values = np.where(active, values * 10 + digit, values)
    return values


def _number(block: np.ndarray, first: int, width: int) -> np.ndarray:
    """The decimal number in columns ``first:first+width`` of a (rows, bytes) digit block."""
    value = np.zeros(len(block), dtype=np.int64)
    for j in range(first, first + width):
        value = value * 10 + (block[:, j].astype(np.int64) - _ZERO)
    return value


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 (proleptic Gregorian), Howard Hinnant's algorithm, vectorised."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_datetimes(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """``YYYY-MM-DD HH:MM:SS[.f{1,9}]`` (or a ``T`` separator) as (whole seconds since the Unix
    epoch, int64; fraction of a second, float64), or None if any field differs."""
    n = len(starts)
    lengths = ends - starts
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    if lengths.min() < 19 or lengths.max() > 29:
        return None
    if len(buf) < int(starts.max()) + 19:
        return None
    # One gather of the fixed-width part, then column arithmetic (much faster than 14 gathers).
    block = buf[starts[:, None] + np.arange(19)]
    sep_ok = ((block[:, 4] == ord("-")) & (block[:, 7] == ord("-"))
              & ((block[:, 10] == ord(" ")) | (block[:, 10] == ord("T")))
              & (block[:, 13] == ord(":")) & (block[:, 16] == ord(":")))
    if not sep_ok.all():
        return None
    digit_cols = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
    digits = block[:, digit_cols]
    if ((digits < _ZERO) | (digits > _ZERO + 9)).any():
        return None
    year, month, day = _number(block, 0, 4), _number(block, 5, 2), _number(block, 8, 2)
    hour, minute, sec = _number(block, 11, 2), _number(block, 14, 2), _number(block, 17, 2)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    if ((month < 1) | (month > 12)).any() or (year < 1).any():
        return None
    month_days = _DAYS_IN_MONTH[month] - ((month == 2) & ~leap)
    if ((day < 1) | (day > month_days) | (hour > 23) | (minute > 59) | (sec > 59)).any():
        return None
    whole_s = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + sec
    frac_s = np.zeros(n)
    has_frac = lengths > 19
    if has_frac.any():
        if (buf[starts[has_frac] + 19] != ord(".")).any() or (lengths[has_frac] < 21).any():
            return None
        frac_starts = np.where(has_frac, starts + 20, starts)
        frac_ends = np.where(has_frac, ends, starts + 1)   # a dummy 1-digit field, discarded
        frac_int = parse_uints(buf, frac_starts, frac_ends)
        if frac_int is None:
            return None
        frac_s = np.where(has_frac, frac_int / 10.0 ** (frac_ends - frac_starts), 0.0)
    return whole_s, frac_s
