"""Bundled data read through importlib.resources: traces (with licences) and scenarios.

trimtab installs as plain files (not zip-safe), so a resource is an ordinary path that a
scenario's relative trace path can be resolved against.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def data_path(*parts: str) -> Path:
    """The path of a bundled file, e.g. ``data_path("scenarios", "default.yaml")``."""
    return Path(str(files(__name__).joinpath(*parts)))


def scenario_path(name: str) -> Path:
    """A bundled scenario by name (``default``, ``heldout/taxi-d20``) or file name."""
    rel = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    return data_path("scenarios", *rel.split("/"))


def bundled_scenarios() -> list[str]:
    """Names of the bundled scenarios, for ``--scenario NAME`` and its error message."""
    root = data_path("scenarios")
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))
