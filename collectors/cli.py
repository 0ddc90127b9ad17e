"""`trimtab sidecar` (run the sidecar) and `trimtab sidecar bench` (its overhead benchmark)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import typer
from pydantic import BaseModel, ValidationError

from trimtab.collectors.settings import ControlSettings, ProxyLimits, SidecarConfig

TOKEN_ENV = "TRIMTAB_CONTROL_TOKEN"
Opt = typer.Option


def _default(model: type[BaseModel], name: str) -> Any:
    """The settings model's default for ``name``: each option's default is written there once."""
    return model.model_fields[name].default


_S, _C, _L = SidecarConfig, ControlSettings, ProxyLimits


def _split_hostport(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise typer.BadParameter(f"{value!r} must be HOST:PORT", param_hint=option)
    return host or "127.0.0.1", int(port)


def _read_token(path: Optional[Path]) -> str | None:
    if path is None:
        return os.environ.get(TOKEN_ENV) or None
    from trimtab.common.tokens import TokenFileError, read_token_file

    try:
        token, warnings = read_token_file(path)
    except TokenFileError as exc:
        raise typer.BadParameter(str(exc), param_hint="--control-token-file") from None
    for warning in warnings:
        logging.getLogger("trimtab.sidecar").warning("%s", warning)
    return token


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The sidecar beside each model server: metrics, admission proxy, "
                             "control API.", invoke_without_command=True, no_args_is_help=False)

    @group.callback(invoke_without_command=True)
    def sidecar(
        ctx: typer.Context,
        upstream: Optional[str] = Opt(
            None, help="Model server base URL, e.g. http://127.0.0.1:8000."),
        listen: str = Opt(
            f"{_default(_S, 'listen_host')}:{_default(_S, 'listen_port')}",
            help="Proxy address HOST:PORT (with --proxy)."),
        metrics_port: int = Opt(
            _default(_S, "metrics_port"),
            help="Admin port: /metrics, /healthz, /readyz and the control API."),
        metrics_host: str = Opt(
            _default(_S, "metrics_host"), help="Admin address (0.0.0.0 in a pod)."),
        proxy: bool = Opt(_default(_S, "proxy"), "--proxy", help="Run the admission proxy."),
        adapter: Optional[str] = Opt(
            None, help="triton | vllm | sglang | prometheus: scrape the model server's metrics."),
        adapter_metrics_url: Optional[str] = Opt(
            None, help="Metrics URL to scrape (default: UPSTREAM/metrics)."),
        adapter_mapping: Optional[Path] = Opt(
            None, help="YAML mapping for --adapter prometheus."),
        adapter_interval_s: float = Opt(
            _default(_S, "adapter_interval_s"), help="Adapter scrape period."),
        gpu: str = Opt(
            _default(_S, "gpu"), help="auto | off | fake (simulated GPUs through a fake NVML)."),
        fake_gpu_config: Optional[Path] = Opt(
            None, help="JSON/YAML file steering the fake GPUs; re-read when it changes."),
        gpu_poll_s: float = Opt(_default(_S, "gpu_poll_s"), help="NVML poll period."),
        model: list[str] = Opt(
            [], "--model", help="Model label to keep (repeatable); others are 'other' "
                                f"(none: {_default(_S, 'models')[0]!r})."),
        slo_latency_s: list[float] = Opt(
            [], "--slo-latency-s", help="Latency SLO threshold: a bucket bound (repeatable)."),
        control_token_file: Optional[Path] = Opt(
            None, help=f"Bearer token for the control API (else ${TOKEN_ENV})."),
        concurrency_limit: int = Opt(
            _default(_C, "concurrency_limit"), help="Initial concurrency limit."),
        max_batch_size: int = Opt(_default(_C, "max_batch_size"), help="Initial max batch size."),
        batch_timeout_ms: float = Opt(
            _default(_C, "batch_timeout_ms"), help="Initial batch timeout."),
        max_queue_length: int = Opt(
            _default(_L, "max_queue_length"), help="Requests that may wait for admission."),
        queue_timeout_s: float = Opt(
            _default(_L, "queue_timeout_s"), help="Longest wait for admission before 503."),
        upstream_timeout_s: float = Opt(
            _default(_L, "upstream_timeout_s"),
            help="Longest silence from the upstream before 504."),
        body_timeout_s: float = Opt(
            _default(_L, "body_timeout_s"), help="Longest wait for a request body before 408."),
        max_header_bytes: int = Opt(
            _default(_L, "max_header_bytes"), help="Request header limit (431 above)."),
        max_body_bytes: int = Opt(
            _default(_L, "max_body_bytes"), help="Request body limit (413 above)."),
        triton_model_control: bool = Opt(
            _default(_S, "triton_model_control"),
            help="Apply batch settings to Triton (explicit model control mode)."),
        triton_apply_min_interval_s: float = Opt(
            _default(_S, "triton_apply_min_interval_s"),
            help="Least time between two Triton reload rounds."),
        log_level: str = Opt("info", help="debug | info | warning | error."),
    ) -> None:
        """Run the sidecar (when no subcommand is given)."""
        if ctx.invoked_subcommand is not None:
            return
        if upstream is None:
            raise typer.BadParameter("is required to run the sidecar", param_hint="--upstream")
        from trimtab.common.errors import first_error
        from prometheus_client import disable_created_metrics

        from trimtab.collectors.sidecar import Sidecar, run_loop
        disable_created_metrics()   # _created series double the page and nobody queries them
        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        host, port = _split_hostport(listen, "--listen")
        try:
            config = SidecarConfig(
                upstream=upstream, listen_host=host, listen_port=port,
                metrics_host=metrics_host, metrics_port=metrics_port, proxy=proxy,
                adapter=adapter, adapter_metrics_url=adapter_metrics_url,
                adapter_mapping_file=str(adapter_mapping) if adapter_mapping else None,
                adapter_interval_s=adapter_interval_s, gpu=gpu,
                fake_gpu_config=str(fake_gpu_config) if fake_gpu_config else None,
                gpu_poll_s=gpu_poll_s, **({"models": tuple(model)} if model else {}),
                slo_latency_s=tuple(slo_latency_s), control_token=_read_token(control_token_file),
                triton_model_control=triton_model_control,
                triton_apply_min_interval_s=triton_apply_min_interval_s,
                initial=ControlSettings(concurrency_limit=concurrency_limit,
                                        max_batch_size=max_batch_size,
                                        batch_timeout_ms=batch_timeout_ms),
                limits=ProxyLimits(max_queue_length=max_queue_length,
                                   queue_timeout_s=queue_timeout_s,
                                   upstream_timeout_s=upstream_timeout_s,
                                   body_timeout_s=body_timeout_s,
                                   max_header_bytes=max_header_bytes,
                                   max_body_bytes=max_body_bytes))
        except ValidationError as exc:
            field, message = first_error(exc, top="config")
            option = "--" + field.split(".")[-1].replace("_", "-")
            raise typer.BadParameter(message, param_hint=option) from None
        try:
            sidecar_ = Sidecar(config)
        except ValueError as exc:    # e.g. a bad adapter mapping file, named in the message
            raise typer.BadParameter(str(exc)) from None
        try:
            run_loop(sidecar_.run_forever())
        except OSError as exc:      # a port in use, an address that is not ours
            typer.echo(f"error: cannot listen: {exc.strerror or exc} (--listen {listen}, "
                       f"--metrics-port {metrics_port})", err=True)
            raise typer.Exit(2) from None

    @group.command("bench")
    def bench(
        json_path: Optional[Path] = Opt(None, "--json", help="Write the figures here as JSON."),
        quick: bool = Opt(False, help="Shorter phases (for smoke tests)."),
    ) -> None:
        """Measure the proxy's added latency (vs nginx), max req/s, exposition time, idle CPU."""
        from trimtab.collectors.bench import run_bench
        run_bench(json_path, quick=quick)

    app.add_typer(group, name="sidecar")
