"""``trimtab up``: the whole loop live on this machine with a real Ray Serve fleet (trimtab[ray])."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import typer

DEFAULT_OUT = Path("reports/live")


def finish_run(run: Any, out: Path) -> dict[str, Any]:
    """Results from Prometheus, the simulator's replay of the same load, the report files."""
    from trimtab.up import fidelity
    from trimtab.up.results import live_result
    from trimtab.sim.report import json_safe, write_report

    cfg = run.config
    live = live_result(run)
    evaluation = fidelity.evaluate(run, live.summary)
    sim, fid, model = evaluation["sim"], evaluation["fidelity"], evaluation["model"]
    sim.summary["policy"] = "simulator (fitted)"
    fit, cold_s = model.measured, model.cold_start_s
    figures = {
        "slo_attainment": live.summary["slo_attainment"],
        "latency_p99_s": live.summary["latency_p99_s"],
        "replicas_min": live.summary["replicas_min"],
        "replicas_max": live.summary["replicas_max"],
        "batch_size_changes": live.summary["batch_size_changes"],
        "fidelity": {"p99_rel_error": fid["p99_rel_error"],
                     "replica_seconds_rel_error": fid["replica_seconds_rel_error"]},
    }
    doc = json_safe({"scenario": "live (Ray Serve)", "requests": int(len(run.arrival_s)),
                  "results": [live.summary, sim.summary], "figures": figures,
                  "fidelity": fid, "service_fit": fit.__dict__, "cold_start_s": cold_s,
                  "config": cfg.model_dump(),
                  "applied": [{"at_s": round(a.at_s, 2), "reason": a.reason,
                               "changes": {k: list(v) for k, v in a.changes.items()}}
                              for a in run.applied]})
    files = write_report(out, doc, [("live (Ray Serve)", live), ("simulator (fitted)", sim)],
                         cfg.slo_latency_s, cfg.slo_target)
    _append_fidelity(files["html"], doc["fidelity"], doc["service_fit"], cold_s)
    return {"figures": json_safe(figures), "fidelity": doc["fidelity"], "files": files,
            "service_fit": fit, "cold_start_s": cold_s}


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        duration: Optional[float] = typer.Option(None, "--duration", help="Seconds of load"
                                                 " (30-3600; default 180, with --soak 420)."),
        json_path: Optional[Path] = typer.Option(None, "--json", help="Write the figures here."),
        out: Path = typer.Option(DEFAULT_OUT, "--out", help="Report directory."),
        base_rps: Optional[float] = typer.Option(None, help="Steady load, requests/s"
                                                 " (default 3, with --soak 8)."),
        surge_factor: float = typer.Option(5.0, help="The surge is this many times the load."),
        max_replicas: int = typer.Option(4, help="Upper replica bound (keep small here)."),
        policy: Optional[str] = typer.Option(None, help="Policy spec (default: trimtab tuned"
                                                        " for a minutes-long run)."),
        seed: int = typer.Option(0, help="Seed of the arrival times."),
        view: bool = typer.Option(True, "--view/--no-view", help="Show the live view."),
        soak: bool = typer.Option(False, "--soak", help="Fault soak: steady load, faults in"
                                  " turn, a table of wrong scale-downs, lost requests and"
                                  " recovery times (trimtab.up.soak)."),
        faults: Optional[str] = typer.Option(None, help="--soak: comma-separated faults"
                                             " (default: every Ray-phase fault)."),
        fault_s: float = typer.Option(10.0, help="--soak: how long a timed fault lasts."),
        kubeconfig: Optional[Path] = typer.Option(None, help="--soak: also run the Kubernetes"
                                                  " phase (409/429/500) against this API server."),
    ) -> None:
        """Start Ray Serve, the sidecar, Prometheus and the controller; drive a load ramp."""
        from pydantic import ValidationError

        from trimtab.common.errors import message

        try:
            from trimtab.up.fleet import RayMissingError, require_ray
        except ImportError as exc:   # pragma: no cover - our own package
            raise typer.Exit(2) from exc
        try:
            require_ray()
        except RayMissingError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
        if soak:
            from trimtab.up.soak import soak_main

            raise typer.Exit(soak_main(duration, base_rps, faults, fault_s, seed, kubeconfig,
                                       json_path))
        from trimtab.up.run import LiveConfig, run_live_with

        params: dict[str, Any] = {"duration_s": 180.0 if duration is None else duration,
                                  "base_rps": 3.0 if base_rps is None else base_rps,
                                  "surge_factor": surge_factor, "max_replicas": max_replicas,
                                  "seed": seed}
        if policy is not None:
            params["policy"] = policy
        try:
            cfg = LiveConfig(**params)
        except ValidationError as exc:
            typer.echo(f"error: {message(exc, top='config', first_only=True)}", err=True)
            raise typer.Exit(2)
        logging.basicConfig(level=logging.WARNING)
        result = _run(cfg, out, view, run_live_with)
        figures = result["figures"]
        typer.echo(json.dumps(figures, indent=2))
        typer.echo(f"report: {result['files']['html']}")
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(figures, indent=2) + "\n")


