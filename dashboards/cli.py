"""``trimtab dashboards build [--check]``: regenerate (or drift-check) the committed dashboard JSON."""
from __future__ import annotations

import typer

from trimtab.common.generated import add_build_command


def register(app: typer.Typer) -> None:
    dash_app = typer.Typer(help="Grafana dashboards (JSON, generated with grafana-foundation-sdk).",
                           no_args_is_help=True)

    add_build_command(dash_app, "dashboards", "trimtab.dashboards.build")

    app.add_typer(dash_app, name="dashboards")
