"""``trimtab forecast eval``: the forecaster's MASE at a horizon against seasonal naive."""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import typer

from trimtab.common.series import SeriesError, read_series
from trimtab.controllers.core import forecast


class ForecastInputError(ValueError):
    """A counts file that cannot be evaluated; names the file, line and rule."""


def read_counts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``timestamp,value`` rows -> (seconds since the first row, values)."""
    try:
        t_arr, values = read_series(path)
    except SeriesError as exc:
        raise ForecastInputError(str(exc)) from None
    if len(values) < 3:
        raise ForecastInputError(f"{path}: {len(values)} rows; need at least 3")
    order = np.argsort(t_arr, kind="stable")
    return t_arr[order] - t_arr[order][0], values[order]


def evaluate(values: np.ndarray, step_s: float, horizon_s: float, season_s: float = 86400.0,
             refit_s: float = 86400.0) -> dict[str, float]:
    """Rolling-origin MASE of the forecaster and of seasonal naive at ``horizon_s``.

    Training is the first max(2 seasons, 20 %) of the series; after it, at every step the
    model (refitted every ``refit_s``, updated by its recursions in between) forecasts h steps
    ahead. Both MASEs share one scale: the in-sample seasonal-naive mean absolute error.
    """
    y = np.asarray(values, dtype=float)
    m = max(2, int(round(season_s / step_s)))
    h = max(1, int(math.ceil(horizon_s / step_s - 1e-9)))
    train = max(2 * m + 1, int(0.2 * len(y)))
    if train + h >= len(y):
        raise ForecastInputError(f"series of {len(y)} points is too short for a season of {m} "
                                 f"steps and a horizon of {h} steps")
    scale = float(np.mean(np.abs(y[m:train] - y[:train - m])))
    scale = scale if scale > 0 else 1.0
    refit_every = max(1, int(round(refit_s / step_s)))
    fit_times: list[float] = []
    model = None
    errors, naive_errors = [], []
    for t in range(train, len(y) - h + 1):
        if model is None or (t - train) % refit_every == 0:
            t0 = time.perf_counter()
            model = forecast.fit(y[:t], m)
            fit_times.append(time.perf_counter() - t0)
        else:
            model = forecast.update(model, float(y[t - 1]))
        target = t + h - 1                  # the value h steps after the last one seen (t-1)
        errors.append(abs(y[target] - forecast.predict(model, h)))
        k = int(math.ceil(h / m))
        naive_errors.append(abs(y[target] - y[target - k * m]))
    mase = float(np.mean(errors)) / scale
    naive = float(np.mean(naive_errors)) / scale
    return {"mase": round(mase, 6), "seasonal_naive_mase": round(naive, 6),
            "ratio": round(mase / naive, 6) if naive > 0 else math.inf,
            "fit_seconds_p50": round(statistics.median(fit_times), 6),
            "fits": len(fit_times), "horizon_steps": h, "season_steps": m,
            "points": int(len(y))}


def two_week_fit_seconds(values: np.ndarray, step_s: float, repeats: int = 3) -> float:
    """Median time to refit on two weeks of 1-minute data made from the series (interpolated)."""
    n = 14 * 1440
    src_t = np.arange(len(values)) * step_s
    minute_t = np.arange(n) * 60.0 % max(src_t[-1], 60.0)
    y = np.interp(minute_t, src_t, values)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forecast.fit(y, 1440)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 6)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Forecaster evaluation.", no_args_is_help=True)

    @group.command("eval")
    def eval_cmd(
        trace: Path = typer.Option(..., "--trace", help="counts CSV: timestamp,value"),
        fmt: str = typer.Option("counts", "--format", help="only 'counts' is supported"),
        horizon_s: float = typer.Option(..., "--horizon-s", help="forecast horizon, seconds"),
        season_s: float = typer.Option(86400.0, "--season-s", help="season length, seconds"),
        refit_s: float = typer.Option(86400.0, "--refit-s", help="refit every, seconds"),
        json_out: Path | None = typer.Option(None, "--json", help="write the result here"),
    ) -> None:
        """MASE at the horizon against seasonal naive, and the fit time."""
        from rich.console import Console
        from rich.table import Table

        console = Console()
        if fmt != "counts":
            console.print(f"[red]error:[/] --format {fmt!r}: known formats: ['counts']")
            raise typer.Exit(2)
        if horizon_s <= 0:
            console.print(f"[red]error:[/] --horizon-s = {horizon_s}: must be > 0")
            raise typer.Exit(2)
        try:
            t, y = read_counts(trace)
            step_s = float(np.median(np.diff(t)))
            result = evaluate(y, step_s, horizon_s, season_s, refit_s)
        except ForecastInputError as exc:
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from None
        result["fit_two_weeks_1min_s"] = two_week_fit_seconds(y, step_s)
        table = Table(title=f"forecast eval: {trace.name}, horizon {horizon_s:g} s")
        table.add_column("field")
        table.add_column("value", justify="right")
        for k, v in result.items():
            table.add_row(k, f"{v:g}" if isinstance(v, float) else str(v))
        console.print(table)
        if json_out is not None:
            json_out.write_text(json.dumps(result, indent=2) + "\n")

    app.add_typer(group, name="forecast")