def _run(cfg: Any, out: Path, view: bool, run_live_with: Any) -> dict[str, Any]:
    from rich.console import Console
    from rich.live import Live

    from trimtab.up.view import render

    console = Console(stderr=True)
    finish = lambda run: finish_run(run, out)  # noqa: E731
    try:
        if not view:
            return run_live_with(cfg, finish, on_progress=lambda info: _stage(console, info))
        with Live(render({"stage": "starting"}), console=console, refresh_per_second=2) as live:
            return run_live_with(cfg, finish, on_progress=lambda info: live.update(render(info)))
    except KeyboardInterrupt:
        console.print("interrupted: everything started was stopped")
        raise typer.Exit(130)


def _stage(console: Any, info: dict) -> None:
    if info.get("stage") != "load":
        console.print(f"trimtab up: {info['stage']}")


def _append_fidelity(html_path: Path, fid: dict[str, Any], fit: dict[str, Any],
                     cold_s: float) -> None:
    """Add the sim-against-live table to the replay-format report page."""
    import html

    def cell(v: Any) -> str:
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    rows = []
    for label, part in (("same policy in the simulator (closed loop)", fid),
                        ("live decisions replayed (open loop)", fid.get("open_loop") or {})):
        if not part:
            continue
        rows.append("<tr><td>" + html.escape(label) + "</td>" + "".join(
            f"<td>{cell(part.get(k))}</td>" for k in FIDELITY_FIELDS) + "</tr>")
    head = "".join(f"<th>{k}</th>" for k in ("comparison",) + FIDELITY_FIELDS)
    section = (f"<h2>Simulator against the live run</h2><p>Service model fitted from the live"
               f" run's batch metrics: {cell(fit.get('base_ms'))} ms +"
               f" {cell(fit.get('per_item_ms'))} ms per item (cv {cell(fit.get('cv'))});"
               f" cold start {cold_s:.2f} s. Targets: p99 within 15 %, replica-seconds within"
               f" 10 %.</p>{_stack_note(fid.get('model') or {}, cell)}"
               f"<table><tr>{head}</tr>{''.join(rows)}</table>")
    page = html_path.read_text()
    html_path.write_text(page.replace("</body>", section + "</body>", 1))


def _stack_note(model: dict[str, Any], cell: Any) -> str:
    """The serving-stack terms fitted from the run (trimtab.up.fit), as one sentence."""
    if not model:
        return ""
    return (f"<p>Serving stack fitted from the same run: a saturated replica held"
            f" {cell(model.get('saturated_concurrency'))} and served"
            f" {cell(model.get('saturated_rps_per_replica'))} rps"
            f" ({cell(model.get('saturated_windows'))} busy windows), so the simulator runs"
            f" {cell(model.get('effective_base_ms'))} ms +"
            f" {cell(model.get('effective_per_item_ms'))} ms per item; hop"
            f" {cell(model.get('hop_ms'))} ms; the policy sees"
            f" {cell(model.get('view_lag_windows'))} windows late, as from Prometheus.</p>")


FIDELITY_FIELDS = ("p50_rel_error", "p99_rel_error", "replica_seconds_rel_error",
                   "slo_attainment_abs_error", "replicas_mean_abs_error",
                   "replicas_p90_abs_error")
