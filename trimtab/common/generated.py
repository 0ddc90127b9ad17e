"""The ``build [--check] [--out-dir]`` command of a package whose committed files are generated."""
from __future__ import annotations

import importlib
from pathlib import Path

import typer


def add_build_command(group: typer.Typer, what: str, build_module: str) -> None:
    """Add ``build`` to ``group``: regenerate, or drift-check, the files ``build_module`` renders.

    ``build_module`` is a dotted name (``trimtab.alerts.build``) of a module with
    ``drifted(dir) -> list[str]`` and ``write_all(dir) -> list[Path]``; it is imported when the
    command runs, so listing the commands stays cheap. The default directory is that module's
    own package, where the generated files are committed.
    """

    @group.command("build")
    def build(
        check: bool = typer.Option(False, "--check",
                                   help="Write nothing; exit 1 if a committed file differs."),
        out_dir: Path = typer.Option(None, "--out-dir",
                                     help=f"Where to write (default: the {what}/ package)."),
    ) -> None:
        from rich.console import Console

        module = importlib.import_module(build_module)
        console = Console()
        target = out_dir or Path(module.__file__).resolve().parent
        if check:
            stale = module.drifted(target)
            if stale:
                console.print(f"[red]out of date in {target}:[/red] {', '.join(stale)};"
                              f" run `trimtab {what} build`")
                raise typer.Exit(1)
            console.print(f"[green]{what} up to date[/green] in {target}")
            return
        for path in module.write_all(target):
            console.print(f"wrote {path}")

    build.__doc__ = f"Render the committed {what} files from {build_module}."
