"""The wheel installs on its own: into an empty venv, run from elsewhere, reading no checkout file.

One module-scoped build and install (about a minute: the dependencies come from the package
index, installed without compiling bytecode), then each command runs in a temporary folder with
nothing of the checkout on its path. An audit hook loaded by a ``.pth`` file in that venv logs
every file or folder a process opens under the checkout, and at exit where each ``trimtab``
module it imported was loaded from.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parent.parent
GUARD_MODULE = "trimtab_checkout_guard"

# Loaded at start-up of every Python process of the venv (and its workers) through a .pth file.
GUARD = '''
import atexit, os, sys

_ROOT = os.environ.get("TRIMTAB_CHECKOUT")
_LOG = os.environ.get("TRIMTAB_GUARD_LOG")


def _note(line):
    with open(_LOG, "a") as f:
        f.write(line + "\\n")


def _hook(event, args):
    if event not in ("open", "os.listdir", "os.scandir") or not args:
        return
    path = args[0]
    if isinstance(path, int) or path is None:
        return
    path = os.path.abspath(os.fsdecode(path))
    if path == _ROOT or path.startswith(_ROOT + os.sep):
        _note(f"read {event} {path}")


def _modules():
    for name, module in list(sys.modules.items()):
        if name == "trimtab" or name.startswith("trimtab."):
            _note(f"module {name} {getattr(module, '__file__', None)}")


if _ROOT and _LOG:
    sys.addaudithook(_hook)
    atexit.register(_modules)
'''


def working_tree_copy(dest: Path) -> Path:
    """The files git would commit now (tracked and untracked, not ignored), copied to ``dest``.

    Building from a copy keeps the checkout clean and keeps stale files of an earlier in-tree
    build (``build/lib``) out of the wheel.
    """
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"],
                            cwd=REPO_ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, listed.decode().split("\0")):
        source = REPO_ROOT / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)
    return dest


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout_s: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout_s)
    assert result.returncode == 0, (f"{' '.join(map(str, args))} exited {result.returncode}:\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("wheel")
    src = working_tree_copy(base / "src")
    dist = base / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        cwd=base)
    (wheel,) = dist.glob("trimtab-*.whl")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=base)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "--no-compile", str(wheel)], cwd=base,
        timeout_s=800)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run([str(python), "-c", purelib], cwd=base).stdout.strip())
    (site / f"{GUARD_MODULE}.py").write_text(GUARD)
    (site / f"{GUARD_MODULE}.pth").write_text(f"import {GUARD_MODULE}\n")
    return {"wheel": wheel, "venv": venv, "site": site, "work": base / "work"}


def trimtab(installed: dict[str, Path], *args: str, name: str) -> tuple[str, list[str]]:
    """Run the installed ``trimtab`` in a fresh folder; (stdout, guard log lines)."""
    cwd = installed["work"] / name
    cwd.mkdir(parents=True)
    log = cwd.parent / f"{name}.guard.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PATH=f"{installed['venv'] / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               TRIMTAB_CHECKOUT=str(REPO_ROOT), TRIMTAB_GUARD_LOG=str(log))
    result = run([str(installed["venv"] / "bin" / "trimtab"), *args], cwd=cwd, env=env)
    lines = log.read_text().splitlines() if log.exists() else []
    return result.stdout, lines


def assert_self_contained(installed: dict[str, Path], lines: list[str]) -> None:
    reads = [line for line in lines if line.startswith("read ")]
    assert reads == [], "the installed trimtab read the checkout:\n" + "\n".join(reads[:20])
    modules = [line.split(" ", 2)[1:] for line in lines if line.startswith("module ")]
    assert any(name == "trimtab.sim.data" for name, _ in modules), "no trimtab module logged"
    site = str(installed["site"])
    elsewhere = [f"{name} from {path}" for name, path in modules
                 if path != "None" and not path.startswith(site + os.sep)]
    assert elsewhere == [], "trimtab modules loaded from outside the venv:\n" + "\n".join(elsewhere)


def test_the_wheel_holds_one_top_level_package_and_the_bundled_data(installed) -> None:
    with zipfile.ZipFile(installed["wheel"]) as whl:
        names = whl.namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"trimtab"}           # no sim/, alerts/, ... beside it in site-packages
    assert "trimtab/sim/data/scenarios/default.yaml" in names
    assert any(n.startswith("trimtab/sim/data/traces/") for n in names)
    assert not any(n.startswith(("tests/", "trimtab/tests/")) for n in names)


def test_replay_runs_from_the_installed_wheel_alone(installed) -> None:
    out, lines = trimtab(installed, "replay", "-p", "trimtab", "-p", "hpa", "--workers", "1",
                         "--json", "results.json", name="replay")
    doc = json.loads((installed["work"] / "replay" / "results.json").read_text())
    assert [r["policy"] for r in doc["results"]] == ["trimtab", "hpa"]
    assert doc["requests"] > 0
    assert_self_contained(installed, lines)


def test_sim_validate_quick_passes_from_the_installed_wheel_alone(installed) -> None:
    out, lines = trimtab(installed, "sim", "validate", "--quick", name="validate")
    assert "checks passed" in out
    assert_self_contained(installed, lines)


def test_the_guard_sees_a_read_of_the_checkout(installed) -> None:
    # The audit hook is what the two tests above rely on: prove it logs such a read.
    cwd = installed["work"] / "guard"
    cwd.mkdir(parents=True)
    log = cwd / "guard.log"
    env = {**os.environ, "TRIMTAB_CHECKOUT": str(REPO_ROOT), "TRIMTAB_GUARD_LOG": str(log)}
    env.pop("PYTHONPATH", None)
    run([str(installed["venv"] / "bin" / "python"), "-c",
         f"import trimtab.sim.data; open({str(REPO_ROOT / 'pyproject.toml')!r}).read()"],
        cwd=cwd, env=env)
    lines = log.read_text().splitlines()
    assert f"read open {REPO_ROOT / 'pyproject.toml'}" in lines
    assert any(line.startswith("module trimtab.sim.data ") for line in lines)
