"""The ``trimtab replay`` command: replay a scenario under policies, compare, and report."""
from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import typer

DEFAULT_POLICIES = ("trimtab", "hpa", "keda", "kpa", "ray")
SHORT = {"slo_attainment": "SLO", "meets_slo": "ok", "latency_p50_s": "p50 s",
         "latency_p99_s": "p99 s", "replica_hours": "rep-h", "cost_vs_oracle": "/oracle",
         "cold_starts": "cold", "scale_events": "scale", "timed_out": "t/o",
         "ttft_p99_s": "TTFT99 s", "tpot_p99_s": "TPOT99 s", "itl_p99_s": "ITL99 s",
         "preemptions": "preempt"}
LLM_SHORT = {"latency_p50_s": "e2e50 s", "latency_p99_s": "e2e99 s"}   # beside TTFT and TPOT


def default_policies(sc: Any, trace: Any, given: Sequence[str] = ()) -> list[str]:
    """The policies given, with ``all`` (or nothing given) expanded to: every registered
    name among trimtab/hpa/keda/kpa/ray, the LLM-only baselines on an LLM scenario
    (``registry.LLM_ONLY``), plus ``static`` sized for the peak minute of the trace at 70 %
    of a replica's full-batch throughput."""
    import trimtab.sim.replay  # noqa: F401  (registers the replay-only policies, "dynamo" too)
    from trimtab.controllers.core import registry

    if given and "all" not in given:
        return list(given)
    registry.load_builtin_policies()
    llm = sc.service.model == "llm"
    names = [p for p in DEFAULT_POLICIES if p in registry.POLICIES]
    names += sorted(p for p in registry.LLM_ONLY if llm)
    defaults = names + [f"static:replicas={static_replicas(sc, trace)}"]
    out: list[str] = []
    for spec in given or ["all"]:
        for s in (defaults if spec == "all" else [spec]):
            if s not in out:
                out.append(s)
    return out


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


def load_case(path: Path | None, policies: Sequence[str], sweep: bool, console: Any,
              past_only: bool = True) -> Any:
    """One scenario of the set, loaded, with its policies and (``sweep``) each one's sweep."""
    from trimtab.controllers.core.spec import parse_spec
    from trimtab.sim.compare import Case
    from trimtab.sim.scenario import load_scenario
    from trimtab.sim.traces import load_trace

    sc = load_scenario(path)
    trace = load_trace(sc.trace, sc.base_dir)
    for w in getattr(trace, "warnings", []) or []:
        console.print(f"[yellow]warning:[/] {w} ({sc.name})")
    specs = default_policies(sc, trace, policies)
    auto = frozenset(s for s in specs if s.startswith("static:") and s not in policies)
    for s in specs:
        parse_spec(s)   # fail early on a malformed spec
    sweeps: dict[str, list[str]] = {}
    if sweep:
        chosen = {parse_spec(s).name for s in specs}
        sweeps = {k: v for k, v in _sweeps().items() if k in chosen}
    return Case(sc, trace, specs, auto, sweeps, bounds=sweep and _has_replay_policy("oracle"),
                past_only=sweep and past_only and _has_replay_policy("oracle"))


def run_replay(scenario: Path | Sequence[Path] | None, policies: list[str], sweep: bool,
               out: Path | None, json_path: Path | None, openmetrics: Path | None,
               openmetrics_end_unix: float | None, workers: int, quiet: bool = False,
               ray_address: str | None = None, past_only: bool = True,
               markdown: Path | None = None) -> dict[str, Any]:
    """Replay each scenario (a file, several, or a folder of them) under the policies; with
    several the JSON is ``{"scenarios": [...]}`` and baselines also get their carried-over
    setting (trimtab.sim.compare)."""
    import json

    from rich.console import Console
    from rich.progress import Progress

    from trimtab.sim.compare import assemble, run_jobs, scenario_paths
    from trimtab.sim.scenario import ScenarioError

    console = Console(quiet=quiet)
    if not console.is_terminal:       # a log or a pipe: do not squeeze the table to 80
        console = Console(quiet=quiet, width=160)
    given = [] if scenario is None else [scenario] if isinstance(scenario, Path) \
        else list(scenario)
    paths = scenario_paths(given)
    if openmetrics is not None and len(paths) > 1:
        raise ScenarioError("--openmetrics writes one scenario's metrics: give one --scenario")
    cases = [load_case(p, policies, sweep, console, past_only) for p in paths]
    names = [c.scenario.name for c in cases]
    if len(set(names)) < len(names):
        raise ScenarioError(f"scenario names repeat ({sorted(names)}): each needs its own name")
    jobs = [(i, j) for i, c in enumerate(cases) for j in c.jobs()]
    with Progress(console=console, transient=quiet) as bar:
        what = cases[0].scenario.name if len(cases) == 1 else f"{len(cases)} scenarios"
        task = bar.add_task(f"replaying {what} ({len(jobs)} replays)", total=len(jobs))
        results = run_jobs(cases, jobs, workers, ray_address, lambda: bar.advance(task))
    docs = assemble(cases, results, names)
    for case, doc in zip(cases, docs):
        _print_table(console, case.scenario, doc)
    if len(docs) > 1:
        _print_summary(console, docs)
    if out is not None:
        _write_reports(console, out, cases, docs, results)
    if markdown is not None:
        from trimtab.sim.report import comparison_markdown

        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(comparison_markdown(docs))
    whole: dict[str, Any] = docs[0] if len(docs) == 1 else {"scenarios": docs}
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(whole, indent=2) + "\n")
    if openmetrics is not None:
        from trimtab.sim.clock import wall_unix_s
        from trimtab.sim.openmetrics import write_openmetrics

        sc, spec = cases[0].scenario, cases[0].specs[0]
        end = openmetrics_end_unix if openmetrics_end_unix is not None else wall_unix_s()
        mem = sc.service.memory
        write_openmetrics(openmetrics, results[(0, spec)], model=sc.name, end_unix_s=end,
                          max_replicas=sc.replicas.max,
                          gpu_memory_bytes=mem.gpu_bytes if mem else None)
        console.print(f"openmetrics ({spec}): {openmetrics}")
    return whole


