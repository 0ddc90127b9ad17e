"""``trimtab forecast eval``: MASE against seasonal naive, JSON shape, clear input errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from trimtab.controllers.cli import forecast as forecast_cli
from tests.conftest import TRACES_DIR


def _app() -> typer.Typer:
    app = typer.Typer()
    forecast_cli.register(app)

    @app.callback()
    def _root() -> None:
        """root"""

    return app


def _write_series(path, n=24 * 12 * 6, step_min=5, noise=0.05, seed=1):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    per_day = 24 * 60 // step_min
    y = 100 + 60 * np.sin(2 * np.pi * t / per_day) + 10 * np.sin(2 * np.pi * t / 37)
    y = np.maximum(0, y * (1 + noise * rng.normal(size=n)))
    rows = ["timestamp,value"]
    for i, v in enumerate(y):
        minutes = i * step_min
        rows.append(f"2024-01-{1 + minutes // 1440:02d} {minutes % 1440 // 60:02d}:"
                    f"{minutes % 60:02d}:00,{v:.1f}")
    path.write_text("\n".join(rows) + "\n")


def test_eval_writes_the_json_shape(tmp_path):
    series = tmp_path / "s.csv"
    _write_series(series)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(_app(), ["forecast", "eval", "--trace", str(series), "--format",
                                      "counts", "--horizon-s", "900", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert {"mase", "seasonal_naive_mase", "ratio", "fit_seconds_p50"} <= set(data)
    assert data["ratio"] == pytest.approx(data["mase"] / data["seasonal_naive_mase"], rel=1e-3)
    assert data["ratio"] < 0.9          # a smooth daily cycle plus a short one: HW wins


@pytest.mark.parametrize("content,needle", [
    ("time,val\n2024-01-01 00:00:00,1\n", "line 1: header"),
    ("timestamp,value\n2024-01-01 00:00:00,1\nyesterday,2\n", "line 3, column 1 (timestamp)"),
    ("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,-4\n",
     "line 3, column 2 (value)"),
    ("timestamp,value\n2024-01-01 00:00:00,abc\n", "line 2, column 2 (value)"),
], ids=["header", "timestamp", "negative", "not-a-number"])
def test_bad_input_names_file_line_and_column(tmp_path, content, needle):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    res = CliRunner().invoke(_app(), ["forecast", "eval", "--trace", str(bad), "--horizon-s",
                                      "300"])
    assert res.exit_code == 2
    out = " ".join(res.output.split())     # the console wraps at its width, wherever the
    assert "bad.csv" in out and needle in out   # temporary path's length puts the break


def test_unknown_format_lists_known():
    res = CliRunner().invoke(_app(), ["forecast", "eval", "--trace", "x.csv", "--format",
                                      "azure-llm", "--horizon-s", "60"])
    assert res.exit_code == 2 and "known formats" in res.output


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nab_nyc_taxi.csv", "nab_twitter_volume_GOOG.csv"])
def test_beats_seasonal_naive_on_nab(name):
    t, y = forecast_cli.read_counts(TRACES_DIR / name)
    step_s = float(np.median(np.diff(t)))
    result = forecast_cli.evaluate(y, step_s, horizon_s=3600.0, refit_s=7 * 86400.0)
    assert result["ratio"] <= 0.9, result
