"""``trimtab llm fit``, ``llm validate`` and ``llm peer``: the LLM engine's tools."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

llm_app = typer.Typer(help="Fit, validate and compare the token-level LLM engine.",
                      no_args_is_help=True)


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100.0 * x:.2f}%"


def _coef(x: float) -> str:
    return "0" if x == 0 else f"{x:.4g}"


def _console(stderr: bool = False):
    """A rich console, wide enough for the tables when the output is not a terminal."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal:
        console.width = 160
    return console


@llm_app.command("fit")
def fit_cmd(
    splitwise: Optional[Path] = typer.Option(None, "--splitwise", help="A splitwise-sim "
                                             "perf-model CSV (default: the bundled one)."),
    model: Optional[str] = typer.Option(None, "--model", help="Only this model "
                                        "(e.g. llama2-70b)."),
    hardware: Optional[str] = typer.Option(None, "--hardware", help="Only this hardware "
                                           "(e.g. a100-80gb)."),
    tp: Optional[int] = typer.Option(None, "--tp", min=1, help="Only this tensor parallelism."),
    steps: Optional[Path] = typer.Option(None, "--steps", help="Fit a real engine's step "
                                         "records (JSON: prefill_tokens, decode_seqs, kv_tokens,"
                                         " attn_pairs, duration_s) instead of splitwise."),
    name: str = typer.Option("steps", "--name", help="The profile's name with --steps."),
    attn: Optional[bool] = typer.Option(None, "--attn/--no-attn", help="Force the A "
                                        "(attention) term in or out (default: kept when it "
                                        "lowers the error materially)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write profile JSON: a folder gets "
                                       "<name>.json per fit (sim/data/profiles regenerates the "
                                       "bundled ones), a .json file one fit."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the fits as one JSON "
                                             "list ('-': standard output)."),
) -> None:
    """Fit the step-time model (c0 + c_prefill*P + c_decode*D + c_kv*K + c_attn*A, ms)."""
    from rich.table import Table

    from trimtab.sim.llm.profile import (ProfileError, fit_splitwise, fit_steps, profile_dict,
                                         read_steps, save_profile, splitwise_combos)

    console = _console(stderr=json_path == Path("-"))
    try:
        if steps is not None:
            results = [fit_steps(read_steps(steps), name=name, attn=attn,
                                 source={"file": str(steps)})]
        else:
            combos = [c for c in splitwise_combos(splitwise)
                      if (model is None or c[0] == model) and (hardware is None or c[1] == hardware)
                      and (tp is None or c[2] == tp)]
            if not combos:
                raise ProfileError(f"splitwise file {splitwise or 'bundled'}: no combination "
                                   f"matches model={model} hardware={hardware} tp={tp}")
            results = [fit_splitwise(splitwise, m, h, t, attn=attn) for m, h, t in combos]
    except ProfileError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    if out is not None and out.suffix == ".json" and len(results) > 1:
        console.print(f"[red]--out {out}: {len(results)} fits need a folder, not one file[/]")
        raise typer.Exit(2)

    table = Table(title="step-time fits (ms; errors relative, per fitted row)")
    for col in ("profile", "c0", "c_prefill", "c_decode", "c_kv", "c_attn", "cv", "rows",
                "MAPE", "prefill", "decode", "max", "no-A MAPE"):
        table.add_column(col, justify="left" if col == "profile" else "right")
    for r in results:
        s = r.step
        table.add_row(s.name, _coef(s.c0_ms), _coef(s.c_prefill_ms), _coef(s.c_decode_ms),
                      _coef(s.c_kv_ms), _coef(s.c_attn_ms), f"{s.cv:.3g}", str(r.rows),
                      _pct(r.mape), _pct(r.mape_prefill), _pct(r.mape_decode),
                      _pct(r.max_rel_error), _pct(r.mape_without_attn))
    console.print(table)
    for r in results:
        for why in r.excluded:
            console.print(f"{r.name}: left out {why}")
    if out is not None:
        for r in results:
            console.print(f"wrote {save_profile(r, out)}")
    if json_path is not None:
        text = json.dumps([profile_dict(r) for r in results], indent=2)
        if json_path == Path("-"):
            typer.echo(text)
        else:
            json_path.write_text(text + "\n")
            console.print(f"wrote {json_path}")


@llm_app.command("peer")
def peer_cmd(
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the figures as JSON."),
    requests: int = typer.Option(2000, "--requests", min=10, help="Requests per rate."),
    seed: int = typer.Option(42, "--seed", help="Seed of lengths, arrivals and step noise."),
) -> None:
    """The peer-simulator configuration (Llama-2-70B, A100, TP2, vLLM without chunking):
    TTFT, ITL, e2e and TPOT at 0.5, 1.0 and 1.25 rps, and the saturation throughput."""
    from rich.table import Table

    from trimtab.sim.llm.peer import run_peer

    console = _console()
    with console.status("simulating the peer configuration"):
        figures = run_peer(n_requests=requests, seed=seed)
    table = Table(title=f"peer configuration: {figures['config']['profile']}, "
                        f"{figures['engine']} engine, {requests} requests a rate")
    cols = ("rate_rps", "ttft_p50_s", "ttft_p99_s", "itl_p50_s", "itl_p99_s", "e2e_p50_s",
            "e2e_p99_s", "tpot_p50_s", "tpot_p99_s", "preemptions", "throughput_rps",
            "output_tokens_per_s", "load_vs_saturation")
    for col in cols:
        table.add_column(col.replace("_s", " s").replace("_", " "), justify="right")
    for row in figures["rates"]:
        table.add_row(*(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c])
                        for c in cols))
    console.print(table)
    sat = figures["saturation"]
    console.print(f"saturation ({sat['requests']} requests at {sat['rate_rps']:g} rps, middle "
                  f"{sat['window']}): {sat['throughput_rps']:.4g} requests/s, "
                  f"{sat['output_tokens_per_s']:.4g} output tokens/s, "
                  f"{sat['preemptions']} preemptions")
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
        console.print(f"wrote {json_path}")


def register_validate(app: typer.Typer) -> None:
    """``trimtab llm validate`` (the real-vLLM validation) lives in ``validate_real.py``
    (helper H4's module): registered here when that module exists. Its ``validate_cmd`` is
    a typer command function; it must keep heavy imports inside the function, since this
    import runs whenever the ``trimtab`` command starts. Registering again replaces it."""
    app.registered_commands[:] = [c for c in app.registered_commands if c.name != "validate"]
    try:
        from trimtab.sim.llm.validate_real import validate_cmd
    except ModuleNotFoundError as exc:
        if exc.name == "trimtab.sim.llm.validate_real":
            return
        raise
    app.command("validate")(validate_cmd)


def register(app: typer.Typer) -> None:
    register_validate(llm_app)
    app.add_typer(llm_app, name="llm")
