"""The ``trimtab replay`` command: replay a scenario under policies, compare, and report."""
from __future__ import annotations

import importlib
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Optional

import typer

DEFAULT_POLICIES = ("trimtab", "hpa", "keda", "kpa", "ray")
SHORT = {"slo_attainment": "SLO", "meets_slo": "ok", "latency_p50_s": "p50 s",
         "latency_p99_s": "p99 s", "replica_hours": "rep-h", "cost_vs_oracle": "/oracle",
         "cold_starts": "cold", "scale_events": "scale", "timed_out": "t/o",
         "ttft_p99_s": "TTFT99 s", "tpot_p99_s": "TPOT99 s", "itl_p99_s": "ITL99 s",
         "preemptions": "preempt"}
LLM_SHORT = {"latency_p50_s": "e2e50 s", "latency_p99_s": "e2e99 s"}   # beside TTFT and TPOT


def default_policies(sc: Any, trace: Any) -> list[str]:
    """Every registered name among trimtab/hpa/keda/kpa/ray, plus ``static`` sized for the
    peak minute of the trace at 70 % of a replica's full-batch throughput."""
    from trimtab.controllers.core import registry

    registry.load_builtin_policies()
    names = [p for p in DEFAULT_POLICIES if p in registry.POLICIES]
    return names + [f"static:replicas={static_replicas(sc, trace)}"]


