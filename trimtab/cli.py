"""The ``trimtab`` command: the composition root, the one module that may import every package.

Each package adds its own commands through a ``register(app)`` function in its ``cli``
module, so a command's code lives beside what it runs and heavy imports stay inside commands.
"""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="trimtab",
    help="Observability and autoscaling control loop for ML inference fleets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules with a register(app) function, in the order their commands are listed.
COMMAND_MODULES = (
    "trimtab.sim.cli",            # replay
    "trimtab.sim.tools_cli",      # sim validate, sim bench
    "trimtab.sim.policies_cli",   # policies
    "trimtab.sim.llm.cli",        # llm fit, llm validate, llm peer
    "trimtab.controllers.cli.forecast",  # forecast eval
    "trimtab.collectors.cli",     # sidecar, sidecar bench
    "trimtab.controllers.cli.controller",  # controller, controller bench
    "trimtab.dashboards.cli",     # dashboards build
    "trimtab.alerts.cli",         # alerts build
    "trimtab.up.cli",       # up (Ray Serve live loop)
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:   # that package has no commands (yet); others still work
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
