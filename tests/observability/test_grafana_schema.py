"""The committed dashboards type-check against Grafana's own schema (@grafana/schema, with tsc)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from trimtab.dashboards.build import DASHBOARDS_DIR

pytestmark = pytest.mark.schema

TOOLS_DIR = Path(__file__).resolve().parent / "grafana-schema"
# Each panel type's own options and field config, as @grafana/schema exports them.
COMPOSABLE = "@grafana/schema/dist/esm/raw/composable"
PANEL_CFG = {  # panel type: (module, whether it has a FieldConfig type)
    "timeseries": (f"{COMPOSABLE}/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen", True),
    "stat": (f"{COMPOSABLE}/stat/panelcfg/x/StatPanelCfg_types.gen", False),
    "heatmap": (f"{COMPOSABLE}/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen", True),
}
_ERROR = re.compile(r"^(?P<file>[^(\s]+)\((?P<line>\d+),(?P<col>\d+)\): error (?P<msg>.*)$")


def npm_dir() -> Path:
    """Where `make npm-tools` installs the pinned packages (outside the checkout)."""
    if os.environ.get("TRIMTAB_NPM_DIR"):
        return Path(os.environ["TRIMTAB_NPM_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "trimtab" / "npm"


def _node_modules() -> Path:
    """The installed packages, at the versions pinned in grafana-schema/package.json."""
    modules = npm_dir() / "node_modules"
    pins = json.loads((TOOLS_DIR / "package.json").read_text())["devDependencies"]
    for name, version in pins.items():
        meta = modules / name / "package.json"
        found = json.loads(meta.read_text())["version"] if meta.exists() else None
        if found != version:
            pytest.fail(f"{name}@{version} not installed in {modules} (found {found}): "
                        "run `make test` (its npm-tools target installs it)")
    if shutil.which("node") is None:
        pytest.fail("node not found: run `make test` (its npm-tools target installs nodejs)")
    return modules


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    return [p for top in board.get("panels", []) for p in [top, *top.get("panels", [])]]


def dashboard_ts(board: dict[str, Any]) -> str:
    """A TypeScript module asserting that the dashboard, and each panel with its plugin's own
    options and field config, ``satisfies`` Grafana's schema (in JSON form: grafana-json.ts)."""
    lines = ["import type { Dashboard } from '@grafana/schema';",
             "import type { JsonOf, PanelOf } from './grafana-json';"]
    for i, (module, _) in enumerate(PANEL_CFG.values()):
        lines.append(f"import type * as cfg{i} from '{module}';")
    lines.append(f"export const dashboard = {json.dumps(board, indent=1)} "
                 "satisfies JsonOf<Dashboard>;")
    kinds = list(PANEL_CFG)
    for n, panel in enumerate(_panels(board)):
        kind = panel.get("type")
        if kind == "row":
            continue
        if kind not in PANEL_CFG:
            raise AssertionError(f"panel {panel.get('title')!r}: type {kind!r} has no entry in "
                                 "PANEL_CFG: add its @grafana/schema panelcfg module")
        i = kinds.index(kind)
        args = f"cfg{i}.Options, cfg{i}.FieldConfig" if PANEL_CFG[kind][1] else f"cfg{i}.Options"
        lines.append(f"export const panel{n} = {json.dumps(panel, indent=1)} "
                     f"satisfies JsonOf<PanelOf<{args}>>;")
    return "\n".join(lines) + "\n"


def tsc_errors(sources: dict[str, str], work: Path) -> dict[str, list[str]]:
    """Type-check ``{stem: TypeScript}`` with tsc: each stem's errors ('' when unattributed)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "node_modules").symlink_to(_node_modules(), target_is_directory=True)
    for name in ("grafana-json.ts", "tsconfig.json"):
        shutil.copy(TOOLS_DIR / name, work / name)
    for stem, text in sources.items():
        (work / f"{stem}.ts").write_text(text)
    tsc = work / "node_modules" / ".bin" / "tsc"
    proc = subprocess.run([str(tsc), "-p", "tsconfig.json", "--pretty", "false"], cwd=work,
                          capture_output=True, text=True, timeout=120)
    errors: dict[str, list[str]] = {stem: [] for stem in sources}
    errors[""] = []
    for line in (proc.stdout + proc.stderr).splitlines():
        m = _ERROR.match(line)
        stem = Path(m["file"]).stem if m else ""
        errors.setdefault(stem, []).append(line)
    if proc.returncode != 0 and not any(errors.values()):
        errors[""].append(f"tsc exited {proc.returncode} with no error lines")
    return errors


# Controls: a minimal valid dashboard passes; each defect of it is rejected, for its reason.
_OK_PANEL = {"type": "timeseries", "title": "p", "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0},
             "options": {"legend": {"showLegend": True, "displayMode": "list",
                                    "placement": "bottom", "calcs": []},
                         "tooltip": {"mode": "single", "sort": "none"}}}


def _board(**fields: Any) -> dict[str, Any]:
    return {"title": "t", "schemaVersion": 41, "panels": [_OK_PANEL], **fields}


def _panel(**fields: Any) -> dict[str, Any]:
    return _board(panels=[{**_OK_PANEL, **fields}])


_CONTROLS = {  # name: (dashboard, what tsc must say; None: no error)
    "valid_minimal": (_board(), None),
    "panel_options_null": (_panel(options=None), "'null' is not assignable"),
    "variable_interval_field": (_board(templating={"list": [
        {"name": "v", "type": "query", "auto_min": "10s"}]}), '"auto_min"\' does not exist'),
    "threshold_mode_misspelt": (_panel(fieldConfig={"overrides": [], "defaults": {
        "thresholds": {"mode": "absolut", "steps": []}}}), "'\"absolut\"' is not assignable"),
    "timeseries_option_type": (_panel(options={"legend": {**_OK_PANEL["options"]["legend"],
                                                          "showLegend": "yes"}}),
                               "'string' is not assignable to type 'boolean'"),
    "timeseries_option_unknown": (_panel(options={**_OK_PANEL["options"], "legendd": {}}),
                                  '"legendd"\' does not exist'),
    "missing_schema_version": ({"title": "t"}, "'schemaVersion' is missing"),
}


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    boards = {p.stem: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}
    assert len(boards) >= 5, f"expected five dashboards in {DASHBOARDS_DIR}: {sorted(boards)}"
    controls = {name: board for name, (board, _) in _CONTROLS.items()}
    sources = {stem.replace("-", "_"): dashboard_ts(b)
               for stem, b in {**boards, **controls}.items()}
    return tsc_errors(sources, tmp_path_factory.mktemp("grafana-schema"))


@pytest.mark.parametrize("name", sorted(p.stem for p in DASHBOARDS_DIR.glob("*.json")))
def test_dashboard_satisfies_grafana_schema(checked: dict[str, list[str]], name: str) -> None:
    errors = checked[name.replace("-", "_")] + checked[""]
    assert not errors, f"dashboards/{name}.json against @grafana/schema:\n" + "\n".join(errors)


@pytest.mark.parametrize("name", sorted(_CONTROLS))
def test_schema_check_controls(checked: dict[str, list[str]], name: str) -> None:
    expected = _CONTROLS[name][1]
    errors = checked[name]
    if expected is None:
        assert not errors, f"{name}: a valid dashboard was rejected:\n" + "\n".join(errors)
    else:
        assert any(expected in e for e in errors), (
            f"{name}: expected tsc to say {expected!r}; it said:\n" + "\n".join(errors))
