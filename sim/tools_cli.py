"""``trimtab sim validate``, ``bench`` and ``family``: the simulator checked, measured, fed."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

sim_app = typer.Typer(help="Check the simulator against queueing theory, and measure it.",
                      no_args_is_help=True)


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if x == 0:
        return "0"
    return f"{x:.4g}" if 1e-3 <= abs(x) < 1e6 else f"{x:.3e}"


@sim_app.command("validate")
def validate_cmd(
    quick: bool = typer.Option(False, "--quick", help="Far fewer customers (seconds, for CI); "
                               "tolerance from standard errors."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the checks as JSON."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                          help="Processes (default: one per CPU, 1 quick)."),
) -> None:
    """Run every check in queueing.md against the real engine; exit 1 if any fails."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from trimtab.sim.validate import run_validation, write_json

    console = Console()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("validating" + (" (quick)" if quick else ""), total=None)
        checks = run_validation(
            quick=quick, workers=workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total))
    table = Table(title="simulator vs theory" + (" (quick)" if quick else ""))
    for col, justify in (("check", "left"), ("theory", "right"), ("simulated", "right"),
                         ("rel error", "right"), ("tolerance", "right"), ("result", "center")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in checks:
        table.add_row(c.name, _fmt(c.theory), _fmt(c.simulated), _fmt(c.rel_error),
                      _fmt(c.tolerance), "[green]pass[/]" if c.passed else "[red]FAIL[/]")
    console.print(table)
    failed = [c for c in checks if not c.passed]
    if json_path is not None:
        write_json(checks, json_path)
        console.print(f"wrote {json_path}")
    if failed:
        console.print(f"[red]{len(failed)} of {len(checks)} checks failed[/]")
        raise typer.Exit(1)
    console.print(f"[green]all {len(checks)} checks passed[/]")


@sim_app.command("bench")
def bench_cmd(
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the figures as JSON."),
    quick: bool = typer.Option(False, "--quick", help="Small sizes (a smoke run, not figures "
                               "to report)."),
) -> None:
    """Engine vs SimPy on M/M/4, the fleet on the scaled Azure trace, peak RSS at 10M requests."""
    from rich.console import Console
    from rich.table import Table

    from trimtab.sim.bench import run_bench

    console = Console()
    with console.status("benchmarking (a few minutes)" if not quick else "benchmarking"):
        figures = run_bench(quick=quick, log=console.log)
    table = Table(title="simulator benchmark")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for group, values in figures.items():
        for key, value in values.items():
            table.add_row(f"{group}.{key}", _fmt(value) if isinstance(value, (int, float))
                          else str(value))
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
        console.print(f"wrote {json_path}")


@sim_app.command("sweep-bench")
def sweep_bench_cmd(
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the figures as JSON."),
    workers: int = typer.Option(2, "--workers", min=1, help="Processes and Ray CPUs."),
    quick: bool = typer.Option(False, "--quick", help="A third of the replays, shorter traces."),
) -> None:
    """A sweep's replays serially, on local processes and on a local Ray: the speed-ups."""
    from rich.console import Console

    from trimtab.sim.sweep_bench import run_sweep_bench

    console = Console()
    figures = run_sweep_bench(workers, quick, log=console.log)
    for key, value in figures.items():
        console.print(f"{key:32s} {value}")
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
        console.print(f"wrote {json_path}")


@sim_app.command("family")
def family_cmd(
    out: Path = typer.Option(..., "--out", help="Folder to write the scenarios into."),
    kind: list[str] = typer.Option([], "--kind", help="Kinds to write (repeatable; default "
                                   "all: step, flash-crowd, diurnal-noise, heavy-tail, "
                                   "idle-burst)."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds per kind (1..N)."),
    mean_rps: float = typer.Option(40.0, "--mean-rps", min=0.001, help="Mean arrival rate."),
    duration_s: float = typer.Option(7200.0, "--duration-s", min=60, max=7 * 86400.0),
    cold_start_s: float = typer.Option(60.0, "--cold-start-s", min=0, max=3600.0),
) -> None:
    """Write the generated held-out family (trimtab.sim.heldout) as scenarios: replay them
    with ``trimtab replay -s FOLDER``."""
    from trimtab.sim.heldout import write_family
    from trimtab.sim.traces.family import KINDS

    try:
        paths = write_family(out, kind or KINDS, range(1, seeds + 1), mean_rps, duration_s,
                             cold_start_s)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {len(paths)} scenarios into {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")
