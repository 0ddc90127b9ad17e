"""The import rules of pyproject's ``[tool.importlinter]``, and no private name used across modules.

import-linter finds a package's modules by walking its folder, but ``trimtab``'s subpackages
live in the repository's top-level folders (pyproject's ``package-dir``). So each run lays the
sources out as they install, ``trimtab/collectors/...``, as symlinks in a temporary folder, and
lints that: the files linted are the checkout's own.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = REPO_ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def package_dirs() -> dict[str, Path]:
    """Installed package name -> its folder in the checkout, from pyproject's ``package-dir``."""
    mapping = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"]
    return {name: REPO_ROOT / folder for name, folder in mapping.items()}


def installed_layout(dest: Path) -> Path:
    """Symlink every .py file into ``dest`` where it installs; returns ``dest``.

    A mapped subpackage (``trimtab.collectors`` = ``collectors/``) is skipped where a parent
    mapping would find it too, so each file appears once, at its installed path.
    """
    dirs = package_dirs()
    for name, folder in sorted(dirs.items()):
        target = dest.joinpath(*name.split("."))
        for source in folder.rglob("*.py"):
            rel = source.relative_to(folder)
            if "__pycache__" in rel.parts:
                continue
            link = target / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(source)
    return dest


def lint_imports(tree: Path, *contracts: str) -> subprocess.CompletedProcess:
    """Run lint-imports on the laid-out ``tree`` with the repository's contracts."""
    args = [str(LINT_IMPORTS), "--no-cache", str(PYPROJECT)]
    for contract in contracts:
        args += ["--contract", contract]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # lint-imports puts its working directory first on sys.path: run it in the tree, so the
    # editable install's finder (which maps trimtab.* onto the checkout) is not what it walks.
    return subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return installed_layout(tmp_path / "site")


def test_layout_finds_every_installed_package(tree: Path) -> None:
    for name in package_dirs():
        assert (tree.joinpath(*name.split(".")) / "__init__.py").exists(), name
    assert (tree / "trimtab/controllers/core/types.py").resolve() == (
        REPO_ROOT / "controllers/core/types.py")


def test_every_import_contract_is_kept(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, f"an import rule is broken:\n{result.stdout}{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout


# Each row: a module that breaks one rule, and the contract that must catch it.
BREAKERS = [
    pytest.param("core-pure", "controllers/core/probe_clock.py", "import time\n",
                 id="core-reads-the-clock"),
    pytest.param("core-pure", "controllers/core/probe_http.py",
                 "import urllib.request\n", id="core-does-http"),
    pytest.param("core-pure", "controllers/core/probe_port.py",
                 "from trimtab.common.ports import free_port\n",
                 id="core-uses-an-io-helper-indirectly"),
    pytest.param("controllers-layers", "controllers/core/probe_shell.py",
                 "from trimtab.controllers.shell import loop\n", id="core-imports-the-shell"),
    pytest.param("controllers", "controllers/shell/probe_sidecar.py",
                 "from trimtab.collectors import ray_batching\n",
                 id="shell-imports-sidecar-internals"),
    pytest.param("dashboards", "dashboards/probe_rules.py",
                 "from trimtab.alerts import recording\n", id="dashboards-import-alert-rules"),
    pytest.param("collectors", "collectors/probe_core.py",
                 "from trimtab.controllers.core import types\n", id="sidecar-imports-controller"),
    pytest.param("sim", "sim/probe_cli.py",
                 "from trimtab.controllers.cli import controller\n", id="sim-imports-a-cli"),
]


@pytest.mark.parametrize("contract,path,source", BREAKERS)
def test_a_broken_rule_fails_and_names_the_import(tree: Path, contract: str, path: str,
                                                  source: str) -> None:
    folder, _, rest = path.partition("/")
    package = next(n for n, d in package_dirs().items() if d == REPO_ROOT / folder)
    probe = tree.joinpath(*package.split("."), rest)
    probe.write_text(f'"""A module that breaks the {contract} contract."""\n{source}')
    result = lint_imports(tree, contract)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and probe.stem in result.stdout, result.stdout


# --- private names ----------------------------------------------------------------------------
def private_uses(path: Path, module: str) -> list[str]:
    """``from trimtab.x import _name`` and ``x._name`` (x a trimtab module) in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trimtab"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path}:{node.lineno}: from {node.module} import {alias.name}")
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("trimtab") and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__") and aliases[node.value.id] != module):
            found.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr}"
                         f" ({aliases[node.value.id]})")
    return found


def test_no_private_name_is_used_outside_its_module() -> None:
    found = []
    for name, folder in package_dirs().items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            module = ".".join((name, *rel.parts)).removesuffix(".__init__")
            found += private_uses(path, module)
    assert not found, "private names used across modules (make them public or move them):\n" \
        + "\n".join(sorted(set(found)))


def test_the_private_name_check_sees_both_forms(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from trimtab.sim.fleet.types import _HIDDEN\n"
                     "from trimtab.controllers.core import forecast as f\n"
                     "x = f._LR_BINS\n")
    assert len(private_uses(probe, "probe")) == 2