def static_replicas(sc: Any, trace: Any) -> int:
    import numpy as np

    arr = trace.arrival_s
    if len(arr) == 0:
        return sc.replicas.min
    per_min = np.bincount((arr // 60).astype(np.int64))
    peak_rps = float(per_min.max()) / 60.0
    if sc.service.model == "llm":
        from trimtab.sim.llm.fleet import llm_replica_rps

        per_replica_rps = llm_replica_rps(sc, trace)
        n = math.ceil(peak_rps / (0.7 * per_replica_rps))
        return int(min(max(n, sc.replicas.min, 1), sc.replicas.max))
    b = sc.service.max_batch
    if sc.service.model == "affine":
        batch_s = (sc.service.base_ms + sc.service.per_item_ms * b) / 1000.0
    else:
        from trimtab.sim.fleet.service import load_profile

        table = load_profile(sc.profile_path(), sc.service.profile_model,
                             sc.service.profile_hardware)
        batch_s = table.batch_ms(b, sc.service.default_prompt_tokens,
                                 sc.service.default_output_tokens) / 1000.0
    n = math.ceil(peak_rps / (0.7 * b / batch_s))
    return int(min(max(n, sc.replicas.min, 1), sc.replicas.max))


def _run_one(args: tuple[Any, str, Any]) -> Any:
    from trimtab.sim.replay import simulate

    sc, spec, trace = args
    return spec, simulate(sc, spec, trace)


def _has_replay_policy(name: str) -> bool:
    """Whether trimtab.sim registered the replay-only policy ``name`` (the oracle)."""
    import trimtab.sim.replay  # noqa: F401  (registers the replay-only policies)
    from trimtab.controllers.core import registry

    return name in registry.REPLAY_POLICIES


def _sweeps() -> dict[str, list[str]]:
    try:
        mod = importlib.import_module("trimtab.controllers.core.sweep")
    except ModuleNotFoundError as exc:
        if exc.name != "trimtab.controllers.core.sweep":
            raise
        return {}
    return dict(getattr(mod, "SWEEPS", {}))


def run_replay(scenario: Path | None, policies: list[str], sweep: bool, out: Path | None,
               json_path: Path | None, openmetrics: Path | None,
               openmetrics_end_unix: float | None, workers: int, quiet: bool = False
               ) -> dict[str, Any]:
    import json

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from trimtab.controllers.core.spec import parse_spec
    from trimtab.sim.report import (is_llm, results_json, run_label, slo_text, table_fields,
                                    write_report)
    from trimtab.sim.scenario import load_scenario
    from trimtab.sim.traces import load_trace

    console = Console(quiet=quiet)
    if not console.is_terminal:       # a log or a pipe: do not squeeze the table to 80
        console = Console(quiet=quiet, width=160)
    sc = load_scenario(scenario)
    trace = load_trace(sc.trace, sc.base_dir)
    for w in getattr(trace, "warnings", []) or []:
        console.print(f"[yellow]warning:[/] {w}")
    specs = list(policies) or default_policies(sc, trace)
    for s in specs:
        parse_spec(s)   # fail early on a malformed spec
    sweep_specs: dict[str, list[str]] = {}
    if sweep:
        chosen = {parse_spec(s).name for s in specs}
        sweep_specs = {k: v for k, v in _sweeps().items() if k in chosen}
    has_oracle = sweep and _has_replay_policy("oracle")
    jobs = specs + [s for v in sweep_specs.values() for s in v if s not in specs]
    if has_oracle:
        jobs.append("oracle")
    results: dict[str, Any] = {}
    with Progress(console=console, transient=quiet) as bar:
        task = bar.add_task(f"replaying {sc.name} ({len(trace.arrival_s)} requests)",
                            total=len(jobs))
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for spec, res in pool.map(_run_one, [(sc, j, trace) for j in jobs]):
                    results[spec] = res
                    bar.advance(task)
        else:
            for j in jobs:
                results[j] = _run_one((sc, j, trace))[1]
                bar.advance(task)
    main = [results[s].summary | {"sweep": False} for s in specs]
    for name, group in sweep_specs.items():
        ok = [results[s].summary for s in group if results[s].summary["meets_slo"]]
        if ok:
            best = min(ok, key=lambda r: r["cost"])
            main.append(best | {"sweep": True})
    oracle = results["oracle"].summary if has_oracle else None
    if oracle is not None and oracle.get("cost"):
        for r in main:
            r["cost_vs_oracle"] = round(r["cost"] / oracle["cost"], 4)
    doc = results_json(sc.name, len(trace.arrival_s), main, oracle)
    slo = sc.slo
    table = Table(title=f"trimtab replay: {sc.name} ({doc['requests']} requests, SLO "
                        f"{slo_text(slo.latency_s, slo.target, slo.ttft_s, slo.tpot_s)})")
    fields = table_fields(doc["results"], oracle is not None)
    short = dict(SHORT, **LLM_SHORT) if is_llm(doc["results"]) else SHORT
    table.add_column("policy", no_wrap=True)
    for f in fields:
        table.add_column(short.get(f, f), justify="right")
    for r in doc["results"] + ([doc["oracle"]] if oracle else []):
        label = run_label(r) + (" (sweep best)" if r.get("sweep") else "")
        table.add_row(label, *(_cell(r.get(f)) for f in fields))
    console.print(table)
    label_runs = [(s, results[s]) for s in specs]
    if out is not None:
        if sc.service.model == "llm":
            sc.policy_latency_s(trace)        # the page states it; the trace is loaded here
        files = write_report(out, doc, label_runs, sc.slo.latency_s, sc.slo.target,
                             scenario=sc)
        console.print(f"report: {files['html']}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
    if openmetrics is not None:
        from trimtab.sim.clock import wall_unix_s
        from trimtab.sim.openmetrics import write_openmetrics

        end = openmetrics_end_unix if openmetrics_end_unix is not None else wall_unix_s()
        mem = sc.service.memory
        write_openmetrics(openmetrics, results[specs[0]], model=sc.name, end_unix_s=end,
                          max_replicas=sc.replicas.max,
                          gpu_memory_bytes=mem.gpu_bytes if mem else None)
        console.print(f"openmetrics ({specs[0]}): {openmetrics}")
    return doc


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "[green]yes[/]" if v else "[red]no[/]"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay(
        scenario: Optional[Path] = typer.Option(
            None, "--scenario", "-s", help="Scenario YAML (default: the bundled demo)."),
        policy: list[str] = typer.Option(
            [], "--policy", "-p", help="Policy spec, e.g. static:replicas=8 (repeatable)."),
        sweep: bool = typer.Option(False, "--sweep", help="Also sweep each baseline's target "
                                   "and report the cheapest setting that meets the SLO."),
        out: Optional[Path] = typer.Option(None, "--out", help="Report directory."),
        json_path: Optional[Path] = typer.Option(None, "--json", help="Write results JSON."),
        openmetrics: Optional[Path] = typer.Option(
            None, "--openmetrics", help="Write the first policy's metrics as OpenMetrics."),
        openmetrics_end_unix: Optional[float] = typer.Option(
            None, "--openmetrics-end-unix", help="Unix time of the last sample (default now)."),
        workers: int = typer.Option(2, "--workers", min=1, help="Parallel processes."),
    ) -> None:
        """Replay a scenario's trace under one or more policies and compare them."""
        from trimtab.controllers.core.spec import SpecError
        from trimtab.sim.scenario import ScenarioError
        from trimtab.sim.traces import TraceError

        try:
            run_replay(scenario, policy, sweep, out, json_path, openmetrics,
                       openmetrics_end_unix, workers)
        except (ScenarioError, TraceError, SpecError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    @app.command("causal")
    def causal(
        scenario: Path = typer.Option(..., "--scenario", "-s", help="Scenario YAML."),
        json_path: Optional[Path] = typer.Option(None, "--json", help="Write the figures."),
    ) -> None:
        """The oracle beside the cheapest schedule that knows only the past (trimtab.sim.causal)."""
        import json

        from trimtab.sim.causal import compare
        from trimtab.sim.replay import replay_context
        from trimtab.sim.scenario import ScenarioError, load_scenario
        from trimtab.sim.traces import TraceError, load_trace

        try:
            sc = load_scenario(scenario)
            out = compare(replay_context(sc, load_trace(sc.trace, sc.base_dir)))
        except (ScenarioError, TraceError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        text = json.dumps(out, indent=1)
        typer.echo(text)
        if json_path is not None:
            json_path.write_text(text + "\n")
