"""The live view of ``trimtab up`` (rich): load, replicas, batch size, p99 against the SLO."""
from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

BAR_WIDTH = 40


def _bar(value: float, full: float, width: int = BAR_WIDTH) -> str:
    filled = 0 if full <= 0 else int(round(min(1.0, value / full) * width))
    return "█" * filled + "·" * (width - filled)


def render(info: dict[str, Any]) -> Any:
    """One frame from the orchestration's progress dict."""
    if info.get("stage") != "load":
        return Text(f"trimtab up: {info.get('stage', '')} ...", style="bold")
    cfg, load, profile = info["config"], info["load"], info["profile"]
    elapsed_s = float(info["elapsed_s"])
    lat, outcomes = load.log.window(max(0.0, elapsed_s - 10.0))
    sent_rps = float(np.sum(np.asarray(load.arrival_s) > elapsed_s - 5.0) -
                     np.sum(np.asarray(load.arrival_s) > elapsed_s)) / 5.0
    p99_s = float(np.quantile(lat, 0.99)) if len(lat) else float("nan")
    replicas = info.get("replicas") or []
    running, starting = (replicas[-1][1], replicas[-1][2]) if replicas else (0, 0)
    snap = info.get("snapshot")
    batch = snap.max_batch_size if snap is not None else None
    ticks = info.get("ticks") or []
    reason = ticks[-1][1].decision.reason if ticks else "-"
    ok_p99 = p99_s == p99_s and p99_s <= cfg.slo_latency_s
    table = Table(title=f"trimtab up  {elapsed_s:5.0f} / {cfg.duration_s:.0f} s", expand=False)
    table.add_column("", style="bold")
    table.add_column("now", justify="right")
    table.add_column("")
    table.add_row("load (rps)", f"{sent_rps:5.1f}", _bar(sent_rps, profile.peak_rps * 1.2))
    table.add_row("replicas", f"{running} (+{starting})",
                  _bar(running, cfg.max_replicas) + f"  max {cfg.max_replicas}")
    table.add_row("max batch size", "-" if batch is None else str(batch), "")
    table.add_row("p99 latency (10 s)", "-" if p99_s != p99_s else f"{p99_s:.3f} s",
                  Text(f"SLO {cfg.slo_latency_s:g} s", style="green" if ok_p99 else "red"))
    table.add_row("last decision", reason, "")
    counts = {k: int(np.sum(outcomes == k)) for k in ("ok", "shed", "timeout", "error")}
    table.add_row("last 10 s", ", ".join(f"{k} {v}" for k, v in counts.items()), "")
    return Group(table)
