"""Render the dashboards to JSON (stable ids, sorted keys); write them or report drift."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from trimtab.alerts.config import DEFAULT_CONFIG, MonitoringConfig
from trimtab.common.generated import drifted_files, write_files
from trimtab.dashboards.boards import ALL_BOARDS

DASHBOARDS_DIR = Path(__file__).resolve().parent


def board_dict(name: str, cfg: MonitoringConfig = DEFAULT_CONFIG) -> dict[str, Any]:
    data = json.loads(JSONEncoder(sort_keys=True).encode(ALL_BOARDS[name](cfg).build()))
    for i, panel in enumerate(data.get("panels", []), start=1):
        panel["id"] = i      # Grafana wants unique panel ids; the SDK leaves them unset
    return data


def render_all(cfg: MonitoringConfig = DEFAULT_CONFIG) -> dict[str, str]:
    return {f"{name}.json": json.dumps(board_dict(name, cfg), indent=2, sort_keys=True) + "\n"
            for name in ALL_BOARDS}


def drifted(out_dir: Path = DASHBOARDS_DIR, cfg: MonitoringConfig = DEFAULT_CONFIG) -> list[str]:
    return drifted_files(out_dir, render_all(cfg))


def write_all(out_dir: Path = DASHBOARDS_DIR, cfg: MonitoringConfig = DEFAULT_CONFIG) -> list[Path]:
    return write_files(out_dir, render_all(cfg))


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows' nested panels included."""
    out = []
    for panel in board.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for t in inner.get("targets", []) or []:
                if t.get("expr"):
                    out.append((inner.get("title", ""), t["expr"]))
    return out
