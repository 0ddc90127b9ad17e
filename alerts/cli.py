"""``trimtab alerts build [--check]``: regenerate (or drift-check) the rule, test and Alertmanager files."""
from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    alerts_app = typer.Typer(help="Prometheus rules, promtool tests, Alertmanager config, runbook.",
                             no_args_is_help=True)

    @alerts_app.command("build")
    def build(
        check: bool = typer.Option(False, "--check",
                                   help="Write nothing; exit 1 if a committed file differs."),
        out_dir: Path = typer.Option(None, "--out-dir",
                                     help="Where to write (default: the alerts/ package)."),
    ) -> None:
        """Render alerts/*.yaml, alertmanager.yml and runbook.md from alerts/*.py."""
        from rich.console import Console

        from alerts.build import ALERTS_DIR, drifted, write_all

        console = Console()
        target = out_dir or ALERTS_DIR
        if check:
            stale = drifted(target)
            if stale:
                console.print(f"[red]out of date in {target}:[/red] {', '.join(stale)};"
                              " run `trimtab alerts build`")
                raise typer.Exit(1)
            console.print(f"[green]alerts up to date[/green] in {target}")
            return
        for path in write_all(target):
            console.print(f"wrote {path}")

    app.add_typer(alerts_app, name="alerts")
