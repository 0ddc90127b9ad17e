"""``trimtab alerts build [--check]`` regenerates (or drift-checks) alerts/; ``alerts bench`` times the rules."""
from __future__ import annotations

from pathlib import Path

import typer

from trimtab.common.generated import add_build_command


def register(app: typer.Typer) -> None:
    alerts_app = typer.Typer(help="Prometheus rules, promtool tests, Alertmanager config, runbook.",
                             no_args_is_help=True)

    add_build_command(alerts_app, "alerts", "trimtab.alerts.build")

    @alerts_app.command("bench")
    def bench(
        models: int = typer.Option(20, min=1, help="Models with synthetic history."),
        days: float = typer.Option(3.0, min=0.1, help="Days of history (the longest SLO window is 3)."),
        step_s: int = typer.Option(300, min=1, help="Seconds between synthetic samples."),
        repeats: int = typer.Option(5, min=1, help="Timed evaluation cycles (median)."),
        json_path: Path = typer.Option(None, "--json", help="Also write the figures here."),
    ) -> None:
        """Time one evaluation of the recording rules on a real Prometheus vs a baseline query."""
        import json

        from rich.console import Console
        from rich.table import Table

        from trimtab.alerts.bench import run_bench

        figures = run_bench(models=models, days=days, step_s=step_s, repeats=repeats)
        table = Table(title="recording rules: one evaluation cycle (median)")
        for key in ("models", "days", "step_s", "recording_rules", "backfill_s",
                    "rules_cycle_s", "baseline_cycle_s", "rules_vs_baseline"):
            table.add_row(key, str(figures[key]))
        for row in figures["slowest_rules"]:
            table.add_row("slowest: " + row["record"], f"{row['median_s']} s")
        Console().print(table)
        if json_path:
            json_path.write_text(json.dumps(figures, indent=2))

    app.add_typer(alerts_app, name="alerts")