def _print_table(console: Any, sc: Any, doc: dict[str, Any]) -> None:
    from rich.table import Table

    from trimtab.sim.report import display_label, is_llm, slo_text, table_fields

    slo = sc.slo
    table = Table(title=f"trimtab replay: {sc.name} ({doc['requests']} requests, SLO "
                        f"{slo_text(slo.latency_s, slo.target, slo.ttft_s, slo.tpot_s)})")
    bounds = [r for r in (doc.get("oracle"), doc.get("past_only")) if r]
    fields = table_fields(doc["results"], bool(bounds))
    short = dict(SHORT, **LLM_SHORT) if is_llm(doc["results"]) else SHORT
    table.add_column("policy", no_wrap=True)
    for f in fields:
        table.add_column(short.get(f, f), justify="right")
    for r in doc["results"]:
        table.add_row(display_label(r), *(_cell(r.get(f)) for f in fields))
    if doc.get("oracle"):
        table.add_row("oracle", *(_cell(doc["oracle"].get(f)) for f in fields))
    if "past_only" in doc:
        p = doc["past_only"]
        table.add_row(display_label(p, past_only=True) if p else "past only (none met the SLO)",
                      *(_cell(p.get(f)) if p else "-" for f in fields))
    console.print(table)


def summary_rows(docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Over several scenarios, per policy and tuning: how many met the SLO, the worst and mean
    attainment, and the mean and worst cost against the oracle."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in docs:
        rows = [(r["policy"], r.get("tuning", "default"), r) for r in d["results"]]
        rows += [("oracle", "-", d["oracle"])] if d.get("oracle") else []
        rows += [("past only", "-", d["past_only"])] if d.get("past_only") else []
        for name, tuning, r in rows:
            groups.setdefault((name, tuning), []).append(r)
    out = []
    for (name, tuning), rs in groups.items():
        att = [r["slo_attainment"] for r in rs]
        ratio = [r["cost_vs_oracle"] for r in rs if r.get("cost_vs_oracle") is not None]
        out.append({"policy": name, "tuning": tuning, "scenarios": len(rs),
                    "met": sum(bool(r["meets_slo"]) for r in rs),
                    "worst_attainment": min(att), "mean_attainment": sum(att) / len(att),
                    "mean_cost_vs_oracle": sum(ratio) / len(ratio) if ratio else None,
                    "worst_cost_vs_oracle": max(ratio) if ratio else None})
    return out


def _print_summary(console: Any, docs: Sequence[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=f"over {len(docs)} scenarios (past only: on those where one met the SLO)")
    for col in ("policy", "tuning", "met SLO", "worst SLO", "mean SLO", "mean /oracle",
                "worst /oracle"):
        table.add_column(col, justify="left" if col in ("policy", "tuning") else "right")
    for r in summary_rows(docs):
        table.add_row(r["policy"], r["tuning"], f"{r['met']}/{r['scenarios']}",
                      _cell(r["worst_attainment"]), _cell(r["mean_attainment"]),
                      _cell(r["mean_cost_vs_oracle"]), _cell(r["worst_cost_vs_oracle"]))
    console.print(table)


def _write_reports(console: Any, out: Path, cases: Sequence[Any], docs: Sequence[dict],
                   results: dict[tuple[int, str], Any]) -> None:
    """One report per scenario: ``out`` itself for one, ``out/<name>/`` for several."""
    from trimtab.sim.report import write_report

    for i, (case, doc) in enumerate(zip(cases, docs)):
        sc = case.scenario
        where = out if len(cases) == 1 else out / sc.name
        if sc.service.model == "llm":
            sc.policy_latency_s(case.trace)   # the page states it; the trace is loaded here
        runs = [(s, results[(i, s)]) for s in case.specs]
        files = write_report(where, doc, runs, sc.slo.latency_s, sc.slo.target, scenario=sc)
        console.print(f"report: {files['html']}")


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
        scenario: list[Path] = typer.Option(
            [], "--scenario", "-s", help="Scenario YAML, or a folder of them (repeatable; "
            "default: the bundled demo). With several, each baseline also runs at the setting "
            "carried over from the others."),
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
        markdown: Optional[Path] = typer.Option(
            None, "--markdown", help="Write the comparison table across scenarios (Markdown)."),
        past_only: bool = typer.Option(
            True, "--past-only/--no-past-only", help="With --sweep, also the past-only bound "
            "(trimtab causal: about thirty more replays per scenario)."),
        ray_address: Optional[str] = typer.Option(
            None, "--ray-address", help="Run the replays as Ray tasks on this cluster "
            "('auto', 'ray://host:10001', or 'local' for a private one with --workers CPUs)."),
    ) -> None:
        """Replay scenarios under one or more policies and compare them."""
        from trimtab.controllers.core.spec import SpecError
        from trimtab.sim.scenario import ScenarioError
        from trimtab.sim.traces import TraceError

        try:
            run_replay(scenario, policy, sweep, out, json_path, openmetrics,
                       openmetrics_end_unix, workers, ray_address=ray_address,
                       past_only=past_only, markdown=markdown)
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
