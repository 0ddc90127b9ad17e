"""`trimtab controller`: run the production loop from a config file, and `trimtab controller bench`."""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

log = logging.getLogger("trimtab.controller")

controller_app = typer.Typer(
    help="Run the control loop against live metrics (Prometheus or sidecars) and Kubernetes.",
    invoke_without_command=True, no_args_is_help=False)


def _print_records(console, tick: int, records, dry_run: bool) -> None:
    for r in records:
        d = r.decision
        line = (f"tick {tick} {r.key} policy_reason={d.reason} replicas={d.replicas}"
                f" wanted={r.wanted.replicas} current={r.current_replicas}"
                f" hold={r.hold or '-'} applied={'no (dry-run)' if dry_run else r.actuated}")
        for name, s in r.shadows.items():
            line += f" shadow[{name}]={s.replicas}/{s.reason}"
        if r.errors:
            line += f" errors={','.join(r.errors)}"
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@controller_app.callback()
def controller(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Controller YAML config."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Compute and export, apply nothing."),
    ticks: Optional[int] = typer.Option(None, "--ticks", min=1, help="Stop after N ticks."),
    once: bool = typer.Option(False, "--once", help="One tick, then exit (same as --ticks 1)."),
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """Run the controller (when no subcommand is given)."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        typer.echo("error: --config FILE is required (see examples/controller.yaml)", err=True)
        raise typer.Exit(2)
    from prometheus_client import start_http_server
    from rich.console import Console

    from trimtab.controllers.shell.assemble import assemble
    from trimtab.controllers.shell.clock import WallClock
    from trimtab.controllers.shell.config import ConfigError, load_config
    from trimtab.controllers.shell.metrics import ControllerMetrics

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    console = Console()
    try:
        cfg = load_config(config)
        metrics = ControllerMetrics()
        asm = assemble(cfg, WallClock(), dry_run=dry_run, metrics=metrics)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    if cfg.metrics_port:
        try:
            start_http_server(cfg.metrics_port, addr=cfg.metrics_host, registry=metrics.registry)
        except OSError as exc:       # a port in use, an address that is not ours
            typer.echo(f"error: cannot serve /metrics on {cfg.metrics_host}:{cfg.metrics_port}: "
                       f"{exc.strerror or exc} (metrics_host, metrics_port in {config})", err=True)
            raise typer.Exit(2)
        log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, cfg.metrics_port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    count = [0]

    def show(records) -> None:
        count[0] += 1
        _print_records(console, count[0], records, dry_run)

    asm.loop.on_tick = show
    elector_thread = None
    if asm.elector is not None:
        asm.elector.step(asm.loop.clock.now_s())
        elector_thread = threading.Thread(target=asm.elector.run, args=(stop,), daemon=True,
                                          name="leader-election")
        elector_thread.start()
    console.print(f"trimtab controller: {len(cfg.targets)} target(s), every {cfg.interval_s:g} s"
                  f"{' (dry-run)' if dry_run else ''}", markup=False)
    try:
        asm.loop.run(stop, ticks=1 if once else ticks)
    finally:
        stop.set()
        if elector_thread is not None:
            elector_thread.join(timeout=10)   # run() releases the lease on its way out


@controller_app.command("bench")
def bench(
    targets: int = typer.Option(1000, "--targets", min=1, help="Targets (series sets) to hold."),
    ticks: int = typer.Option(5, "--ticks", min=1, help="Ticks to time."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the figures here."),
    policy: str = typer.Option("hpa", "--policy", help="Policy spec every target runs."),
) -> None:
    """1,000 targets against a real Prometheus holding backfilled series: tick time, CPU, RSS."""
    from trimtab.controllers.shell.bench import run_bench

    result = run_bench(targets=targets, ticks=ticks, policy=policy)
    text = json.dumps(result, indent=2, sort_keys=True)
    typer.echo(text)
    if json_out is not None:
        json_out.write_text(text + "\n")


def register(app: typer.Typer) -> None:
    app.add_typer(controller_app, name="controller")
