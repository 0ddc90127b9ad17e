"""The ``build [--check] [--out-dir]`` command of a package whose committed files are generated."""
from __future__ import annotations

import importlib
from pathlib import Path

import typer


def drifted_files(out_dir: Path, rendered: dict[str, str]) -> list[str]:
    """Names of ``rendered`` files whose copy in ``out_dir`` is missing or differs; one that is
    a directory, unreadable or not UTF-8 text is named with why (never a traceback)."""
    bad = []
    for name, text in rendered.items():
        path = out_dir / name
        if not path.exists():
            bad.append(f"{name} (missing)")
        elif not path.is_file():
            bad.append(f"{name} (not a file)")
        else:
            try:
                committed = path.read_bytes().decode("utf-8")
            except OSError as exc:
                bad.append(f"{name} (cannot read: {exc.strerror})")
            except UnicodeDecodeError:
                bad.append(f"{name} (not UTF-8 text)")
            else:
                if committed != text:
                    bad.append(name)
    return bad


def write_files(out_dir: Path, rendered: dict[str, str]) -> list[Path]:
    """Write ``rendered`` into ``out_dir``; OSError names the path that could not be written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in rendered.items():
        path = out_dir / name
        try:
            path.write_text(text)
        except OSError as exc:
            raise OSError(f"cannot write {path}: {exc.strerror}") from None
        paths.append(path)
    return paths


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
        try:
            paths = module.write_all(target)
        except OSError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1)
        for path in paths:
            console.print(f"wrote {path}")

    build.__doc__ = f"Render the committed {what} files from {build_module}."
