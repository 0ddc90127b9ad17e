"""series: ``timestamp,value`` CSV files; bad input names the file, line, column and rule."""
from __future__ import annotations

import numpy as np
import pytest

from trimtab.common.series import SeriesError, read_series, timestamp_parts


def write(tmp_path, text: str, name: str = "s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, times_s, values", [
    ("timestamp,value\n0,5\n60,7.5\n", [0, 60], [5, 7.5]),
    ("Value,TIMESTAMP\n5,120\n6,60\n", [120, 60], [5, 6]),                 # any order, any case
    ("timestamp,value,note\n1970-01-01 00:01:00,2,x\n\n1970-01-01T00:02:00Z,3,y\n",
     [60, 120], [2, 3]),                                                    # ISO, naive is UTC
], ids=["seconds", "columns-reordered", "iso-and-blank-line"])
def test_reads_rows_in_file_order(tmp_path, text, times_s, values):
    t, v = read_series(write(tmp_path, text))
    assert t.tolist() == times_s and v.tolist() == values


@pytest.mark.parametrize("text, fragment", [
    ("", "empty file, expected a CSV header"),
    ("timestamp,value\n", "header but no rows"),
    ("time,count\n0,5\n", "line 1: header ['time', 'count'] lacks column(s) ['timestamp', 'value']"),
    ("timestamp,value\n0,5\n60\n", "line 3: 1 fields, the header has 2"),
    ("timestamp,value\n0,5\nlater,1\n", "line 3, column 1 (timestamp): 'later' is not a timestamp"),
    ("timestamp,value\n-5,1\n", "line 2, column 1 (timestamp): '-5' must be a finite, non-negative"),
    ("timestamp,value\n0,abc\n", "line 2, column 2 (value): 'abc' is not a number"),
    ("timestamp,value\n0,5\n60,nan\n", "line 3, column 2 (value): 'nan' must be a finite number >= 0"),
    ("timestamp,value\n0,-1\n", "line 2, column 2 (value): '-1' must be a finite number >= 0"),
], ids=["empty", "no-rows", "wrong-header", "short-row", "bad-timestamp", "negative-time",
        "not-a-number", "nan", "negative-value"])
def test_bad_input_names_file_line_column_and_rule(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(SeriesError) as info:
        read_series(path)
    assert str(path) in str(info.value) and fragment in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("make, fragment", [
    (lambda p: None, "nope.csv: file not found"),
    (lambda p: p.mkdir(), "nope.csv: is a directory"),
], ids=["missing", "directory"])
def test_a_file_that_is_not_there_is_named(tmp_path, make, fragment):
    make(tmp_path / "nope.csv")
    with pytest.raises(SeriesError, match=fragment):
        read_series(tmp_path / "nope.csv")


def test_a_utf8_byte_order_mark_is_skipped(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftimestamp,value\n60,1\n")
    assert [a.tolist() for a in read_series(path)] == [[60.0], [1.0]]


def test_not_utf8_is_named(tmp_path):
    path = tmp_path / "b.csv"
    path.write_bytes(b"timestamp,value\n0,\xff\n")
    with pytest.raises(SeriesError, match=r"b\.csv: byte 18 is not UTF-8"):
        read_series(path)


def test_timestamps_keep_sub_microsecond_parts_apart_from_the_whole_seconds():
    whole_s, frac_s = timestamp_parts("2023-11-16 18:15:46.680590", "here")
    assert whole_s == 1700158546 and frac_s == pytest.approx(0.68059, abs=1e-9)
    assert np.isclose(sum(timestamp_parts("12.25", "here")), 12.25)
