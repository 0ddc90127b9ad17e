"""Composition of the sidecar: registry, collectors, proxy, adapter and admin server in one event loop."""
from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Coroutine
from typing import Any

import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry

from trimtab.collectors.admin import AdminServer, UpstreamProbe
from trimtab.collectors.admission import Admission
from trimtab.collectors.connguard import ConnectionGuard
from trimtab.collectors.control import ControlState
from trimtab.collectors.gpu import GpuCollector, load_nvml
from trimtab.collectors.health import CollectorHealth
from trimtab.collectors.proxy import AdmissionProxy
from trimtab.collectors.proxy_metrics import ProxyMetrics
from trimtab.collectors.sse import ENGINE_TIMED
from trimtab.collectors.settings import SidecarConfig

log = logging.getLogger(__name__)
DRAIN_S = 2.0            # SIGTERM: how long answers are still given before connections are cut
_HEALTH_PATHS = {"triton": "/v2/health/ready", "vllm": "/health"}


def run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """Run a sidecar process's coroutine on uvloop (libuv): its transports and timers are C,
    about a fifth less CPU per proxied request than asyncio's selector loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


class Sidecar:
    """Everything `trimtab sidecar` runs; ``start`` binds the ports, ``stop`` releases them."""

    def __init__(self, config: SidecarConfig, *, nvml: Any | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.health = CollectorHealth()
        self.registry.register(self.health)
        if nvml is None and config.gpu != "off":
            nvml = load_nvml(config.gpu, config.fake_gpu_config)
        self.gpu = GpuCollector(nvml, self.health, poll_s=config.gpu_poll_s)
        self.registry.register(self.gpu)
        self.admission = Admission(config.initial.concurrency_limit, config.limits.max_queue_length,
                                   config.limits.queue_timeout_s)
        self.proxy: AdmissionProxy | None = None
        if config.proxy:
            metrics = ProxyMetrics(self.registry, config.models, config.buckets_s,
                                   sse_timing=config.adapter not in ENGINE_TIMED)
            self.proxy = AdmissionProxy(config.upstream, self.admission, metrics, config.limits,
                                        config.models)
        self.triton = None
        hook = None
        if config.triton_model_control:
            from trimtab.collectors.triton_control import TritonBatchApplier
            self.triton = TritonBatchApplier(config.upstream, config.models, self.registry,
                                             min_interval_s=config.triton_apply_min_interval_s)
            hook = self.triton.request
        initial = config.initial
        if initial.queue_timeout_s is None:     # as started, shown as a number
            initial = initial.model_copy(update={"queue_timeout_s": config.limits.queue_timeout_s})
        self.control = ControlState(initial, config.models, self.registry, self.admission, hook)
        self.adapter = None
        if config.adapter is not None:
            from trimtab.collectors.adapters import build_adapter
            self.adapter = build_adapter(config, self.health, skip_proxy_families=config.proxy)
            self.registry.register(self.adapter)
        self._probe = UpstreamProbe(config.upstream, _HEALTH_PATHS.get(config.adapter or ""))
        self.admin = AdminServer(self.registry, self.control, config.control_token, self._probe)
        self._runners: list[Any] = []
        self._proxy_server: asyncio.AbstractServer | None = None
        self.proxy_port: int | None = None
        self.metrics_port: int | None = None

    async def start(self) -> None:
        cfg = self.config
        self.gpu.start()
        runner = web.AppRunner(self.admin.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, cfg.metrics_host, cfg.metrics_port)
        await site.start()
        self._runners.append(runner)
        self.metrics_port = runner.addresses[0][1]
        if self.proxy is not None:
            await self.proxy.start()
            loop = asyncio.get_running_loop()
            limits = cfg.limits
            self.connections = ConnectionGuard(self.registry,
                                               header_timeout_s=limits.header_timeout_s,
                                               max_connections=limits.max_connections)
            self._proxy_lowlevel = self.proxy.server(self.connections)
            self._proxy_server = await loop.create_server(
                self._proxy_lowlevel, cfg.listen_host, cfg.listen_port, backlog=1024)
            self.proxy_port = self._proxy_server.sockets[0].getsockname()[1]
        if self.adapter is not None:
            self.adapter.start()
        if self.triton is not None:
            await self.triton.start()
        log.info("sidecar up: admin http://%s:%s%s", cfg.metrics_host, self.metrics_port,
                 f", proxy http://{cfg.listen_host}:{self.proxy_port} -> {cfg.upstream}"
                 if self.proxy_port else "")

    async def stop(self) -> None:
        if self.adapter is not None:
            await self.adapter.stop()
        if self.triton is not None:
            await self.triton.close()
        if self._proxy_server is not None:
            self._proxy_server.close()           # new connections are refused from here
            await self._drain(DRAIN_S)
            await self._proxy_lowlevel.shutdown(1.0)
            await self._proxy_server.wait_closed()
        if self.proxy is not None:
            await self.proxy.close()
        for runner in self._runners:
            await runner.cleanup()
        self.gpu.stop()

    async def _drain(self, drain_s: float) -> None:
        """Until every proxy connection has closed, or ``drain_s``: requests in progress finish
        and requests still sent on kept-alive connections are answered, each answer closing its
        connection. (aiohttp's own shutdown drops a request that arrives on a kept-alive
        connection once it has begun, and cuts the connection after its timeout.)"""
        self.connections.draining = True
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + drain_s
        while self.connections.open > 0 and loop.time() < deadline_s:
            await asyncio.sleep(0.02)
        # Idle kept-alive connections are closed now: the client sees it and opens a new
        # connection (refused). Left to aiohttp's shutdown they would stay open but deaf for
        # its timeout, and every request written on them then is lost (18 in one soak).
        for conn in list(self._proxy_lowlevel.connections):
            conn.close_if_idle()

    async def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then drain for up to 2 s (and 1 s more for what is
        still running) and stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            # Objects alive after start-up live for the whole run: keep them out of GC passes.
            gc.freeze()
            await stop.wait()
        finally:
            await self.stop()
