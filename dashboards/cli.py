"""``trimtab dashboards build [--check]``: regenerate (or drift-check) the committed dashboard JSON."""
from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    dash_app = typer.Typer(help="Grafana dashboards (JSON, generated with grafana-foundation-sdk).",
                           no_args_is_help=True)

    @dash_app.command("build")
    def build(
        check: bool = typer.Option(False, "--check",
                                   help="Write nothing; exit 1 if a committed file differs."),
        out_dir: Path = typer.Option(None, "--out-dir",
                                     help="Where to write (default: the dashboards/ package)."),
    ) -> None:
        """Render dashboards/*.json from dashboards/*.py."""
        from rich.console import Console

        from dashboards.build import DASHBOARDS_DIR, drifted, write_all

        console = Console()
        target = out_dir or DASHBOARDS_DIR
        if check:
            stale = drifted(target)
            if stale:
                console.print(f"[red]out of date in {target}:[/red] {', '.join(stale)};"
                              " run `trimtab dashboards build`")
                raise typer.Exit(1)
            console.print(f"[green]dashboards up to date[/green] in {target}")
            return
        for path in write_all(target):
            console.print(f"wrote {path}")

    app.add_typer(dash_app, name="dashboards")
